//! Read views for operators: alerts with their per-commune publish state and
//! per-receiver receipts, receivers, and refused inputs.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use store::{AlertRecord, DeliveryRecord, ReceiptRecord};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, Q};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OriginDto {
    pub kind: String,
    pub detail: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertDto {
    pub id: String,
    pub province: String,
    pub msg_type: String,
    pub status: String,
    pub references: Vec<String>,
    pub hazard: String,
    pub risk_level: Option<i64>,
    pub alarm_level: Option<i64>,
    pub station: Option<String>,
    pub class: String,
    pub communes: Vec<String>,
    pub sent: DateTime<Utc>,
    pub effective: DateTime<Utc>,
    pub expires: DateTime<Utc>,
    /// `held` while a computed Emergency on an unverified figure waits for a duty
    /// officer (see `held_until`), `scheduled` before `effective` (receivers hold it until
    /// then), `live` until `expires`, then `expired`; `updated` or `cancelled` once a later
    /// message of the incident replaced it (see `replaced_by`).
    pub state: &'static str,
    /// When a held alert goes out on its own (`POST /api/v1/alerts/{id}/release` sends it
    /// sooner); once out, when it went.
    pub held_until: Option<DateTime<Utc>>,
    /// For an alert of the station follower: why it was sent (`issue`, `escalate`,
    /// `restate`, `renew`, `de-escalate`, `all-clear`); a `renew` is taken without playing
    /// by a receiver that played what it replaces; a `restate` is played again.
    pub follow: Option<String>,
    /// The newest Update or Cancel that references this alert.
    pub replaced_by: Option<String>,
    pub headline: String,
    pub description: String,
    pub instruction: String,
    pub origin: OriginDto,
    pub provisional: bool,
    pub provisional_reasons: Vec<String>,
    pub key_id: String,
    /// `loudspeaker`, and `sms` unless its officer kept it off SMS.
    pub channels: Vec<&'static str>,
}

impl AlertDto {
    pub(crate) fn new(a: AlertRecord, now: DateTime<Utc>) -> Self {
        Self {
            state: match (&a.replaced_by, now >= a.expires) {
                (Some((t, _)), _) if t == "Cancel" => "cancelled",
                (Some(_), _) => "updated",
                (None, true) => "expired",
                (None, false) if a.held_until.is_some_and(|h| now < h) => "held",
                (None, false) if now < a.effective => "scheduled",
                (None, false) => "live",
            },
            held_until: a.held_until,
            follow: a.follow.clone(),
            replaced_by: a.replaced_by.as_ref().map(|(_, id)| id.clone()),
            provisional: !a.provisional.is_empty(),
            id: a.id,
            province: a.province,
            msg_type: a.msg_type,
            status: a.status,
            references: a.references,
            hazard: a.hazard,
            risk_level: a.risk_level,
            alarm_level: a.alarm_level,
            station: a.station,
            class: a.class,
            communes: a.communes,
            sent: a.sent,
            effective: a.effective,
            expires: a.expires,
            headline: a.headline,
            description: a.description,
            instruction: a.instruction,
            origin: OriginDto {
                kind: a.origin_kind,
                detail: a.origin_detail,
            },
            provisional_reasons: a.provisional,
            key_id: a.signed.key_id,
            channels: if a.sms {
                vec!["loudspeaker", "sms"]
            } else {
                vec!["loudspeaker"]
            },
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryDto {
    pub commune: String,
    pub topic: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt: DateTime<Utc>,
    pub last_error: Option<String>,
    pub published_at: Option<DateTime<Utc>>,
}

impl From<DeliveryRecord> for DeliveryDto {
    fn from(d: DeliveryRecord) -> Self {
        Self {
            commune: d.commune,
            topic: d.topic,
            state: d.state,
            attempts: d.attempts,
            next_attempt: d.next_attempt,
            last_error: d.last_error,
            published_at: d.published,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReceiptDto {
    pub status: String,
    pub reason: Option<String>,
    /// When the receiver says it happened.
    pub at: DateTime<Utc>,
    /// When the service recorded it.
    pub recorded_at: DateTime<Utc>,
}

/// Everything one receiver reported about the alert.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReceiverReceiptsDto {
    pub receiver_id: String,
    pub commune: Option<String>,
    pub receipts: Vec<ReceiptDto>,
}

fn group_receipts(receipts: Vec<ReceiptRecord>) -> Vec<ReceiverReceiptsDto> {
    let mut by_receiver: BTreeMap<String, ReceiverReceiptsDto> = BTreeMap::new();
    for r in receipts {
        let entry = by_receiver
            .entry(r.receiver_id.clone())
            .or_insert_with(|| ReceiverReceiptsDto {
                receiver_id: r.receiver_id.clone(),
                commune: r.commune.clone(),
                receipts: Vec::new(),
            });
        entry.receipts.push(ReceiptDto {
            status: r.status,
            reason: r.reason,
            at: r.receiver_at,
            recorded_at: r.recorded_at,
        });
    }
    by_receiver.into_values().collect()
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertDetailDto {
    pub alert: AlertDto,
    pub deliveries: Vec<DeliveryDto>,
    pub receivers: Vec<ReceiverReceiptsDto>,
    /// Each registered receiver of the alert's communes: queued, sent, received, played,
    /// rejected, failed, expired or superseded, with the time of each step.
    pub receiver_deliveries: Vec<ReceiverDeliveryDto>,
    /// Communes whose officials got the alert by SMS, and why.
    pub sms_fallbacks: Vec<SmsFallbackDto>,
    /// Every SMS of this alert version, with where it stands.
    pub sms: Vec<SmsDto>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SmsFallbackDto {
    pub commune: String,
    pub reason: String,
    pub recipients: i64,
    pub decided: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SmsDto {
    /// The full number for admins; others see `+8491*****78`.
    pub phone: String,
    pub commune: String,
    pub role: String,
    /// `fallback`, or `follow_up` (an update or cancel to someone who had the original).
    pub cause: String,
    pub message_ref: String,
    pub encoding: String,
    pub segments: i64,
    /// queued, sending, submitted, buffered, smsc_accepted, delivered, failed,
    /// unconfirmed, unreported, superseded or expired.
    pub state: String,
    pub gateway: Option<String>,
    pub tried: Vec<String>,
    pub attempts: i64,
    pub submitted: Option<DateTime<Utc>>,
    pub finished: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

impl SmsDto {
    /// `full_number`: admins see the number, others `+8491*****78`.
    pub fn new(m: store::SmsRecord, full_number: bool) -> Self {
        Self {
            phone: if full_number {
                m.phone
            } else {
                mask_phone(&m.phone)
            },
            commune: m.commune,
            role: m.role,
            cause: m.cause,
            message_ref: m.message_ref,
            encoding: m.encoding,
            segments: m.segments,
            state: m.state,
            gateway: m.gateway,
            tried: m.tried,
            attempts: m.attempts,
            submitted: m.submitted,
            finished: m.finished,
            last_error: m.last_error,
        }
    }
}

/// `+84912345678` as `+8491*****78`: enough to tell numbers apart on a screen.
fn mask_phone(phone: &str) -> String {
    phone
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i >= 5 && i + 2 < phone.chars().count() {
                '*'
            } else {
                c
            }
        })
        .collect()
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReceiverDeliveryDto {
    pub receiver_id: String,
    pub commune: String,
    pub state: String,
    pub at: DateTime<Utc>,
    pub sent: Option<DateTime<Utc>>,
    pub received: Option<DateTime<Utc>>,
    pub played: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    /// The receiver's clock against the service's at its last heartbeat, in seconds
    /// (positive: ahead).
    pub clock_offset_s: Option<f64>,
    /// Its clock is off by more than `[fleet] max_clock_offset_s`: it judges this alert's
    /// `effective` and `expires` by a wrong clock.
    pub clock_off: bool,
}

impl ReceiverDeliveryDto {
    pub fn new(r: store::ReceiverDeliveryRecord, max_clock_offset: chrono::Duration) -> Self {
        Self {
            receiver_id: r.receiver_id,
            commune: r.commune,
            state: r.state,
            at: r.at,
            sent: r.sent,
            received: r.received,
            played: r.played,
            reason: r.reason,
            clock_offset_s: r.clock_offset_ms.map(|o| o as f64 / 1000.0),
            clock_off: crate::fleet::clock_off(r.clock_offset_ms, max_clock_offset),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertSummaryDto {
    #[serde(flatten)]
    pub alert: AlertDto,
    pub communes_published: usize,
    pub receivers_played: usize,
    pub receivers_rejected: usize,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub limit: Option<i64>,
}

pub(crate) fn limit(q: &ListQuery) -> Result<i64, ApiError> {
    match q.limit {
        None => Ok(50),
        Some(n) if (1..=500).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(
            "limit",
            format!("limit {n} must be between 1 and 500"),
        )),
    }
}

/// Filters of `GET /api/v1/alerts`; every one narrows.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    /// `Actual`, `Exercise` or `Test`.
    pub status: Option<String>,
    pub hazard: Option<String>,
    /// Risk level 1-5.
    pub level: Option<i64>,
    /// A commune code the alert targets.
    pub commune: Option<String>,
    /// `Alert`, `Update` or `Cancel`.
    pub msg_type: Option<String>,
    /// Sent at or after (RFC 3339).
    pub since: Option<String>,
    /// Sent before (RFC 3339).
    pub until: Option<String>,
    /// From the `Link: <...>; rel="next"` of the previous page.
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

fn alert_filter(state: &AppState, q: &AlertQuery) -> Result<store::AlertFilter, ApiError> {
    let time = |name: &str, v: &Option<String>| -> Result<Option<DateTime<Utc>>, ApiError> {
        v.as_deref()
            .map(|t| {
                DateTime::parse_from_rfc3339(t)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| ApiError::bad_request(name, format!("{name} must be an RFC 3339 time")))
            })
            .transpose()
    };
    if let Some(s) = &q.status
        && domain::AlertStatus::from_code(s).is_none()
    {
        return Err(ApiError::bad_request(
            "status",
            "status must be Actual, Exercise or Test",
        ));
    }
    if let Some(h) = &q.hazard
        && domain::Hazard::from_code(h).is_none()
    {
        return Err(ApiError::bad_request(
            "hazard",
            "hazard is not a hazard code such as \"flood\"",
        ));
    }
    if let Some(l) = q.level
        && !(1..=5).contains(&l)
    {
        return Err(ApiError::bad_request("level", "level must be 1 to 5"));
    }
    if let Some(c) = &q.commune
        && !state.communes.iter().any(|k| k.as_str() == c)
    {
        return Err(ApiError::bad_request(
            "commune",
            "commune is not a commune code of this province",
        ));
    }
    if let Some(m) = &q.msg_type
        && !["Alert", "Update", "Cancel"].contains(&m.as_str())
    {
        return Err(ApiError::bad_request(
            "msg_type",
            "msg_type must be Alert, Update or Cancel",
        ));
    }
    let before = match &q.cursor {
        None => None,
        Some(c) => Some(
            c.split_once('_')
                .and_then(|(ms, row)| Some((ms.parse::<i64>().ok()?, row.parse::<i64>().ok()?)))
                .ok_or_else(|| ApiError::bad_request("cursor", "cursor is not one this API gave"))?,
        ),
    };
    Ok(store::AlertFilter {
        status: q.status.clone(),
        hazard: q.hazard.clone(),
        level: q.level,
        commune: q.commune.clone(),
        msg_type: q.msg_type.clone(),
        since: time("since", &q.since)?,
        until: time("until", &q.until)?,
        before,
    })
}

/// `GET /api/v1/alerts`: newest first, filtered by `status`, `hazard`, `level`,
/// `commune`, `msg_type`, `since` and `until`; `limit` (1-500, default 50) per page, and
/// when there may be more, a `Link: <...&cursor=...>; rel="next"` header to the next.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts", security(("bearer" = [])), params(AlertQuery), responses((status = 200, description = "Newest first; a Link header with rel=\"next\" gives the next page", body = [AlertSummaryDto])))]
pub async fn list_alerts(
    State(state): State<AppState>,
    _caller: Caller,
    Q(q): Q<AlertQuery>,
) -> Result<(axum::http::HeaderMap, Json<Vec<AlertSummaryDto>>), ApiError> {
    let now = Utc::now();
    let per_page = limit(&ListQuery { limit: q.limit })?;
    let filter = alert_filter(&state, &q)?;
    let rows = state.store.find_alerts(&filter, per_page).await?;
    let next = match rows.last() {
        Some((_, (created, row))) if i64::try_from(rows.len()).unwrap_or(0) == per_page => {
            let mut params: Vec<(&str, String)> = [
                ("status", &q.status),
                ("hazard", &q.hazard),
                ("commune", &q.commune),
                ("msg_type", &q.msg_type),
                ("since", &q.since),
                ("until", &q.until),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
            .collect();
            if let Some(l) = q.level {
                params.push(("level", l.to_string()));
            }
            params.push(("limit", per_page.to_string()));
            params.push(("cursor", format!("{created}_{row}")));
            let query: Vec<String> = params
                .into_iter()
                .map(|(k, v)| format!("{k}={}", percent(&v)))
                .collect();
            Some(format!("</api/v1/alerts?{}>; rel=\"next\"", query.join("&")))
        }
        _ => None,
    };
    let mut headers = axum::http::HeaderMap::new();
    if let Some(link) = next.and_then(|l| axum::http::HeaderValue::from_str(&l).ok()) {
        headers.insert(axum::http::header::LINK, link);
    }
    // The page's counts in one query, not two per alert.
    let ids: Vec<String> = rows.iter().map(|(a, _)| a.id.clone()).collect();
    let counts = state.store.alert_counts(&ids).await?;
    let out = rows
        .into_iter()
        .map(|(a, _)| {
            let c = counts.get(&a.id).copied().unwrap_or_default();
            let n = |v: i64| usize::try_from(v).unwrap_or(0);
            AlertSummaryDto {
                communes_published: n(c.communes_published),
                receivers_played: n(c.receivers_played),
                receivers_rejected: n(c.receivers_rejected),
                alert: AlertDto::new(a, now),
            }
        })
        .collect();
    Ok((headers, Json(out)))
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
fn percent(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `GET /api/v1/alerts/{id}`: the alert with its deliveries; `{id}.cap` gives its CAP 1.2
/// document (`application/cap+xml`).
#[utoipa::path(get, path = "/api/v1/alerts/{id}", tag = "alerts", security(("bearer" = [])), params(("id" = String, Path, description = "An alert id; `{id}.cap` gives its CAP 1.2 XML (application/cap+xml)")), responses((status = 200, description = "The alert with its deliveries, receipts and SMS", body = AlertDetailDto)))]
pub async fn get_alert_or_cap(
    state: State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    match id.strip_suffix(".cap") {
        Some(id) => cap_document(&state.0, id).await.map(IntoResponse::into_response),
        None => get_alert(state, caller, Path(id))
            .await
            .map(IntoResponse::into_response),
    }
}

/// The CAP sender of this service: `canhbao.province-<code>`.
pub fn cap_sender(province: &str) -> String {
    format!("canhbao.province-{province}")
}

pub(crate) async fn cap_document(
    state: &AppState,
    id: &str,
) -> Result<([(axum::http::HeaderName, &'static str); 1], String), ApiError> {
    let alert = state
        .store
        .get_alert(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no alert {id:?}")))?;
    let mut references = Vec::new();
    for r in &alert.references {
        if let Some(old) = state.store.get_alert(r).await? {
            references.push(desk::cap_out::CapReference {
                id: old.id,
                sent: old.sent,
            });
        }
    }
    let sender = cap_sender(&state.province);
    let ctx = desk::cap_out::CapContext {
        sender: &sender,
        sender_name: "canhbao",
        commune_geocode: &state.bulletins.commune_geocode,
        level_parameter: state
            .bulletins
            .level_parameters
            .first()
            .map_or("riskLevel", String::as_str),
        hazard_parameter: &state.bulletins.hazard_parameter,
    };
    let xml =
        desk::cap_out::alert_cap_xml(&alert, &references, &ctx, |c| state.commune_names.get(c).cloned())
            .ok_or_else(|| {
                ApiError::internal(format!("alert {id} has a stored code canhbao does not know"))
            })?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/cap+xml; charset=utf-8",
        )],
        xml,
    ))
}

pub async fn get_alert(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<AlertDetailDto>, ApiError> {
    let alert = state
        .store
        .get_alert(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no alert {id:?}")))?;
    let deliveries = state.store.deliveries_for_alert(&id).await?;
    let receipts = state.store.receipts_for_alert(&id).await?;
    let tracked = state.store.receiver_deliveries(&id).await?;
    let fallbacks = state.store.fallbacks_for_alert(&id).await?;
    let messages = state.store.sms_for_alert(&id).await?;
    Ok(Json(AlertDetailDto {
        alert: AlertDto::new(alert, Utc::now()),
        deliveries: deliveries.into_iter().map(DeliveryDto::from).collect(),
        receivers: group_receipts(receipts),
        receiver_deliveries: tracked
            .into_iter()
            .map(|r| ReceiverDeliveryDto::new(r, state.max_clock_offset))
            .collect(),
        sms_fallbacks: fallbacks
            .into_iter()
            .map(|f| SmsFallbackDto {
                commune: f.commune,
                reason: f.reason,
                recipients: f.recipients,
                decided: f.decided,
            })
            .collect(),
        sms: messages
            .into_iter()
            .map(|m| SmsDto::new(m, caller.role == crate::Role::Admin))
            .collect(),
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CancelledDto {
    pub cancelled: String,
    /// The Cancel alert that carries the news to receivers.
    pub cancel_id: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReleasedDto {
    pub released: String,
}

/// `POST /api/v1/alerts/{id}/release`: a duty officer confirms a computed Emergency that
/// waits because it rests on a figure not verified; it goes out now (otherwise at its
/// deadline). Officers and admins; audited.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/release", tag = "warnings", security(("bearer" = [])), params(("id" = String, Path, description = "Its id")), responses((status = 200, description = "Released: its deliveries are due now", body = ReleasedDto), (status = 404, description = "No such alert", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 409, description = "Not waiting: never held, already released, or its deadline came", body = crate::openapi::Problem, content_type = "application/problem+json")))]
pub async fn release_alert(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ReleasedDto>, ApiError> {
    caller.require(
        &[crate::auth::Role::Admin, crate::auth::Role::Officer],
        "confirm held alerts",
    )?;
    if state.store.get_alert(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("no alert {id:?}")));
    }
    if state.pipeline.release(&id, &caller.label, Utc::now()).await? {
        Ok(Json(ReleasedDto { released: id }))
    } else {
        Err(ApiError::conflict(format!(
            "alert {id} is not waiting for confirmation (never held, already released, or its deadline came)"
        )))
    }
}

/// `POST /api/v1/alerts/{id}/cancel` with `{"reason": "..."}`: sends a Cancel
/// to every commune of a live alert. Officers and admins.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/cancel", tag = "warnings", security(("bearer" = [])), params(("id" = String, Path, description = "Its id"), ("Idempotency-Key" = String, Header, description = "The same on every retry")), request_body(content = crate::openapi::ReasonBody, content_type = "application/json"), responses((status = 201, description = "A Cancel referencing the whole incident is queued to every commune; needs an Idempotency-Key", body = CancelledDto), (status = 409, description = "Already cancelled, or not the latest of its incident", body = crate::openapi::Problem, content_type = "application/problem+json")))]
pub async fn cancel_alert(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    replay: Option<axum::Extension<crate::idempotency::Replay>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<(axum::http::StatusCode, Json<CancelledDto>), ApiError> {
    caller.require(
        &[crate::auth::Role::Admin, crate::auth::Role::Officer],
        "cancel alerts",
    )?;
    // The first try's instance died after it sent the Cancel: answer as it would have.
    if let Some(axum::Extension(crate::idempotency::Replay(cancel_id))) = replay {
        return Ok((
            axum::http::StatusCode::CREATED,
            Json(CancelledDto {
                cancelled: id,
                cancel_id,
            }),
        ));
    }
    let v = crate::warnings::json_body(&headers, &body)?;
    // Why it ends is what people will ask first: a cancel always says it.
    let reason = crate::warnings::reason(&v, "reason", true)?.unwrap_or_default();
    use desk::CancelError as E;
    match state
        .pipeline
        .cancel(&id, &reason, &caller.label, Utc::now())
        .await
    {
        Ok(cancel) => Ok((
            axum::http::StatusCode::CREATED,
            Json(CancelledDto {
                cancelled: id,
                cancel_id: cancel.id.to_string(),
            }),
        )),
        Err(e @ E::NotFound(_)) => Err(ApiError::not_found(e.to_string())),
        Err(e @ (E::AlreadyCancelled { .. } | E::NotLatest { .. })) => Err(ApiError::conflict(e.to_string())),
        Err(e @ (E::Expired { .. } | E::IsCancel(_))) => Err(ApiError::unprocessable("id", e.to_string())),
        Err(E::Desk(e)) => Err(e.into()),
        Err(e) => Err(ApiError::internal(e)),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RejectionDto {
    pub at: DateTime<Utc>,
    pub channel: String,
    pub source: String,
    pub reason: String,
}

#[utoipa::path(get, path = "/api/v1/rejections", tag = "monitoring", security(("bearer" = [])), params(ListQuery), responses((status = 200, description = "Refused inputs, newest first", body = [RejectionDto])))]
pub async fn list_rejections(
    State(state): State<AppState>,
    _caller: Caller,
    Q(q): Q<ListQuery>,
) -> Result<Json<Vec<RejectionDto>>, ApiError> {
    let rows = state.store.list_rejections(limit(&q)?).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| RejectionDto {
                at: r.at,
                channel: r.channel,
                source: r.source,
                reason: r.reason,
            })
            .collect(),
    ))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SourceDto {
    pub id: String,
    pub url: String,
    pub format: String,
    pub last_success: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub consecutive_failures: i64,
    pub accepted: i64,
    pub rejected: i64,
    pub next_poll: Option<DateTime<Utc>>,
}

/// `GET /api/v1/sources`: the health of every polled feed.
#[utoipa::path(get, path = "/api/v1/sources", tag = "monitoring", security(("bearer" = [])), responses((status = 200, description = "The health of every polled feed", body = [SourceDto])))]
pub async fn list_sources(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<Vec<SourceDto>>, ApiError> {
    let rows = state.store.list_sources().await?;
    Ok(Json(
        rows.into_iter()
            .map(|s| SourceDto {
                id: s.id,
                url: s.url,
                format: s.format,
                last_success: s.last_success,
                last_error: s.last_error,
                last_error_at: s.last_error_at,
                consecutive_failures: s.consecutive_failures,
                accepted: s.accepted,
                rejected: s.rejected,
                next_poll: s.next_poll,
            })
            .collect(),
    ))
}
