//! `GET /api/v1/assessments`: what the rules engine decided. The current level per series,
//! hazard and commune; where several hazards coincide in a commune (for the duty officer's
//! compound escalation of Art. 4, never applied automatically); and the latest
//! transitions, each a pre-warning or the reason for an auto-issued alert.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::AppState;
use crate::alerts::ListQuery;
use crate::auth::Caller;
use crate::error::{ApiError, Q};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LevelDto {
    pub hazard: String,
    pub commune: String,
    pub level: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CoincidingDto {
    pub commune: String,
    pub hazards: Vec<LevelDto>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TransitionDto {
    pub id: i64,
    pub status: String,
    pub at: DateTime<Utc>,
    pub hazard: String,
    pub commune: String,
    pub transition: String,
    pub level: Option<i64>,
    /// `auto-issue` or `pre-warning` (for a duty officer to confirm or dismiss).
    pub action: String,
    pub official: bool,
    pub source: String,
    pub rules: Vec<String>,
    pub detail: serde_json::Value,
    pub alert_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AssessmentsDto {
    /// Current levels of real (CAP status Actual) observations.
    pub levels: Vec<LevelDto>,
    pub coinciding: Vec<CoincidingDto>,
    pub transitions: Vec<TransitionDto>,
}

#[utoipa::path(get, path = "/api/v1/assessments", tag = "monitoring", security(("bearer" = [])), params(ListQuery), responses((status = 200, description = "Current levels, coinciding hazards and recent transitions", body = AssessmentsDto)))]
pub async fn list_assessments(
    State(state): State<AppState>,
    _caller: Caller,
    Q(q): Q<ListQuery>,
) -> Result<Json<AssessmentsDto>, ApiError> {
    let limit = crate::alerts::limit(&q)?;
    let levels: Vec<LevelDto> = state
        .store
        .area_levels("Actual")
        .await?
        .into_iter()
        .map(|(hazard, commune, level)| LevelDto {
            hazard,
            commune,
            level,
        })
        .collect();
    let mut by_commune: BTreeMap<String, Vec<LevelDto>> = BTreeMap::new();
    for l in &levels {
        by_commune.entry(l.commune.clone()).or_default().push(l.clone());
    }
    let coinciding = by_commune
        .into_iter()
        .filter(|(_, v)| v.len() >= 2)
        .map(|(commune, hazards)| CoincidingDto { commune, hazards })
        .collect();
    let transitions = state
        .store
        .list_assessments(limit)
        .await?
        .into_iter()
        .map(|a| TransitionDto {
            detail: serde_json::from_str(&a.detail).unwrap_or(serde_json::Value::Null),
            id: a.id,
            status: a.status,
            at: a.at,
            hazard: a.hazard,
            commune: a.commune,
            transition: a.transition,
            level: a.level,
            action: a.action,
            official: a.official,
            source: a.source,
            rules: a.rules,
            alert_id: a.alert_id,
        })
        .collect();
    Ok(Json(AssessmentsDto {
        levels,
        coinciding,
        transitions,
    }))
}
