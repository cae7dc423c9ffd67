//! The rules' coverage of the communes (`GET /api/v1/coverage`: which communes each
//! hazard's rules can reach from the configuration, and what is missing elsewhere), and
//! stations' historic flood levels: `GET /api/v1/stations/historic` (what is in force,
//! what was confirmed and which readings went above it) and `POST
//! /api/v1/stations/{id}/historic` (an administrator confirms a reading as the new
//! historic flood, audited; docs/rules.md, "A missing figure never lowers a level").

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use desk::historic::HistoricError;
use serde::Serialize;

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::warnings::{json_body, reason};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConfirmedHistoricDto {
    pub value_m: f64,
    pub observed_at: DateTime<Utc>,
    pub confirmed_by: String,
    pub confirmed_at: DateTime<Utc>,
    pub reason: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CandidateDto {
    pub value_m: f64,
    pub observed_at: DateTime<Utc>,
    pub noticed_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StationHistoricDto {
    pub station: String,
    pub name: String,
    /// The historic flood level the rules use now: the confirmed one, or the area file's.
    pub in_force_m: Option<f64>,
    /// The area file's, with its provenance tag.
    pub configured_m: Option<f64>,
    pub configured_tag: Option<String>,
    pub confirmed: Option<ConfirmedHistoricDto>,
    /// The highest reading above the level in force that officers were told of, if it is
    /// not yet confirmed.
    pub candidate: Option<CandidateDto>,
}

#[utoipa::path(get, path = "/api/v1/stations/historic", tag = "monitoring", security(("bearer" = [])), responses((status = 200, description = "Each station's historic flood level: in force, configured, confirmed, and a reading above it awaiting confirmation", body = [StationHistoricDto])))]
pub async fn list(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<Vec<StationHistoricDto>>, ApiError> {
    let confirmed = state.store.historic_levels().await?;
    let candidates = state.store.historic_candidates().await?;
    let mut out: Vec<StationHistoricDto> = state
        .pipeline
        .stations()
        .map(|s| {
            let in_force = desk::historic::in_force(s, &confirmed);
            let c = confirmed.iter().find(|h| h.station == s.id.as_str());
            StationHistoricDto {
                station: s.id.to_string(),
                name: s.name.clone(),
                in_force_m: in_force,
                configured_m: s.historic_m.map(|h| h.value),
                configured_tag: s.historic_m.map(|h| h.tag.as_str().to_owned()),
                confirmed: c.map(|h| ConfirmedHistoricDto {
                    value_m: h.value_m,
                    observed_at: h.observed_at,
                    confirmed_by: h.confirmed_by.clone(),
                    confirmed_at: h.confirmed_at,
                    reason: h.reason.clone(),
                }),
                candidate: candidates
                    .iter()
                    .find(|k| k.station == s.id.as_str() && in_force.is_some_and(|h| k.value_m > h))
                    .map(|k| CandidateDto {
                        value_m: k.value_m,
                        observed_at: k.observed_at,
                        noticed_at: k.noticed_at,
                    }),
            }
        })
        .collect();
    out.sort_by(|a, b| a.station.cmp(&b.station));
    Ok(Json(out))
}

/// The body of a confirmation.
#[derive(utoipa::ToSchema)]
pub struct ConfirmHistoricBody {
    /// When the reading to confirm was observed (a stored `ok` Actual water level).
    #[allow(dead_code)]
    observed_at: DateTime<Utc>,
    /// How the reading was checked.
    #[allow(dead_code)]
    reason: String,
}

#[utoipa::path(post, path = "/api/v1/stations/{id}/historic", tag = "admin", security(("bearer" = [])), params(("id" = String, Path, description = "The station id")), request_body(content = ConfirmHistoricBody, content_type = "application/json"), responses((status = 201, description = "Confirmed: the rules use it from their next evaluation", body = ConfirmedHistoricDto), (status = 404, description = "No such station"), (status = 422, description = "No such reading, not above the historic flood, no historic level known, or no reason")))]
pub async fn confirm(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<ConfirmedHistoricDto>), ApiError> {
    caller.require(&[Role::Admin], "confirm a historic flood level")?;
    let v = json_body(&headers, &body)?;
    let why = reason(&v, "reason", true)?.unwrap_or_default();
    let observed_at = v
        .get("observed_at")
        .and_then(|t| t.as_str())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| ApiError::unprocessable("observed_at", "observed_at must be an RFC 3339 time"))?;
    let h = state
        .pipeline
        .confirm_historic(&id, observed_at, &why, &caller.label, Utc::now())
        .await
        .map_err(|e| match e {
            HistoricError::UnknownStation(_) => ApiError::not_found(e.to_string()),
            HistoricError::NoReason => ApiError::unprocessable("reason", e.to_string()),
            HistoricError::NoReading { .. } | HistoricError::NotAbove { .. } => {
                ApiError::unprocessable("observed_at", e.to_string())
            }
            HistoricError::NoHistoric(_) => ApiError::unprocessable("id", e.to_string()),
            HistoricError::Store(e) => e.into(),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(ConfirmedHistoricDto {
            value_m: h.value_m,
            observed_at: h.observed_at,
            confirmed_by: h.confirmed_by,
            confirmed_at: h.confirmed_at,
            reason: h.reason,
        }),
    ))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CoverDto {
    pub commune: String,
    pub hazard: String,
    /// Whether some rule can give it a computed level; if not, only bulletins can.
    pub covered: bool,
    /// The rules that can (`id@version`).
    pub rules: Vec<String>,
    /// The stations whose readings they read.
    pub stations: Vec<String>,
    /// What is missing where no rule can: a station mapped to the commune, a station's
    /// area class, the commune's susceptibility class or an exposure.
    pub missing: Vec<String>,
}

#[utoipa::path(get, path = "/api/v1/coverage", tag = "monitoring", security(("bearer" = [])), responses((status = 200, description = "Per commune and hazard, whether the rules can give a computed level, and what is missing where they cannot", body = [CoverDto])))]
pub async fn coverage(State(state): State<AppState>, _caller: Caller) -> Json<Vec<CoverDto>> {
    Json(
        state
            .pipeline
            .coverage(&state.communes)
            .into_iter()
            .map(|c| CoverDto {
                commune: c.commune.to_string(),
                hazard: c.hazard.code().to_owned(),
                covered: c.covered(),
                rules: c.rules,
                stations: c.stations,
                missing: c.missing,
            })
            .collect(),
    )
}
