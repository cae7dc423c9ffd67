//! People's logins: argon2id password hashes, `POST /api/v1/login` (an opaque bearer token
//! with an expiry, stored hashed), `POST /api/v1/logout`, and what holds off password
//! guessing without letting anyone lock an officer out:
//!
//! - a rate limit per client address and one per account name (`governor`, keyed), each
//!   refusing with `Retry-After` before any password is checked, so that a refused
//!   attempt costs nobody else anything;
//! - a back-off per (name as typed, client address), counted in the database in one
//!   transaction per failure: from [`LoginLimits::free_failures`] failures on, that name
//!   is refused from that address for a time that doubles up to
//!   [`LoginLimits::max_hold_off_s`]. The same name from another address is not held
//!   off, and an unknown name is held off exactly like a known one;
//! - password hashing at a bounded concurrency ([`LoginLimits::hashing`]), so that a
//!   flood of logins cannot take the service's memory (argon2id uses 19 MiB a hash).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::AppState;
use crate::auth::{Caller, token_hash};
use crate::error::{ApiError, require_media};

/// How long a login's token lives: one duty shift.
pub const TOKEN_TTL: Duration = Duration::hours(12);
/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// The login limits (`[login]` in the configuration).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LoginLimits {
    /// Login attempts per minute from one client address, and how many may come at once.
    pub per_address_per_minute: NonZeroU32,
    pub per_address_burst: NonZeroU32,
    /// Login attempts per minute for one account name, from all addresses together.
    pub per_account_per_minute: NonZeroU32,
    pub per_account_burst: NonZeroU32,
    /// Failed logins for a name from an address before that address is held off.
    pub free_failures: u32,
    /// The first hold-off, doubled with each further failure, up to the longest.
    pub first_hold_off_s: NonZeroU32,
    pub max_hold_off_s: NonZeroU32,
    /// A failure older than this is forgotten: the count starts again.
    pub forget_after_s: NonZeroU32,
    /// Passwords checked at once; the others wait up to `hashing_wait_s`, then are refused.
    pub hashing: NonZeroU32,
    pub hashing_wait_s: NonZeroU32,
    /// Reverse proxies in front of the service: a request from one of them is counted
    /// for the client its `X-Forwarded-For` names (the last address not itself a proxy).
    #[serde(default)]
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for LoginLimits {
    fn default() -> Self {
        let n = |v: u32| NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN);
        Self {
            per_address_per_minute: n(30),
            per_address_burst: n(30),
            per_account_per_minute: n(120),
            per_account_burst: n(60),
            free_failures: 5,
            first_hold_off_s: n(60),
            max_hold_off_s: n(900),
            forget_after_s: n(3600),
            hashing: n(2),
            hashing_wait_s: n(10),
            trusted_proxies: Vec::new(),
        }
    }
}

impl LoginLimits {
    /// Until when the `failures`-th failure in a row holds the name off from its address:
    /// nothing for the free failures, then the first hold-off, doubled each time, capped.
    pub fn hold_off(&self, failures: i64, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let over = failures - i64::from(self.free_failures);
        if over < 0 {
            return None;
        }
        let first = i64::from(self.first_hold_off_s.get());
        let secs = first
            .checked_shl(u32::try_from(over.min(32)).unwrap_or(32))
            .unwrap_or(i64::MAX)
            .min(i64::from(self.max_hold_off_s.get()));
        Some(now + Duration::seconds(secs))
    }
}

/// The login guard: rate limits by address and by account, and the password checkers.
pub struct LoginGuard {
    limits: LoginLimits,
    by_address: DefaultKeyedRateLimiter<IpAddr>,
    by_account: DefaultKeyedRateLimiter<String>,
    hashing: tokio::sync::Semaphore,
    checkers: std::sync::Mutex<std::sync::mpsc::Sender<Check>>,
    clock: DefaultClock,
}

/// A password to check against a hash, and where the answer goes.
struct Check {
    hash: String,
    /// Wiped from memory when dropped (`secrecy`).
    password: secrecy::SecretString,
    answer: tokio::sync::oneshot::Sender<bool>,
}

/// `n` long-lived threads that check passwords. Not the runtime's blocking pool: each of
/// its threads would keep the 19 MiB of its last hash in its own allocator arena, and it
/// grows to hundreds of threads under a flood; these few threads reuse theirs.
fn start_checkers(n: u32) -> std::sync::mpsc::Sender<Check> {
    let (tx, rx) = std::sync::mpsc::channel::<Check>();
    let rx = Arc::new(std::sync::Mutex::new(rx));
    for i in 0..n {
        let rx = rx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("password-check-{i}"))
            .spawn(move || {
                // The thread's argon2 memory, allocated once and reused for every check.
                let mut memory = Vec::new();
                loop {
                    let next = rx
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .recv();
                    let Ok(check) = next else { return };
                    let matches = verify_in(
                        &mut memory,
                        &check.hash,
                        secrecy::ExposeSecret::expose_secret(&check.password),
                    );
                    let _ = check.answer.send(matches);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "a password-check thread could not start");
        }
    }
    tx
}

/// Keys a limiter forgets only when it holds this many (each is a few dozen bytes).
const MAX_KEYS: usize = 100_000;

impl LoginGuard {
    pub fn new(limits: LoginLimits) -> Arc<Self> {
        let quota =
            |per_minute: NonZeroU32, burst: NonZeroU32| Quota::per_minute(per_minute).allow_burst(burst);
        Arc::new(Self {
            by_address: DefaultKeyedRateLimiter::keyed(quota(
                limits.per_address_per_minute,
                limits.per_address_burst,
            )),
            by_account: DefaultKeyedRateLimiter::keyed(quota(
                limits.per_account_per_minute,
                limits.per_account_burst,
            )),
            hashing: tokio::sync::Semaphore::new(limits.hashing.get() as usize),
            checkers: std::sync::Mutex::new(start_checkers(limits.hashing.get())),
            clock: DefaultClock::default(),
            limits,
        })
    }

    pub fn limits(&self) -> &LoginLimits {
        &self.limits
    }

    /// `Err(wait)` if `key` is over its rate; a refusal takes nothing from anyone.
    fn check<K: Clone + std::hash::Hash + Eq>(
        &self,
        limiter: &DefaultKeyedRateLimiter<K>,
        key: &K,
    ) -> Result<(), std::time::Duration> {
        if limiter.len() > MAX_KEYS {
            limiter.retain_recent();
        }
        limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

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

/// Whether `password` matches `hash`; a hash that cannot be read matches nothing. (The
/// password checkers call [`verify_in`] with the memory they keep.)
pub fn verify_password(hash: &str, password: &str) -> bool {
    verify_in(&mut Vec::new(), hash, password)
}

/// The most argon2 memory a stored hash may ask for (canhbao's own use 19 MiB).
const MAX_HASH_KIB: u32 = 256 * 1024;

/// As [`verify_password`], with the argon2 working memory in `memory` (grown as the hash
/// asks, never shrunk): a thread that checks passwords allocates it once.
fn verify_in(memory: &mut Vec<argon2::Block>, hash: &str, password: &str) -> bool {
    let mut check = || -> Option<bool> {
        let parsed = PasswordHash::new(hash).ok()?;
        let algorithm = argon2::Algorithm::try_from(parsed.algorithm).ok()?;
        let version = match parsed.version {
            Some(v) => argon2::Version::try_from(v).ok()?,
            None => argon2::Version::default(),
        };
        let params = argon2::Params::try_from(&parsed).ok()?;
        if params.m_cost() > MAX_HASH_KIB {
            return None;
        }
        let expected = parsed.hash?;
        let mut salt = [0u8; 64];
        let salt = parsed.salt?.decode_b64(&mut salt).ok()?;
        let blocks = params.block_count();
        if memory.len() < blocks {
            memory.resize(blocks, argon2::Block::default());
        }
        let mut out = vec![0u8; expected.len()];
        Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..blocks])
            .ok()?;
        // `Output`'s comparison takes the same time wherever the bytes differ.
        Some(argon2::password_hash::Output::new(&out).ok()? == expected)
    };
    check().unwrap_or(false)
}

/// A random password of 24 URL-safe characters, to be shown once.
pub fn generate_password() -> Result<String, PasswordError> {
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes).map_err(|e| PasswordError::Random(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// A hash to check unknown usernames against, so that a wrong name takes as long as a
/// wrong password and says nothing about which names exist.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy-password-never-matches").unwrap_or_default())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoginDto {
    pub token: String,
    pub token_type: &'static str,
    pub role: String,
    pub expires: DateTime<Utc>,
}

/// The client's address: the connection's peer, or, when the peer is one of
/// `trusted_proxies`, the last address of `X-Forwarded-For` that is not a trusted proxy
/// (what a client writes itself into the header, to the left, is never believed).
pub fn client_address(parts: &axum::http::request::Parts, trusted_proxies: &[IpAddr]) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())?;
    if !trusted_proxies.contains(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|a| !trusted_proxies.contains(a))
            .unwrap_or(peer),
    )
}

/// `{"username": "...", "password": "..."}`: a bearer token for the user's role, valid
/// for [`TOKEN_TTL`]. A wrong name and a wrong password get the same answer, and so do a
/// name held off and an unknown name held off (429 with `Retry-After`).
#[utoipa::path(post, path = "/api/v1/login", tag = "public", request_body(content = crate::openapi::LoginBody, content_type = "application/json"), responses((status = 200, description = "A bearer token for one duty shift", body = LoginDto), (status = 401, description = "Wrong username or password", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "Too many attempts from this address or for this name; Retry-After says when to try again", body = crate::openapi::Problem, content_type = "application/problem+json")))]
pub async fn login(
    State(state): State<AppState>,
    parts: axum::http::request::Parts,
    body: Bytes,
) -> Result<Json<LoginDto>, ApiError> {
    let headers: &HeaderMap = &parts.headers;
    require_media(headers, &["application/json"])?;
    let address = admit_address(&state, &parts)?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("body", format!("not valid JSON: {e}")))?;
    let field = |name: &str| {
        v.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .map(str::to_owned)
            .ok_or_else(|| ApiError::bad_request(name, format!("{name} is required (at most 256 bytes)")))
    };
    let (username, password) = (
        field("username")?,
        secrecy::SecretString::from(field("password")?),
    );
    Ok(Json(authenticate(&state, address, &username, password).await?))
}

/// The client's address for a login, refused at once (before any password is read) when
/// that address tries too often.
pub(crate) fn admit_address(
    state: &AppState,
    parts: &axum::http::request::Parts,
) -> Result<IpAddr, ApiError> {
    let guard = &state.login;
    let Some(address) = client_address(parts, &guard.limits.trusted_proxies) else {
        return Err(ApiError::internal(
            "the login route is served without the client's address",
        ));
    };
    guard
        .check(&guard.by_address, &address)
        .map_err(|wait| ApiError::too_many("too many login attempts from this address").retry_after(wait))?;
    Ok(address)
}

/// Checks `username` and `password` from `address` under every limit the login has (the
/// back-off per name and address, the per-name rate, the hashing permits), records the
/// outcome, and on success makes a token for one duty shift. The JSON login and the
/// console's form login both come here.
pub(crate) async fn authenticate(
    state: &AppState,
    address: IpAddr,
    username: &str,
    password: secrecy::SecretString,
) -> Result<LoginDto, ApiError> {
    let guard = state.login.clone();
    let username = username.to_owned();

    let now = Utc::now();
    let from = address.to_string();
    let held_off = || ApiError::too_many("too many failed logins for this name from this address");
    if let Some(until) = state
        .store
        .login_blocked_until(&username, &from)
        .await?
        .filter(|t| *t > now)
    {
        let wait = (until - now).to_std().unwrap_or_default();
        return Err(held_off().retry_after(wait));
    }
    guard
        .check(&guard.by_account, &username)
        .map_err(|wait| ApiError::too_many("too many login attempts for this name").retry_after(wait))?;
    let user = state.store.user_by_name(&username).await?;
    let hash = user
        .as_ref()
        .map_or_else(|| decoy_hash().to_owned(), |u| u.password_hash.clone());
    let matches = {
        let wait = std::time::Duration::from_secs(u64::from(guard.limits.hashing_wait_s.get()));
        let busy =
            || ApiError::too_many("the service is checking many logins; try again shortly").retry_after(wait);
        let _permit = tokio::time::timeout(wait, guard.hashing.acquire())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        let (answer, checked) = tokio::sync::oneshot::channel();
        guard
            .checkers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(Check {
                hash,
                password: password.clone(),
                answer,
            })
            .map_err(|_| ApiError::internal("the password checkers have stopped"))?;
        checked
            .await
            .map_err(|_| ApiError::internal("a password checker stopped mid-check"))?
    };
    let refused = || ApiError::unauthorized("wrong username or password");
    let known = user.as_ref().filter(|u| u.disabled.is_none());
    let Some(user) = known.filter(|_| matches) else {
        let limits = guard.limits.clone();
        let forget = now - Duration::seconds(i64::from(limits.forget_after_s.get()));
        let failures = state
            .store
            .login_failed(&username, &from, user.as_ref().map(|u| u.id), now, forget, |n| {
                limits.hold_off(n, now)
            })
            .await?;
        tracing::warn!(username = %crate::error::cut(&username), address = %from, failures, "login failed");
        if let Some(u) = &user {
            crate::audit::record(
                state,
                &u.username,
                if limits.hold_off(failures, now).is_some() {
                    "login.held-off"
                } else {
                    "login.failed"
                },
                &u.username,
                serde_json::json!({"failures": failures, "address": from}),
            )
            .await;
        }
        return Err(refused());
    };
    let token = format!("cbu_{}", generate_password().map_err(ApiError::internal)?);
    let expires = now + TOKEN_TTL;
    state
        .store
        .login_succeeded(user, &from, &token_hash(&token), expires, now)
        .await?;
    tracing::info!(username = %user.username, role = %user.role, address = %from, "login");
    crate::audit::record(
        state,
        &user.username,
        "login",
        &user.username,
        serde_json::json!({"role": user.role, "expires": expires, "address": from}),
    )
    .await;
    Ok(LoginDto {
        token,
        token_type: "Bearer",
        role: user.role.clone(),
        expires,
    })
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
        // The checkers' path, with memory reused across checks, agrees.
        let mut memory = Vec::new();
        assert!(verify_in(&mut memory, &hash, "correct horse battery"));
        assert!(!verify_in(&mut memory, &hash, "correct horse batterY"));
        assert!(verify_in(&mut memory, &hash, "correct horse battery"));
        assert!(!verify_in(&mut memory, "not a hash", "correct horse battery"));
        assert_eq!(memory.len(), 19 * 1024, "19 MiB of 1 KiB blocks, allocated once");
    }

    #[test]
    fn behind_a_trusted_proxy_the_client_is_the_last_address_it_adds() {
        let parts = |peer: &str, forwarded: &[&str]| {
            let mut b = axum::http::Request::builder();
            for f in forwarded {
                b = b.header("x-forwarded-for", *f);
            }
            let (mut parts, ()) = b.body(()).unwrap().into_parts();
            parts
                .extensions
                .insert(ConnectInfo(peer.parse::<std::net::SocketAddr>().unwrap()));
            parts
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let proxy = [ip("127.0.0.1")];
        // Straight from a client: the header is its own words, not believed.
        assert_eq!(
            client_address(&parts("203.0.113.9:5000", &["198.51.100.1"]), &proxy),
            Some(ip("203.0.113.9"))
        );
        // Through the proxy: what the proxy appended, not what the client wrote before it.
        assert_eq!(
            client_address(&parts("127.0.0.1:5000", &["10.9.9.9, 203.0.113.9"]), &proxy),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            client_address(&parts("127.0.0.1:5000", &[]), &proxy),
            Some(ip("127.0.0.1"))
        );
        assert_eq!(
            client_address(&parts("127.0.0.1:5000", &["203.0.113.9"]), &[]),
            Some(ip("127.0.0.1"))
        );
    }

    #[test]
    fn the_hold_off_starts_after_the_free_failures_and_doubles_to_its_cap() {
        let now: DateTime<Utc> = "2026-10-09T02:00:00Z".parse().unwrap();
        let l = LoginLimits::default();
        assert_eq!(l.hold_off(4, now), None);
        assert_eq!(l.hold_off(5, now), Some(now + Duration::seconds(60)));
        assert_eq!(l.hold_off(6, now), Some(now + Duration::seconds(120)));
        assert_eq!(l.hold_off(8, now), Some(now + Duration::seconds(480)));
        assert_eq!(l.hold_off(9, now), Some(now + Duration::seconds(900)));
        assert_eq!(l.hold_off(10_000, now), Some(now + Duration::seconds(900)));
    }
}
