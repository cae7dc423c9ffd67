//! `GET /api/v1/alerts/{id}/deliveries`: the delivery matrix of one alert. For each
//! target commune: its topic's publish state, every registered receiver with the time it
//! was sent, received and played (or why not), the SMS fallback decision, and every SMS
//! recipient with its state and times; with a summary on top.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use chrono::Utc;
use serde::Serialize;

use crate::AppState;
use crate::alerts::{DeliveryDto, ReceiverDeliveryDto, SmsDto, SmsFallbackDto};
use crate::auth::{Caller, Role};
use crate::error::ApiError;

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct MatrixSummary {
    pub communes: usize,
    pub communes_published: usize,
    pub receivers: usize,
    /// Receivers by state: queued, sent, received, played, acknowledged (a renewal taken
    /// without playing it again), rejected, failed, expired, superseded.
    pub receivers_by_state: BTreeMap<String, usize>,
    pub sms: usize,
    pub sms_by_state: BTreeMap<String, usize>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CommuneRowDto {
    pub commune: String,
    pub name: Option<String>,
    /// The commune topic (None if the alert never targeted it).
    pub topic: Option<DeliveryDto>,
    pub receivers: Vec<ReceiverDeliveryDto>,
    pub sms_fallback: Option<SmsFallbackDto>,
    pub sms: Vec<SmsDto>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MatrixDto {
    pub alert_id: String,
    pub status: String,
    pub msg_type: String,
    /// scheduled, live, expired, updated or cancelled.
    pub state: &'static str,
    pub summary: MatrixSummary,
    pub communes: Vec<CommuneRowDto>,
}

#[utoipa::path(get, path = "/api/v1/alerts/{id}/deliveries", tag = "alerts", security(("bearer" = [])), params(("id" = String, Path, description = "Its id")), responses((status = 200, description = "The delivery matrix: each commune, receiver and SMS recipient", body = MatrixDto)))]
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<MatrixDto>, ApiError> {
    let alert = state
        .store
        .get_alert(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no alert {id:?}")))?;
    let names = &state.commune_names;
    let mut rows: BTreeMap<String, CommuneRowDto> = BTreeMap::new();
    for c in &alert.communes {
        row(&mut rows, names, c);
    }
    let mut summary = MatrixSummary {
        communes: rows.len(),
        ..Default::default()
    };
    for d in state.store.deliveries_for_alert(&id).await? {
        summary.communes_published += usize::from(d.state == "published");
        let commune = d.commune.clone();
        row(&mut rows, names, &commune).topic = Some(DeliveryDto::from(d));
    }
    for r in state.store.receiver_deliveries(&id).await? {
        summary.receivers += 1;
        *summary.receivers_by_state.entry(r.state.clone()).or_default() += 1;
        let commune = r.commune.clone();
        row(&mut rows, names, &commune)
            .receivers
            .push(ReceiverDeliveryDto::new(r, state.max_clock_offset));
    }
    for f in state.store.fallbacks_for_alert(&id).await? {
        row(&mut rows, names, &f.commune).sms_fallback = Some(SmsFallbackDto {
            commune: f.commune.clone(),
            reason: f.reason,
            recipients: f.recipients,
            decided: f.decided,
        });
    }
    let admin = caller.role == Role::Admin;
    for m in state.store.sms_for_alert(&id).await? {
        summary.sms += 1;
        *summary.sms_by_state.entry(m.state.clone()).or_default() += 1;
        let commune = m.commune.clone();
        row(&mut rows, names, &commune).sms.push(SmsDto::new(m, admin));
    }
    let detail = crate::alerts::AlertDto::new(alert, Utc::now());
    Ok(Json(MatrixDto {
        alert_id: detail.id,
        status: detail.status,
        msg_type: detail.msg_type,
        state: detail.state,
        summary,
        communes: rows.into_values().collect(),
    }))
}

/// The row of commune `c`, added if missing.
fn row<'a>(
    rows: &'a mut BTreeMap<String, CommuneRowDto>,
    names: &std::collections::HashMap<String, String>,
    c: &str,
) -> &'a mut CommuneRowDto {
    rows.entry(c.to_owned()).or_insert_with(|| CommuneRowDto {
        commune: c.to_owned(),
        name: names.get(c).cloned(),
        topic: None,
        receivers: vec![],
        sms_fallback: None,
        sms: vec![],
    })
}
