//! People's logins: argon2id password hashes, `POST /api/v1/login` (an opaque bearer token
//! with an expiry, stored hashed), `POST /api/v1/logout`, a lockout after repeated
//! failures, and a rate limit on login attempts as a whole.

use std::sync::{Arc, Mutex, OnceLock};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::AppState;
use crate::auth::{Caller, token_hash};
use crate::error::{ApiError, require_media};

/// Failed logins in a row that lock an account.
pub const MAX_FAILURES: i64 = 5;
/// How long a locked account stays locked.
pub const LOCKED_FOR: Duration = Duration::minutes(15);
/// How long a login's token lives: one duty shift.
pub const TOKEN_TTL: Duration = Duration::hours(12);
/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Why a password cannot be used or checked.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("a password needs at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    #[error("no system randomness: {0}")]
    Random(String),
    #[error("the password could not be hashed: {0}")]
    Hash(String),
}

/// The argon2id hash (PHC string) of `password`, with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| PasswordError::Random(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches `hash`; a hash that cannot be read matches nothing.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A random password of 24 URL-safe characters, to be shown once.
pub fn generate_password() -> Result<String, PasswordError> {
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes).map_err(|e| PasswordError::Random(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether a failed login, the `failures`-th in a row, locks the account, and until when.
pub fn lock_after(failures: i64, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    (failures >= MAX_FAILURES).then(|| now + LOCKED_FOR)
}

/// A hash to check unknown usernames against, so that a wrong name takes as long as a
/// wrong password and says nothing about which names exist.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy-password-never-matches").unwrap_or_default())
}

/// Login attempts accepted as a whole: 10 a second, 20 at once.
pub fn login_limiter() -> Arc<Mutex<dispatch::sms_gateway::TokenBucket>> {
    let ten = std::num::NonZeroU32::MIN.saturating_add(9);
    Arc::new(Mutex::new(dispatch::sms_gateway::TokenBucket::new(
        ten,
        ten.saturating_add(10),
    )))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoginDto {
    pub token: String,
    pub token_type: &'static str,
    pub role: String,
    pub expires: DateTime<Utc>,
}

/// `{"username": "...", "password": "..."}`: a bearer token for the user's role, valid
/// for [`TOKEN_TTL`]. A wrong name and a wrong password get the same answer.
#[utoipa::path(post, path = "/api/v1/login", tag = "public", request_body(content = crate::openapi::LoginBody, content_type = "application/json"), responses((status = 200, description = "A bearer token for one duty shift", body = LoginDto), (status = 429, description = "Locked out or rate limited", body = crate::openapi::Problem, content_type = "application/problem+json")))]
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<LoginDto>, ApiError> {
    require_media(&headers, &["application/json"])?;
    let wait = state
        .login_limiter
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .reserve(std::time::Instant::now());
    if !wait.is_zero() {
        return Err(ApiError::too_many(
            "too many login attempts; try again in a few seconds",
        ));
    }
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("body", format!("not valid JSON: {e}")))?;
    let field = |name: &str| {
        v.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .map(str::to_owned)
            .ok_or_else(|| ApiError::bad_request(name, format!("{name} is required (at most 256 bytes)")))
    };
    let (username, password) = (field("username")?, field("password")?);
    let now = Utc::now();
    let user = state.store.user_by_name(&username).await?;
    let hash = user
        .as_ref()
        .map_or_else(|| decoy_hash().to_owned(), |u| u.password_hash.clone());
    let checked = password.clone();
    let matches = tokio::task::spawn_blocking(move || verify_password(&hash, &checked))
        .await
        .map_err(ApiError::internal)?;
    let refused = || ApiError::unauthorized("wrong username or password");
    let Some(user) = user else {
        return Err(refused());
    };
    if user.disabled.is_some() {
        return Err(refused());
    }
    if let Some(until) = user.locked_until.filter(|t| *t > now) {
        return Err(ApiError::too_many(format!(
            "the account is locked after {MAX_FAILURES} failed logins until {until}"
        )));
    }
    if !matches {
        let failures = user.failed_logins + 1;
        let lock = lock_after(failures, now);
        state.store.login_failed(user.id, lock).await?;
        tracing::warn!(username = %user.username, failures, "login failed");
        crate::audit::record(
            &state,
            &user.username,
            if lock.is_some() {
                "login.locked"
            } else {
                "login.failed"
            },
            &user.username,
            serde_json::json!({"failures": failures}),
        )
        .await;
        return Err(refused());
    }
    let token = format!("cbu_{}", generate_password().map_err(ApiError::internal)?);
    let expires = now + TOKEN_TTL;
    state
        .store
        .login_succeeded(&user, &token_hash(&token), expires, now)
        .await?;
    tracing::info!(username = %user.username, role = %user.role, "login");
    crate::audit::record(
        &state,
        &user.username,
        "login",
        &user.username,
        serde_json::json!({"role": user.role, "expires": expires}),
    )
    .await;
    Ok(Json(LoginDto {
        token,
        token_type: "Bearer",
        role: user.role,
        expires,
    }))
}

/// Revokes the token the request carries.
#[utoipa::path(post, path = "/api/v1/logout", tag = "public", security(("bearer" = [])), responses((status = 204, description = "The token is revoked")))]
pub async fn logout(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let _ = caller;
    let secret = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    state.store.revoke_token(&token_hash(secret), Utc::now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify_only_themselves() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
        assert!(verify_password(&hash, "correct horse battery"));
        assert!(!verify_password(&hash, "correct horse batterY"));
        assert!(!verify_password("not a hash", "correct horse battery"));
        assert_ne!(hash, hash_password("correct horse battery").unwrap(), "salted");
        assert!(matches!(hash_password("short"), Err(PasswordError::TooShort)));
        assert_eq!(generate_password().unwrap().len(), 24);
    }

    #[test]
    fn the_fifth_failure_in_a_row_locks_for_a_quarter_hour() {
        let now: DateTime<Utc> = "2026-10-09T02:00:00Z".parse().unwrap();
        assert_eq!(lock_after(4, now), None);
        assert_eq!(lock_after(5, now), Some(now + Duration::minutes(15)));
    }
}
