//! `canhbao users add|list|disable|reset-password`: the people who log in. A password is
//! generated and shown once unless one is given on standard input; only its argon2id hash
//! is stored. Adding the first admin retires the bootstrap admin token.

use anyhow::{Result, bail};
use api::Role;
use api::login::{generate_password, hash_password};
use chrono::Utc;
use store::Store;

/// The label of the token written at first start (`DATA_DIR/admin.token`).
pub const BOOTSTRAP_LABEL: &str = "bootstrap-admin";

/// A username: 3 to 64 of `a-z 0-9 . _ -`, starting with a letter.
fn valid_username(name: &str) -> bool {
    (3..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
}

/// Adds a user with `role` and returns the password to hand over (the given one, or a
/// generated one). An admin retires the bootstrap token at once.
pub async fn add(
    store: &Store,
    data_dir: &std::path::Path,
    username: &str,
    role: &str,
    password: Option<String>,
) -> Result<String> {
    if !valid_username(username) {
        bail!("username {username:?} must be 3 to 64 of a-z 0-9 . _ -, starting with a letter");
    }
    let Some(role) = Role::from_code(role).filter(|r| Role::PEOPLE.contains(r)) else {
        bail!("role {role:?} must be one of viewer, officer, approver, admin");
    };
    let (password, hash) = hashed(password).await?;
    if !store
        .create_user(username, role.code(), &hash, Utc::now())
        .await?
    {
        bail!("a user {username:?} already exists");
    }
    store
        .append_audit(
            "cli",
            "user.add",
            username,
            &serde_json::json!({"role": role.code()}),
            Utc::now(),
        )
        .await?;
    if role == Role::Admin {
        retire_bootstrap(store, data_dir).await?;
    }
    Ok(password)
}

/// The password to hand over (the given one, or a generated one) and its argon2id hash,
/// computed off the async threads.
async fn hashed(password: Option<String>) -> Result<(String, String)> {
    let password = match password {
        Some(p) => p,
        None => generate_password()?,
    };
    let hash = tokio::task::spawn_blocking({
        let password = password.clone();
        move || hash_password(&password)
    })
    .await??;
    Ok((password, hash))
}

/// Revokes the bootstrap admin token once an enabled admin user exists, and removes its
/// file. Returns whether it was retired now.
pub async fn retire_bootstrap(store: &Store, data_dir: &std::path::Path) -> Result<bool> {
    let retired = store.retire_bootstrap_token(BOOTSTRAP_LABEL, Utc::now()).await? > 0;
    if retired {
        let _ = std::fs::remove_file(data_dir.join("admin.token"));
        tracing::info!("an admin user exists: the bootstrap admin token is retired");
    }
    Ok(retired)
}

/// Sets a new password (given or generated) and returns it; the user's tokens are revoked
/// and a lockout lifted.
pub async fn reset_password(store: &Store, username: &str, password: Option<String>) -> Result<String> {
    let (password, hash) = hashed(password).await?;
    if !store.set_password(username, &hash, Utc::now()).await? {
        bail!("no user {username:?}");
    }
    store
        .append_audit(
            "cli",
            "user.reset_password",
            username,
            &serde_json::json!({}),
            Utc::now(),
        )
        .await?;
    Ok(password)
}

/// Disables a user and revokes their tokens.
pub async fn disable(store: &Store, username: &str) -> Result<()> {
    if !store.disable_user(username, Utc::now()).await? {
        bail!("no user {username:?}");
    }
    store
        .append_audit(
            "cli",
            "user.disable",
            username,
            &serde_json::json!({}),
            Utc::now(),
        )
        .await?;
    Ok(())
}

/// One line a user, for `users list`.
pub async fn list(store: &Store) -> Result<Vec<String>> {
    Ok(store
        .list_users()
        .await?
        .into_iter()
        .map(|u| {
            let state = if u.disabled.is_some() {
                "disabled"
            } else {
                "active"
            };
            let last = u
                .last_login
                .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339());
            format!("{:<24} {:<9} {:<30} last login {last}", u.username, u.role, state)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_plain_lowercase_names() {
        for ok in ["nguyen.an", "truc-ban_2", "abc"] {
            assert!(valid_username(ok), "{ok}");
        }
        for bad in ["ab", "Nguyen", "1abc", "an an", "nguyễn", "a;drop"] {
            assert!(!valid_username(bad), "{bad}");
        }
    }
}
