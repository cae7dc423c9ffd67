//! `GET /api/v1/readings/flagged`: the readings quality control flagged (and the flagged
//! ones the next reading confirmed), newest first, for duty officers
//! (docs/rules.md, "Quality control").

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::AppState;
use crate::alerts::{ListQuery, limit};
use crate::auth::Caller;
use crate::error::{ApiError, Q};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FlaggedReadingDto {
    pub id: i64,
    /// When quality control decided.
    pub at: DateTime<Utc>,
    /// The series: `Actual`, `Exercise` or `Test`.
    pub status: String,
    pub station: String,
    pub parameter: String,
    pub observed_at: DateTime<Utc>,
    pub value: f64,
    /// `suspect-first`, `suspect-rate`, `suspect-spike`, `suspect-range`, `stuck`, or `ok`
    /// for a flagged reading confirmed later.
    pub quality: String,
    pub reason: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/readings/flagged", tag = "monitoring", security(("bearer" = [])), params(ListQuery), responses((status = 200, description = "Readings flagged by quality control, and flagged ones confirmed later, newest first", body = [FlaggedReadingDto])))]
pub async fn flagged(
    State(state): State<AppState>,
    _caller: Caller,
    Q(q): Q<ListQuery>,
) -> Result<Json<Vec<FlaggedReadingDto>>, ApiError> {
    let rows = state.store.quality_events(None, limit(&q)?).await?;
    Ok(Json(
        rows.into_iter()
            .map(|e| FlaggedReadingDto {
                id: e.id,
                at: e.at,
                status: e.status,
                station: e.station,
                parameter: e.parameter,
                observed_at: e.observed_at,
                value: e.value,
                quality: e.quality,
                reason: e.reason,
            })
            .collect(),
    ))
}
