//! `POST /api/v1/sms/preview`: how a text would go out by SMS under a policy (encoding,
//! the text as sent, and the number of parts), without sending anything.

use ::sms::text::{SmsPolicy, render};
use axum::Json;
use axum::body::Bytes;
use axum::http::HeaderMap;
use serde::Serialize;
use serde_json::Value;

use crate::auth::Caller;
use crate::error::{ApiError, require_media};

/// Parts allowed in UCS-2 under the `auto` policy unless the request says otherwise.
pub const DEFAULT_MAX_UCS2_SEGMENTS: u32 = 2;

/// The longest text previewed, in characters (ten concatenated parts and more).
const MAX_CHARS: usize = 2000;

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = SmsPreviewResultDto)]
pub struct PreviewDto {
    pub encoding: &'static str,
    pub segments: u32,
    pub text: String,
}

/// `{"text": "...", "policy": "ucs2" | "gsm7" | "auto", "max_ucs2_segments"?: n}`.
#[utoipa::path(post, path = "/api/v1/sms/preview", tag = "warnings", security(("bearer" = [])), request_body(content = crate::openapi::SmsPreviewBody, content_type = "application/json"), responses((status = 200, description = "Encoding, text as sent and parts", body = PreviewDto)))]
pub async fn preview(_caller: Caller, headers: HeaderMap, body: Bytes) -> Result<Json<PreviewDto>, ApiError> {
    require_media(&headers, &["application/json"])?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("body", format!("not valid JSON: {e}")))?;
    let text = v
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("text", "text is required and must be a string"))?;
    if text.chars().count() > MAX_CHARS {
        return Err(ApiError::bad_request(
            "text",
            format!("text is longer than {MAX_CHARS} characters"),
        ));
    }
    let max = match v.get("max_ucs2_segments") {
        None | Some(Value::Null) => DEFAULT_MAX_UCS2_SEGMENTS,
        Some(n) => n
            .as_u64()
            .filter(|n| (1..=10).contains(n))
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| ApiError::bad_request("max_ucs2_segments", "max_ucs2_segments must be 1 to 10"))?,
    };
    let code = v.get("policy").and_then(Value::as_str).unwrap_or("auto");
    let policy = SmsPolicy::from_code(code, max).ok_or_else(|| {
        ApiError::bad_request(
            "policy",
            format!("policy {code:?} must be \"ucs2\", \"gsm7\" or \"auto\""),
        )
    })?;
    let r = render(text, policy);
    Ok(Json(PreviewDto {
        encoding: r.encoding.label(),
        segments: r.segments,
        text: r.text,
    }))
}

/// The SMS channel's running parts that the API needs.
#[derive(Clone)]
pub struct SmsContext {
    pub gateways: ::sms::worker::Gateways,
    /// Applies delivery reports, a burst in one transaction.
    pub reports: ::sms::worker::ReportApplier,
    /// Wakes the SMS sender (a report may have moved a message to another gateway).
    pub wake: std::sync::Arc<dyn Fn() + Send + Sync>,
}

/// `GET` or `POST /api/v1/sms/dlr/{gateway}`: a gateway's delivery report. Authenticated
/// by the gateway's secret: in the URL's `secret` (Kannel and Jasmin can send nothing
/// else), or, for a provider that can, in an `X-Canhbao-Dlr-Secret` header or as the
/// password of HTTP basic auth, which keeps it out of access logs. Applied once whatever
/// order reports come in, and answered with what the gateway expects (`ACK/Jasmin` for
/// Jasmin). A refused report is counted, and recorded one a second at most.
#[utoipa::path(method(get, post), path = "/api/v1/sms/dlr/{gateway}", tag = "public", params(("gateway" = String, Path, description = "A configured gateway id; its secret goes in the query")), responses((status = 200, description = "Applied (Jasmin gets ACK/Jasmin)", content_type = "text/plain")))]
pub async fn delivery_report(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
    axum::extract::Path(gateway): axum::extract::Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<
    (
        axum::http::StatusCode,
        [(axum::http::HeaderName, &'static str); 1],
        &'static str,
    ),
    ApiError,
> {
    use ::sms::worker::{ReportError, apply_callback};
    let Some(sms) = &state.sms else {
        return Err(ApiError::not_found("the sms channel is not configured"));
    };
    let now = chrono::Utc::now();
    let body = String::from_utf8_lossy(&body);
    // A secret in a header stands for the query's, when the query has none.
    let mut query = query.unwrap_or_default();
    let in_query = query
        .split('&')
        .any(|pair| pair.split('=').next() == Some("secret"));
    if !in_query && let Some(secret) = header_secret(&headers) {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str("secret=");
        query.extend(percent_encoding::utf8_percent_encode(
            &secret,
            percent_encoding::NON_ALPHANUMERIC,
        ));
    }
    let result = apply_callback(&sms.reports, &sms.gateways, &gateway, &query, &body).await;
    let error = match result {
        Ok((_, state_after)) => {
            if state_after == "queued" {
                (sms.wake)();
            }
            let ack = sms.gateways.get(&gateway).map_or("OK", |g| g.dlr_ack());
            return Ok((
                axum::http::StatusCode::OK,
                [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                ack,
            ));
        }
        Err(e @ (ReportError::NotStored(_) | ReportError::Stopped)) => {
            return Err(ApiError::unavailable(e.to_string()));
        }
        Err(e @ ReportError::UnknownGateway(_)) => ApiError::not_found(e.to_string()),
        Err(e @ ReportError::UnknownMessage(_)) => ApiError::not_found(e.to_string()),
        Err(ReportError::Refused(e)) => match e {
            ::sms::callback::DlrError::MissingSecret | ::sms::callback::DlrError::WrongSecret => {
                ApiError::unauthorized(e.to_string())
            }
            other => ApiError::bad_request("report", other.to_string()),
        },
    };
    let source = format!("sms-dlr:{}", gateway.chars().take(40).collect::<String>());
    // A report's fields come from outside: keep what is logged and stored short.
    let reason: String = format!("{}: {}", error.status.as_u16(), error.detail)
        .chars()
        .take(300)
        .collect();
    // Anyone can send these by the thousand: each is counted, one a second recorded.
    if let Some(n) = state.counters.dlr_refused.hit(now) {
        tracing::warn!(%source, %reason, refused_since_start = n, "delivery report refused");
        state
            .store
            .record_rejection(
                "http",
                &source,
                &format!("{reason} ({n} refused since start)"),
                now,
            )
            .await
            .map_err(ApiError::internal)?;
    } else {
        tracing::debug!(%source, %reason, "delivery report refused");
    }
    Err(error)
}

/// A delivery report's secret sent in a header: `X-Canhbao-Dlr-Secret`, or the password of
/// `Authorization: Basic`.
fn header_secret(headers: &axum::http::HeaderMap) -> Option<String> {
    use base64::Engine as _;
    // A secret may hold any UTF-8 (header values are bytes; `to_str` takes ASCII only).
    if let Some(v) = headers
        .get("x-canhbao-dlr-secret")
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
    {
        return Some(v.trim().to_owned());
    }
    let basic = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    decoded.split_once(':').map(|(_, password)| password.to_owned())
}
