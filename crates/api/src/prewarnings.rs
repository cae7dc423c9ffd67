//! The pre-warning queue: levels the rules engine computed that a duty officer must
//! confirm (it becomes a warning, with the computed level and the rules behind it) or
//! dismiss (with a reason). Confirming submits at once, so the two-person rule and the
//! emergency override apply as to any warning; the officer may raise the level by the
//! compound escalation of Decision 18 Art. 4 (+1 or +2, with a reason, never above 5).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::alerts::{ListQuery, limit};
use crate::auth::Caller;
use crate::draft::{draft_json, parse_draft};
use crate::error::{ApiError, Q};
use crate::warnings::{AUTHORS, IssuedDto, json_body, reason, uuid_v4, warning_error};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PrewarningDto {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub hazard: String,
    pub commune: String,
    pub commune_name: Option<String>,
    pub transition: String,
    pub level: Option<i64>,
    pub official: bool,
    pub source: String,
    /// The rules that fired, `id@version`.
    pub rules: Vec<String>,
    /// Inputs, provisional reasons and diagnostics.
    pub detail: Value,
}

fn dto(state: &AppState, a: store::AssessmentRecord) -> PrewarningDto {
    PrewarningDto {
        commune_name: state.commune_names.get(&a.commune).cloned(),
        detail: serde_json::from_str(&a.detail).unwrap_or(Value::Null),
        id: a.id,
        at: a.at,
        hazard: a.hazard,
        commune: a.commune,
        transition: a.transition,
        level: a.level,
        official: a.official,
        source: a.source,
        rules: a.rules,
    }
}

/// `GET /api/v1/prewarnings`: open pre-warnings on real observations, newest first.
#[utoipa::path(get, path = "/api/v1/prewarnings", tag = "warnings", security(("bearer" = [])), params(ListQuery), responses((status = 200, description = "Open pre-warnings, newest first", body = [PrewarningDto])))]
pub async fn list(
    State(state): State<AppState>,
    _caller: Caller,
    Q(q): Q<ListQuery>,
) -> Result<Json<Vec<PrewarningDto>>, ApiError> {
    let rows = state.store.open_prewarnings(limit(&q)?).await?;
    Ok(Json(rows.into_iter().map(|a| dto(&state, a)).collect()))
}

async fn open(state: &AppState, id: &str) -> Result<store::AssessmentRecord, ApiError> {
    let n: i64 = id
        .parse()
        .map_err(|_| ApiError::not_found(format!("no pre-warning {id:?}")))?;
    let a = state
        .store
        .get_assessment(n)
        .await?
        .filter(|a| a.action == "pre-warning")
        .ok_or_else(|| ApiError::not_found(format!("no pre-warning {id:?}")))?;
    if a.level.is_none() {
        return Err(ApiError::unprocessable(
            "id",
            format!("pre-warning {n} has no level to confirm"),
        ));
    }
    Ok(a)
}

/// Fields of a confirm that change the computed draft.
const OVERRIDABLE: [&str; 8] = [
    "headline",
    "description",
    "instruction",
    "class",
    "communes",
    "valid_minutes",
    "expires",
    "escalation",
];

/// `POST /api/v1/prewarnings/{id}/confirm`: the pre-warning becomes a warning by the
/// caller and is submitted. The body may replace the texts, class, communes (the
/// pre-warning's commune is always kept), lifetime, add an `escalation`, and give an
/// `override_reason`. 201 when issued, 202 when it waits for approval; 409 when the
/// pre-warning was already confirmed or dismissed. Needs an `Idempotency-Key`.
#[utoipa::path(post, path = "/api/v1/prewarnings/{id}/confirm", tag = "warnings", security(("bearer" = [])), params(("id" = String, Path, description = "Its id"), ("Idempotency-Key" = String, Header, description = "The same on every retry")), request_body(content = crate::openapi::ConfirmBody, content_type = "application/json"), responses((status = 201, description = "Issued at once", body = IssuedDto), (status = 202, description = "Waiting for a second person", body = IssuedDto)))]
pub async fn confirm(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    replay: Option<axum::Extension<crate::idempotency::Replay>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<IssuedDto>), ApiError> {
    caller.require(&AUTHORS, "confirm pre-warnings")?;
    if let Some(axum::Extension(r)) = &replay {
        return crate::warnings::replayed(&state, &id, r).await;
    }
    let v = json_body(&headers, &body)?;
    let override_reason = reason(&v, "override_reason", false)?;
    let a = open(&state, &id).await?;
    let hazard = domain::Hazard::from_code(&a.hazard)
        .ok_or_else(|| ApiError::internal(format!("pre-warning {} has hazard {:?}", a.id, a.hazard)))?;
    let level = a
        .level
        .and_then(|l| u8::try_from(l).ok())
        .and_then(domain::RiskLevel::new)
        .ok_or_else(|| ApiError::internal(format!("pre-warning {} has level {:?}", a.id, a.level)))?;
    // A pre-warning from a bulletin cites it; the officer confirms what it states.
    let from = match a.source.split_once(':') {
        Some((kind, id)) if kind.starts_with("bulletin") => desk::render::LevelFrom::Bulletin {
            id,
            sender: "",
            vouched: kind == "bulletin",
            issued: None,
        },
        _ => desk::render::LevelFrom::Computed { official: a.official },
    };
    let text = desk::render::risk_level_text(hazard, level, from, a.at);
    let mut draft = json!({
        "hazard": a.hazard, "risk_level": level.get(), "communes": [a.commune],
        "headline": text.headline, "description": text.description, "instruction": text.instruction,
        "status": a.status,
    });
    if let (Some(d), Some(body)) = (draft.as_object_mut(), v.as_object()) {
        for (k, val) in body {
            if OVERRIDABLE.contains(&k.as_str()) {
                d.insert(k.clone(), val.clone());
            } else if k != "override_reason" {
                return Err(ApiError::unprocessable(
                    k.clone(),
                    format!(
                        "unknown field {k:?}; a confirm takes {} and override_reason",
                        OVERRIDABLE.join(", ")
                    ),
                ));
            }
        }
    }
    let mut draft = parse_draft(&draft, &state.communes)?;
    if let Ok(c) = domain::CommuneCode::new(&a.commune)
        && !draft.communes.contains(&c)
    {
        draft.communes.push(c);
    }
    let warning_id = format!("w-{}", uuid_v4());
    let now = Utc::now();
    // What would refuse the alert is checked before anything is written.
    state
        .pipeline
        .draft_alert(&draft, &caller.label, now)
        .map_err(|e| ApiError::unprocessable("draft", e.to_string()))?;
    let stored = draft_json(&draft).to_string();
    let mut tx = state.store.begin().await?;
    if let Some(decided) = tx.prewarning_decided(a.id).await? {
        return Err(ApiError::conflict(format!(
            "pre-warning {} was already {decided}",
            a.id
        )));
    }
    tx.insert_warning(
        &store::NewWarning {
            id: &warning_id,
            author: &caller.label,
            updates: None,
            prewarning_id: Some(a.id),
            draft: &stored,
        },
        now,
    )
    .await?;
    tx.append_audit(
        &caller.label,
        "prewarning.confirm",
        &a.id.to_string(),
        &json!({"warning_id": warning_id, "computed_level": a.level, "rules": a.rules,
            "escalation": draft.escalation.as_ref().map(|e| json!({"steps": e.steps, "reason": e.reason}))}),
        now,
    )
    .await?;
    tx.commit().await?;
    let w = state
        .store
        .get_warning(&warning_id)
        .await?
        .ok_or_else(|| ApiError::internal("the warning just written is gone"))?;
    let done = match state
        .pipeline
        .submit_warning(&w, &draft, &caller.label, override_reason.as_deref(), now)
        .await
    {
        Ok(done) => done,
        Err(e) => {
            // Nothing was sent: the warning is discarded and the pre-warning is open again.
            let error = e.to_string();
            let mut tx = state.store.begin().await?;
            tx.discard_warning(&warning_id, Utc::now()).await?;
            tx.append_audit(
                &caller.label,
                "prewarning.confirm.undone",
                &a.id.to_string(),
                &json!({"warning_id": warning_id, "error": error}),
                Utc::now(),
            )
            .await?;
            tx.commit().await?;
            return Err(warning_error(e));
        }
    };
    crate::warnings::submitted(&state, &warning_id, done).await
}

/// `POST /api/v1/prewarnings/{id}/dismiss` with `{"reason": "..."}`.
#[utoipa::path(post, path = "/api/v1/prewarnings/{id}/dismiss", tag = "warnings", security(("bearer" = [])), params(("id" = String, Path, description = "Its id")), request_body(content = crate::openapi::ReasonBody, content_type = "application/json"), responses((status = 204, description = "Dismissed")))]
pub async fn dismiss(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    caller.require(&AUTHORS, "dismiss pre-warnings")?;
    let v = json_body(&headers, &body)?;
    let why = reason(&v, "reason", true)?.unwrap_or_default();
    let a = open(&state, &id).await?;
    let now = Utc::now();
    let mut tx = state.store.begin().await?;
    if let Some(decided) = tx.prewarning_decided(a.id).await? {
        return Err(ApiError::conflict(format!(
            "pre-warning {} was already {decided}",
            a.id
        )));
    }
    tx.dismiss_prewarning(a.id, &caller.label, &why, now).await?;
    tx.append_audit(
        &caller.label,
        "prewarning.dismiss",
        &a.id.to_string(),
        &json!({"reason": why}),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
