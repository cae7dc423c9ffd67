//! The HTTP API for operators and duty officers: an axum [`router`] with bearer-token
//! auth, JSON DTOs, and every error as `application/problem+json`.
//!
//! The API owns no process: the binary builds an [`AppState`], calls [`router`] and serves
//! it. Handlers convert DTOs to domain types by hand and call the store or the ingest
//! pipeline; they hold no business rules.

pub mod alerts;
pub mod assessments;
pub mod audit;
pub mod auth;
pub mod bulletins;
pub mod console;
pub mod contacts;
pub mod draft;
pub mod error;
pub mod events;
pub mod feeds;
pub mod fleet;
pub mod forecasts;
pub mod idempotency;
pub mod login;
pub mod matrix;
pub mod observations;
pub mod openapi;
pub mod preview;
pub mod prewarnings;
pub mod readings;
pub mod sms;
pub mod stations;
pub mod warnings;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::routing::{delete, get, post};
use serde::Serialize;
use store::Store;

pub use auth::{Role, token_hash};
pub use error::ApiError;

/// A public signing key, as served at `GET /api/v1/keys`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyDto {
    pub key_id: String,
    pub algorithm: &'static str,
    /// Base64 of the 32-byte Ed25519 public key.
    pub public_key: String,
    /// `active`: signs new alerts; `valid`: verifies (a key being rolled in, or one whose
    /// alerts may still be live). Retired keys are not listed.
    pub state: String,
}

/// Everything the handlers need.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub pipeline: desk::Pipeline,
    pub keys: Arc<Vec<KeyDto>>,
    /// Whether the MQTT broker connection is up.
    pub broker_ready: Arc<dyn Fn() -> bool + Send + Sync>,
    /// How CAP bulletins map to levels, and the province they may cover.
    pub bulletins: Arc<ingest::bulletin::BulletinSettings>,
    pub province: String,
    pub communes: Arc<Vec<domain::CommuneCode>>,
    /// Commune names by code, for CAP `<areaDesc>`.
    pub commune_names: Arc<std::collections::HashMap<String, String>>,
    /// Most observations accepted in one request.
    pub max_batch: usize,
    /// The SMS channel, when a gateway is configured.
    pub sms: Option<sms::SmsContext>,
    /// How SMS are worded and when officials get them (also when the channel is off, for
    /// previews).
    pub sms_settings: Arc<::sms::worker::SmsSettings>,
    /// Login rate limits, back-off and hashing permits (see [`login`]).
    pub login: Arc<login::LoginGuard>,
    /// What was refused or ignored without a row of its own, since start (`/metrics`).
    pub counters: Arc<Counters>,
    /// Live changes for `GET /api/v1/events` (fed by [`events::run_feed`]).
    pub events: events::Hub,
    /// A receiver's clock off by more than this is flagged.
    pub max_clock_offset: chrono::Duration,
    /// The last snapshot of `/metrics`' figures from the database.
    pub metrics: Arc<fleet::MetricsCache>,
    /// What the console's pages need beyond the API's state.
    pub console: Arc<console::ConsoleSettings>,
}

/// Largest request body accepted.
/// How old the figures `/metrics` reads from the database may be: at most one scrape in
/// this time reads them, whatever the number of scrapers.
pub const METRICS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(15);

pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// The body limit of a login or logout: a name and a password.
pub const LOGIN_BODY_BYTES: usize = 4 * 1024;
/// The body limit of a form: a warning, a cancel, a receiver, an SMS preview, a
/// delivery report. Only observation batches, bulletins and contact imports may be larger
/// (up to [`MAX_BODY_BYTES`]).
pub const FORM_BODY_BYTES: usize = 256 * 1024;

pub fn router(state: AppState) -> Router {
    // Every request that can send a warning needs an Idempotency-Key.
    let sends = |roles: &'static [Role]| {
        from_fn_with_state(
            idempotency::Sends {
                state: state.clone(),
                roles,
            },
            idempotency::require,
        )
    };
    let login_body = || DefaultBodyLimit::max(LOGIN_BODY_BYTES);
    let form_body = || DefaultBodyLimit::max(FORM_BODY_BYTES);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/keys", get(keys))
        .route("/api/v1/openapi.json", get(openapi::openapi_json))
        .route("/api/v1/login", post(login::login).layer(login_body()))
        .route("/api/v1/logout", post(login::logout).layer(login_body()))
        .route("/api/v1/observations", post(observations::post_observations))
        .route("/api/v1/alerts", get(alerts::list_alerts))
        .route("/api/v1/alerts/preview", post(preview::preview).layer(form_body()))
        .route("/api/v1/alerts/{id}", get(alerts::get_alert_or_cap))
        .route("/api/v1/alerts/{id}/deliveries", get(matrix::deliveries))
        .route(
            "/api/v1/alerts/{id}/cancel",
            post(alerts::cancel_alert)
                .route_layer(sends(&warnings::AUTHORS))
                .layer(form_body()),
        )
        .route(
            "/api/v1/alerts/{id}/release",
            post(alerts::release_alert).layer(form_body()),
        )
        .route(
            "/api/v1/warnings",
            get(warnings::list).post(warnings::create).layer(form_body()),
        )
        .route(
            "/api/v1/warnings/{id}",
            get(warnings::get).put(warnings::edit).layer(form_body()),
        )
        .route(
            "/api/v1/warnings/{id}/submit",
            post(warnings::submit)
                .route_layer(sends(&warnings::AUTHORS))
                .layer(form_body()),
        )
        .route(
            "/api/v1/warnings/{id}/approve",
            post(warnings::approve)
                .route_layer(sends(&warnings::APPROVERS))
                .layer(form_body()),
        )
        .route(
            "/api/v1/warnings/{id}/reject",
            post(warnings::reject).layer(form_body()),
        )
        .route(
            "/api/v1/warnings/{id}/discard",
            post(warnings::discard).layer(form_body()),
        )
        .route("/api/v1/notifications", get(warnings::notifications))
        .route("/api/v1/prewarnings", get(prewarnings::list))
        .route(
            "/api/v1/prewarnings/{id}/confirm",
            post(prewarnings::confirm)
                .route_layer(sends(&warnings::AUTHORS))
                .layer(form_body()),
        )
        .route(
            "/api/v1/prewarnings/{id}/dismiss",
            post(prewarnings::dismiss).layer(form_body()),
        )
        .route(
            "/api/v1/receivers",
            get(fleet::list_receivers)
                .post(fleet::register_receiver)
                .layer(form_body()),
        )
        .route("/api/v1/receivers/{id}", delete(fleet::remove_receiver))
        .route("/metrics", get(fleet::metrics))
        .route("/feeds/alerts.atom", get(feeds::alerts_atom))
        .route("/feeds/cap/{file}", get(feeds::cap))
        .route("/api/v1/rejections", get(alerts::list_rejections))
        .route("/api/v1/readings/flagged", get(readings::flagged))
        .route("/api/v1/stations/historic", get(stations::list))
        .route("/api/v1/coverage", get(stations::coverage))
        .route(
            "/api/v1/stations/{id}/historic",
            post(stations::confirm).layer(form_body()),
        )
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/audit/verify", get(audit::verify))
        .route("/api/v1/assessments", get(assessments::list_assessments))
        .route("/api/v1/bulletins", post(bulletins::post_bulletin))
        .route("/api/v1/sources", get(alerts::list_sources))
        .route("/api/v1/forecasts", get(forecasts::list_forecasts))
        .route("/api/v1/sms/preview", post(sms::preview).layer(form_body()))
        .route(
            "/api/v1/sms/dlr/{gateway}",
            get(sms::delivery_report)
                .post(sms::delivery_report)
                .layer(form_body()),
        )
        .route("/api/v1/contacts", get(contacts::list))
        .route("/api/v1/contacts/import", post(contacts::import))
        .merge(console::routes())
        .fallback(not_found)
        // Every request but the event stream (below) answers within REQUEST_TIMEOUT, and
        // its body arrives within BODY_TIMEOUT: a client that dribbles it is cut off.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(BODY_TIMEOUT))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(MAX_IN_FLIGHT))
        // The event stream lives as long as its client, so it holds no request permit;
        // `events` bounds how many are open.
        .route("/api/v1/events", get(events::events))
        // The largest bodies (observation batches, bulletins, contact imports); forms and
        // logins have smaller limits of their own, above.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(error::problem_for_plain))
        .layer(from_fn_with_state(state.clone(), record_too_large))
        // What every answer carries: no sniffing, no referrer, never framed, and a content
        // security policy that lets a page load only its own origin's scripts and styles.
        .layer(security_header(
            axum::http::header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ))
        .layer(security_header(axum::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(security_header(axum::http::header::REFERRER_POLICY, "no-referrer"))
        .layer(security_header(axum::http::header::X_FRAME_OPTIONS, "DENY"))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(|req: &axum::extract::Request| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", id = %id, method = %req.method(), path = %domain::cut(req.uri().path()))
            }),
        )
        .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id())
        .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(
            tower_http::request_id::MakeRequestUuid,
        ))
        .with_state(state)
}

/// Sets `name` on every answer that does not set it itself.
fn security_header(
    name: axum::http::HeaderName,
    value: &'static str,
) -> tower_http::set_header::SetResponseHeaderLayer<axum::http::HeaderValue> {
    tower_http::set_header::SetResponseHeaderLayer::if_not_present(
        name,
        axum::http::HeaderValue::from_static(value),
    )
}

/// Longest time a request (other than the event stream) may take to be answered.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Longest time a request's body may take to arrive.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
/// Requests handled at once; more wait for a turn (the connection count is bounded by
/// the server, `[http] max_connections`).
pub const MAX_IN_FLIGHT: usize = 256;

/// Refusals that anyone can cause by the thousand: every one counted (`/metrics`), at
/// most one a second recorded at `/api/v1/rejections` and logged, so that a flood of
/// them never becomes a flood of writes.
pub struct Sampled {
    count: std::sync::atomic::AtomicU64,
    last_second: std::sync::atomic::AtomicI64,
}

impl Sampled {
    pub const fn new() -> Self {
        Self {
            count: std::sync::atomic::AtomicU64::new(0),
            last_second: std::sync::atomic::AtomicI64::new(i64::MIN),
        }
    }

    /// Counts one at `now`; `Some(count so far)` if this one is to be recorded.
    pub fn hit(&self, now: chrono::DateTime<chrono::Utc>) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        (self.last_second.swap(now.timestamp(), Ordering::Relaxed) != now.timestamp()).then_some(n)
    }

    pub fn count(&self) -> u64 {
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Default for Sampled {
    fn default() -> Self {
        Self::new()
    }
}

/// What this service refused or ignored without writing a row for each, since start.
#[derive(Default)]
pub struct Counters {
    /// Bodies refused for their size.
    pub too_large: Sampled,
    /// SMS delivery reports refused (a wrong secret, a malformed report).
    pub dlr_refused: Sampled,
    /// Receipts and receiver messages the inbound task ignored.
    pub inbound: Arc<dispatch::inbound::InboundCounters>,
}

/// A body over the limit is refused before its handler runs: it is counted here, and
/// recorded at `/api/v1/rejections` (at most one record a second, so that a flood of
/// them does not write a flood of rows).
async fn record_too_large(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        let now = chrono::Utc::now();
        if let Some(n) = state.counters.too_large.hit(now) {
            let reason = format!("413: the body is over this route's limit ({n} such refusals since start)");
            tracing::warn!(path = %domain::cut(&path), "{reason}");
            if let Err(e) = state
                .store
                .record_rejection("http", &format!("api:{path}"), &reason, now)
                .await
            {
                tracing::error!(error = %e, "recording a 413 refusal failed");
            }
        }
    }
    resp
}

#[derive(Serialize, utoipa::ToSchema)]
struct Health {
    status: &'static str,
}

#[utoipa::path(get, path = "/healthz", tag = "public", responses((status = 200, description = "The process is up", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize, utoipa::ToSchema)]
struct Ready {
    database: &'static str,
    broker: &'static str,
}

/// How long `/readyz` waits for the database: a probe gets its answer in time even while
/// the database does not answer (a query waits longer for a pooled connection).
const READY_DATABASE_WITHIN: std::time::Duration = std::time::Duration::from_millis(2000);

#[utoipa::path(get, path = "/readyz", tag = "public", responses((status = 200, description = "Database and broker reachable", body = Ready), (status = 503, description = "One of them is not", body = Ready)))]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Ready>) {
    let database = match tokio::time::timeout(READY_DATABASE_WITHIN, state.store.ping()).await {
        Ok(Ok(())) => "ok",
        Ok(Err(e)) if e.is_locked() => {
            tracing::warn!(error = %e, "readiness: database locked");
            "locked"
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database unreachable");
            "unreachable"
        }
        Err(_) => {
            tracing::warn!(
                within_ms = READY_DATABASE_WITHIN.as_millis(),
                "readiness: database unreachable: no answer in time"
            );
            "unreachable"
        }
    };
    let broker = if (state.broker_ready)() {
        "ok"
    } else {
        "unreachable"
    };
    let code = if database == "ok" && broker == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(Ready { database, broker }))
}

#[utoipa::path(get, path = "/api/v1/keys", tag = "public", responses((status = 200, description = "Public keys that verify alert signatures", body = [KeyDto])))]
async fn keys(State(state): State<AppState>) -> Json<Vec<KeyDto>> {
    Json(state.keys.as_ref().clone())
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}
