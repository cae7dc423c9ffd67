//! Receipts, heartbeats and status messages from receivers: parsed, checked against
//! their topic, and stored. Anything malformed or forged is refused and recorded.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use domain::{AlertId, CommuneCode, ReceiptStatus, ReceiverId};
use store::{DeliveryAdvance, NewReceipt, ReceiverTouch, Store};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::topics::{Inbound, Topics};
use crate::wire::{HeartbeatWire, PROTOCOL_VERSION, ReceiptWire, StatusWire};
use mqtt::InboundMessage;

/// What one inbound message amounts to, after checks.
#[derive(Debug, Clone, PartialEq)]
pub enum Checked {
    Receipt {
        alert_id: AlertId,
        receiver: ReceiverId,
        commune: Option<CommuneCode>,
        status: ReceiptStatus,
        reason: Option<String>,
        at: DateTime<Utc>,
    },
    Heartbeat {
        receiver: ReceiverId,
        commune: CommuneCode,
        /// The receiver's clock when it sent the heartbeat.
        at: DateTime<Utc>,
    },
    Status {
        receiver: ReceiverId,
        commune: CommuneCode,
        online: bool,
    },
    /// Observations from an automatic station; the payload is parsed by ingest.
    Telemetry { station: domain::StationId },
}

/// Longest reason text kept from a receipt.
const MAX_REASON: usize = 500;

fn same_receiver(topic: &ReceiverId, claimed: &str) -> Result<(), String> {
    if topic.as_str() == claimed {
        Ok(())
    } else {
        Err(format!(
            "receiver_id {claimed:?} in the payload does not match the topic's {topic:?}"
        ))
    }
}

fn version(v: u32) -> Result<(), String> {
    if v == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(format!("unsupported protocol version {v}"))
    }
}

fn commune(value: &str) -> Result<CommuneCode, String> {
    CommuneCode::new(value).map_err(|e| e.to_string())
}

/// Checks one inbound message. Pure: the error says what is wrong, for the operator.
pub fn check(topics: &Topics, topic: &str, payload: &[u8]) -> Result<Checked, String> {
    let kind = topics.parse_inbound(topic).map_err(|e| e.to_string())?;
    match kind {
        Inbound::Telemetry(station) => Ok(Checked::Telemetry { station }),
        Inbound::Receipt(receiver) => {
            let r: ReceiptWire = serde_json::from_slice(payload).map_err(|e| format!("receipt: {e}"))?;
            version(r.v)?;
            same_receiver(&receiver, &r.receiver_id)?;
            let alert_id = AlertId::new(&r.alert_id).map_err(|e| e.to_string())?;
            let status = ReceiptStatus::from_code(&r.status).ok_or_else(|| {
                format!(
                    "status {:?} is not received, played, acknowledged, rejected or failed",
                    r.status
                )
            })?;
            let at =
                r.at.parse::<DateTime<Utc>>()
                    .map_err(|e| format!("at {:?}: {e}", r.at))?;
            let commune = r.commune.as_deref().map(commune).transpose()?;
            let reason = r.reason.map(|mut s| {
                if s.len() > MAX_REASON {
                    let cut = (0..=MAX_REASON)
                        .rev()
                        .find(|i| s.is_char_boundary(*i))
                        .unwrap_or(0);
                    s.truncate(cut);
                }
                s
            });
            Ok(Checked::Receipt {
                alert_id,
                receiver,
                commune,
                status,
                reason,
                at,
            })
        }
        Inbound::Heartbeat(receiver) => {
            let h: HeartbeatWire = serde_json::from_slice(payload).map_err(|e| format!("heartbeat: {e}"))?;
            version(h.v)?;
            same_receiver(&receiver, &h.receiver_id)?;
            let at =
                h.at.parse::<DateTime<Utc>>()
                    .map_err(|e| format!("heartbeat at {:?}: {e}", h.at))?;
            Ok(Checked::Heartbeat {
                receiver,
                commune: commune(&h.commune)?,
                at,
            })
        }
        Inbound::Status(receiver) => {
            let s: StatusWire = serde_json::from_slice(payload).map_err(|e| format!("status: {e}"))?;
            version(s.v)?;
            same_receiver(&receiver, &s.receiver_id)?;
            let online = match s.state.as_str() {
                "online" => true,
                "offline" => false,
                other => return Err(format!("state {other:?} is not online or offline")),
            };
            Ok(Checked::Status {
                receiver,
                commune: commune(&s.commune)?,
                online,
            })
        }
    }
}

/// Station telemetry handed on to ingest: the station named by the topic, and the message.
pub type Telemetry = (domain::StationId, InboundMessage);

/// Stores what arrives on `inbound` until `shutdown` or until the channel closes; station
/// telemetry goes on to `telemetry`.
pub async fn run_inbound(
    store: Store,
    topics: Topics,
    mut inbound: mpsc::Receiver<InboundMessage>,
    telemetry: mpsc::Sender<Telemetry>,
    counters: std::sync::Arc<InboundCounters>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            msg = inbound.recv() => match msg { Some(m) => m, None => return },
        };
        // What else is already waiting goes into the same transaction: one disk sync for a
        // burst of receipts and heartbeats, not one per message.
        batch.clear();
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match inbound.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let mut stored = Vec::with_capacity(batch.len());
        for msg in batch.drain(..) {
            // The service's own alert topics, watched: a live alert's retained copy that
            // someone else cleared is published again, and the clearing recorded.
            if let Some((commune, alert_id)) = topics.parse_any_alert(&msg.topic) {
                if msg.payload.is_empty() {
                    republish_cleared(&store, &msg.topic, &alert_id, &commune).await;
                }
                continue;
            }
            // An empty retained message clears a status topic; nothing to record.
            if msg.payload.is_empty() {
                continue;
            }
            if let Ok(Inbound::Telemetry(station)) = topics.parse_inbound(&msg.topic) {
                if let Err(e) = telemetry.try_send((station, msg)) {
                    tracing::error!(error = %e, "telemetry queue full or closed; station message dropped");
                }
                continue;
            }
            stored.push(msg);
        }
        if let Err(e) = store_batch(&store, &topics, &counters, &stored).await {
            // One bad write must not cost the others: each message again, on its own.
            tracing::warn!(messages = stored.len(), error = %e, "storing an inbound batch failed; retrying one by one");
            for msg in &stored {
                if let Err(e) = store_batch(&store, &topics, &counters, std::slice::from_ref(msg)).await {
                    tracing::error!(topic = %domain::cut(&msg.topic), error = %e, "storing an inbound message failed");
                }
            }
        }
    }
}

/// A live alert's retained copy on `topic` was cleared: its delivery is queued again (the
/// outbox publishes it within its poll) and the clearing is recorded for operators. The
/// service's own clearings (an alert cancelled or expired) find no live alert and do
/// nothing.
async fn republish_cleared(store: &Store, topic: &str, alert_id: &str, commune: &CommuneCode) {
    let now = Utc::now();
    match store.requeue_live_delivery(alert_id, commune.as_str(), now).await {
        Ok(false) => {}
        Ok(true) => {
            let reason = format!(
                "the retained copy of live alert {alert_id} was cleared by another client; published again"
            );
            tracing::warn!(topic = %topic, alert_id = %alert_id, commune = %commune, "{reason}");
            if let Err(e) = store.record_rejection("mqtt", topic, &reason, now).await {
                tracing::error!(error = %e, "recording a cleared retained alert failed");
            }
        }
        Err(e) => tracing::error!(topic = %topic, error = %e, "re-queuing a cleared retained alert failed"),
    }
}

/// What the inbound task ignored without writing, since start (for `/metrics`).
#[derive(Debug, Default)]
pub struct InboundCounters {
    /// Receipts whose alert was never sent to their receiver's commune.
    pub unsent_receipts: AtomicU64,
    /// Messages from unregistered receivers beyond the listed ids.
    pub unregistered_unlisted: AtomicU64,
}

impl InboundCounters {
    pub fn unsent_receipts(&self) -> u64 {
        self.unsent_receipts.load(Ordering::Relaxed)
    }

    pub fn unregistered_unlisted(&self) -> u64 {
        self.unregistered_unlisted.load(Ordering::Relaxed)
    }
}

/// Most inbound messages stored in one transaction.
pub const MAX_BATCH: usize = 512;

async fn store_batch(
    store: &Store,
    topics: &Topics,
    counters: &InboundCounters,
    messages: &[InboundMessage],
) -> store::Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let now = Utc::now();
    let checked: Vec<Result<Checked, String>> = messages
        .iter()
        .map(|m| check(topics, &m.topic, &m.payload))
        .collect();
    let mut tx = store.begin().await?;
    // One lookup for every receiver the batch names, one multi-row statement per kind of
    // write, in place of several statements per message: the same rows, far fewer round
    // trips.
    let mut named: Vec<&str> = checked
        .iter()
        .filter_map(|c| c.as_ref().ok().and_then(|c| who(c)).map(|(r, _)| r.as_str()))
        .collect();
    named.sort_unstable();
    named.dedup();
    let registered = tx.registered_receivers(&named).await?;
    let mut receipts = Vec::new();
    let mut advances = Vec::new();
    let mut touches = Vec::new();
    // A receipt shows its receiver is online only if it is for an alert sent to it.
    let mut receipt_touches: Vec<(&str, ReceiverTouch)> = Vec::new();
    for (msg, checked) in messages.iter().zip(&checked) {
        let checked = match checked {
            Ok(c) => c,
            Err(reason) => {
                tracing::warn!(topic = %domain::cut(&msg.topic), reason = %domain::cut_to(reason, domain::TEXT_CHARS), "inbound message refused");
                tx.record_rejection("mqtt", &msg.topic, reason, now).await?;
                continue;
            }
        };
        if let Some((receiver, commune)) = who(checked) {
            match registered.get(receiver.as_str()) {
                None => {
                    tracing::debug!(receiver = %receiver, topic = %domain::cut(&msg.topic),
                        "message from an unregistered receiver ignored");
                    if !tx.count_unregistered(receiver.as_str(), &msg.topic, now).await? {
                        counters.unregistered_unlisted.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                Some(r) => {
                    if let Some(c) = commune
                        && c.as_str() != r.commune
                    {
                        let reason = format!(
                            "receiver {receiver} is registered for commune {} but reports commune {c}",
                            r.commune
                        );
                        tracing::warn!(topic = %domain::cut(&msg.topic), reason = %domain::cut_to(&reason, domain::TEXT_CHARS), "inbound message refused");
                        tx.record_rejection("mqtt", &msg.topic, &reason, now).await?;
                        continue;
                    }
                }
            }
        }
        match checked {
            Checked::Receipt {
                alert_id,
                receiver,
                commune,
                status,
                reason,
                at,
            } => {
                receipts.push(NewReceipt {
                    alert_id: alert_id.as_str(),
                    receiver_id: receiver.as_str(),
                    commune: commune.as_ref().map(CommuneCode::as_str),
                    status: status.code(),
                    reason: reason.as_deref(),
                    receiver_at: *at,
                });
                advances.push(DeliveryAdvance {
                    alert_id: alert_id.as_str(),
                    receiver_id: receiver.as_str(),
                    state: status.code(),
                    reason: reason.as_deref(),
                });
                receipt_touches.push((
                    alert_id.as_str(),
                    ReceiverTouch {
                        receiver_id: receiver.as_str(),
                        commune: commune.as_ref().map(CommuneCode::as_str),
                        online: true,
                        detail: None,
                        clock_offset_ms: None,
                    },
                ));
            }
            Checked::Heartbeat {
                receiver,
                commune,
                at,
            } => touches.push(ReceiverTouch {
                receiver_id: receiver.as_str(),
                commune: Some(commune.as_str()),
                online: true,
                detail: std::str::from_utf8(&msg.payload).ok(),
                // The receiver's clock, against ours when the heartbeat arrived (a
                // heartbeat takes well under a second to come).
                clock_offset_ms: Some((*at - now).num_milliseconds()),
            }),
            Checked::Status {
                receiver,
                commune,
                online,
            } => {
                if !online {
                    tracing::warn!(receiver = %receiver, commune = %commune, "receiver offline");
                }
                touches.push(ReceiverTouch {
                    receiver_id: receiver.as_str(),
                    commune: Some(commune.as_str()),
                    online: *online,
                    detail: None,
                    clock_offset_ms: None,
                });
            }
            Checked::Telemetry { .. } => {}
        }
    }
    // A receipt counts only for an alert that was sent to its receiver's registered
    // commune: others (made up, or meant for another commune) are counted in memory and
    // write nothing.
    let commune_of = |receiver: &str| {
        registered
            .get(receiver)
            .map(|r| r.commune.as_str())
            .unwrap_or_default()
    };
    let pairs: Vec<(&str, &str)> = receipts
        .iter()
        .map(|r| (r.alert_id, commune_of(r.receiver_id)))
        .collect();
    let sent = if pairs.is_empty() {
        Default::default()
    } else {
        tx.sent_to_communes(&pairs).await?
    };
    let was_sent =
        |alert: &str, receiver: &str| sent.contains(&(alert.to_owned(), commune_of(receiver).to_owned()));
    let before = receipts.len();
    receipts.retain(|r| was_sent(r.alert_id, r.receiver_id));
    advances.retain(|a| was_sent(a.alert_id, a.receiver_id));
    let unsent = before - receipts.len();
    if unsent > 0 {
        counters
            .unsent_receipts
            .fetch_add(unsent as u64, Ordering::Relaxed);
        tracing::debug!(
            receipts = unsent,
            "receipts for alerts never sent to their receiver ignored"
        );
    }
    touches.extend(
        receipt_touches
            .into_iter()
            .filter(|(alert, t)| was_sent(alert, t.receiver_id))
            .map(|(_, t)| t),
    );
    let new = tx.record_receipts(&receipts, now).await?;
    for (r, new) in receipts.iter().zip(new) {
        match r.status {
            "rejected" | "failed" if new => tracing::warn!(
                alert_id = %r.alert_id, receiver = %r.receiver_id, status = r.status,
                reason = r.reason.unwrap_or(""), "receiver did not play an alert"),
            _ if new => tracing::debug!(
                alert_id = %r.alert_id, receiver = %r.receiver_id, status = r.status, "receipt"),
            _ => {}
        }
    }
    tx.advance_receiver_deliveries(&advances, now).await?;
    tx.touch_receivers(&touches, now).await?;
    tx.commit().await
}

/// The receiver a checked message comes from, and the commune it names, if any. A message
/// from an unregistered receiver is counted and ignored; one that claims another commune
/// than the registered one is refused and recorded.
fn who(checked: &Checked) -> Option<(&ReceiverId, Option<&CommuneCode>)> {
    match checked {
        Checked::Receipt {
            receiver, commune, ..
        } => Some((receiver, commune.as_ref())),
        Checked::Heartbeat {
            receiver, commune, ..
        }
        | Checked::Status {
            receiver, commune, ..
        } => Some((receiver, Some(commune))),
        Checked::Telemetry { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::ProvinceCode;

    fn topics() -> Topics {
        Topics::new("canhbao/v1", ProvinceCode::new("20").unwrap()).unwrap()
    }

    fn check_err(topic: &str, payload: &str, expected: &str) {
        let got = check(&topics(), topic, payload.as_bytes()).unwrap_err();
        assert!(got.contains(expected), "{topic} {payload}: {got}");
    }

    #[test]
    fn a_valid_receipt_is_accepted() {
        let p = r#"{"v":1,"alert_id":"a-1","receiver_id":"loa-1","commune":"06385","status":"played","at":"2026-10-09T01:00:05Z"}"#;
        let got = check(&topics(), "canhbao/v1/receipts/loa-1", p.as_bytes()).unwrap();
        assert!(matches!(
            got,
            Checked::Receipt {
                status: ReceiptStatus::Played,
                ..
            }
        ));
    }

    #[test]
    fn forged_and_malformed_messages_are_refused_with_a_reason() {
        let r = "canhbao/v1/receipts/loa-1";
        check_err(
            r,
            r#"{"v":1,"alert_id":"a-1","receiver_id":"loa-2","status":"played","at":"2026-10-09T01:00:05Z"}"#,
            "does not match the topic",
        );
        check_err(
            r,
            r#"{"v":1,"alert_id":"a-1","receiver_id":"loa-1","status":"heard","at":"2026-10-09T01:00:05Z"}"#,
            "status \"heard\"",
        );
        check_err(
            r,
            r#"{"v":2,"alert_id":"a-1","receiver_id":"loa-1","status":"played","at":"2026-10-09T01:00:05Z"}"#,
            "version 2",
        );
        check_err(
            r,
            r#"{"v":1,"alert_id":"a/1","receiver_id":"loa-1","status":"played","at":"2026-10-09T01:00:05Z"}"#,
            "alert id",
        );
        check_err(r, "not json", "receipt:");
        check_err("canhbao/v1/other/loa-1", "{}", "not a receipt");
        check_err(
            "canhbao/v1/status/loa-1",
            r#"{"v":1,"receiver_id":"loa-1","commune":"06385","state":"asleep"}"#,
            "asleep",
        );
    }
}
