//! Receipts, heartbeats and status messages from receivers: parsed, checked against
//! their topic, and stored. Anything malformed or forged is refused and recorded.

use chrono::{DateTime, Utc};
use domain::{AlertId, CommuneCode, ReceiptStatus, ReceiverId};
use store::{NewReceipt, Store, Tx};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::mqtt::InboundMessage;
use crate::topics::{Inbound, Topics};
use crate::wire::{HeartbeatWire, PROTOCOL_VERSION, ReceiptWire, StatusWire};

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
                    "status {:?} is not received, played, rejected or failed",
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
            Ok(Checked::Heartbeat {
                receiver,
                commune: commune(&h.commune)?,
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
        if let Err(e) = store_batch(&store, &topics, &stored).await {
            // One bad write must not cost the others: each message again, on its own.
            tracing::warn!(messages = stored.len(), error = %e, "storing an inbound batch failed; retrying one by one");
            for msg in &stored {
                if let Err(e) = store_batch(&store, &topics, std::slice::from_ref(msg)).await {
                    tracing::error!(topic = %msg.topic, error = %e, "storing an inbound message failed");
                }
            }
        }
    }
}

/// Most inbound messages stored in one transaction.
pub const MAX_BATCH: usize = 512;

async fn store_batch(store: &Store, topics: &Topics, messages: &[InboundMessage]) -> store::Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let mut tx = store.begin().await?;
    for msg in messages {
        handle(&mut tx, topics, msg).await?;
    }
    tx.commit().await
}

/// Whether `receiver` is registered for `commune` (when the message names one). A message
/// from an unregistered receiver is counted and ignored; one that claims another commune
/// than the registered one is refused and recorded.
async fn admitted(
    store: &mut Tx<'_>,
    topic: &str,
    receiver: &ReceiverId,
    commune: Option<&CommuneCode>,
    now: chrono::DateTime<Utc>,
) -> store::Result<bool> {
    match store.registered_receiver(receiver.as_str()).await? {
        None => {
            tracing::debug!(receiver = %receiver, topic, "message from an unregistered receiver ignored");
            store.count_unregistered(receiver.as_str(), topic, now).await?;
            Ok(false)
        }
        Some(r) => match commune {
            Some(c) if c.as_str() != r.commune => {
                let reason = format!(
                    "receiver {receiver} is registered for commune {} but reports commune {c}",
                    r.commune
                );
                tracing::warn!(topic, reason = %reason, "inbound message refused");
                store.record_rejection("mqtt", topic, &reason, now).await?;
                Ok(false)
            }
            _ => Ok(true),
        },
    }
}

async fn handle(store: &mut Tx<'_>, topics: &Topics, msg: &InboundMessage) -> store::Result<()> {
    let now = Utc::now();
    let checked = check(topics, &msg.topic, &msg.payload);
    let who = match &checked {
        Ok(Checked::Receipt {
            receiver, commune, ..
        }) => Some((receiver, commune.as_ref())),
        Ok(
            Checked::Heartbeat { receiver, commune }
            | Checked::Status {
                receiver, commune, ..
            },
        ) => Some((receiver, Some(commune))),
        _ => None,
    };
    if let Some((receiver, commune)) = who
        && !admitted(store, &msg.topic, receiver, commune, now).await?
    {
        return Ok(());
    }
    match checked {
        Err(reason) => {
            tracing::warn!(topic = %msg.topic, reason = %reason, "inbound message refused");
            store.record_rejection("mqtt", &msg.topic, &reason, now).await
        }
        Ok(Checked::Receipt {
            alert_id,
            receiver,
            commune,
            status,
            reason,
            at,
        }) => {
            let new = store
                .record_receipt(
                    &NewReceipt {
                        alert_id: alert_id.as_str(),
                        receiver_id: receiver.as_str(),
                        commune: commune.as_ref().map(CommuneCode::as_str),
                        status: status.code(),
                        reason: reason.as_deref(),
                        receiver_at: at,
                    },
                    now,
                )
                .await?;
            store
                .advance_receiver_delivery(
                    alert_id.as_str(),
                    receiver.as_str(),
                    status.code(),
                    reason.as_deref(),
                    now,
                )
                .await?;
            if new {
                match status {
                    ReceiptStatus::Rejected | ReceiptStatus::Failed => tracing::warn!(
                        alert_id = %alert_id, receiver = %receiver, status = status.code(),
                        reason = reason.as_deref().unwrap_or(""), "receiver did not play an alert"),
                    ReceiptStatus::Received | ReceiptStatus::Played => tracing::debug!(
                        alert_id = %alert_id, receiver = %receiver, status = status.code(), "receipt"),
                }
            }
            store
                .touch_receiver(
                    receiver.as_str(),
                    commune.as_ref().map(CommuneCode::as_str),
                    true,
                    None,
                    now,
                )
                .await
        }
        Ok(Checked::Heartbeat { receiver, commune }) => {
            let detail = String::from_utf8_lossy(&msg.payload);
            store
                .touch_receiver(
                    receiver.as_str(),
                    Some(commune.as_str()),
                    true,
                    Some(&detail),
                    now,
                )
                .await
        }
        Ok(Checked::Telemetry { .. }) => Ok(()),
        Ok(Checked::Status {
            receiver,
            commune,
            online,
        }) => {
            if !online {
                tracing::warn!(receiver = %receiver, commune = %commune, "receiver offline");
            }
            store
                .touch_receiver(receiver.as_str(), Some(commune.as_str()), online, None, now)
                .await
        }
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
