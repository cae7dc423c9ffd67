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
    /// The newest row, `ID:HASH`: copy it out of the service (print it, send it to the
    /// archive) as an anchor, and give it back as `?anchor=` to prove nothing before it was
    /// rewritten or cut off, even consistently.
    pub head: Option<String>,
    /// With `?anchor=ID:HASH`: `holds`, `differs` (row ID now has another hash) or
    /// `missing` (row ID is gone: the chain was cut).
    pub anchor: Option<&'static str>,
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    /// `ID:HASH` of a row taken earlier from `head`.
    pub anchor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "admin", security(("bearer" = [])), params(VerifyQuery), responses((status = 200, description = "The hash chain walked from its start, and an anchor checked", body = VerifyDto)))]
pub async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    Q(q): Q<VerifyQuery>,
) -> Result<Json<VerifyDto>, ApiError> {
    caller.require(&[Role::Admin], "verify the audit log")?;
    let anchor = match &q.anchor {
        None => None,
        Some(a) => Some(
            a.split_once(':')
                .and_then(|(id, hash)| Some((id.parse::<i64>().ok()?, hash.to_owned())))
                .filter(|(_, hash)| hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| ApiError::bad_request("anchor", "anchor must be ID:HASH as `head` gave it"))?,
        ),
    };
    let v = state.store.verify_audit().await?;
    let head = state
        .store
        .audit_head()
        .await?
        .map(|h| format!("{}:{}", h.id, h.hash));
    let anchor = match anchor {
        None => None,
        Some((id, hash)) => Some(state.store.check_audit_anchor(id, &hash).await?),
    };
    Ok(Json(VerifyDto {
        rows: v.rows,
        intact: v.broken_at.is_none() && anchor.is_none_or(|a| a == "holds"),
        broken_at: v.broken_at,
        head,
        anchor,
    }))
}
