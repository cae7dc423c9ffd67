//! `POST /api/v1/alerts/preview`: what a duty officer's draft would become on every
//! channel before anyone sends it: the payload each commune's loudspeakers would get and
//! how often they would play it, and the SMS text, encoding and parts, with which
//! communes' officials would get it by SMS at once or after the fallback deadline.
//! Nothing is written, signed or sent.

use ::sms::plan::{CommuneLoudspeakers, fallback};
use ::sms::text::render;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use chrono::Utc;
use domain::AlertStatus;
use serde::Serialize;
use serde_json::Value;

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, require_media};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PreviewDto {
    /// The payload receivers would verify and play (unsigned here; signed when issued).
    /// The receiver contract's payload (see docs/receiver-contract).
    #[schema(value_type = Object)]
    pub payload: dispatch::wire::AlertPayload,
    pub loudspeakers: LoudspeakersDto,
    pub sms: SmsPreviewDto,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoudspeakersDto {
    pub class: &'static str,
    pub times: u32,
    pub interval_s: u32,
    pub payload_bytes: usize,
    pub topics: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SmsPreviewDto {
    pub text: String,
    pub encoding: &'static str,
    pub segments: u32,
    /// Gateways in failover order; empty when the SMS channel is off.
    pub gateways: Vec<String>,
    pub communes: Vec<CommuneSmsDto>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
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
#[utoipa::path(post, path = "/api/v1/alerts/preview", tag = "warnings", security(("bearer" = [])), request_body(content = crate::openapi::DraftBody, content_type = "application/json"), responses((status = 200, description = "What the draft would be on every channel; nothing is sent", body = PreviewDto)))]
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
    let draft = crate::draft::parse_draft(&v, &state.communes)?;
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
            _ if !draft.sms => ("never", "the warning's channels leave out SMS".to_owned()),
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
