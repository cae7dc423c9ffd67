//! The receiver registry and fleet health: `GET /api/v1/receivers` (every registered
//! receiver, online, offline or stale, and coverage per commune), `POST /api/v1/receivers`
//! and `DELETE /api/v1/receivers/{id}` (admins), and `GET /metrics` (Prometheus text).
//! Also each receiver's broker password: [`new_broker_password`] makes one and its
//! Mosquitto hash ([`mosquitto_hash`]), which `canhbao mosquitto-config` writes to
//! Mosquitto's password file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use secrecy::ExposeSecret as _;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha512;

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, require_media};

/// A receiver whose last word is older than this is stale, whatever its last status said
/// (heartbeats come every 30 s by default: this is several missed in a row).
pub const STALE_AFTER: Duration = store::ONLINE_WITHIN;

/// A receiver's health from its last retained status and when it was last heard from.
pub fn health(online: Option<bool>, last_seen: Option<DateTime<Utc>>, now: DateTime<Utc>) -> &'static str {
    match (online, last_seen) {
        (_, None) | (None, _) => "never_seen",
        (Some(false), _) => "offline",
        (Some(true), Some(t)) if now - t > STALE_AFTER => "stale",
        (Some(true), Some(_)) => "online",
    }
}

/// Whether a receiver's clock, by its last heartbeat, is off by more than `max`.
pub fn clock_off(offset_ms: Option<i64>, max: Duration) -> bool {
    offset_ms.is_some_and(|o| o.unsigned_abs() > max.num_milliseconds().unsigned_abs())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FleetReceiverDto {
    pub receiver_id: String,
    pub commune: String,
    /// `online`, `offline` (its last will or a clean stop), `stale` (silent too long) or
    /// `never_seen`.
    pub health: &'static str,
    pub last_seen: Option<DateTime<Utc>>,
    pub last_receipt: Option<DateTime<Utc>>,
    pub firmware: Option<String>,
    pub trusted_keys: Vec<String>,
    pub registered: DateTime<Utc>,
    /// Enrolled for drills (Exercise and Test alerts are expected of it).
    pub drills: bool,
    /// The last heartbeat as received.
    pub last_heartbeat: Option<Value>,
    /// Its clock against the service's at its last heartbeat, in seconds (positive:
    /// ahead).
    pub clock_offset_s: Option<f64>,
    /// Its clock is off by more than `[fleet] max_clock_offset_s`.
    pub clock_off: bool,
}

#[derive(Debug, Serialize, Default, utoipa::ToSchema)]
pub struct CoverageDto {
    pub commune: String,
    pub registered: usize,
    pub online: usize,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FleetDto {
    pub receivers: Vec<FleetReceiverDto>,
    /// Per commune with a registered receiver: how many are online.
    pub coverage: Vec<CoverageDto>,
    /// Messages ignored because their receiver is not registered.
    pub unregistered_messages: i64,
}

async fn fleet(state: &AppState) -> Result<FleetDto, ApiError> {
    let now = Utc::now();
    let mut receivers = Vec::new();
    let mut coverage: BTreeMap<String, CoverageDto> = BTreeMap::new();
    for f in state.store.fleet().await? {
        let health = health(f.online, f.last_seen, now);
        let c = coverage
            .entry(f.receiver.commune.clone())
            .or_insert_with(|| CoverageDto {
                commune: f.receiver.commune.clone(),
                ..Default::default()
            });
        c.registered += 1;
        c.online += usize::from(health == "online");
        receivers.push(FleetReceiverDto {
            receiver_id: f.receiver.receiver_id,
            commune: f.receiver.commune,
            health,
            last_seen: f.last_seen,
            last_receipt: f.last_receipt,
            drills: f.receiver.drills,
            firmware: f.receiver.firmware,
            trusted_keys: f.receiver.trusted_keys,
            registered: f.receiver.registered,
            last_heartbeat: f.last_heartbeat.and_then(|h| serde_json::from_str(&h).ok()),
            clock_offset_s: f.clock_offset_ms.map(|o| o as f64 / 1000.0),
            clock_off: clock_off(f.clock_offset_ms, state.max_clock_offset),
        });
    }
    Ok(FleetDto {
        receivers,
        coverage: coverage.into_values().collect(),
        unregistered_messages: state.store.unregistered_messages().await?,
    })
}

#[utoipa::path(get, path = "/api/v1/receivers", tag = "monitoring", security(("bearer" = [])), responses((status = 200, description = "The receiver fleet and per-commune coverage", body = FleetDto)))]
pub async fn list_receivers(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<FleetDto>, ApiError> {
    Ok(Json(fleet(&state).await?))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RegisteredDto {
    pub receiver_id: String,
    pub commune: String,
    pub trusted_keys: Vec<String>,
    pub firmware: Option<String>,
    /// The receiver's broker password (its username is its id), in this response only:
    /// the registry keeps its Mosquitto hash.
    pub mqtt_password: String,
}

impl std::fmt::Debug for RegisteredDto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisteredDto")
            .field("receiver_id", &self.receiver_id)
            .field("commune", &self.commune)
            .field("trusted_keys", &self.trusted_keys)
            .field("firmware", &self.firmware)
            .field("mqtt_password", &"<redacted>")
            .finish()
    }
}

fn string_list(v: Option<&Value>, field: &str) -> Result<Vec<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::bad_request(field, format!("{field} must be a list of strings")))
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request(
            field,
            format!("{field} must be a list of strings"),
        )),
    }
}

/// Registers a receiver: `{"receiver_id", "commune", "trusted_keys"?, "firmware"?,
/// "drills"?}` (`drills`: enrolled for Exercise and Test alerts, default false). The
/// 201 body carries its new broker password (`mqtt_password`), which is never shown again.
#[utoipa::path(post, path = "/api/v1/receivers", tag = "admin", security(("bearer" = [])), request_body(content = crate::openapi::ReceiverBody, content_type = "application/json"), responses((status = 201, description = "Registered; the broker password is shown once", body = RegisteredDto)))]
pub async fn register_receiver(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(&[Role::Admin], "register receivers")?;
    require_media(&headers, &["application/json"])?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("body", format!("not valid JSON: {e}")))?;
    let text = |field: &str| -> Result<String, ApiError> {
        v.get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ApiError::bad_request(field, format!("{field} is required and must be a string")))
    };
    let id = domain::ReceiverId::new(&text("receiver_id")?)
        .map_err(|e| ApiError::bad_request("receiver_id", e.to_string()))?;
    let commune = domain::CommuneCode::new(&text("commune")?)
        .map_err(|e| ApiError::bad_request("commune", e.to_string()))?;
    if !state.communes.contains(&commune) {
        return Err(ApiError::unprocessable(
            "commune",
            format!(
                "commune {commune} is not a commune of province {}",
                state.province
            ),
        ));
    }
    let trusted_keys = string_list(v.get("trusted_keys"), "trusted_keys")?;
    let firmware = v.get("firmware").and_then(Value::as_str).map(str::to_owned);
    let drills = match v.get("drills") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_request("drills", "drills must be true or false")),
    };
    let credentials = new_broker_password()
        .map_err(|e| ApiError::internal(format!("no system randomness for a password: {e}")))?;
    let record = store::RegisteredReceiver {
        receiver_id: id.to_string(),
        commune: commune.to_string(),
        password_hash: Some(credentials.hash),
        trusted_keys: trusted_keys.clone(),
        firmware: firmware.clone(),
        registered: Utc::now(),
        drills,
    };
    if !state.store.register_receiver(&record).await? {
        return Err(ApiError::conflict(format!("receiver {id} is already registered")));
    }
    tracing::info!(receiver = %id, commune = %commune, by = %caller.label, "receiver registered");
    crate::audit::record(
        &state,
        &caller.label,
        "receiver.register",
        &record.receiver_id,
        serde_json::json!({"commune": record.commune, "drills": record.drills}),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        // The body holds a password: no cache may keep it.
        [(header::CACHE_CONTROL, "no-store")],
        Json(RegisteredDto {
            receiver_id: record.receiver_id,
            commune: record.commune,
            trusted_keys,
            firmware,
            mqtt_password: credentials.password.expose_secret().to_owned(),
        }),
    ))
}

// ---- broker passwords ----

/// PBKDF2 iterations of a Mosquitto 2.0 hash: `PW_DEFAULT_ITERATIONS` (101) of its
/// `password_mosq.h`, what `mosquitto_passwd` writes by default.
pub const MOSQUITTO_ITERATIONS: u32 = 101;

/// Salt bytes of a Mosquitto 2.0 hash (`SALT_LEN` of `mosquitto_passwd.c`).
pub const MOSQUITTO_SALT_LEN: usize = 12;

/// Characters in a generated broker password: 24 of 62 letters and digits, about 143 bits.
pub const BROKER_PASSWORD_LEN: usize = 24;

const PASSWORD_ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A new broker password and its Mosquitto hash. `Debug` does not show the password.
#[derive(Debug)]
pub struct BrokerPassword {
    /// Shown once to whoever registered the receiver; never stored or logged.
    pub password: secrecy::SecretString,
    /// `$7$101$<salt>$<hash>`, for the registry and Mosquitto's password file.
    pub hash: String,
}

/// Draws a password from the operating system's CSPRNG (letters and digits, without
/// modulo bias) and hashes it with a fresh salt.
pub fn new_broker_password() -> Result<BrokerPassword, getrandom::Error> {
    let mut password = String::with_capacity(BROKER_PASSWORD_LEN);
    while password.len() < BROKER_PASSWORD_LEN {
        let mut buf = [0u8; 32];
        getrandom::fill(&mut buf)?;
        // 248 = 4 * 62: dropping bytes from 248 up keeps every character equally likely.
        for b in buf.into_iter().filter(|b| *b < 248) {
            if password.len() < BROKER_PASSWORD_LEN {
                password.push(char::from(PASSWORD_ALPHABET[usize::from(b % 62)]));
            }
        }
    }
    let mut salt = [0u8; MOSQUITTO_SALT_LEN];
    getrandom::fill(&mut salt)?;
    let hash = mosquitto_hash(&password, &salt, MOSQUITTO_ITERATIONS);
    Ok(BrokerPassword {
        password: password.into(),
        hash,
    })
}

/// The password hash as Mosquitto 2.0's `mosquitto_passwd` writes it after `user:`:
/// `$7$<iterations>$<salt>$<hash>`, where 7 means PBKDF2-HMAC-SHA512, and salt and hash
/// (64 bytes) are standard base64 with padding.
pub fn mosquitto_hash(password: &str, salt: &[u8], iterations: u32) -> String {
    let derived = pbkdf2_hmac_sha512(password.as_bytes(), salt, iterations);
    format!("$7${iterations}${}${}", B64.encode(salt), B64.encode(derived))
}

/// Whether `s` has the form [`mosquitto_hash`] writes, so that it can go into a password
/// file as it is (no `:` or line break can hide in it).
pub fn is_mosquitto_hash(s: &str) -> bool {
    let parts: Vec<&str> = s.split('$').collect();
    match parts.as_slice() {
        ["", "7", iterations, salt, hash] => {
            iterations.parse::<u32>().is_ok_and(|n| n > 0)
                && B64.decode(salt).is_ok_and(|s| !s.is_empty())
                && B64.decode(hash).is_ok_and(|h| h.len() == 64)
        }
        _ => false,
    }
}

/// PBKDF2-HMAC-SHA512 (the `pbkdf2` crate), one 64-byte block: what OpenSSL's
/// `PKCS5_PBKDF2_HMAC(.., EVP_sha512(), 64, ..)` gives Mosquitto. `iterations` 0 counts as 1.
fn pbkdf2_hmac_sha512(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 64] {
    let mut out = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations.max(1), &mut out);
    out
}

/// Whether `password` matches a Mosquitto `$7$` hash, compared in constant time.
pub fn verify_mosquitto_hash(password: &str, hash: &str) -> bool {
    use subtle::ConstantTimeEq;
    let parts: Vec<&str> = hash.split('$').collect();
    let ["", "7", iterations, salt, expected] = parts.as_slice() else {
        return false;
    };
    let (Ok(iterations), Ok(salt), Ok(expected)) =
        (iterations.parse::<u32>(), B64.decode(salt), B64.decode(expected))
    else {
        return false;
    };
    // A hash asking for more work than Mosquitto's own ever would is not checked.
    if iterations == 0 || iterations > 1_000_000 || expected.len() != 64 {
        return false;
    }
    pbkdf2_hmac_sha512(password.as_bytes(), &salt, iterations)
        .ct_eq(expected.as_slice())
        .into()
}

#[utoipa::path(delete, path = "/api/v1/receivers/{id}", tag = "admin", security(("bearer" = [])), params(("id" = String, Path, description = "Its id")), responses((status = 204, description = "Removed")))]
pub async fn remove_receiver(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(&[Role::Admin], "remove receivers")?;
    if state.store.remove_receiver(&id, Utc::now()).await? {
        tracing::info!(receiver = %id, by = %caller.label, "receiver removed from the registry");
        crate::audit::record(
            &state,
            &caller.label,
            "receiver.remove",
            &id,
            serde_json::json!({}),
        )
        .await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no registered receiver {id:?}")))
    }
}

/// Fleet health as Prometheus text, for any token (a scraper uses a viewer key): it tells
/// which communes' loudspeakers are offline, which is not for everyone to read.
///
/// What comes from the tables is a snapshot taken at most once per
/// [`crate::METRICS_MAX_AGE`], by one scrape while the others wait for it: a flood of
/// scrapes costs the database nothing more. The counters kept in memory are always current.
#[utoipa::path(get, path = "/metrics", tag = "monitoring", security(("bearer" = [])), responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>, _caller: Caller) -> Result<impl IntoResponse, ApiError> {
    let snapshot = {
        let mut cached = state.metrics.snapshot.lock().await;
        match cached.as_ref() {
            Some(s) if s.taken.elapsed() < crate::METRICS_MAX_AGE => s.clone(),
            _ => {
                let fresh = Arc::new(snapshot(&state).await?);
                state
                    .metrics
                    .refreshes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                *cached = Some(fresh.clone());
                fresh
            }
        }
    };
    let mut out = snapshot.text.clone();
    let counters = [
        (
            "canhbao_unregistered_messages_total",
            "Messages ignored from unregistered receivers.",
            snapshot.unregistered_messages.max(0) as u64 + state.counters.inbound.unregistered_unlisted(),
        ),
        (
            "canhbao_too_large_total",
            "Request bodies refused for their size since start (413).",
            state.counters.too_large.count(),
        ),
        (
            "canhbao_sms_dlr_refused_total",
            "SMS delivery reports refused since start (wrong secret, malformed).",
            state.counters.dlr_refused.count(),
        ),
        (
            "canhbao_unsent_receipts_total",
            "Receipts ignored since start: their alert was never sent to their receiver's commune.",
            state.counters.inbound.unsent_receipts(),
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
    }
    let _ = writeln!(
        out,
        "# HELP canhbao_metrics_age_seconds How old the figures read from the database are.\n# TYPE canhbao_metrics_age_seconds gauge\ncanhbao_metrics_age_seconds {:.3}",
        snapshot.taken.elapsed().as_secs_f64()
    );
    let _ = writeln!(
        out,
        "# HELP canhbao_metrics_snapshots_total Snapshots of the database's figures taken since start.\n# TYPE canhbao_metrics_snapshots_total counter\ncanhbao_metrics_snapshots_total {}",
        state.metrics.refreshes.load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}

/// The figures of `/metrics` read from the database, and when.
#[derive(Debug)]
pub struct MetricsSnapshot {
    text: String,
    unregistered_messages: i64,
    taken: std::time::Instant,
}

/// The last snapshot, shared by every scrape.
#[derive(Debug, Default)]
pub struct MetricsCache {
    snapshot: tokio::sync::Mutex<Option<Arc<MetricsSnapshot>>>,
    refreshes: std::sync::atomic::AtomicU64,
}

async fn snapshot(state: &AppState) -> Result<MetricsSnapshot, ApiError> {
    let f = fleet(state).await?;
    let mut out = String::new();
    let by = |h: &str| f.receivers.iter().filter(|r| r.health == h).count();
    let _ = writeln!(out, "# HELP canhbao_receivers Registered receivers by health.");
    let _ = writeln!(out, "# TYPE canhbao_receivers gauge");
    for h in ["online", "offline", "stale", "never_seen"] {
        let _ = writeln!(out, "canhbao_receivers{{health=\"{h}\"}} {}", by(h));
    }
    let _ = writeln!(
        out,
        "# HELP canhbao_receivers_clock_off Registered receivers whose clock is off by more than [fleet] max_clock_offset_s."
    );
    let _ = writeln!(out, "# TYPE canhbao_receivers_clock_off gauge");
    let _ = writeln!(
        out,
        "canhbao_receivers_clock_off {}",
        f.receivers.iter().filter(|r| r.clock_off).count()
    );
    let _ = writeln!(
        out,
        "# HELP canhbao_commune_receivers_registered Registered receivers per commune."
    );
    let _ = writeln!(out, "# TYPE canhbao_commune_receivers_registered gauge");
    for c in &f.coverage {
        let _ = writeln!(
            out,
            "canhbao_commune_receivers_registered{{commune=\"{}\"}} {}",
            c.commune, c.registered
        );
    }
    let _ = writeln!(
        out,
        "# HELP canhbao_commune_receivers_online Online receivers per commune."
    );
    let _ = writeln!(out, "# TYPE canhbao_commune_receivers_online gauge");
    for c in &f.coverage {
        let _ = writeln!(
            out,
            "canhbao_commune_receivers_online{{commune=\"{}\"}} {}",
            c.commune, c.online
        );
    }
    let _ = writeln!(
        out,
        "# HELP canhbao_sms SMS messages by state (queued, sending, submitted, delivered, failed, unconfirmed, unreported, ...)."
    );
    let _ = writeln!(out, "# TYPE canhbao_sms gauge");
    for (sms_state, n) in state.store.sms_states().await? {
        let _ = writeln!(out, "canhbao_sms{{state=\"{sms_state}\"}} {n}");
    }
    let now = Utc::now();
    let _ = writeln!(
        out,
        "# HELP canhbao_alerts Alerts by CAP status and state (scheduled, live, expired, updated, cancelled)."
    );
    let _ = writeln!(out, "# TYPE canhbao_alerts gauge");
    for (status, alert_state, n) in state.store.alert_states(now).await? {
        let _ = writeln!(
            out,
            "canhbao_alerts{{status=\"{status}\",state=\"{alert_state}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP canhbao_deliveries Deliveries by channel (topic: a commune's MQTT topic; receiver: one loudspeaker; sms: one SMS) and state."
    );
    let _ = writeln!(out, "# TYPE canhbao_deliveries gauge");
    for (channel, d_state, n) in state.store.delivery_states().await? {
        let _ = writeln!(
            out,
            "canhbao_deliveries{{channel=\"{channel}\",state=\"{d_state}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP canhbao_receipt_latency_seconds From an alert's sent time to a receiver's received or played receipt."
    );
    let _ = writeln!(out, "# TYPE canhbao_receipt_latency_seconds histogram");
    for (step, h) in state.store.receipt_latency().await? {
        for (le, n) in store::LATENCY_BUCKETS_S.iter().zip(&h.buckets) {
            let _ = writeln!(
                out,
                "canhbao_receipt_latency_seconds_bucket{{step=\"{step}\",le=\"{le}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "canhbao_receipt_latency_seconds_bucket{{step=\"{step}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            out,
            "canhbao_receipt_latency_seconds_sum{{step=\"{step}\"}} {}",
            h.sum_s
        );
        let _ = writeln!(
            out,
            "canhbao_receipt_latency_seconds_count{{step=\"{step}\"}} {}",
            h.count
        );
    }
    let _ = writeln!(
        out,
        "# HELP canhbao_readings Stored readings by quality flag (docs/rules.md, \"Quality control\")."
    );
    let _ = writeln!(out, "# TYPE canhbao_readings gauge");
    for (quality, n) in state.store.readings_by_quality().await? {
        let _ = writeln!(out, "canhbao_readings{{quality=\"{quality}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP canhbao_station_flagged Whether a station's newest real water level is flagged by quality control (1) or not (0)."
    );
    let _ = writeln!(out, "# TYPE canhbao_station_flagged gauge");
    for (station, quality) in state.store.latest_flags("water_level", "Actual").await? {
        let _ = writeln!(
            out,
            "canhbao_station_flagged{{station=\"{station}\",quality=\"{quality}\"}} {}",
            u8::from(quality != "ok")
        );
    }
    let sources = state.store.list_sources().await?;
    let _ = writeln!(
        out,
        "# HELP canhbao_source_consecutive_failures Failed polls of a feed since its last success."
    );
    let _ = writeln!(out, "# TYPE canhbao_source_consecutive_failures gauge");
    for s in &sources {
        let _ = writeln!(
            out,
            "canhbao_source_consecutive_failures{{source=\"{}\"}} {}",
            s.id, s.consecutive_failures
        );
    }
    let _ = writeln!(
        out,
        "# HELP canhbao_source_values_total Values of a feed accepted or refused."
    );
    let _ = writeln!(out, "# TYPE canhbao_source_values_total counter");
    for s in &sources {
        let _ = writeln!(
            out,
            "canhbao_source_values_total{{source=\"{}\",outcome=\"accepted\"}} {}",
            s.id, s.accepted
        );
        let _ = writeln!(
            out,
            "canhbao_source_values_total{{source=\"{}\",outcome=\"rejected\"}} {}",
            s.id, s.rejected
        );
    }
    let _ = writeln!(
        out,
        "# HELP canhbao_source_last_success_timestamp_seconds When a feed was last polled successfully (0: never)."
    );
    let _ = writeln!(out, "# TYPE canhbao_source_last_success_timestamp_seconds gauge");
    for s in &sources {
        let _ = writeln!(
            out,
            "canhbao_source_last_success_timestamp_seconds{{source=\"{}\"}} {}",
            s.id,
            s.last_success.map_or(0, |t| t.timestamp())
        );
    }
    let pending = state.store.count_warnings("pending").await?;
    let _ = writeln!(
        out,
        "# HELP canhbao_warnings_pending Duty officers' warnings waiting for a second person."
    );
    let _ = writeln!(out, "# TYPE canhbao_warnings_pending gauge");
    let _ = writeln!(out, "canhbao_warnings_pending {pending}");
    Ok(MetricsSnapshot {
        text: out,
        unregistered_messages: f.unregistered_messages,
        taken: std::time::Instant::now(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_status_and_silence() {
        let now: DateTime<Utc> = "2026-10-09T02:00:00Z".parse().unwrap();
        let ago = |m: i64| Some(now - Duration::minutes(m));
        assert_eq!(health(Some(true), ago(1), now), "online");
        assert_eq!(health(Some(true), ago(4), now), "stale");
        assert_eq!(health(Some(false), ago(1), now), "offline");
        assert_eq!(health(None, None, now), "never_seen");
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn pbkdf2_hmac_sha512_matches_known_vectors() {
        // (password, salt, iterations, derived key): the first two are the widely published
        // PBKDF2-HMAC-SHA512 vectors; the long passwords (a hashed HMAC key, and one of
        // exactly a block) were computed with Python's hashlib.pbkdf2_hmac.
        let long = "p".repeat(200);
        let block = "p".repeat(128);
        let cases: [(&str, &str, u32, &str); 4] = [
            (
                "password",
                "salt",
                1,
                "867f70cf1ade02cff3752599a3a53dc4af34c7a669815ae5d513554e1c8cf252c02d470a285a0501bad999bfe943c08f050235d7d68b1da55e63f73b60a57fce",
            ),
            (
                "password",
                "salt",
                2,
                "e1d9c16aa681708a45f5c7c4e215ceb66e011a2e9f0040713f18aefdb866d53cf76cab2868a39b9f7840edce4fef5a82be67335c77a6068e04112754f27ccf4e",
            ),
            (
                &long,
                "salt",
                3,
                "0499d2f52a54272883fc04786c49cbfe54771bb53aa16a2f8d3fdad6a6ef15fad0133b49b8e08dc4bbd208c754356edd34d0e5e2516c4975f9150c616cc96d35",
            ),
            (
                &block,
                "salt",
                3,
                "ae9967296ba9f3ff05582b4a78e59c1bb1bf135aa82f6959b03fd5e61f8deb71a6e31aba4a51d857897ca861e5be3a715fca5cb05d0fb3d99254e5effa168e47",
            ),
        ];
        for (password, salt, n, expected) in cases {
            assert_eq!(
                hex(&pbkdf2_hmac_sha512(password.as_bytes(), salt.as_bytes(), n)),
                expected,
                "{n}"
            );
        }
    }

    #[test]
    fn hashes_match_what_mosquitto_passwd_wrote() {
        // `mosquitto_passwd -b -c FILE alice secret` of Mosquitto 2.0.11 wrote this line.
        let line = "alice:$7$101$FFmFHortPeD0FXbU$gep5UZ8RU7JNuYXau2718A159O77K3HfYd9IiMjQ3grnykkaBABGyN7RMZH6V5wDvtt9vnFDt0pDMdBad2vHuA==";
        let (_, hash) = line.split_once(':').unwrap();
        let salt = B64.decode("FFmFHortPeD0FXbU").unwrap();
        assert_eq!(salt.len(), MOSQUITTO_SALT_LEN);
        assert_eq!(mosquitto_hash("secret", &salt, MOSQUITTO_ITERATIONS), hash);
        assert!(is_mosquitto_hash(hash));
        assert!(verify_mosquitto_hash("secret", hash));
        assert!(!verify_mosquitto_hash("Secret", hash));
        // `mosquitto_passwd -b FILE loa-06385-01 Lang-Son-2026-pw`, Mosquitto 2.0.11.
        let hash = "$7$101$REconi8HaSZsH+LW$GZI03NwmH2EaqwyzouP+EIlzncf0tmNaA3t6Xm/UiczMjIaX+xF8Zza+I6mrmlb22q03U9gsPvkbZaaWDFEeww==";
        assert!(verify_mosquitto_hash("Lang-Son-2026-pw", hash));
        assert!(!verify_mosquitto_hash("Lang-Son-2026-pW", hash));
        assert!(!verify_mosquitto_hash(
            "Lang-Son-2026-pw",
            &hash.replace("$101$", "$0$")
        ));
    }

    #[test]
    fn new_broker_passwords_are_random_letters_and_digits_with_their_hash() {
        let a = new_broker_password().unwrap();
        let b = new_broker_password().unwrap();
        assert_ne!(a.password.expose_secret(), b.password.expose_secret());
        for p in [&a, &b] {
            let password = p.password.expose_secret();
            assert_eq!(password.len(), BROKER_PASSWORD_LEN);
            assert!(password.bytes().all(|c| c.is_ascii_alphanumeric()), "{password}");
            assert!(is_mosquitto_hash(&p.hash), "{}", p.hash);
            assert!(p.hash.starts_with("$7$101$"));
            let salt = B64.decode(p.hash.split('$').nth(3).unwrap()).unwrap();
            assert_eq!(mosquitto_hash(password, &salt, MOSQUITTO_ITERATIONS), p.hash);
            assert!(!format!("{p:?}").contains(password));
        }
    }

    #[test]
    fn only_well_formed_hashes_pass() {
        for bad in [
            "",
            "secret",
            "$6$FFmFHortPeD0FXbU$gep5UZ8RU7JNuYXau2718A159O77K3HfYd9IiMjQ3grnykkaBABGyN7RMZH6V5wDvtt9vnFDt0pDMdBad2vHuA==",
            "$7$0$FFmFHortPeD0FXbU$gep5UZ8RU7JNuYXau2718A159O77K3HfYd9IiMjQ3grnykkaBABGyN7RMZH6V5wDvtt9vnFDt0pDMdBad2vHuA==",
            "$7$101$FFmFHortPeD0FXbU$gep5UZ8RU7JNuYXau2718A159O77K3HfYd9IiMjQ3grnykkaBABGyN7RMZH6V5wDvtt9vnFDt0pDMdBad2vHuA==\nmallory:x",
            "$7$101$FFmF:ortPeD0FXbU$gep5UZ8RU7JNuYXau2718A159O77K3HfYd9IiMjQ3grnykkaBABGyN7RMZH6V5wDvtt9vnFDt0pDMdBad2vHuA==",
            "$7$101$FFmFHortPeD0FXbU$c2hvcnQ=",
        ] {
            assert!(!is_mosquitto_hash(bad), "{bad}");
        }
    }
}
