//! `POST /api/v1/alerts/preview`: what a duty officer's draft would become on every
//! channel before anyone sends it: the payload each commune's loudspeakers would get and
//! how often they would play it, and the SMS text, encoding and parts, with which
//! communes' officials would get it by SMS at once or after the fallback deadline.
//! Nothing is written, signed or sent.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use chrono::{Duration, Utc};
use dispatch::sms_plan::{CommuneLoudspeakers, fallback};
use dispatch::sms_text::render;
use domain::{AlertStatus, CommuneCode, Hazard, MessageClass, RiskLevel};
use ingest::compose::Draft;
use serde::Serialize;
use serde_json::Value;

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, FieldError, require_media};

/// The longest a draft may stay in force: a week.
const MAX_VALID_MINUTES: i64 = 7 * 24 * 60;

#[derive(Debug, Serialize)]
pub struct PreviewDto {
    /// The payload receivers would verify and play (unsigned here; signed when issued).
    pub payload: dispatch::wire::AlertPayload,
    pub loudspeakers: LoudspeakersDto,
    pub sms: SmsPreviewDto,
}

#[derive(Debug, Serialize)]
pub struct LoudspeakersDto {
    pub class: &'static str,
    pub times: u32,
    pub interval_s: u32,
    pub payload_bytes: usize,
    pub topics: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SmsPreviewDto {
    pub text: String,
    pub encoding: &'static str,
    pub segments: u32,
    /// Gateways in failover order; empty when the SMS channel is off.
    pub gateways: Vec<String>,
    pub communes: Vec<CommuneSmsDto>,
}

#[derive(Debug, Serialize)]
pub struct CommuneSmsDto {
    pub commune: String,
    pub receivers_registered: usize,
    pub receivers_online: usize,
    /// Officials in the directory who would get the SMS (not opted out).
    pub officials: usize,
    /// `at_once` (with the reason), `after_deadline` (if not every receiver plays), or
    /// `never` (an exercise or a test).
    pub fallback: &'static str,
    pub reason: String,
}

/// The draft, as JSON: `hazard`, `communes` (codes), `headline` and `description` are
/// required; `risk_level` (1-5), `class` (`emergency`, `priority`, `normal`; default by
/// level), `instruction`, `status` (`Actual`, `Exercise`, `Test`; default
/// `Actual`) and `valid_minutes` (default 360) are optional. Officers and admins.
pub async fn preview(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<PreviewDto>, ApiError> {
    caller.require(&[Role::Admin, Role::Officer], "preview alerts")?;
    require_media(&headers, &["application/json"])?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("body", format!("not valid JSON: {e}")))?;
    let draft = parse_draft(&v, &state.communes)?;
    let now = Utc::now();
    let alert = state
        .pipeline
        .draft_alert(&draft, &caller.label, now)
        .map_err(|e| ApiError::unprocessable("draft", e.to_string()))?;
    let payload = dispatch::wire::alert_payload(&alert);
    let payload_bytes = dispatch::wire::to_json(&payload).len();

    let sms = &state.sms_settings;
    let rendered = render(&sms.templates.render(&alert), sms.policy);
    let mut coverage = std::collections::BTreeMap::<String, (usize, usize)>::new();
    for f in state.store.fleet().await? {
        let c = coverage.entry(f.receiver.commune.clone()).or_default();
        c.0 += 1;
        c.1 += usize::from(crate::fleet::health(f.online, f.last_seen, now) == "online");
    }
    let mut communes = Vec::new();
    for c in &alert.communes {
        let (registered, online) = coverage.get(c.as_str()).copied().unwrap_or_default();
        let officials = state.store.sms_recipients(c.as_str(), &sms.roles).await?.len();
        let speakers = CommuneLoudspeakers {
            registered,
            online_at_issue: online,
            played: 0,
        };
        let (when, reason) = match fallback(alert.class, now, now, speakers, &sms.fallback_after) {
            _ if alert.status != AlertStatus::Actual => {
                ("never", "exercises and tests never go by SMS".to_owned())
            }
            Some(reason) => ("at_once", reason.to_string()),
            None => (
                "after_deadline",
                format!(
                    "if not every one of {registered} loudspeaker receivers reports played within {} s",
                    sms.fallback_after.for_class(alert.class).num_seconds()
                ),
            ),
        };
        communes.push(CommuneSmsDto {
            commune: c.to_string(),
            receivers_registered: registered,
            receivers_online: online,
            officials,
            fallback: when,
            reason,
        });
    }
    Ok(Json(PreviewDto {
        loudspeakers: LoudspeakersDto {
            class: alert.class.code(),
            times: u32::from(alert.repeat.times),
            interval_s: alert.repeat.interval_s,
            payload_bytes,
            topics: state.pipeline.alert_topics(&alert),
        },
        payload,
        sms: SmsPreviewDto {
            text: rendered.text,
            encoding: rendered.encoding.label(),
            segments: rendered.segments,
            gateways: state
                .sms
                .as_ref()
                .map(|s| s.gateways.order().to_vec())
                .unwrap_or_default(),
            communes,
        },
    }))
}

/// Reads a draft, naming every faulty field at once.
fn parse_draft(v: &Value, known: &[CommuneCode]) -> Result<Draft, ApiError> {
    let mut errors = Vec::new();
    let mut fail = |field: &str, detail: String| {
        errors.push(FieldError {
            field: field.to_owned(),
            detail,
        })
    };
    let text = |name: &str| {
        v.get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or_default()
    };
    let hazard = Hazard::from_code(text("hazard"));
    if hazard.is_none() {
        fail(
            "hazard",
            format!(
                "hazard {:?} is not a hazard code such as \"flood\"",
                text("hazard")
            ),
        );
    }
    let risk_level = match v.get("risk_level") {
        None | Some(Value::Null) => None,
        Some(l) => {
            let level = l
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .and_then(RiskLevel::new);
            if level.is_none() {
                fail("risk_level", format!("risk_level {l} must be 1 to 5"));
            }
            level
        }
    };
    let class = match v.get("class") {
        None | Some(Value::Null) => None,
        Some(c) => {
            let class = c.as_str().and_then(MessageClass::from_code);
            if class.is_none() {
                fail(
                    "class",
                    format!("class {c} must be emergency, priority or normal"),
                );
            }
            class
        }
    };
    let status = match v.get("status") {
        None | Some(Value::Null) => Some(AlertStatus::Actual),
        Some(s) => s.as_str().and_then(AlertStatus::from_code),
    };
    if status.is_none() {
        fail("status", "status must be Actual, Exercise or Test".into());
    }
    let mut communes = Vec::new();
    match v.get("communes").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => {
            for (i, c) in list.iter().enumerate() {
                match c.as_str().map(CommuneCode::new) {
                    Some(Ok(code)) if known.contains(&code) => communes.push(code),
                    _ => fail(
                        &format!("communes[{i}]"),
                        format!("{c} is not a commune of this province"),
                    ),
                }
            }
        }
        _ => fail("communes", "communes must list at least one commune code".into()),
    }
    for field in ["headline", "description"] {
        if text(field).is_empty() {
            fail(field, format!("{field} is required"));
        }
    }
    let headline = text("headline");
    let valid_minutes = match v.get("valid_minutes") {
        None | Some(Value::Null) => 360,
        Some(m) => match m.as_i64().filter(|m| (1..=MAX_VALID_MINUTES).contains(m)) {
            Some(m) => m,
            None => {
                fail(
                    "valid_minutes",
                    format!("valid_minutes {m} must be 1 to {MAX_VALID_MINUTES}"),
                );
                360
            }
        },
    };
    match (hazard, status) {
        (Some(hazard), Some(status)) if errors.is_empty() => Ok(Draft {
            hazard,
            risk_level,
            class,
            communes,
            headline: headline.to_owned(),
            description: text("description").to_owned(),
            instruction: text("instruction").to_owned(),
            status,
            valid_for: Duration::minutes(valid_minutes),
        }),
        _ => {
            let first = errors.first().cloned().unwrap_or(FieldError {
                field: "body".into(),
                detail: "invalid".into(),
            });
            Err(ApiError::unprocessable(first.field, first.detail).with_errors(errors))
        }
    }
}
