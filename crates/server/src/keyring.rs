//! Signing keys and their rotation: `DATA_DIR/keyring/keyring.json` lists every key with
//! its state, and each usable key's seed is `DATA_DIR/keyring/<hex>.key` (mode 0600).
//!
//! States: `active` signs (exactly one), `valid` is published for receivers to verify but
//! does not sign (a new key waiting for receivers to be provisioned, or an old one whose
//! alerts may still be live), `retired` is no longer published and its seed is deleted.
//! So two keys can be valid at once. The service reads the keyring at start: a change takes
//! effect on restart. On first use the existing `[signing] key_file` (DATA_DIR/signing.key)
//! is imported as the active key, so an installation keeps its key id.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use dispatch::Signer;
use serde::{Deserialize, Serialize};

use crate::secrets;
use dispatch::wire;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyEntry {
    pub key_id: String,
    /// The Ed25519 public key, base64.
    pub public_key: String,
    /// `active`, `valid` or `retired`.
    pub state: String,
    pub created: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Keyring {
    pub keys: Vec<KeyEntry>,
    /// The sequence number of the newest key set signed (protocol §10a).
    #[serde(default)]
    pub key_set_seq: u64,
}

/// The signed key set (protocol §10a) that the service publishes, retained, on
/// `{prefix}/{province}/keys`: the envelope bytes, as receivers get them.
pub fn key_set_path(dir: &Path) -> PathBuf {
    dir.join("keyset.json")
}

/// The seed of the provisioning key, which signs key sets and nothing else.
pub fn provisioning_path(dir: &Path) -> PathBuf {
    dir.join("provisioning.key")
}

/// The provisioning key's public half, for receivers' key files: (key id, base64).
pub fn provisioning_public(dir: &Path) -> Result<(String, String)> {
    let signer = secrets::load_or_create_signing_key(&provisioning_path(dir))?;
    Ok((
        signer.key_id().to_owned(),
        B64.encode(signer.public_key().as_bytes()),
    ))
}

fn manifest(dir: &Path) -> PathBuf {
    dir.join("keyring.json")
}

fn seed_path(dir: &Path, key_id: &str) -> PathBuf {
    // "ed25519:0123abcd..." → "0123abcd....key": the id's hex part is file-safe.
    let hex = key_id.rsplit(':').next().unwrap_or(key_id);
    dir.join(format!("{hex}.key"))
}

fn entry(signer: &Signer, state: &str, now: DateTime<Utc>) -> KeyEntry {
    KeyEntry {
        key_id: signer.key_id().to_owned(),
        public_key: B64.encode(signer.public_key().as_bytes()),
        state: state.to_owned(),
        created: now,
        retired: None,
    }
}

impl Keyring {
    /// Loads the keyring in `dir`, creating it from `legacy_key` (created if missing) on
    /// first use.
    pub fn load_or_init(dir: &Path, legacy_key: &Path, now: DateTime<Utc>) -> Result<Self> {
        match fs::read_to_string(manifest(dir)) {
            Ok(text) => {
                let ring: Keyring = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a keyring", manifest(dir).display()))?;
                ring.check()?;
                Ok(ring)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let signer = secrets::load_or_create_signing_key(legacy_key)?;
                secrets::write_private(&seed_path(dir, signer.key_id()), &fs::read(legacy_key)?)?;
                let ring = Keyring {
                    keys: vec![entry(&signer, "active", now)],
                    key_set_seq: 0,
                };
                ring.save(dir)?;
                Ok(ring)
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", manifest(dir).display())),
        }
    }

    fn check(&self) -> Result<()> {
        let active = self.keys.iter().filter(|k| k.state == "active").count();
        if active != 1 {
            bail!("the keyring must have exactly one active key, not {active}");
        }
        if let Some(k) = self
            .keys
            .iter()
            .find(|k| !matches!(k.state.as_str(), "active" | "valid" | "retired"))
        {
            bail!("key {} has an unknown state {:?}", k.key_id, k.state);
        }
        Ok(())
    }

    fn save(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("making {} private", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(self)?;
        let tmp = manifest(dir).with_extension("tmp");
        fs::write(&tmp, format!("{text}\n")).with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, manifest(dir)).with_context(|| format!("writing {}", manifest(dir).display()))?;
        Ok(())
    }

    /// The key that signs.
    pub fn active_signer(&self, dir: &Path) -> Result<Signer> {
        let Some(active) = self.keys.iter().find(|k| k.state == "active") else {
            bail!("the keyring has no active key");
        };
        let signer = secrets::load_signing_key(&seed_path(dir, &active.key_id))?;
        if signer.key_id() != active.key_id {
            bail!(
                "the seed of {} holds key {}: the keyring is inconsistent",
                active.key_id,
                signer.key_id()
            );
        }
        Ok(signer)
    }

    /// The keys receivers may verify with, active and valid, as (key id, base64 key, state).
    pub fn published(&self) -> Vec<(String, String, String)> {
        self.keys
            .iter()
            .filter(|k| k.state != "retired")
            .map(|k| (k.key_id.clone(), k.public_key.clone(), k.state.clone()))
            .collect()
    }

    /// Adds a new key: `valid` (published, not signing) so that receivers can be given it
    /// first, or `active` at once (the previous active key stays valid).
    pub fn generate(&mut self, dir: &Path, activate: bool, now: DateTime<Utc>) -> Result<String> {
        let seed = secrets::random::<32>()?;
        let signer = Signer::from_seed(&seed);
        secrets::write_private(
            &seed_path(dir, signer.key_id()),
            format!("{}\n", B64.encode(seed)).as_bytes(),
        )?;
        self.keys.push(entry(&signer, "valid", now));
        let id = signer.key_id().to_owned();
        if activate {
            self.activate(&id)?;
        }
        self.save(dir)?;
        Ok(id)
    }

    /// Makes a valid key the one that signs; the previous active key stays valid.
    pub fn activate(&mut self, key_id: &str) -> Result<()> {
        match self
            .keys
            .iter()
            .find(|k| k.key_id == key_id)
            .map(|k| k.state.as_str())
        {
            None => bail!("no key {key_id:?} in the keyring"),
            Some("retired") => bail!("key {key_id} is retired and cannot sign again"),
            Some("active") => return Ok(()),
            Some(_) => {}
        }
        for k in &mut self.keys {
            if k.state == "active" {
                k.state = "valid".into();
            }
            if k.key_id == key_id {
                k.state = "active".into();
            }
        }
        Ok(())
    }

    /// Retires a key that does not sign: no longer published, its seed deleted.
    pub fn retire(&mut self, dir: &Path, key_id: &str, now: DateTime<Utc>) -> Result<()> {
        let Some(k) = self.keys.iter_mut().find(|k| k.key_id == key_id) else {
            bail!("no key {key_id:?} in the keyring");
        };
        match k.state.as_str() {
            "active" => bail!("key {key_id} signs: activate another key first"),
            "retired" => bail!("key {key_id} is already retired"),
            _ => {}
        }
        k.state = "retired".into();
        k.retired = Some(now);
        let seed = seed_path(dir, key_id);
        match fs::remove_file(&seed) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("deleting {}", seed.display())),
        }
        self.save(dir)
    }

    /// Signs a new key set when the keys published or retired differ from those of the
    /// key set on file (or there is none), with the next sequence number, and writes it
    /// beside the keyring. Returns whether it signed one. The provisioning key is created
    /// on first use.
    pub fn refresh_key_set(&mut self, dir: &Path, province: &str, now: DateTime<Utc>) -> Result<bool> {
        let provisioning = secrets::load_or_create_signing_key(&provisioning_path(dir))?;
        let keys: Vec<wire::KeyWire> = self
            .published()
            .into_iter()
            .map(|(key_id, public_key, _)| wire::KeyWire { key_id, public_key })
            .collect();
        let revoked: Vec<String> = self
            .keys
            .iter()
            .filter(|k| k.state == "retired")
            .map(|k| k.key_id.clone())
            .collect();
        let mut trust = dispatch::TrustedKeys::default();
        trust.add(provisioning.public_key());
        let on_file = fs::read(key_set_path(dir))
            .ok()
            .and_then(|b| wire::verify_key_set(&b, &trust, province).ok());
        if let Some(set) = &on_file
            && set.wire.keys == keys
            && set.wire.revoked == revoked
            && set.wire.seq >= self.key_set_seq
        {
            return Ok(false);
        }
        self.key_set_seq = self.key_set_seq.max(on_file.map_or(0, |s| s.wire.seq)) + 1;
        let set = wire::KeySetWire {
            v: wire::PROTOCOL_VERSION,
            kind: wire::KEY_SET.to_owned(),
            province: province.to_owned(),
            seq: self.key_set_seq,
            issued: wire::timestamp(now),
            keys,
            revoked,
        };
        let bytes = wire::envelope_bytes(&provisioning.sign(wire::to_json(&set)));
        let path = key_set_path(dir);
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        self.save(dir)?;
        tracing::info!(seq = self.key_set_seq, "key set signed");
        Ok(true)
    }

    /// Saves after [`Keyring::activate`].
    pub fn commit(&self, dir: &Path) -> Result<()> {
        self.check()?;
        self.save(dir)
    }
}

/// What `canhbao keys` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysAction {
    /// Adds a key, valid (published, not signing) unless `activate`.
    Generate {
        activate: bool,
    },
    List,
    Activate(String),
    Retire(String),
}

/// `canhbao keys`: changes the keyring in `data_dir` and prints the result, one JSON line
/// per key. The running service picks the change up when it restarts.
pub fn run_keys(
    action: &KeysAction,
    data_dir: &Path,
    legacy_key: &Path,
    province: &str,
    now: DateTime<Utc>,
    out: &mut impl std::io::Write,
) -> Result<()> {
    let dir = data_dir.join("keyring");
    let mut ring = Keyring::load_or_init(&dir, legacy_key, now)?;
    match action {
        KeysAction::Generate { activate } => {
            let id = ring.generate(&dir, *activate, now)?;
            tracing::info!(key_id = %id, activate, "signing key generated");
        }
        KeysAction::List => {}
        KeysAction::Activate(id) => {
            ring.activate(id)?;
            ring.commit(&dir)?;
        }
        KeysAction::Retire(id) => {
            ring.retire(&dir, id, now)?;
            // The key file it was first imported from holds the same secret: delete it too.
            if legacy_key.exists() && secrets::load_signing_key(legacy_key).is_ok_and(|s| s.key_id() == id) {
                fs::remove_file(legacy_key).with_context(|| {
                    format!(
                        "key {id} is retired, but its old file {} could not be deleted",
                        legacy_key.display()
                    )
                })?;
            }
        }
    }
    // Every change is signed into a new key set at once; the running service publishes
    // it to receivers (protocol §10a).
    ring.refresh_key_set(&dir, province, now)?;
    for k in &ring.keys {
        writeln!(out, "{}", serde_json::to_string(k)?)?;
    }
    let (id, public_key) = provisioning_public(&dir)?;
    writeln!(
        out,
        "{}",
        serde_json::json!({"key_id": id, "public_key": public_key, "state": "provisioning", "key_set_seq": ring.key_set_seq})
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_rotate_with_two_valid_at_once_and_retired_ones_are_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keyring");
        let legacy = tmp.path().join("signing.key");
        let now: DateTime<Utc> = "2026-10-09T02:00:00Z".parse().unwrap();
        let mut ring = Keyring::load_or_init(&dir, &legacy, now).unwrap();
        let first = ring.active_signer(&dir).unwrap().key_id().to_owned();
        // The installation's existing key is kept.
        assert_eq!(
            first,
            secrets::load_or_create_signing_key(&legacy).unwrap().key_id()
        );
        let second = ring.generate(&dir, false, now).unwrap();
        assert_eq!(
            ring.active_signer(&dir).unwrap().key_id(),
            first,
            "a new key waits"
        );
        assert_eq!(ring.published().len(), 2);
        ring.activate(&second).unwrap();
        ring.commit(&dir).unwrap();
        let ring2 = Keyring::load_or_init(&dir, &legacy, now).unwrap();
        assert_eq!(ring2.active_signer(&dir).unwrap().key_id(), second);
        assert_eq!(
            ring2.published().len(),
            2,
            "the old key stays valid for live alerts"
        );
        let mut ring2 = ring2;
        assert!(
            ring2.retire(&dir, &second, now).is_err(),
            "the signing key cannot be retired"
        );
        ring2.retire(&dir, &first, now).unwrap();
        assert_eq!(
            ring2.published(),
            [(
                second.clone(),
                ring2.keys[1].public_key.clone(),
                "active".to_owned()
            )]
        );
        assert!(!seed_path(&dir, &first).exists(), "a retired seed is deleted");
        let mut out = Vec::new();
        run_keys(&KeysAction::List, tmp.path(), &legacy, "20", now, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap().lines().count(),
            3,
            "two keys and the provisioning key"
        );
        assert!(ring2.activate(&first).is_err());
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(seed_path(&dir, &second))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode, 0o600);
    }
}

#[cfg(test)]
mod command_tests {
    use super::*;

    #[test]
    fn retiring_the_imported_key_deletes_its_original_file_too() {
        let tmp = tempfile::tempdir().unwrap();
        let legacy = tmp.path().join("signing.key");
        let now: DateTime<Utc> = "2026-10-09T02:00:00Z".parse().unwrap();
        let sink = &mut Vec::new();
        run_keys(
            &KeysAction::Generate { activate: true },
            tmp.path(),
            &legacy,
            "20",
            now,
            sink,
        )
        .unwrap();
        let first = secrets::load_signing_key(&legacy).unwrap().key_id().to_owned();
        run_keys(&KeysAction::Retire(first), tmp.path(), &legacy, "20", now, sink).unwrap();
        assert!(
            !legacy.exists(),
            "the retired secret must not survive in its old file"
        );
    }
}
