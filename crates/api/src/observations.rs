//! `POST /api/v1/observations`: one observation or an array of them.
//!
//! The body is checked field by field before anything is stored, so that a 400 names the
//! exact field at fault (`[2].value`), and a batch with one bad item stores nothing.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use domain::{AlertStatus, Observation, StationId};
use ingest::{IngestError, Source};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, require_media};

/// Most observations accepted in one request.
pub const MAX_BATCH: usize = 10_000;

const FIELDS: [&str; 5] = ["station", "parameter", "value", "unit", "observed_at"];

#[derive(Debug, Serialize)]
pub struct AcceptedDto {
    pub stored: usize,
    pub duplicates: usize,
    pub alerts: Vec<String>,
    /// Risk-level transitions the input caused (see `GET /api/v1/assessments`).
    pub transitions: usize,
}

impl From<ingest::AcceptReport> for AcceptedDto {
    fn from(r: ingest::AcceptReport) -> Self {
        Self {
            stored: r.stored,
            duplicates: r.duplicates,
            alerts: r.alerts.iter().map(ToString::to_string).collect(),
            transitions: r.transitions,
        }
    }
}

/// Records a refused request where operators can see it (`GET /api/v1/rejections`).
pub(crate) async fn record_refusal(
    state: &AppState,
    caller: &Caller,
    e: &ApiError,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    if !e.status.is_client_error() {
        return Ok(());
    }
    let reason = match &e.field {
        Some(f) => format!("{} ({f}): {}", e.status.as_u16(), e.detail),
        None => format!("{}: {}", e.status.as_u16(), e.detail),
    };
    tracing::warn!(source = %caller.label, reason = %reason, "input refused");
    state
        .store
        .record_rejection("http", &format!("api:{}", caller.label), &reason, now)
        .await?;
    Ok(())
}

fn string_field<'a>(obj: &'a Map<String, Value>, at: &str, name: &str) -> Result<&'a str, ApiError> {
    match obj.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(ApiError::bad_request(
            format!("{at}{name}"),
            format!("{name} must be a string, not {}", kind(other)),
        )),
        None => Err(ApiError::bad_request(
            format!("{at}{name}"),
            format!("{name} is required"),
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Turns one JSON item into a validated observation. `at` is the path prefix (`[3].`).
fn parse_item(item: &Value, at: &str, now: DateTime<Utc>) -> Result<Observation, ApiError> {
    let root = if at.is_empty() {
        "body".to_owned()
    } else {
        at.trim_end_matches('.').to_owned()
    };
    let obj = item.as_object().ok_or_else(|| {
        ApiError::bad_request(
            root.clone(),
            format!("an observation must be an object, not {}", kind(item)),
        )
    })?;
    if let Some(extra) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(
            format!("{at}{extra}"),
            format!("unknown field {extra:?}; expected {}", FIELDS.join(", ")),
        ));
    }
    let station = string_field(obj, at, "station")?;
    let station =
        StationId::new(station).map_err(|e| ApiError::bad_request(format!("{at}station"), e.to_string()))?;
    let parameter = string_field(obj, at, "parameter")?;
    let value = match obj.get("value") {
        Some(Value::Number(n)) => n.as_f64().ok_or_else(|| {
            ApiError::bad_request(format!("{at}value"), "value is not representable as a number")
        })?,
        Some(other) => {
            return Err(ApiError::bad_request(
                format!("{at}value"),
                format!("value must be a number, not {}", kind(other)),
            ));
        }
        None => return Err(ApiError::bad_request(format!("{at}value"), "value is required")),
    };
    let unit = string_field(obj, at, "unit")?;
    let observed_at = string_field(obj, at, "observed_at")?;
    let observed_at = DateTime::parse_from_rfc3339(observed_at)
        .map_err(|e| {
            ApiError::bad_request(
                format!("{at}observed_at"),
                format!("observed_at {observed_at:?} is not an RFC 3339 time with an offset: {e}"),
            )
        })?
        .with_timezone(&Utc);
    Observation::new(station, parameter, value, unit, observed_at, now)
        .map_err(|e| ApiError::bad_request(format!("{at}{}", e.field()), e.to_string()))
}

/// Parses a body holding one observation or an array of them.
pub fn parse_body(body: &[u8], now: DateTime<Utc>) -> Result<Vec<Observation>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("body", format!("the body is not valid JSON: {e}")))?;
    match &value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(ApiError::bad_request("body", "the array is empty"));
            }
            if items.len() > MAX_BATCH {
                return Err(ApiError::bad_request(
                    "body",
                    format!("{} observations in one request; at most {MAX_BATCH}", items.len()),
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| parse_item(item, &format!("[{i}]."), now))
                .collect()
        }
        _ => Ok(vec![parse_item(&value, "", now)?]),
    }
}

pub async fn post_observations(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<AcceptedDto>), ApiError> {
    caller.require(&[Role::Admin, Role::Station], "write observations")?;
    let now = Utc::now();
    let result = async {
        require_media(&headers, &["application/json"])?;
        let observations = parse_body(&body, now)?;
        let source = Source {
            name: format!("api:{}", caller.label),
            alert_status: AlertStatus::Actual,
        };
        state
            .pipeline
            .accept(observations, &source, now)
            .await
            .map_err(|e| match e {
                IngestError::UnknownStation(s) => {
                    ApiError::unprocessable("station", format!("station {s:?} is not configured"))
                }
                other => ApiError::internal(other),
            })
    }
    .await;
    match result {
        Ok(report) => Ok((StatusCode::OK, Json(AcceptedDto::from(report)))),
        Err(e) => {
            record_refusal(&state, &caller, &e, now).await?;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(body: &str) -> Option<String> {
        let now = "2026-10-09T02:00:00Z".parse().unwrap();
        parse_body(body.as_bytes(), now).err().and_then(|e| e.field)
    }

    #[test]
    fn every_malformed_body_names_its_field() {
        let ok = r#"{"station":"HUULUNG","parameter":"water_level","value":19.4,"unit":"m","observed_at":"2026-10-09T01:00:00Z"}"#;
        assert_eq!(field_of(ok), None);
        assert_eq!(field_of(&format!("[{ok},{ok}]")), None);
        let cases = [
            ("{", "body"),
            ("[]", "body"),
            ("42", "body"),
            (
                r#"{"parameter":"water_level","value":1,"unit":"m","observed_at":"2026-10-09T01:00:00Z"}"#,
                "station",
            ),
            (
                r#"{"station":"HUULUNG","parameter":"water_level","value":"19.4","unit":"m","observed_at":"2026-10-09T01:00:00Z"}"#,
                "value",
            ),
            (
                r#"{"station":"HUULUNG","parameter":"water_level","value":19.4,"unit":"cm","observed_at":"2026-10-09T01:00:00Z"}"#,
                "unit",
            ),
            (
                r#"{"station":"HUULUNG","parameter":"water_level","value":19.4,"unit":"m","observed_at":"yesterday"}"#,
                "observed_at",
            ),
            (
                r#"{"station":"HUULUNG","parameter":"water_level","value":19.4,"unit":"m","observed_at":"2026-10-09T01:00:00"}"#,
                "observed_at",
            ),
            (
                r#"{"station":"huu lung","parameter":"water_level","value":19.4,"unit":"m","observed_at":"2026-10-09T01:00:00Z"}"#,
                "station",
            ),
            (
                r#"{"station":"HUULUNG","parameter":"water_level","valeu":19.4,"unit":"m","observed_at":"2026-10-09T01:00:00Z"}"#,
                "valeu",
            ),
        ];
        for (body, field) in cases {
            assert_eq!(field_of(body).as_deref(), Some(field), "{body}");
        }
        let bad = r#"{"station":"HUULUNG","parameter":"water_level","value":1e300,"unit":"m","observed_at":"2026-10-09T01:00:00Z"}"#;
        assert_eq!(field_of(&format!("[{ok},{bad}]")).as_deref(), Some("[1].value"));
    }
}
