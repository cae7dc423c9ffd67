//! The SMS sender: decides fallbacks and follow-ups, claims due messages under a lease,
//! marks each `sending` (committed) just before its gateway call leaves, hands them to
//! their gateways within each gateway's limits, records the outcomes, and moves messages
//! whose report is overdue to the next gateway. It sweeps every `sweep_every`, and at once
//! when a delivery report moves a message to another gateway.
//!
//! Where a second copy can still happen: a gateway that took a message (Kannel does not
//! deduplicate) but whose every delivery report was lost for longer than the report
//! deadline, while another gateway is configured. A crash or restart alone never resends:
//! a message left `sending` waits for its report like an unanswered send.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::MessageClass;
use store::{NewSms, SmsClaim, SmsOutcome, Store};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::callback::{DeliveryReport, DlrError};
use crate::gateways::Gateway;
use crate::message::{MessageRef, SmsMessage};
use crate::plan::{
    CommuneLoudspeakers, FallbackAfter, ReportEffect, Route, SmsState, SmsTiming, after_report, after_send,
    fallback, message_ref,
};
use crate::text::{Encoding, SmsPolicy, SmsTemplates, render};

/// How the SMS channel behaves.
#[derive(Debug, Clone)]
pub struct SmsSettings {
    pub policy: SmsPolicy,
    pub templates: SmsTemplates,
    pub fallback_after: FallbackAfter,
    /// Directory roles that get the fallback (`commune_chair`, `village_head`, `resident`).
    pub roles: Vec<String>,
    pub timing: SmsTiming,
    /// How long a claim is held: longer than any gateway's timeout.
    pub lease: chrono::Duration,
    /// Messages claimed per round.
    pub batch: i64,
    /// How often fallbacks, follow-ups and overdue reports are looked at.
    pub sweep_every: Duration,
}

/// The configured gateways, in failover order (the first is the primary).
#[derive(Debug, Clone)]
pub struct Gateways {
    order: Vec<String>,
    by_id: HashMap<String, Arc<Gateway>>,
}

impl Gateways {
    pub fn new(gateways: Vec<Gateway>) -> Self {
        let order = gateways.iter().map(|g| g.id().to_owned()).collect();
        let by_id = gateways
            .into_iter()
            .map(|g| (g.id().to_owned(), Arc::new(g)))
            .collect();
        Self { order, by_id }
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn order(&self) -> &[String] {
        &self.order
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Gateway>> {
        self.by_id.get(id)
    }

    pub fn primary(&self) -> Option<&str> {
        self.order.first().map(String::as_str)
    }

    pub fn close(&self) {
        self.by_id.values().for_each(|g| g.close());
    }
}

/// Why a delivery-report callback was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("no sms gateway is called {0:?}")]
    UnknownGateway(String),
    #[error(transparent)]
    Refused(#[from] DlrError),
    #[error("no sms has the reference {0}")]
    UnknownMessage(String),
    #[error("the report could not be stored: {0}")]
    NotStored(String),
    #[error("the sms channel is stopping")]
    Stopped,
}

/// Most reports applied in one transaction.
const REPORT_BATCH: usize = 256;

type Reply = tokio::sync::oneshot::Sender<Result<String, ReportError>>;

/// Hands authenticated reports to [`run_report_applier`], which applies whatever has
/// arrived together in one transaction: a burst of reports costs one disk sync, not one
/// each.
#[derive(Debug, Clone)]
pub struct ReportApplier {
    tx: tokio::sync::mpsc::Sender<(store::IncomingReport, Reply)>,
}

impl ReportApplier {
    /// The handle, and the receiving end for [`run_report_applier`].
    pub fn new() -> (Self, ReportQueue) {
        let (tx, rx) = tokio::sync::mpsc::channel(4 * REPORT_BATCH);
        (Self { tx }, ReportQueue(rx))
    }
}

/// The receiving end of a [`ReportApplier`].
#[derive(Debug)]
pub struct ReportQueue(tokio::sync::mpsc::Receiver<(store::IncomingReport, Reply)>);

/// Authenticates one delivery-report callback of gateway `gateway_id` and applies it
/// (idempotent: a repeat changes nothing). Returns the report and its message's state
/// once the state is stored.
pub async fn apply_callback(
    applier: &ReportApplier,
    gateways: &Gateways,
    gateway_id: &str,
    query: &str,
    body: &str,
) -> Result<(DeliveryReport, String), ReportError> {
    let gateway = gateways
        .get(gateway_id)
        .ok_or_else(|| ReportError::UnknownGateway(gateway_id.chars().take(40).collect()))?;
    let report = gateway.parse_dlr(query, body)?;
    let incoming = store::IncomingReport {
        message_ref: report.message_ref.as_str().to_owned(),
        gateway: gateway_id.to_owned(),
        status: report.status.code().to_string(),
        detail: report.reason.clone(),
        reported: report.at,
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    applier
        .tx
        .send((incoming, reply))
        .await
        .map_err(|_| ReportError::Stopped)?;
    let state = answer.await.map_err(|_| ReportError::Stopped)??;
    Ok((report, state))
}

/// Applies queued reports in batches until every [`ReportApplier`] is gone or `shutdown`.
pub async fn run_report_applier(
    store: Store,
    gateways: Gateways,
    mut queue: ReportQueue,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = queue.0.recv() => match next {
                Some(first) => first,
                None => return,
            },
        };
        let mut batch = vec![first];
        while batch.len() < REPORT_BATCH {
            match queue.0.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let reports: Vec<store::IncomingReport> = batch.iter().map(|(r, _)| r.clone()).collect();
        let order = gateways.order();
        let result = store
            .apply_sms_reports(&reports, Utc::now(), |i, state, current, tried, refused| {
                let (Some(state), Some(status)) = (
                    SmsState::from_code(state),
                    reports[i]
                        .status
                        .parse()
                        .ok()
                        .and_then(crate::callback::DlrStatus::from_code),
                ) else {
                    return store::ReportDecision::Keep;
                };
                let route = Route {
                    gateway: current,
                    tried,
                    refused,
                    order,
                };
                match after_report(state, status, &reports[i].gateway, &route) {
                    ReportEffect::Keep => store::ReportDecision::Keep,
                    ReportEffect::Set(s) => store::ReportDecision::Set(s.code().to_owned()),
                    ReportEffect::MoveTo(g) => store::ReportDecision::MoveTo(g),
                }
            })
            .await;
        match result {
            Ok(applied) => {
                for ((report, reply), applied) in batch.into_iter().zip(applied) {
                    let _ = reply.send(match applied {
                        store::SmsReportApplied::Unknown => {
                            Err(ReportError::UnknownMessage(report.message_ref))
                        }
                        store::SmsReportApplied::Applied { state, .. } => Ok(state),
                    });
                }
            }
            Err(e) => {
                tracing::error!(error = %e, reports = batch.len(), "sms delivery reports could not be stored");
                let reason = e.to_string();
                for (_, reply) in batch {
                    let _ = reply.send(Err(ReportError::NotStored(reason.clone())));
                }
            }
        }
    }
}

/// Runs the sender until `shutdown`. Store errors are logged and retried; they never end it.
pub async fn run_sms(
    store: Store,
    gateways: Gateways,
    settings: SmsSettings,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    match store
        .extend_sms_deadlines(Utc::now(), settings.timing.report_deadline)
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            messages = n,
            "sms waiting for delivery reports get a full deadline from this start"
        ),
        Err(e) => tracing::error!(error = %e, "sms report deadlines could not be extended"),
    }
    let (marker, marks) = tokio::sync::mpsc::channel(4 * REPORT_BATCH);
    let marker = Marker(marker);
    let marking = tokio::spawn(run_marker(store.clone(), settings.lease, marks));
    let mut last_sweep: Option<tokio::time::Instant> = None;
    loop {
        if last_sweep.is_none_or(|t| t.elapsed() >= settings.sweep_every) {
            if let Err(e) = sweep(&store, &gateways, &settings, Utc::now()).await {
                tracing::error!(error = %e, "sms sweep failed; fallbacks or failovers may be delayed");
            }
            last_sweep = Some(tokio::time::Instant::now());
        }
        let full = match send_round(&store, &gateways, &settings, &marker).await {
            Ok(n) => n as i64 >= settings.batch,
            Err(e) => {
                tracing::error!(error = %e, "sms round failed; messages may be delayed");
                false
            }
        };
        if full {
            continue;
        }
        let mut sleep = settings.sweep_every;
        if let Ok(Some(due)) = store.next_sms_due().await {
            sleep = sleep.min((due - Utc::now()).to_std().unwrap_or(Duration::ZERO));
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake.notified() => { last_sweep = None; }
            _ = tokio::time::sleep(sleep) => {}
        }
    }
    drop(marker);
    let _ = marking.await;
}

type Mark = (i64, tokio::sync::oneshot::Sender<Result<(), String>>);

/// Asks [`run_marker`] to mark a claimed message `sending`.
#[derive(Clone)]
struct Marker(tokio::sync::mpsc::Sender<Mark>);

impl Marker {
    /// Resolves once the message is marked `sending` (committed), or with why it must not
    /// be sent.
    async fn mark(&self, id: i64) -> Result<(), String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.0
            .send((id, reply))
            .await
            .map_err(|_| "the sms sender is stopping".to_owned())?;
        answer
            .await
            .map_err(|_| "the sms sender is stopping".to_owned())?
    }
}

/// Marks messages `sending` as their gateway calls come up, all that are waiting in one
/// commit, so that the mark costs one disk sync per burst, not one per message.
async fn run_marker(store: Store, lease: chrono::Duration, mut marks: tokio::sync::mpsc::Receiver<Mark>) {
    while let Some(first) = marks.recv().await {
        let mut batch = vec![first];
        while batch.len() < REPORT_BATCH {
            match marks.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let ids: Vec<i64> = batch.iter().map(|(id, _)| *id).collect();
        match store.mark_sms_sending(&ids, Utc::now(), lease).await {
            Ok(marked) => {
                for (id, reply) in batch {
                    let _ = reply.send(if marked.contains(&id) {
                        Ok(())
                    } else {
                        Err("no longer queued (superseded, expired or taken by another sender)".to_owned())
                    });
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "sms could not be marked sending; they are not sent now");
                for (_, reply) in batch {
                    let _ = reply.send(Err(format!("the sending mark could not be stored: {e}")));
                }
            }
        }
    }
}

/// Decides fallbacks and follow-ups, ends what expired, recovers what a stopped sender
/// left `sending`, and moves overdue messages on.
pub async fn sweep(
    store: &Store,
    gateways: &Gateways,
    settings: &SmsSettings,
    now: DateTime<Utc>,
) -> store::Result<()> {
    let recovered = store
        .recover_sms_sending(now, settings.timing.report_deadline)
        .await?;
    if recovered > 0 {
        tracing::warn!(
            messages = recovered,
            "sms left mid-send by a stopped sender now wait for their delivery reports"
        );
    }
    let expired = store.expire_sms(now).await?;
    if expired > 0 {
        tracing::warn!(messages = expired, "sms expired before they could be sent");
    }
    // Without a gateway, nothing new is decided: queued messages still end visibly.
    let Some(primary) = gateways.primary() else {
        return Ok(());
    };
    let mut texts: HashMap<String, Option<(String, i64)>> = HashMap::new();
    for c in store.fallback_candidates(now, 500).await? {
        let Some(class) = MessageClass::from_code(&c.class) else {
            continue;
        };
        let speakers = CommuneLoudspeakers {
            registered: usize::try_from(c.registered).unwrap_or(0),
            online_at_issue: usize::try_from(c.online_at_issue).unwrap_or(0),
            played: usize::try_from(c.played).unwrap_or(0),
        };
        let Some(reason) = fallback(class, c.sent, now, speakers, &settings.fallback_after) else {
            continue;
        };
        let Some((text, priority)) = alert_text(store, settings, &mut texts, &c.alert_id).await? else {
            continue;
        };
        let recipients = store.sms_recipients(&c.commune, &settings.roles).await?;
        let messages: Vec<NewSms> = recipients
            .iter()
            .map(|r| {
                new_sms(
                    &c.alert_id,
                    &r.phone,
                    &c.commune,
                    &r.role,
                    "fallback",
                    &text,
                    priority,
                    primary,
                    settings,
                )
            })
            .collect();
        let reason = reason.to_string();
        if store
            .decide_fallback(&c.alert_id, &c.commune, &reason, &messages, now)
            .await?
        {
            tracing::warn!(alert_id = %c.alert_id, commune = %c.commune, recipients = messages.len(), %reason,
                "loudspeakers did not cover the commune: its officials get the alert by sms");
        }
    }
    let mut follow_ups: HashMap<String, Vec<NewSms>> = HashMap::new();
    for (alert_id, phone, commune, role) in store.follow_up_candidates(now, 2000).await? {
        let Some((text, priority)) = alert_text(store, settings, &mut texts, &alert_id).await? else {
            continue;
        };
        let m = new_sms(
            &alert_id,
            &phone,
            &commune,
            &role,
            "follow_up",
            &text,
            priority,
            primary,
            settings,
        );
        follow_ups.entry(alert_id).or_default().push(m);
    }
    for (alert_id, messages) in follow_ups {
        let n = store.queue_sms(&alert_id, &messages, now).await?;
        tracing::info!(%alert_id, messages = n, "an update or cancel goes by sms to everyone who had the original by sms");
    }
    for sms in store.overdue_sms(now, 500).await? {
        let route = Route {
            gateway: &sms.gateway,
            tried: &sms.tried,
            refused: &sms.refused,
            order: gateways.order(),
        };
        let next = route.next_untried();
        let reason = match next {
            Some(g) => format!(
                "no delivery report from {} within {} s; moved to {g}",
                sms.gateway,
                settings.timing.report_deadline.num_seconds()
            ),
            None => format!(
                "no delivery report from {} within {} s and no other gateway to try",
                sms.gateway,
                settings.timing.report_deadline.num_seconds()
            ),
        };
        if store.resolve_overdue(&sms, next, &reason, now).await? {
            tracing::warn!(sms_id = sms.id, %reason, "sms report overdue");
        }
    }
    Ok(())
}

/// The SMS text of an alert and its priority, rendered once per sweep.
async fn alert_text(
    store: &Store,
    settings: &SmsSettings,
    cache: &mut HashMap<String, Option<(String, i64)>>,
    alert_id: &str,
) -> store::Result<Option<(String, i64)>> {
    if let Some(hit) = cache.get(alert_id) {
        return Ok(hit.clone());
    }
    let rendered = store.get_alert(alert_id).await?.and_then(|a| {
        let text = settings.templates.render_record(&a)?;
        let priority = MessageClass::from_code(&a.class)?.priority();
        Some((text, priority))
    });
    if rendered.is_none() {
        tracing::error!(%alert_id, "a stored alert has a code canhbao does not know; no sms is written for it");
    }
    cache.insert(alert_id.to_owned(), rendered.clone());
    Ok(rendered)
}

#[allow(clippy::too_many_arguments)]
fn new_sms(
    alert_id: &str,
    phone: &str,
    commune: &str,
    role: &str,
    cause: &str,
    text: &str,
    priority: i64,
    gateway: &str,
    settings: &SmsSettings,
) -> NewSms {
    let rendered = render(text, settings.policy);
    NewSms {
        phone: phone.to_owned(),
        commune: commune.to_owned(),
        role: role.to_owned(),
        cause: cause.to_owned(),
        message_ref: message_ref(alert_id, phone).as_str().to_owned(),
        text: rendered.text,
        encoding: rendered.encoding.label().to_owned(),
        segments: i64::from(rendered.segments),
        priority,
        gateway: gateway.to_owned(),
    }
}

/// Claims a batch under a lease, sends it concurrently within each gateway's limits (each
/// message marked `sending` just before its call leaves), and records every outcome in one
/// transaction.
async fn send_round(
    store: &Store,
    gateways: &Gateways,
    settings: &SmsSettings,
    marker: &Marker,
) -> store::Result<usize> {
    if gateways.is_empty() {
        return Ok(0);
    }
    let claimed = store
        .claim_sms(Utc::now(), settings.lease, settings.batch)
        .await?;
    let n = claimed.len();
    if n == 0 {
        return Ok(0);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for claim in claimed {
        let gateway = gateways.get(&claim.gateway).cloned();
        let order = gateways.order().to_vec();
        let timing = settings.timing;
        let marker = marker.clone();
        tasks.spawn(async move {
            let outcome = send_one(gateway.as_deref(), &claim, &order, &timing, &marker).await;
            outcome.map(|o| (claim, o))
        });
    }
    let mut outcomes = Vec::with_capacity(n);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Some(pair)) => outcomes.push(pair),
            // Called off before anything left: the message is another sender's, or ended.
            Ok(None) => {}
            // A panicked send leaves its row `sending`: recovered as unconfirmed, never resent blindly.
            Err(e) => tracing::error!(error = %e, "an sms send task failed"),
        }
    }
    store.record_sms_outcomes(&outcomes, Utc::now()).await?;
    Ok(n)
}

async fn send_one(
    gateway: Option<&Gateway>,
    claim: &SmsClaim,
    order: &[String],
    timing: &SmsTiming,
    marker: &Marker,
) -> Option<SmsOutcome> {
    let message = MessageRef::new(&claim.message_ref).map(|message_ref| SmsMessage {
        to: claim.phone.clone(),
        text: claim.text.clone(),
        encoding: if claim.encoding == Encoding::Gsm7.label() {
            Encoding::Gsm7
        } else {
            Encoding::Ucs2
        },
        message_ref,
    });
    let (Some(gateway), Ok(message)) = (gateway, message.as_ref()) else {
        // Nothing can be sent as it stands; the outcome is recorded against the mark.
        marker.mark(claim.id).await.ok()?;
        return Some(match message {
            Err(e) => SmsOutcome::Failed { error: e.to_string() },
            Ok(_) => {
                let next = order.first().cloned().unwrap_or_default();
                SmsOutcome::Retry {
                    error: format!(
                        "gateway {:?} is no longer configured; moved to {next}",
                        claim.gateway
                    ),
                    gateway: next,
                    next_attempt: Utc::now(),
                    refused_for_good: false,
                }
            }
        });
    };
    let answer = gateway.send_when(message, marker.mark(claim.id)).await;
    let route = Route {
        gateway: gateway.id(),
        tried: &claim.tried,
        refused: &claim.refused,
        order,
    };
    after_send(answer.as_ref(), &route, claim.attempts, Utc::now(), timing)
}
