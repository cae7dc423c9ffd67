//! `GET /api/v1/audit` (the newest actions) and `GET /api/v1/audit/verify` (the hash chain
//! walked from its start), for admins; and [`record`], which handlers call after an action.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::AppState;
use crate::alerts::{ListQuery, limit};
use crate::auth::{Caller, Role};
use crate::error::{ApiError, Q};

/// Appends an action to the audit chain. A failure is logged loudly: the action itself
/// has already happened.
pub async fn record(state: &AppState, actor: &str, action: &str, target: &str, detail: serde_json::Value) {
    if let Err(e) = state
        .store
        .append_audit(actor, action, target, &detail, Utc::now())
        .await
    {
        tracing::error!(error = %e, actor, action, target, "the audit log could not be written");
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditDto {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
    pub hash: String,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "admin", security(("bearer" = [])), params(ListQuery), responses((status = 200, description = "The newest actions", body = [AuditDto])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Q(q): Q<ListQuery>,
) -> Result<Json<Vec<AuditDto>>, ApiError> {
    caller.require(&[Role::Admin], "read the audit log")?;
    let rows = state.store.list_audit(limit(&q)?).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| AuditDto {
                id: r.id,
                at: r.at,
                actor: r.actor,
                action: r.action,
                target: r.target,
                detail: serde_json::from_str(&r.detail).unwrap_or(serde_json::Value::String(r.detail)),
                hash: r.hash,
            })
            .collect(),
    ))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerifyDto {
    pub rows: i64,
    pub intact: bool,
    /// The first row whose hash or link does not hold.
    pub broken_at: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "admin", security(("bearer" = [])), responses((status = 200, description = "The hash chain walked from its start", body = VerifyDto)))]
pub async fn verify(State(state): State<AppState>, caller: Caller) -> Result<Json<VerifyDto>, ApiError> {
    caller.require(&[Role::Admin], "verify the audit log")?;
    let v = state.store.verify_audit().await?;
    Ok(Json(VerifyDto {
        rows: v.rows,
        intact: v.broken_at.is_none(),
        broken_at: v.broken_at,
    }))
}
