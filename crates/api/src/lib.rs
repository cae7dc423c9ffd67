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
    pub pipeline: ingest::Pipeline,
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
    pub sms_settings: Arc<dispatch::sms_worker::SmsSettings>,
    /// Login rate limits, back-off and hashing permits (see [`login`]).
    pub login: Arc<login::LoginGuard>,
    /// Live changes for `GET /api/v1/events` (fed by [`events::run_feed`]).
    pub events: events::Hub,
    /// A receiver's clock off by more than this is flagged.
    pub max_clock_offset: chrono::Duration,
}

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

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
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/keys", get(keys))
        .route("/api/v1/openapi.json", get(openapi::openapi_json))
        .route("/api/v1/login", post(login::login))
        .route("/api/v1/logout", post(login::logout))
        .route("/api/v1/observations", post(observations::post_observations))
        .route("/api/v1/alerts", get(alerts::list_alerts))
        .route("/api/v1/alerts/preview", post(preview::preview))
        .route("/api/v1/alerts/{id}", get(alerts::get_alert_or_cap))
        .route("/api/v1/alerts/{id}/deliveries", get(matrix::deliveries))
        .route(
            "/api/v1/alerts/{id}/cancel",
            post(alerts::cancel_alert).route_layer(sends(&warnings::AUTHORS)),
        )
        .route("/api/v1/alerts/{id}/release", post(alerts::release_alert))
        .route("/api/v1/warnings", get(warnings::list).post(warnings::create))
        .route("/api/v1/warnings/{id}", get(warnings::get).put(warnings::edit))
        .route(
            "/api/v1/warnings/{id}/submit",
            post(warnings::submit).route_layer(sends(&warnings::AUTHORS)),
        )
        .route(
            "/api/v1/warnings/{id}/approve",
            post(warnings::approve).route_layer(sends(&warnings::APPROVERS)),
        )
        .route("/api/v1/warnings/{id}/reject", post(warnings::reject))
        .route("/api/v1/warnings/{id}/discard", post(warnings::discard))
        .route("/api/v1/notifications", get(warnings::notifications))
        .route("/api/v1/events", get(events::events))
        .route("/api/v1/prewarnings", get(prewarnings::list))
        .route(
            "/api/v1/prewarnings/{id}/confirm",
            post(prewarnings::confirm).route_layer(sends(&warnings::AUTHORS)),
        )
        .route("/api/v1/prewarnings/{id}/dismiss", post(prewarnings::dismiss))
        .route(
            "/api/v1/receivers",
            get(fleet::list_receivers).post(fleet::register_receiver),
        )
        .route("/api/v1/receivers/{id}", delete(fleet::remove_receiver))
        .route("/metrics", get(fleet::metrics))
        .route("/feeds/alerts.atom", get(feeds::alerts_atom))
        .route("/feeds/cap/{file}", get(feeds::cap))
        .route("/api/v1/rejections", get(alerts::list_rejections))
        .route("/api/v1/readings/flagged", get(readings::flagged))
        .route("/api/v1/stations/historic", get(stations::list))
        .route("/api/v1/coverage", get(stations::coverage))
        .route("/api/v1/stations/{id}/historic", post(stations::confirm))
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/audit/verify", get(audit::verify))
        .route("/api/v1/assessments", get(assessments::list_assessments))
        .route("/api/v1/bulletins", post(bulletins::post_bulletin))
        .route("/api/v1/sources", get(alerts::list_sources))
        .route("/api/v1/forecasts", get(forecasts::list_forecasts))
        .route("/api/v1/sms/preview", post(sms::preview))
        .route(
            "/api/v1/sms/dlr/{gateway}",
            get(sms::delivery_report).post(sms::delivery_report),
        )
        .route("/api/v1/contacts", get(contacts::list))
        .route("/api/v1/contacts/import", post(contacts::import))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(error::problem_for_plain))
        .with_state(state)
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
