//! Publishes the signed key set (protocol §10a) that `canhbao keys` writes beside the
//! keyring, retained on `{prefix}/{province}/keys`: at start, on every (re)connection to
//! the broker (which may have come back empty), within two seconds of a change, and every
//! ten minutes (should anyone clear the retained copy).
//!
//! A key set that no longer trusts the key this instance signs with is not published: the
//! receivers would reject every alert this instance sends until it restarts with the new
//! key. The instance logs it as an error instead; a restart publishes it.

use std::path::PathBuf;
use std::time::Duration;

use dispatch::{Topics, TrustedKeys, wire};
use mqtt::MqttHandle;
use tokio_util::sync::CancellationToken;

/// How often the file is looked at.
const CHECK: Duration = Duration::from_secs(2);
/// How often the same key set is published again anyway.
const REPUBLISH: Duration = Duration::from_secs(600);

/// What the publisher needs.
pub struct KeySetPublisher {
    pub mqtt: MqttHandle,
    pub topics: Topics,
    /// `DATA_DIR/keyring/keyset.json`.
    pub file: PathBuf,
    /// The provisioning key that signs key sets.
    pub provisioning: TrustedKeys,
    /// The key this instance signs alerts with.
    pub signing_key_id: String,
}

/// Why a key set on file is not published.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It does not verify (a hand-edited or foreign file).
    Invalid(String),
    /// It does not trust this instance's signing key.
    RevokesOwnKey { seq: u64 },
}

/// Checks key set bytes before they go out: they verify against `provisioning` for
/// `province`, and trust `signing_key_id`. Returns the set's sequence number.
pub fn check(
    bytes: &[u8],
    provisioning: &TrustedKeys,
    province: &str,
    signing_key_id: &str,
) -> Result<u64, Refusal> {
    let set =
        wire::verify_key_set(bytes, provisioning, province).map_err(|e| Refusal::Invalid(e.to_string()))?;
    if !set.keys.contains(signing_key_id) {
        return Err(Refusal::RevokesOwnKey { seq: set.wire.seq });
    }
    Ok(set.wire.seq)
}

impl KeySetPublisher {
    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let topic = self.topics.key_set();
        let mut connections = self.mqtt.connections();
        // The bytes last published (or refused), and on which connection.
        let mut last: Option<Vec<u8>> = None;
        // The file's modification time and length when it was last read: it is read again
        // only when they change.
        let mut stamp: Option<(std::time::SystemTime, u64)> = None;
        let mut published_on: Option<u64> = None;
        let mut since = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(CHECK);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                r = connections.changed() => if r.is_err() { return },
            }
            let connection = connections.borrow().count;
            if connection == 0 {
                continue; // never connected yet: the first connection publishes
            }
            let now_stamp = std::fs::metadata(&self.file).and_then(|m| Ok((m.modified()?, m.len())));
            let read = match (&now_stamp, &last) {
                (Ok(s), Some(bytes)) if stamp == Some(*s) && !bytes.is_empty() => Ok(bytes.clone()),
                (Ok(_), _) => std::fs::read(&self.file),
                (Err(e), _) => Err(std::io::Error::new(e.kind(), e.to_string())),
            };
            stamp = now_stamp.ok();
            let bytes = match read {
                Ok(b) => b,
                Err(e) => {
                    if last.is_some() || published_on.is_none() {
                        tracing::error!(path = %self.file.display(), error = %e,
                            "cannot read the key set; receivers keep the one they have");
                    }
                    last = Some(Vec::new());
                    published_on = Some(connection);
                    continue;
                }
            };
            let changed = last.as_deref() != Some(bytes.as_slice());
            let due = changed || published_on != Some(connection) || since.elapsed() >= REPUBLISH;
            if !due {
                continue;
            }
            last = Some(bytes.clone());
            published_on = Some(connection);
            since = tokio::time::Instant::now();
            match check(
                &bytes,
                &self.provisioning,
                self.topics.province().as_str(),
                &self.signing_key_id,
            ) {
                Ok(seq) => match self.mqtt.enqueue(&topic, bytes, true) {
                    Ok(()) if changed => tracing::info!(seq, topic = %topic, "key set published"),
                    Ok(()) => tracing::debug!(seq, topic = %topic, "key set published again"),
                    Err(e) => {
                        tracing::warn!(seq, error = %e, "key set not published; trying again");
                        published_on = None;
                    }
                },
                Err(Refusal::RevokesOwnKey { seq }) => {
                    if changed {
                        tracing::error!(seq, key_id = %self.signing_key_id,
                            "key set {seq} no longer trusts the key this instance signs with: not published; restart the service to sign with the new key, which publishes it");
                    }
                }
                Err(Refusal::Invalid(reason)) => {
                    if changed {
                        tracing::error!(path = %self.file.display(), reason = %reason,
                            "the key set on file does not verify: not published");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::{KeysAction, key_set_path, provisioning_public, run_keys};

    /// Rotating as the docs say, but retiring the old key before the instance restarts
    /// with the new one: the instance must not publish a key set that revokes its key.
    #[test]
    fn a_key_set_that_revokes_the_instances_own_key_is_held_back() {
        let tmp = tempfile::tempdir().unwrap();
        let legacy = tmp.path().join("signing.key");
        let now: chrono::DateTime<chrono::Utc> = "2026-10-09T02:00:00Z".parse().unwrap();
        // `canhbao keys ACTION` on this data directory.
        let keys = |action: KeysAction| {
            run_keys(&action, tmp.path(), &legacy, "20", now, &mut Vec::new()).unwrap();
        };
        keys(KeysAction::List);
        let dir = tmp.path().join("keyring");
        let running = crate::secrets::load_signing_key(&legacy)
            .unwrap()
            .key_id()
            .to_owned();
        let (pid, pkey) = provisioning_public(&dir).unwrap();
        let mut provisioning = TrustedKeys::default();
        provisioning.add_base64(&pid, &pkey).unwrap();
        let first = std::fs::read(key_set_path(&dir)).unwrap();
        assert_eq!(check(&first, &provisioning, "20", &running), Ok(1));
        assert!(matches!(
            check(&first, &provisioning, "01", &running),
            Err(Refusal::Invalid(_))
        ));

        keys(KeysAction::Generate { activate: true });
        let second = std::fs::read(key_set_path(&dir)).unwrap();
        assert_eq!(
            check(&second, &provisioning, "20", &running),
            Ok(2),
            "both keys are trusted"
        );
        keys(KeysAction::Retire(running.clone()));
        let third = std::fs::read(key_set_path(&dir)).unwrap();
        assert_eq!(
            check(&third, &provisioning, "20", &running),
            Err(Refusal::RevokesOwnKey { seq: 3 })
        );
        // A plain listing signs nothing new.
        keys(KeysAction::List);
        assert_eq!(std::fs::read(key_set_path(&dir)).unwrap(), third);
    }
}
