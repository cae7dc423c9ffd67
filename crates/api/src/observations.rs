//! `POST /api/v1/observations`: a batch in canhbao's station formats (JSON: one
//! observation or an array; CSV), see `docs/station-formats.md`.
//!
//! Every row is checked before anything is stored: the batch is accepted or refused as a
//! whole, and a refusal lists every bad row with its field (`[2].value`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use desk::{DeskError, Source};
use domain::AlertStatus;
use serde::Serialize;

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, FieldError, require_media};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AcceptedDto {
    pub stored: usize,
    pub duplicates: usize,
    pub alerts: Vec<String>,
    /// Risk-level transitions the input caused (see `GET /api/v1/assessments`).
    pub transitions: usize,
    /// Readings that quality control flagged, with why: stored, but deciding no level
    /// until confirmed (docs/rules.md, "Quality control").
    pub flagged: Vec<String>,
    /// For a bulletin taken only as a pre-warning: why it is not authoritative (its
    /// channel, or its XML signature; docs/rules.md, "Official bulletins").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub untrusted: Option<String>,
}

impl From<desk::AcceptReport> for AcceptedDto {
    fn from(r: desk::AcceptReport) -> Self {
        Self {
            stored: r.stored,
            duplicates: r.duplicates,
            alerts: r.alerts.iter().map(ToString::to_string).collect(),
            transitions: r.transitions,
            flagged: r.flagged,
            untrusted: None,
        }
    }
}

/// Records a refused request where operators can see it (`GET /api/v1/rejections`).
pub(crate) async fn record_refusal(
    state: &AppState,
    caller: &Caller,
    e: &ApiError,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    if !e.status.is_client_error() {
        return Ok(());
    }
    let reason = match &e.field {
        Some(f) => format!("{} ({}): {}", e.status.as_u16(), domain::cut(f), e.detail),
        None => format!("{}: {}", e.status.as_u16(), e.detail),
    };
    let reason = domain::cut_to(&reason, domain::TEXT_CHARS);
    tracing::warn!(source = %caller.label, reason = %reason, "input refused");
    state
        .store
        .record_rejection("http", &format!("api:{}", caller.label), &reason, now)
        .await?;
    Ok(())
}

fn rows_error(status: StatusCode, errors: Vec<FieldError>) -> ApiError {
    let n = errors.len();
    let first = errors.first().cloned().unwrap_or(FieldError {
        field: "body".into(),
        detail: "invalid".into(),
    });
    let detail = if n > 1 {
        format!("{n} rows are refused; the first: {}", first.detail)
    } else {
        first.detail.clone()
    };
    let base = match status {
        StatusCode::FORBIDDEN => ApiError::forbidden(detail),
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::unprocessable(first.field.clone(), detail),
        _ => ApiError::bad_request(first.field.clone(), detail),
    };
    ApiError {
        field: Some(first.field),
        ..base
    }
    .with_errors(errors)
}

pub(crate) fn row_errors(errors: Vec<ingest::station::RowError>) -> Vec<FieldError> {
    errors
        .into_iter()
        .map(|e| FieldError {
            field: e.field,
            detail: e.detail,
        })
        .collect()
}

#[utoipa::path(post, path = "/api/v1/observations", tag = "ingest", security(("bearer" = [])), request_body(content = crate::openapi::ObservationBody, description = "One reading or an array (JSON), or CSV (text/csv)", content_type = "application/json"), responses((status = 200, description = "Stored, with the alerts it raised", body = AcceptedDto)))]
pub async fn post_observations(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<AcceptedDto>), ApiError> {
    caller.require(&[Role::Admin, Role::Station], "write observations")?;
    caller.require_scope(crate::auth::Scope::Observations)?;
    let now = Utc::now();
    let result = async {
        let csv = require_media(&headers, &["application/json", "text/csv"])? == 1;
        let rows = if csv {
            let text = std::str::from_utf8(&body)
                .map_err(|e| ApiError::bad_request("body", format!("the CSV body is not UTF-8: {e}")))?;
            ingest::station::csv_rows(text, now, state.max_batch)
        } else {
            ingest::station::json_rows(&body, now, state.max_batch)
        }
        .map_err(|errors| rows_error(StatusCode::BAD_REQUEST, row_errors(errors)))?;
        // Every row is checked, and every fault named: a malformed row, an unknown
        // station, a station that is not the caller's own (for a station token).
        let mut malformed = Vec::new();
        let mut unknown = Vec::new();
        let mut forbidden = Vec::new();
        let mut observations = Vec::with_capacity(rows.len());
        for (at, row) in rows {
            let o = match row {
                Ok(o) => o,
                Err(e) => {
                    malformed.push(FieldError {
                        field: e.field,
                        detail: e.detail,
                    });
                    continue;
                }
            };
            let station = o.station();
            let field = format!("{at}station");
            if state.pipeline.station(station).is_none() {
                unknown.push(FieldError {
                    field,
                    detail: format!("station {} is not configured", domain::quote(station.as_str())),
                });
            } else if let Some(own) = &caller.stations
                && !own.iter().any(|s| s == station.as_str())
            {
                forbidden.push(FieldError {
                    field,
                    detail: format!(
                        "this token may not write for station {}",
                        domain::quote(station.as_str())
                    ),
                });
            }
            observations.push(o);
        }
        // The status says the gravest fault; the list names every one, in that order.
        let by_gravity = |errors: Vec<Vec<FieldError>>| errors.into_iter().flatten().collect::<Vec<_>>();
        if !forbidden.is_empty() {
            return Err(rows_error(
                StatusCode::FORBIDDEN,
                by_gravity(vec![forbidden, malformed, unknown]),
            ));
        }
        if !malformed.is_empty() {
            return Err(rows_error(
                StatusCode::BAD_REQUEST,
                by_gravity(vec![malformed, unknown]),
            ));
        }
        if !unknown.is_empty() {
            return Err(rows_error(StatusCode::UNPROCESSABLE_ENTITY, unknown));
        }
        let source = Source {
            name: format!("api:{}", caller.label),
            alert_status: AlertStatus::Actual,
        };
        state
            .pipeline
            .accept(observations, &source, now)
            .await
            .map_err(|e| match e {
                DeskError::UnknownStation(s) => {
                    ApiError::unprocessable("station", format!("station {s:?} is not configured"))
                }
                other => other.into(),
            })
    }
    .await;
    match result {
        Ok(report) => Ok((StatusCode::OK, Json(AcceptedDto::from(report)))),
        Err(e) => {
            record_refusal(&state, &caller, &e, now).await?;
            Err(e)
        }
    }
}
