//! The signing key and the bootstrap admin token: created on first start with mode 0600,
//! logged by path only, never by value.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD};
use dispatch::Signer;
use store::Store;

/// Writes `contents` to a new file readable by its owner only, replacing any old file.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

pub(crate) fn random<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("no system randomness: {e}"))?;
    Ok(buf)
}

/// Loads the Ed25519 signing key from `path`, creating it if it does not exist.
pub fn load_or_create_signing_key(path: &Path) -> Result<Signer> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let mode = fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                bail!(
                    "signing key {} is readable by other users (mode {:o}); run chmod 600 on it",
                    path.display(),
                    mode & 0o777
                );
            }
            let bytes = B64
                .decode(text.trim())
                .with_context(|| format!("signing key {} is not base64", path.display()))?;
            let seed: [u8; 32] = bytes
                .try_into()
                .map_err(|_| anyhow::anyhow!("signing key {} must hold 32 bytes", path.display()))?;
            let signer = Signer::from_seed(&seed);
            tracing::info!(path = %path.display(), key_id = signer.key_id(), "signing key loaded");
            Ok(signer)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let seed = random::<32>()?;
            write_private(path, format!("{}\n", B64.encode(seed)).as_bytes())?;
            let signer = Signer::from_seed(&seed);
            tracing::info!(path = %path.display(), key_id = signer.key_id(), "signing key created");
            Ok(signer)
        }
        Err(e) => Err(e).with_context(|| format!("reading signing key {}", path.display())),
    }
}

/// Loads an Ed25519 signing key that must exist (a keyring seed).
pub(crate) fn load_signing_key(path: &Path) -> Result<Signer> {
    if !path.exists() {
        bail!("signing key {} is missing", path.display());
    }
    load_or_create_signing_key(path)
}

/// Writes the public keys for receivers to trust (`signing-keys.pub.json`): not secret.
/// `keys` are (key id, base64 public key, state) of every key that is not retired.
pub fn write_public_keys(path: &Path, keys: &[(String, String, String)]) -> Result<()> {
    let doc: Vec<serde_json::Value> = keys
        .iter()
        .map(|(id, key, state)| {
            serde_json::json!({"key_id": id, "algorithm": "ed25519", "public_key": key, "state": state})
        })
        .collect();
    let doc = serde_json::Value::Array(doc);
    fs::write(path, format!("{doc:#}\n")).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// On a database without an admin token, creates one and writes it to
/// `DATA_DIR/admin.token` (mode 0600). Only its hash is stored.
pub async fn bootstrap_admin_token(store: &Store, data_dir: &Path) -> Result<()> {
    crate::users::retire_bootstrap(store, data_dir).await?;
    if store.count_tokens("admin").await? > 0 || store.list_users().await?.iter().any(|u| u.role == "admin") {
        return Ok(());
    }
    let token = format!("cbk_{}", URL_SAFE_NO_PAD.encode(random::<32>()?));
    let path = data_dir.join("admin.token");
    write_private(&path, format!("{token}\n").as_bytes())?;
    store
        .insert_token(
            &api::token_hash(&token),
            "admin",
            crate::users::BOOTSTRAP_LABEL,
            None,
            None,
            chrono::Utc::now(),
        )
        .await?;
    tracing::info!(path = %path.display(), "bootstrap admin token written; read it from the file");
    Ok(())
}

/// Creates an API token with `role` (and, for a station token, the stations it may write
/// for); returns the secret, which is shown once and stored only as a hash.
/// Creates an API key for a machine and returns it (shown once). `scopes` narrow what it
/// may do (`observations`, `bulletins`, `read`); none: its role's default (a station key
/// writes observations and reads; only a key given `bulletins` may post official bulletins).
pub async fn create_token(
    store: &Store,
    role: &str,
    label: &str,
    stations: &[String],
    scopes: &[String],
) -> Result<String> {
    for s in scopes {
        if api::auth::Scope::from_code(s).is_none() {
            bail!("scope {s:?} must be observations, bulletins or read");
        }
    }
    // Officers and approvers are people: they log in, so that the two-person rule knows
    // who they are. A key is for a machine (or the bootstrap admin).
    if !matches!(
        api::Role::from_code(role),
        Some(api::Role::Admin | api::Role::Station | api::Role::Viewer)
    ) {
        bail!("role {role:?} must be admin, station or viewer (people log in: canhbao users add)");
    }
    if label.trim().is_empty() {
        bail!("a token needs a label that says whose it is");
    }
    if label.starts_with("user:") {
        bail!("a key's label may not start with \"user:\": that names a person's login");
    }
    let token = format!("cbk_{}", URL_SAFE_NO_PAD.encode(random::<32>()?));
    let scope = (!stations.is_empty()).then_some(stations);
    let scopes = (!scopes.is_empty()).then_some(scopes);
    store
        .insert_token(
            &api::token_hash(&token),
            role,
            label,
            scope,
            scopes,
            chrono::Utc::now(),
        )
        .await?;
    tracing::info!(role, label, stations = stations.len(), "API token created");
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_is_private_and_loads_back_identically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/signing.key");
        let a = load_or_create_signing_key(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load_or_create_signing_key(&path).unwrap();
        assert_eq!(a.key_id(), b.key_id());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create_signing_key(&path).unwrap_err().to_string();
        assert!(err.contains("readable by other users"), "{err}");
    }
}
