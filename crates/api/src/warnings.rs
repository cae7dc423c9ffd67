//! Duty officers' warnings: `POST /api/v1/warnings` writes a draft (an Update when it
//! names the alert it `updates`); its author edits, discards or submits it; a second
//! person approves or returns it. The two-person rule, the override and the references
//! of an Update are decided by the server (`desk::warnings`), never by the client.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use desk::compose::Draft;
use desk::warnings::{LifecycleError, Submitted, WarningError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use store::WarningRecord;

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::draft::{MAX_REASON, draft_json, parse_draft};
use crate::error::{ApiError, Q, require_media};

/// Who may write, submit, update and cancel.
pub const AUTHORS: [Role; 2] = [Role::Admin, Role::Officer];
/// Who may approve or return (never their own submission).
pub const APPROVERS: [Role; 2] = [Role::Admin, Role::Approver];

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WarningDto {
    pub id: String,
    /// draft, pending, issued or discarded.
    pub state: String,
    pub author: String,
    /// The alert this warning updates (it is issued as a CAP Update).
    pub updates: Option<String>,
    /// The pre-warning of the rules engine it confirms.
    pub prewarning_id: Option<i64>,
    pub draft: Value,
    /// Why a second person must approve it (set at submit).
    pub approval_reason: Option<String>,
    /// Set when an officer issued it alone under the emergency override.
    pub override_reason: Option<String>,
    pub overridden: bool,
    pub submitted: Option<DateTime<Utc>>,
    /// The approver, or who returned it.
    pub reviewed_by: Option<String>,
    pub reviewed: Option<DateTime<Utc>>,
    /// The approver's note, or why it was returned.
    pub review_note: Option<String>,
    /// The alert it became.
    pub alert_id: Option<String>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    /// Bumped by every change; an approval names the version its approver read.
    pub version: i64,
}

impl From<WarningRecord> for WarningDto {
    fn from(w: WarningRecord) -> Self {
        Self {
            draft: serde_json::from_str(&w.draft).unwrap_or(Value::Null),
            overridden: w.override_reason.is_some(),
            id: w.id,
            state: w.state,
            author: w.author,
            updates: w.updates,
            prewarning_id: w.prewarning_id,
            approval_reason: w.approval_reason,
            override_reason: w.override_reason,
            submitted: w.submitted,
            reviewed_by: w.reviewed_by,
            reviewed: w.reviewed,
            review_note: w.review_note,
            alert_id: w.alert_id,
            created: w.created,
            updated: w.updated,
            version: w.version,
        }
    }
}

pub(crate) fn json_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    require_media(headers, &["application/json"])?;
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request("body", format!("not valid JSON: {e}")))
}

/// A text field of at most [`MAX_REASON`] characters; `required` refuses it empty.
pub(crate) fn reason(v: &Value, field: &str, required: bool) -> Result<Option<String>, ApiError> {
    match v.get(field) {
        None | Some(Value::Null) if !required => Ok(None),
        // Given but blank is a mistake, not an absence: an override or a cancel must say why.
        Some(Value::String(s)) if s.chars().count() <= MAX_REASON && !s.trim().is_empty() => {
            Ok(Some(s.trim().to_owned()))
        }
        _ => Err(ApiError::unprocessable(
            field,
            format!("{field} must be a non-empty string of at most {MAX_REASON} characters"),
        )),
    }
}

pub(crate) fn warning_error(e: WarningError) -> ApiError {
    use WarningError as E;
    match e {
        E::Lifecycle(e @ (LifecycleError::NotAuthor { .. } | LifecycleError::OwnSubmission { .. })) => {
            ApiError::forbidden(e.to_string())
        }
        e @ (E::Lifecycle(_) | E::Raced(_) | E::NotLatest { .. } | E::StaleVersion { .. }) => {
            ApiError::conflict(e.to_string())
        }
        e @ E::NotFound(_) => ApiError::not_found(e.to_string()),
        e @ (E::UpdateMissing(_)
        | E::UpdateOfCancel(_)
        | E::UpdateOfExpired { .. }
        | E::UpdateNarrows { .. }
        | E::UpdateStatus { .. }) => ApiError::unprocessable("updates", e.to_string()),
        e @ E::OverrideWithoutReason => ApiError::unprocessable("override_reason", e.to_string()),
        e @ E::Draft(_) => ApiError::unprocessable("draft", e.to_string()),
        E::Store(s) => s.into(),
        E::Desk(i) => i.into(),
        e @ E::Corrupt(..) => ApiError::internal(e),
    }
}

async fn load(state: &AppState, id: &str) -> Result<WarningRecord, ApiError> {
    state
        .store
        .get_warning(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no warning {id:?}")))
}

/// The stored draft, read again against today's communes.
fn stored_draft(state: &AppState, w: &WarningRecord) -> Result<Draft, ApiError> {
    let v: Value = serde_json::from_str(&w.draft)
        .map_err(|e| ApiError::internal(format!("warning {} holds a draft that is not JSON: {e}", w.id)))?;
    parse_draft(&v, &state.communes)
}

/// Splits a request into its draft fields and `updates`.
fn draft_and_updates(state: &AppState, mut v: Value) -> Result<(Draft, Option<String>), ApiError> {
    let updates = match v.as_object_mut().and_then(|o| o.remove("updates")) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => Some(s),
        Some(_) => return Err(ApiError::unprocessable("updates", "updates must be an alert id")),
    };
    Ok((parse_draft(&v, &state.communes)?, updates))
}

/// `POST /api/v1/warnings`: a new draft, by an officer. With `"updates": "<alert id>"`
/// it will be issued as an Update of that alert (which must be the latest of its incident,
/// live, and not a Cancel; checked again at issue).
#[utoipa::path(post, path = "/api/v1/warnings", tag = "warnings", security(("bearer" = [])), request_body(content = crate::openapi::DraftBody, content_type = "application/json"), responses((status = 201, description = "A draft", body = WarningDto)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<WarningDto>), ApiError> {
    caller.require(&AUTHORS, "write warnings")?;
    let v = json_body(&headers, &body)?;
    let (draft, updates) = draft_and_updates(&state, v)?;
    if let Some(u) = &updates {
        let a = state.store.get_alert(u).await?;
        if a.is_none() {
            return Err(ApiError::unprocessable("updates", format!("no alert {u:?}")));
        }
    }
    let id = format!("w-{}", uuid_v4());
    let now = Utc::now();
    let draft = draft_json(&draft).to_string();
    let mut tx = state.store.begin().await?;
    tx.insert_warning(
        &store::NewWarning {
            id: &id,
            author: &caller.label,
            updates: updates.as_deref(),
            prewarning_id: None,
            draft: &draft,
        },
        now,
    )
    .await?;
    tx.append_audit(
        &caller.label,
        "warning.create",
        &id,
        &serde_json::json!({"updates": updates, "draft": serde_json::from_str::<Value>(&draft).ok()}),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(load(&state, &id).await?.into())))
}

pub fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    // Without randomness an id could collide; getrandom fails only on a broken system.
    if getrandom::fill(&mut b).is_err() {
        let t = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        b[..8].copy_from_slice(&t.to_le_bytes());
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WarningQuery {
    pub state: Option<String>,
    pub limit: Option<i64>,
}

/// `GET /api/v1/warnings?state=pending`: the desk's queue, most recently changed first.
#[utoipa::path(get, path = "/api/v1/warnings", tag = "warnings", security(("bearer" = [])), params(WarningQuery), responses((status = 200, description = "Most recently changed first", body = [WarningDto])))]
pub async fn list(
    State(state): State<AppState>,
    _caller: Caller,
    Q(q): Q<WarningQuery>,
) -> Result<Json<Vec<WarningDto>>, ApiError> {
    if let Some(s) = &q.state
        && desk::warnings::WarningState::from_code(s).is_none()
    {
        return Err(ApiError::bad_request(
            "state",
            "state must be draft, pending, issued or discarded",
        ));
    }
    let limit = crate::alerts::limit(&crate::alerts::ListQuery { limit: q.limit })?;
    let rows = state.store.list_warnings(q.state.as_deref(), limit).await?;
    Ok(Json(rows.into_iter().map(WarningDto::from).collect()))
}

#[utoipa::path(get, path = "/api/v1/warnings/{id}", tag = "warnings", security(("bearer" = [])), params(("id" = String, Path, description = "Its id")), responses((status = 200, description = "The warning", body = WarningDto)))]
pub async fn get(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WarningDto>, ApiError> {
    Ok(Json(load(&state, &id).await?.into()))
}

/// `PUT /api/v1/warnings/{id}`: its author replaces a draft (also one returned to them).
#[utoipa::path(put, path = "/api/v1/warnings/{id}", tag = "warnings", security(("bearer" = [])), params(("id" = String, Path, description = "Its id")), request_body(content = crate::openapi::DraftBody, content_type = "application/json"), responses((status = 200, description = "The draft, replaced (its author only)", body = WarningDto)))]
pub async fn edit(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WarningDto>, ApiError> {
    caller.require(&AUTHORS, "edit warnings")?;
    let w = load(&state, &id).await?;
    let v = json_body(&headers, &body)?;
    let (draft, updates) = draft_and_updates(&state, v)?;
    if updates != w.updates {
        return Err(ApiError::unprocessable(
            "updates",
            "what a warning updates is set when it is written; write a new warning instead",
        ));
    }
    check(&w, &caller, desk::warnings::Action::Edit)?;
    let now = Utc::now();
    let draft = draft_json(&draft).to_string();
    let mut tx = state.store.begin().await?;
    if !tx.edit_warning(&id, &draft, now).await? {
        return Err(warning_error(WarningError::Raced(id)));
    }
    tx.append_audit(
        &caller.label,
        "warning.edit",
        &id,
        &serde_json::json!({"draft": serde_json::from_str::<Value>(&draft).ok()}),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(Json(load(&state, &id).await?.into()))
}

fn check(w: &WarningRecord, caller: &Caller, action: desk::warnings::Action) -> Result<(), ApiError> {
    let state = desk::warnings::WarningState::from_code(&w.state)
        .ok_or_else(|| ApiError::internal(format!("warning {} has state {:?}", w.id, w.state)))?;
    desk::warnings::check(&w.id, state, &w.author, &caller.label, action).map_err(|e| warning_error(e.into()))
}

/// `POST /api/v1/warnings/{id}/discard`: its author drops a draft.
#[utoipa::path(post, path = "/api/v1/warnings/{id}/discard", tag = "warnings", security(("bearer" = [])), params(("id" = String, Path, description = "Its id")), responses((status = 200, description = "Discarded by its author", body = WarningDto)))]
pub async fn discard(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WarningDto>, ApiError> {
    caller.require(&AUTHORS, "discard warnings")?;
    let w = load(&state, &id).await?;
    check(&w, &caller, desk::warnings::Action::Discard)?;
    let now = Utc::now();
    let mut tx = state.store.begin().await?;
    if !tx.discard_warning(&id, now).await? {
        return Err(warning_error(WarningError::Raced(id)));
    }
    tx.append_audit(&caller.label, "warning.discard", &id, &serde_json::json!({}), now)
        .await?;
    tx.commit().await?;
    Ok(Json(load(&state, &id).await?.into()))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IssuedDto {
    pub warning: WarningDto,
    /// The alert, once issued.
    pub alert_id: Option<String>,
    pub msg_type: Option<String>,
    pub references: Vec<String>,
}

/// The answer to a submit (or a confirm, which submits): 201 with the alert when it was
/// issued at once, 202 when it waits for a second person.
pub(crate) async fn submitted(
    state: &AppState,
    id: &str,
    done: Submitted,
) -> Result<(StatusCode, Json<IssuedDto>), ApiError> {
    Ok(match done {
        Submitted::Pending(_) => (StatusCode::ACCEPTED, Json(issued(state, id, None).await?)),
        Submitted::Issued(alert) => (StatusCode::CREATED, Json(issued(state, id, Some(&alert)).await?)),
    })
}

/// The answer to a request that takes over one whose instance died after it sent
/// `replay`'s alert (`crate::idempotency::Replay`): 201 with that alert, as the first
/// would have answered, the warning found by its alert (`id` if none names it).
pub(crate) async fn replayed(
    state: &AppState,
    id: &str,
    replay: &crate::idempotency::Replay,
) -> Result<(StatusCode, Json<IssuedDto>), ApiError> {
    let alert = state
        .store
        .get_alert(&replay.0)
        .await?
        .ok_or_else(|| ApiError::internal(format!("the alert {} this request sent is gone", replay.0)))?;
    let warning = state
        .store
        .warning_for_alert(&replay.0)
        .await?
        .map_or_else(|| id.to_owned(), |w| w.id);
    Ok((
        StatusCode::CREATED,
        Json(IssuedDto {
            warning: load(state, &warning).await?.into(),
            alert_id: Some(alert.id),
            msg_type: Some(alert.msg_type),
            references: alert.references,
        }),
    ))
}

async fn issued(state: &AppState, id: &str, alert: Option<&domain::Alert>) -> Result<IssuedDto, ApiError> {
    Ok(IssuedDto {
        warning: load(state, id).await?.into(),
        alert_id: alert.map(|a| a.id.to_string()),
        msg_type: alert.map(|a| a.msg_type.code().to_owned()),
        references: alert
            .map(|a| a.references.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
    })
}

/// `POST /api/v1/warnings/{id}/submit`, optionally `{"override_reason": "..."}`: its
/// author submits a draft. 201 with the alert when issued at once; 202 when it waits for
/// a second person. Needs an `Idempotency-Key`.
#[utoipa::path(post, path = "/api/v1/warnings/{id}/submit", tag = "warnings", security(("bearer" = [])), params(("id" = String, Path, description = "Its id"), ("Idempotency-Key" = String, Header, description = "The same on every retry")), request_body(content = crate::openapi::SubmitBody, content_type = "application/json"), responses((status = 201, description = "Issued at once", body = IssuedDto), (status = 202, description = "Waiting for a second person", body = IssuedDto)))]
pub async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    replay: Option<axum::Extension<crate::idempotency::Replay>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<IssuedDto>), ApiError> {
    caller.require(&AUTHORS, "submit warnings")?;
    if let Some(axum::Extension(r)) = &replay {
        return replayed(&state, &id, r).await;
    }
    let v = json_body(&headers, &body)?;
    let override_reason = reason(&v, "override_reason", false)?;
    let w = load(&state, &id).await?;
    let draft = stored_draft(&state, &w)?;
    let done = state
        .pipeline
        .submit_warning(&w, &draft, &caller.label, override_reason.as_deref(), Utc::now())
        .await
        .map_err(warning_error)?;
    submitted(&state, &id, done).await
}

/// `POST /api/v1/warnings/{id}/approve`, optionally `{"note": "..."}`: a second person
/// approves a pending warning and it is issued. Needs an `Idempotency-Key`.
#[utoipa::path(post, path = "/api/v1/warnings/{id}/approve", tag = "warnings", security(("bearer" = [])), params(("id" = String, Path, description = "Its id"), ("Idempotency-Key" = String, Header, description = "The same on every retry")), request_body(content = crate::openapi::ApproveBody, content_type = "application/json"), responses((status = 201, description = "Approved by a second person and issued", body = IssuedDto)))]
pub async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    replay: Option<axum::Extension<crate::idempotency::Replay>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<IssuedDto>), ApiError> {
    caller.require(&APPROVERS, "approve warnings")?;
    if let Some(axum::Extension(r)) = &replay {
        return replayed(&state, &id, r).await;
    }
    // A second person is a person: a machine key, whatever its label, approves nothing.
    if caller.user_id.is_none() {
        return Err(ApiError::forbidden(
            "approvals need a person's login (POST /api/v1/login), not an API key",
        ));
    }
    let v = json_body(&headers, &body)?;
    let note = match v.get("note") {
        Some(Value::String(n)) if n.trim().is_empty() => String::new(),
        _ => reason(&v, "note", false)?.unwrap_or_default(),
    };
    let read = v.get("version").and_then(Value::as_i64).ok_or_else(|| {
        ApiError::unprocessable(
            "version",
            "give the version of the warning you read (its `version`): an approval covers only what its approver saw",
        )
    })?;
    let w = load(&state, &id).await?;
    let draft = stored_draft(&state, &w)?;
    let alert = state
        .pipeline
        .approve_warning(&w, &draft, read, &caller.label, &note, Utc::now())
        .await
        .map_err(warning_error)?;
    Ok((
        StatusCode::CREATED,
        Json(issued(&state, &id, Some(&alert)).await?),
    ))
}

/// `POST /api/v1/warnings/{id}/reject` with `{"reason": "..."}`: a second person returns
/// a pending warning to its author as a draft; the author is told why.
#[utoipa::path(post, path = "/api/v1/warnings/{id}/reject", tag = "warnings", security(("bearer" = [])), params(("id" = String, Path, description = "Its id")), request_body(content = crate::openapi::ReasonBody, content_type = "application/json"), responses((status = 200, description = "Returned to its author as a draft", body = WarningDto)))]
pub async fn reject(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WarningDto>, ApiError> {
    caller.require(&APPROVERS, "return warnings")?;
    let v = json_body(&headers, &body)?;
    let why = reason(&v, "reason", true)?.unwrap_or_default();
    let w = load(&state, &id).await?;
    state
        .pipeline
        .return_warning(&w, &caller.label, &why, Utc::now())
        .await
        .map_err(warning_error)?;
    Ok(Json(load(&state, &id).await?.into()))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NotificationDto {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// `override` (an officer issued alone) or `returned` (your draft came back).
    pub kind: String,
    pub warning_id: Option<String>,
    pub alert_id: Option<String>,
    pub text: String,
}

/// `GET /api/v1/notifications`: what the caller must be told, newest first.
#[utoipa::path(get, path = "/api/v1/notifications", tag = "warnings", security(("bearer" = [])), responses((status = 200, description = "What the caller must be told: overrides, returned drafts", body = [NotificationDto])))]
pub async fn notifications(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<NotificationDto>>, ApiError> {
    let rows = state.store.notifications(&caller.label, 100).await?;
    Ok(Json(
        rows.into_iter()
            .map(|n| NotificationDto {
                id: n.id,
                at: n.at,
                kind: n.kind,
                warning_id: n.warning_id,
                alert_id: n.alert_id,
                text: n.text,
            })
            .collect(),
    ))
}
