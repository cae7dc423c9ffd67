//! Public feeds for national hubs and aggregators, with no token: `GET /feeds/alerts.atom`
//! (live public alerts, each linking to its CAP document; an ETag so that pollers can ask
//! "anything new?" cheaply) and `GET /feeds/cap/{id}.cap` (the CAP 1.2 document of an
//! Actual alert; exercises and tests are never public).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;

/// Most entries in the feed.
const MAX_ENTRIES: i64 = 200;

#[utoipa::path(get, path = "/feeds/alerts.atom", tag = "public", responses((status = 200, description = "Atom feed of live public alerts", content_type = "application/atom+xml"), (status = 304, description = "Not modified (ETag)")))]
pub async fn alerts_atom(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let now = Utc::now();
    let alerts = state.store.live_public_alerts(now, MAX_ENTRIES).await?;
    let feed_id = format!("urn:canhbao:province-{}:alerts", state.province);
    let title = format!(
        "canhbao: cảnh báo thiên tai đang hiệu lực, tỉnh {}",
        state.province
    );
    // The feed's time is that of its newest alert, so an unchanged feed has an unchanged body.
    let body = desk::cap_out::alerts_atom(&alerts, &feed_id, &title, chrono::DateTime::UNIX_EPOCH);
    let digest = Sha256::digest(body.as_bytes());
    let etag: String = format!(
        "\"{}\"",
        digest
            .iter()
            .take(12)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let cache = [
        (
            header::ETAG,
            HeaderValue::from_str(&etag).map_err(ApiError::internal)?,
        ),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=30"),
        ),
    ];
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if unchanged {
        return Ok((StatusCode::NOT_MODIFIED, cache).into_response());
    }
    Ok((
        cache,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/atom+xml; charset=utf-8"),
        )],
        body,
    )
        .into_response())
}

#[utoipa::path(get, path = "/feeds/cap/{file}", tag = "public", params(("file" = String, Path, description = "`{id}.cap`")), responses((status = 200, description = "CAP 1.2 XML of a public alert", content_type = "application/cap+xml")))]
pub async fn cap(State(state): State<AppState>, Path(file): Path<String>) -> Result<Response, ApiError> {
    let id = file
        .strip_suffix(".cap")
        .ok_or_else(|| ApiError::not_found("CAP documents are at /feeds/cap/<id>.cap"))?;
    let public = state
        .store
        .get_alert(id)
        .await?
        .is_some_and(|a| a.status == "Actual");
    if !public {
        return Err(ApiError::not_found(format!("no public alert {id:?}")));
    }
    Ok(crate::alerts::cap_document(&state, id).await?.into_response())
}
