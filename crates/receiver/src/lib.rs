//! `canhbao-receiver`: the reference commune loudspeaker agent of the receiver contract
//! (`docs/receiver-protocol.md`).
//!
//! It subscribes to its commune's alert topics, verifies every envelope against the keys
//! it was given (never against anything it received), plays what verifies, and reports
//! `received`, `played` or `rejected` on its receipt topic, with heartbeats and a retained
//! online/offline status. It trusts nothing it has not verified. Entry point: [`run`].

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use dispatch::Topics;
use dispatch::mqtt::{BrokerUrl, InboundMessage, MqttHandle, MqttSettings};
use dispatch::wire::{
    self, AlertPayload, HeartbeatWire, PROTOCOL_VERSION, Rejection, StatusWire, TrustedKeys,
};
use domain::{AlertId, CommuneCode, ReceiptStatus, ReceiverId};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How a receiver is set up.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    pub broker: BrokerUrl,
    pub receiver_id: ReceiverId,
    pub commune: CommuneCode,
    pub topics: Topics,
    pub keys: TrustedKeys,
    pub username: Option<String>,
    pub password: Option<String>,
    pub heartbeat: Duration,
}

/// What happened to an alert envelope, for the caller to show or test.
#[derive(Debug, Clone)]
pub enum ReceiverEvent {
    Connected,
    /// Verified and played.
    Played(Box<AlertPayload>),
    /// Dropped, with the reason reported in the `rejected` receipt.
    Rejected {
        alert_id: String,
        reason: Rejection,
    },
}

#[derive(Deserialize)]
struct KeyFileEntry {
    key_id: String,
    public_key: String,
}

/// Reads trusted keys from a JSON array of `{"key_id", "public_key"}` (as the service
/// writes to `DATA_DIR/signing-keys.pub.json`).
pub fn load_trusted_keys(path: &Path, keys: &mut TrustedKeys) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading trusted keys {}", path.display()))?;
    let entries: Vec<KeyFileEntry> = serde_json::from_str(&text)
        .with_context(|| format!("trusted keys {} are not a JSON key list", path.display()))?;
    for e in entries {
        keys.add_base64(&e.key_id, &e.public_key)?;
    }
    Ok(())
}

fn status_bytes(cfg: &ReceiverConfig, state: &str) -> Vec<u8> {
    wire::to_json(&StatusWire {
        v: PROTOCOL_VERSION,
        receiver_id: cfg.receiver_id.to_string(),
        commune: cfg.commune.to_string(),
        state: state.to_owned(),
    })
}

/// Played alerts: id to the exact envelope bytes, to tell a redelivery from a replay.
type Played = HashMap<String, Vec<u8>>;

/// Runs the receiver until `shutdown`. Each handled envelope is also sent to `events`.
pub async fn run(
    cfg: ReceiverConfig,
    events: mpsc::UnboundedSender<ReceiverEvent>,
    shutdown: CancellationToken,
) {
    let status_topic = cfg.topics.status(&cfg.receiver_id);
    let (mqtt, driver, mut inbound) = dispatch::mqtt::connect(MqttSettings {
        broker: cfg.broker.clone(),
        client_id: format!("rx-{}", cfg.receiver_id),
        username: cfg.username.clone(),
        password: cfg.password.clone(),
        keep_alive: Duration::from_secs(30),
        persistent_session: true,
        subscriptions: vec![cfg.topics.alerts_filter(&cfg.commune)],
        last_will: Some((status_topic.clone(), status_bytes(&cfg, "offline"))),
        on_connect: Some((status_topic.clone(), status_bytes(&cfg, "online"))),
    });
    let driver_stop = CancellationToken::new();
    let driver_task = tokio::spawn(driver.run(driver_stop.clone()));
    let started = Instant::now();
    let mut heartbeat = tokio::time::interval(cfg.heartbeat);
    let mut played = Played::new();
    let mut last_played: Option<String> = None;
    let mut was_connected = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = heartbeat.tick() => {
                if mqtt.is_connected() {
                    if !was_connected {
                        let _ = events.send(ReceiverEvent::Connected);
                    }
                    let hb = HeartbeatWire {
                        v: PROTOCOL_VERSION,
                        receiver_id: cfg.receiver_id.to_string(),
                        commune: cfg.commune.to_string(),
                        at: wire::timestamp(Utc::now()),
                        uptime_s: started.elapsed().as_secs(),
                        last_played: last_played.clone(),
                    };
                    let _ = mqtt.enqueue(&cfg.topics.heartbeat(&cfg.receiver_id), wire::to_json(&hb), false);
                }
                was_connected = mqtt.is_connected();
            }
            msg = inbound.recv() => {
                let Some(msg) = msg else { break };
                if let Some(id) = handle(&cfg, &mqtt, &mut played, &events, msg) {
                    last_played = Some(id);
                }
            }
        }
    }
    // A clean stop sends no last will: say offline ourselves, then disconnect.
    let _ = mqtt.enqueue(&status_topic, status_bytes(&cfg, "offline"), true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    driver_stop.cancel();
    let _ = driver_task.await;
}

/// Handles one message from an alert topic; returns the id if it was played.
fn handle(
    cfg: &ReceiverConfig,
    mqtt: &MqttHandle,
    played: &mut Played,
    events: &mpsc::UnboundedSender<ReceiverEvent>,
    msg: InboundMessage,
) -> Option<String> {
    // An empty retained message clears a topic: nothing to play or report.
    if msg.payload.is_empty() {
        return None;
    }
    let Some(topic_id) = cfg.topics.parse_alert(&cfg.commune, &msg.topic) else {
        tracing::warn!(topic = %msg.topic, "message on an unexpected topic ignored");
        return None;
    };
    // The receipt names the topic's alert id; a malformed one is reported as such.
    let receipt_id = AlertId::new(&topic_id)
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "invalid-id".into());
    let now = Utc::now();
    let result =
        wire::verify_envelope(&msg.payload, &cfg.keys, &topic_id, &cfg.commune, now).and_then(|alert| {
            match played.get(&alert.id) {
                // Retained redelivery on (re)subscribe: normal MQTT, already handled.
                Some(bytes) if msg.retain && *bytes == msg.payload => Ok(None),
                Some(_) => Err(Rejection::Replayed(alert.id.clone())),
                None => Ok(Some(alert)),
            }
        });
    let send = |status: ReceiptStatus, reason: Option<String>| {
        let bytes = wire::receipt_bytes(
            &receipt_id,
            cfg.receiver_id.as_str(),
            cfg.commune.as_str(),
            status,
            reason,
            Utc::now(),
        );
        if let Err(e) = mqtt.enqueue(&cfg.topics.receipt(&cfg.receiver_id), bytes, false) {
            tracing::error!(alert_id = %receipt_id, error = %e, "receipt could not be queued");
        }
    };
    match result {
        Ok(None) => None,
        Ok(Some(alert)) => {
            send(ReceiptStatus::Received, None);
            played.insert(alert.id.clone(), msg.payload.clone());
            // Playing is printing in this reference agent; the caller renders the event.
            send(ReceiptStatus::Played, None);
            let id = alert.id.clone();
            let _ = events.send(ReceiverEvent::Played(Box::new(alert)));
            Some(id)
        }
        Err(reason) => {
            tracing::warn!(alert_id = %receipt_id, reason = %reason, "envelope rejected");
            send(ReceiptStatus::Rejected, Some(reason.to_string()));
            let _ = events.send(ReceiverEvent::Rejected {
                alert_id: receipt_id.clone(),
                reason,
            });
            None
        }
    }
}

/// The alert as a loudspeaker operator would read it, in Vietnamese.
pub fn render_vi(a: &AlertPayload) -> String {
    let class = match a.class.as_str() {
        "emergency" => "KHẨN CẤP (phát ngay)",
        "priority" => "ƯU TIÊN",
        _ => "THÔNG THƯỜNG",
    };
    let kind = match a.msg_type.as_str() {
        "Update" => "Cập nhật",
        "Cancel" => "Hủy bỏ",
        _ => "Bản tin",
    };
    let status = match a.status.as_str() {
        "Exercise" => " — DIỄN TẬP, không phải tình huống thật",
        "Test" => " — THỬ NGHIỆM, không phải tình huống thật",
        _ => "",
    };
    let mut out = format!(
        "=== {kind} {class}{status} ===\n{}\n{}\n",
        a.headline, a.description
    );
    if !a.instruction.is_empty() {
        out.push_str(&format!("Khuyến cáo: {}\n", a.instruction));
    }
    match a.risk_level {
        Some(l) => out.push_str(&format!("Cấp độ rủi ro thiên tai: cấp {l}\n")),
        None => out.push_str("Cấp độ rủi ro thiên tai: chưa xác định\n"),
    }
    if a.provisional {
        out.push_str("Lưu ý: mức cảnh báo tính từ số liệu tạm thời.\n");
    }
    let expires = a
        .expires
        .parse::<chrono::DateTime<Utc>>()
        .map(dispatch::render::local_time_vi)
        .unwrap_or_else(|_| a.expires.clone());
    out.push_str(&format!(
        "Phát {} lần, cách nhau {} giây. Hiệu lực đến {expires}. Mã tin: {}\n",
        a.repeat.times, a.repeat.interval_s, a.id
    ));
    out
}
