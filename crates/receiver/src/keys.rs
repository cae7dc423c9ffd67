//! The key set a receiver applied last (protocol §10a), kept across restarts: the exact
//! envelope as it arrived, in one file replaced atomically, verified again on every start.

use std::io::Write as _;
use std::path::Path;

use protocol::wire::{self, TrustedKeys};

use crate::ReceiverConfig;
use crate::state::envelope_digest;

/// The keys to start with: the key set kept in `cfg.key_set_file` if there is one that
/// verifies against the provisioning keys, else the keys provisioned at enrolment. The
/// second value is the kept set's sequence number and digest.
pub fn initial(cfg: &ReceiverConfig) -> (TrustedKeys, Option<(u64, String)>) {
    let Some(path) = &cfg.key_set_file else {
        return (cfg.keys.clone(), None);
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (cfg.keys.clone(), None),
        Err(e) => {
            tracing::error!(receiver = %cfg.receiver_id, path = %path.display(), error = %e,
                "cannot read the kept key set; trusting the provisioned keys until the broker's arrives");
            return (cfg.keys.clone(), None);
        }
    };
    match wire::verify_key_set(&bytes, &cfg.provisioning, cfg.topics.province().as_str()) {
        Ok(set) => {
            tracing::info!(receiver = %cfg.receiver_id, seq = set.wire.seq, trusted = ?set.keys.ids(),
                "kept key set applied");
            let digest = envelope_digest(&bytes);
            (set.keys, Some((set.wire.seq, digest)))
        }
        Err(reason) => {
            tracing::error!(receiver = %cfg.receiver_id, path = %path.display(), reason = %reason,
                "the kept key set does not verify; trusting the provisioned keys until the broker's arrives");
            (cfg.keys.clone(), None)
        }
    }
}

/// Replaces the kept key set with `bytes`: written to a temporary file beside it, synced,
/// renamed over it, and the directory synced, so that a crash leaves the old set or the
/// new one, never a torn one.
pub fn persist(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_set_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rx.keys");
        persist(&path, b"first").unwrap();
        persist(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert!(!path.with_extension("tmp").exists());
    }
}
