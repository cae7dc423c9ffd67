//! `POST /api/v1/bulletins`: an official CAP 1.2 bulletin (or its Update or Cancel). A
//! bulletin from a configured sender posted with an API key that has the `bulletins` scope
//! is authoritative for its hazard and communes, and overrides any computed level; posted
//! by a person's login, nothing vouches that the sender sent it: it may only raise a
//! level, as a pre-warning for an officer to confirm. A signed bulletin is authoritative
//! only if its XML signature holds (`ingest::dsig`); a bad one is recorded for operators.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, require_media};
use crate::observations::{AcceptedDto, record_refusal};

const XML_TYPES: [&str; 3] = ["application/cap+xml", "application/xml", "text/xml"];

#[utoipa::path(post, path = "/api/v1/bulletins", tag = "ingest", security(("bearer" = [])), request_body(content = String, description = "A CAP 1.2 message", content_type = "application/cap+xml"), responses((status = 200, description = "Accepted", body = AcceptedDto)))]
pub async fn post_bulletin(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<AcceptedDto>), ApiError> {
    caller.require(&[Role::Admin, Role::Station], "submit bulletins")?;
    caller.require_scope(crate::auth::Scope::Bulletins)?;
    let now = Utc::now();
    let result = async {
        require_media(&headers, &XML_TYPES)?;
        let cap = ingest::cap::parse_cap(&body).map_err(|e| ApiError::bad_request("body", e.to_string()))?;
        if let Some(f) = ingest::cap::validate(&cap, now)
            .into_iter()
            .find(|f| f.is_fatal())
        {
            return Err(ApiError::unprocessable(f.rule, f.detail));
        }
        let mut change =
            ingest::bulletin::to_bulletins(&cap, &state.bulletins, &state.province, &state.communes)
                .map_err(|e| ApiError::unprocessable(e.field(), e.to_string()))?;
        let channel = match &caller.scopes {
            Some(scopes) if scopes.contains(&crate::auth::Scope::Bulletins) => {
                ingest::bulletin::Channel::BulletinsKey
            }
            _ => ingest::bulletin::Channel::Person,
        };
        let trust = ingest::bulletin::vouch(&state.bulletins, &cap, channel);
        change.authoritative = trust.is_ok();
        let untrusted = trust.err();
        if let Some(why) = untrusted.as_ref().filter(|u| u.is_signature()) {
            let reason = format!("bulletin {} taken only as a pre-warning: {why}", cap.identifier);
            tracing::warn!(source = %caller.label, reason = %reason, "bulletin not vouched for");
            state
                .store
                .record_rejection("http", &format!("api:{}", caller.label), &reason, now)
                .await?;
        }
        let report = state
            .pipeline
            .accept_bulletin(&change, now)
            .await
            .map_err(ApiError::from)?;
        Ok((report, untrusted))
    }
    .await;
    match result {
        Ok((report, untrusted)) => {
            let mut dto = AcceptedDto::from(report);
            dto.untrusted = untrusted.map(|u| u.to_string());
            Ok((StatusCode::OK, Json(dto)))
        }
        Err(e) => {
            record_refusal(&state, &caller, &e, now).await?;
            Err(e)
        }
    }
}
