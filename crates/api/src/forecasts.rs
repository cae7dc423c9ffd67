//! `GET /api/v1/forecasts`: the forecast values the rules read as the hours ahead (from
//! Open-Meteo and other forecast feeds), newest issue per hour, soonest first.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, Q};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ForecastQuery {
    pub station: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ForecastDto {
    pub station: String,
    pub parameter: String,
    pub unit: &'static str,
    pub valid_at: DateTime<Utc>,
    pub value: f64,
    pub issued_at: DateTime<Utc>,
    pub source: String,
}

#[utoipa::path(get, path = "/api/v1/forecasts", tag = "monitoring", security(("bearer" = [])), params(ForecastQuery), responses((status = 200, description = "Forecast values", body = [ForecastDto])))]
pub async fn list_forecasts(
    State(state): State<AppState>,
    _caller: Caller,
    Q(q): Q<ForecastQuery>,
) -> Result<Json<Vec<ForecastDto>>, ApiError> {
    let limit = match q.limit {
        None => 500,
        Some(n) if (1..=5000).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::bad_request(
                "limit",
                format!("limit {n} must be between 1 and 5000"),
            ));
        }
    };
    if let Some(s) = &q.station {
        domain::StationId::new(s).map_err(|e| ApiError::bad_request("station", e.to_string()))?;
    }
    // The current hour too: its forecast is what the rules read until the next reading.
    let from = Utc::now() - Duration::hours(1);
    let rows = state
        .store
        .list_forecasts(q.station.as_deref(), from, limit)
        .await?;
    Ok(Json(
        rows.into_iter()
            .map(|f| ForecastDto {
                unit: domain::Parameter::from_code(&f.parameter).map_or("", domain::Parameter::unit),
                station: f.station,
                parameter: f.parameter,
                valid_at: f.valid_at,
                value: f.value,
                issued_at: f.issued_at,
                source: f.source,
            })
            .collect(),
    ))
}
