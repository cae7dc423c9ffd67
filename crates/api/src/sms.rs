//! `POST /api/v1/sms/preview`: how a text would go out by SMS under a policy (encoding,
//! the text as sent, and the number of parts), without sending anything.

use axum::Json;
use axum::body::Bytes;
use axum::http::HeaderMap;
use dispatch::sms_text::{SmsPolicy, render};
use serde::Serialize;
use serde_json::Value;

use crate::auth::Caller;
use crate::error::{ApiError, require_media};

/// Parts allowed in UCS-2 under the `auto` policy unless the request says otherwise.
pub const DEFAULT_MAX_UCS2_SEGMENTS: u32 = 2;

/// The longest text previewed, in characters (ten concatenated parts and more).
const MAX_CHARS: usize = 2000;

#[derive(Debug, Serialize)]
pub struct PreviewDto {
    pub encoding: &'static str,
    pub segments: u32,
    pub text: String,
}

/// `{"text": "...", "policy": "ucs2" | "gsm7" | "auto", "max_ucs2_segments"?: n}`.
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
