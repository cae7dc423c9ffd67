//! `canhbao-receiver`: the reference commune loudspeaker agent of the receiver contract
//! (`docs/receiver-protocol.md`).
//!
//! It subscribes to its commune's alert topics, verifies every envelope against the keys
//! it was given (never against anything it received), plays what verifies, and reports
//! `received`, `played`, `failed` or `rejected` on its receipt topic, with heartbeats and
//! a retained online/offline status. It trusts nothing it has not verified.
//!
//! Playing follows the message classes of Circular 39/2020: an emergency interrupts a
//! normal or priority alert, and the rest wait their turn ([`schedule`], pure). Each
//! version is recorded before it first plays ([`state`]), so that a restart never plays
//! it again. Playing is handing the alert to the caller (the binary prints it), or a
//! command that reads the text aloud ([`play`]).
//!
//! Entry points: [`run`] (in memory, printing) and [`run_with`]. The binary opens the
//! state file and decides where the receivers run; this crate reads no environment.

pub mod gate;
pub mod keys;
pub mod play;
pub mod schedule;
pub mod state;
pub mod windows;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use domain::{AlertId, CommuneCode, MessageClass, ReceiptStatus, ReceiverId};
use mqtt::{BrokerUrl, InboundMessage, MqttHandle, MqttSettings};
use protocol::Topics;
use protocol::wire::{
    self, AlertPayload, HeartbeatWire, KeyError, PROTOCOL_VERSION, Rejection, StatusWire, TrustedKeys,
};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::play::{Outcome, PlayCommand};
use crate::schedule::{Action, DropReason, Programme, Slot, StopReason};
use crate::state::{Mark, PlayedLog, envelope_digest};

/// How long a verified alert waits for a commune state that knows it before it is
/// accepted anyway: a service that publishes no commune state (older than protocol §4a),
/// or a state lost on the way, never withholds a warning for good.
pub const STATE_WAIT: Duration = Duration::from_secs(60);

/// A signed time this far ahead of the receiver's clock shows the clock is behind.
pub const CLOCK_BEHIND: chrono::Duration = chrono::Duration::minutes(5);

/// How a receiver connects and who it is.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    pub broker: BrokerUrl,
    pub receiver_id: ReceiverId,
    pub commune: CommuneCode,
    pub topics: Topics,
    /// The alert-signing keys provisioned at enrolment; a key set (§10a) replaces them.
    pub keys: TrustedKeys,
    /// The provisioning keys (§10a): the only keys a key set may be signed with. They
    /// never verify an alert. Empty: key sets are refused.
    pub provisioning: TrustedKeys,
    /// Where the key set applied last is kept (its envelope, written atomically), so that
    /// a restart keeps a revocation. `None`: kept in memory only.
    pub key_set_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<secrecy::SecretString>,
    pub heartbeat: Duration,
    /// Enrolled for drills: plays Exercise and Test alerts. A receiver not enrolled
    /// ignores them (no play, no receipt); the service does not expect it to.
    pub drills: bool,
    /// For an `mqtts://` broker: the CA to trust and this receiver's certificate.
    pub tls: mqtt::TlsMaterial,
    /// The commune's announcement windows (set by its operator): a Normal message waits
    /// for the next one. Empty: everything plays as it comes.
    pub windows: windows::AnnouncementWindows,
}

/// How a receiver remembers what it played and how it plays. The default remembers in
/// memory only and plays by emitting [`ReceiverEvent::Played`] for the caller to print.
#[derive(Debug, Default)]
pub struct Playback {
    /// The versions played; open it on a file ([`PlayedLog::open`]) so that a restart
    /// does not play them again.
    pub played: PlayedLog,
    /// Reads the alert aloud through this command, `repeat.times` times. Without one, an
    /// alert plays once, at once, by being handed to the caller.
    pub command: Option<PlayCommand>,
}

/// What happened to an alert envelope, for the caller to show or test.
#[derive(Debug, Clone)]
pub enum ReceiverEvent {
    Connected,
    /// Verified and played: printed, or its first rendition through the play command
    /// completed.
    Played(Box<AlertPayload>),
    /// Dropped, with the reason reported in the `rejected` receipt.
    Rejected {
        alert_id: String,
        reason: Rejection,
    },
    /// Accepted but not played, with the reason reported in the `failed` receipt.
    Failed {
        alert_id: String,
        reason: String,
    },
    /// A renewal of an alert that played here, taken without playing it again.
    Acknowledged {
        alert_id: String,
        renews: String,
    },
    /// Accepted, to play at its `effective` time.
    Scheduled {
        alert_id: String,
        effective: DateTime<Utc>,
    },
    /// The commune state showed that an Update or Cancel replaced it: never played.
    Replaced {
        alert_id: String,
        by: String,
    },
    /// The emergency `by` interrupted this alert's playback; it resumes afterwards.
    Interrupted {
        alert_id: String,
        by: String,
    },
    /// An Exercise or Test alert, verified, that this receiver (not enrolled for drills)
    /// did not play.
    DrillIgnored {
        alert_id: String,
        status: String,
    },
    /// A key set (§10a) verified and applied: only `trusted` verifies alerts from now on.
    KeySetApplied {
        seq: u64,
        trusted: Vec<String>,
        revoked: Vec<String>,
    },
    /// A key set not applied: forged, malformed, of another province, or older than the
    /// one held.
    KeySetRefused {
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read the trusted keys {path:?}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the trusted keys {path:?} are not a JSON key list: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("in the trusted keys {path:?}: {source}")]
    Key { path: PathBuf, source: KeyError },
}

#[derive(Deserialize)]
struct KeyFileEntry {
    key_id: String,
    public_key: String,
    /// `active`, `valid`, or `provisioning` for a key that signs key sets only.
    #[serde(default)]
    state: Option<String>,
}

/// The state of a provisioning key in the key file (protocol §10a).
pub const PROVISIONING: &str = "provisioning";

/// Reads the alert-signing keys from a JSON array of `{"key_id", "public_key", "state"}`
/// (as the service writes to `DATA_DIR/signing-keys.pub.json`); provisioning keys are
/// left out (see [`load_provisioning_keys`]).
pub fn load_trusted_keys(path: &Path, keys: &mut TrustedKeys) -> Result<(), KeyFileError> {
    load_keys(path, keys, |state| state != Some(PROVISIONING))
}

/// Reads the provisioning keys (`"state": "provisioning"`) of the same file: the keys that
/// may sign a key set, and nothing else.
pub fn load_provisioning_keys(path: &Path, keys: &mut TrustedKeys) -> Result<(), KeyFileError> {
    load_keys(path, keys, |state| state == Some(PROVISIONING))
}

fn load_keys(
    path: &Path,
    keys: &mut TrustedKeys,
    take: impl Fn(Option<&str>) -> bool,
) -> Result<(), KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let entries: Vec<KeyFileEntry> = serde_json::from_str(&text).map_err(|source| KeyFileError::Parse {
        path: path.to_owned(),
        source,
    })?;
    for e in entries.into_iter().filter(|e| take(e.state.as_deref())) {
        keys.add_base64(&e.key_id, &e.public_key)
            .map_err(|source| KeyFileError::Key {
                path: path.to_owned(),
                source,
            })?;
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

/// Runs a receiver that remembers in memory and plays by emitting events, until
/// `shutdown`.
pub async fn run(
    cfg: ReceiverConfig,
    events: mpsc::UnboundedSender<ReceiverEvent>,
    shutdown: CancellationToken,
) {
    run_with(cfg, Playback::default(), events, shutdown).await;
}

/// What wakes the receiver's loop.
enum Wake {
    Shutdown,
    Tick,
    Message(InboundMessage),
    Player(PlayerReport),
    /// A held alert waited [`STATE_WAIT`] for a commune state.
    Settled,
    /// A scheduled alert's `effective` time came.
    Due,
}

/// Runs the receiver until `shutdown`. Each handled envelope is also sent to `events`.
/// It spawns the MQTT connection's task and one task per playback through a command.
pub async fn run_with(
    cfg: ReceiverConfig,
    playback: Playback,
    events: mpsc::UnboundedSender<ReceiverEvent>,
    shutdown: CancellationToken,
) {
    let status_topic = cfg.topics.status(&cfg.receiver_id);
    let (mqtt, driver, mut inbound) = mqtt::connect(MqttSettings {
        broker: cfg.broker.clone(),
        client_id: format!("rx-{}", cfg.receiver_id),
        username: cfg.username.clone(),
        password: cfg.password.clone(),
        keep_alive: Duration::from_secs(30),
        persistent_session: true,
        subscriptions: vec![
            cfg.topics.alerts_filter(&cfg.commune),
            cfg.topics.state(&cfg.commune),
            cfg.topics.key_set(),
        ],
        last_will: Some((status_topic.clone(), status_bytes(&cfg, "offline"))),
        on_connect: Some((status_topic.clone(), status_bytes(&cfg, "online"))),
        tls: cfg.tls.clone(),
    });
    let driver_stop = CancellationToken::new();
    let driver_task = tokio::spawn(driver.run(driver_stop.clone()));
    let started = Instant::now();
    let mut heartbeat = tokio::time::interval(cfg.heartbeat);
    let (reports_tx, reports) = mpsc::unbounded_channel();
    let (keys, key_set) = keys::initial(&cfg);
    let mut agent = Agent {
        cfg: &cfg,
        keys,
        key_set,
        mqtt,
        events,
        played: playback.played,
        command: playback.command,
        programme: Programme::default(),
        pending: HashMap::new(),
        outcomes: Default::default(),
        current: None,
        reports_tx,
        reports,
        runs: 0,
        last_played: None,
        held: Vec::new(),
        gate: gate::Gate::default(),
        scheduled: Vec::new(),
        signed_floor: DateTime::<Utc>::MIN_UTC,
        last_state: None,
    };
    let mut was_connected = false;
    loop {
        let held = agent.held.iter().map(|h| h.since + STATE_WAIT).min();
        let due = agent.next_scheduled();
        let wake = tokio::select! {
            _ = shutdown.cancelled() => Wake::Shutdown,
            _ = heartbeat.tick() => Wake::Tick,
            msg = inbound.recv() => msg.map_or(Wake::Shutdown, Wake::Message),
            Some(r) = agent.reports.recv() => Wake::Player(r),
            _ = sleep_until_some(held) => Wake::Settled,
            _ = sleep_until_some(due) => Wake::Due,
        };
        match wake {
            Wake::Shutdown => break,
            Wake::Tick => {
                let connected = agent.mqtt.is_connected();
                if connected {
                    if !was_connected {
                        let _ = agent.events.send(ReceiverEvent::Connected);
                    }
                    agent.heartbeat(started.elapsed());
                }
                was_connected = connected;
                agent.played.prune(agent.trusted_now());
                // Outcomes of alerts no longer remembered (expired) are not needed either.
                let played = &agent.played;
                agent
                    .outcomes
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .retain(|id, _| played.get(id).is_some());
            }
            Wake::Message(msg) => agent.handle(msg).await,
            Wake::Player(r) => agent.on_report(r).await,
            Wake::Settled => agent.release().await,
            Wake::Due => agent.start_due().await,
        }
    }
    // Silence the loudspeaker first: a stopped receiver must not keep playing.
    agent.stop_current().await;
    // A clean stop sends no last will: say offline ourselves, then disconnect.
    let _ = agent
        .mqtt
        .enqueue(&status_topic, status_bytes(&cfg, "offline"), true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    driver_stop.cancel();
    let _ = driver_task.await;
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A verified alert, held until the commune state decides it.
struct Held {
    alert: AlertPayload,
    /// The key that signed it: a key set that revokes the key drops it.
    key_id: String,
    sha256: String,
    expires: DateTime<Utc>,
    since: tokio::time::Instant,
}

/// An accepted alert waiting for its `effective` time.
struct Scheduled {
    alert: AlertPayload,
    key_id: String,
    sha256: String,
    expires: DateTime<Utc>,
    effective: DateTime<Utc>,
}

/// An accepted alert that waits or plays.
struct Pending {
    alert: Box<AlertPayload>,
    sha256: String,
    expires: DateTime<Utc>,
    /// Renditions completed so far: an interrupted alert resumes with the rest.
    rendered: u8,
    /// Whether the version is in the played log (from the moment it first starts).
    recorded: bool,
    /// Whether the `played` receipt went out.
    played: bool,
}

/// The playback task of the alert playing through the command.
struct Current {
    id: String,
    run: u64,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// What a playback task tells the loop. `run` tells a stopped playback's late reports
/// from those of the one that replaced it.
struct PlayerReport {
    id: String,
    run: u64,
    kind: ReportKind,
}

enum ReportKind {
    /// A rendition completed successfully.
    Rendered,
    /// The playback ended on its own; never sent for a stopped one.
    Ended(Outcome),
}

/// The receiver's state, owned by its loop.
struct Agent<'a> {
    cfg: &'a ReceiverConfig,
    /// The alert-signing keys trusted now: the provisioned ones, or the last key set's.
    keys: TrustedKeys,
    /// The sequence number and digest of the key set applied, if one was.
    key_set: Option<(u64, String)>,
    mqtt: MqttHandle,
    events: mpsc::UnboundedSender<ReceiverEvent>,
    played: PlayedLog,
    command: Option<PlayCommand>,
    programme: Programme,
    pending: HashMap<String, Pending>,
    /// The final receipt sent per alert since this process started (`played`, or `failed`
    /// with its reason), repeated when the service resends the alert: a receipt lost with
    /// a broker that died is sent again.
    outcomes: std::sync::Mutex<HashMap<String, (ReceiptStatus, Option<String>)>>,
    current: Option<Current>,
    reports_tx: mpsc::UnboundedSender<PlayerReport>,
    reports: mpsc::UnboundedReceiver<PlayerReport>,
    runs: u64,
    last_played: Option<String>,
    /// Verified alerts waiting for a commune state that decides them, in arrival order.
    held: Vec<Held>,
    /// The commune state trusted on this connection.
    gate: gate::Gate,
    /// Accepted alerts waiting for their `effective` time.
    scheduled: Vec<Scheduled>,
    /// The newest time a verified message was signed at: the receiver's time never runs
    /// behind it (a clock that lost its setting must not hold or expire alerts wrongly).
    signed_floor: DateTime<Utc>,
    /// The digest and content of the last commune state verified.
    last_state: Option<(String, wire::CommuneStateWire)>,
}

impl Agent<'_> {
    fn heartbeat(&self, uptime: Duration) {
        let hb = HeartbeatWire {
            v: PROTOCOL_VERSION,
            receiver_id: self.cfg.receiver_id.to_string(),
            commune: self.cfg.commune.to_string(),
            at: wire::timestamp(Utc::now()),
            uptime_s: uptime.as_secs(),
            last_played: self.last_played.clone(),
        };
        let _ = self.mqtt.enqueue(
            &self.cfg.topics.heartbeat(&self.cfg.receiver_id),
            wire::to_json(&hb),
            false,
        );
    }

    fn send(&self, alert_id: &str, status: ReceiptStatus, reason: Option<String>) {
        if matches!(
            status,
            ReceiptStatus::Played | ReceiptStatus::Failed | ReceiptStatus::Acknowledged
        ) {
            self.outcomes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(alert_id.to_owned(), (status, reason.clone()));
        }
        let bytes = wire::receipt_bytes(
            alert_id,
            self.cfg.receiver_id.as_str(),
            self.cfg.commune.as_str(),
            status,
            reason,
            Utc::now(),
        );
        if let Err(e) = self
            .mqtt
            .enqueue(&self.cfg.topics.receipt(&self.cfg.receiver_id), bytes, false)
        {
            tracing::error!(alert_id = %alert_id, receiver = %self.cfg.receiver_id, error = %e,
                "receipt could not be queued");
        }
    }

    /// The digest of the version of `id` already accepted (played, waiting, or held),
    /// if any.
    fn seen(&self, id: &str) -> Option<&str> {
        self.played
            .played(id)
            .or_else(|| self.pending.get(id).map(|p| p.sha256.as_str()))
            .or_else(|| {
                self.scheduled
                    .iter()
                    .find(|s| s.alert.id == id)
                    .map(|s| s.sha256.as_str())
            })
            .or_else(|| {
                self.held
                    .iter()
                    .find(|h| h.alert.id == id)
                    .map(|h| h.sha256.as_str())
            })
    }

    /// The receiver's time: its clock, never behind the newest signed time it verified.
    fn trusted_now(&self) -> DateTime<Utc> {
        Utc::now().max(self.signed_floor)
    }

    /// Raises the signed floor to `signed` (a verified message's `sent` or `as_of`),
    /// saying so when that shows the clock is clearly behind.
    fn signed_at(&mut self, signed: &str) {
        let Ok(t) = signed.parse::<DateTime<Utc>>() else {
            return;
        };
        if t > self.signed_floor {
            if t - Utc::now() > CLOCK_BEHIND {
                tracing::warn!(receiver = %self.cfg.receiver_id, clock = %Utc::now(), signed = %t,
                    "this receiver's clock is behind the service's signed time; judging time by the signed time");
            }
            self.signed_floor = t;
        }
    }

    /// Handles one message from an alert topic or the commune state topic.
    async fn handle(&mut self, msg: InboundMessage) {
        // An empty retained message clears a topic: nothing to play or report.
        if msg.payload.is_empty() {
            return;
        }
        self.gate.on_connection(msg.connection);
        if self.cfg.topics.is_state(&self.cfg.commune, &msg.topic) {
            self.handle_state(msg).await;
            return;
        }
        if msg.topic == self.cfg.topics.key_set() {
            self.handle_key_set(&msg.payload);
            return;
        }
        let Some(topic_id) = self.cfg.topics.parse_alert(&self.cfg.commune, &msg.topic) else {
            tracing::warn!(topic = %msg.topic, receiver = %self.cfg.receiver_id,
                "message on an unexpected topic ignored");
            return;
        };
        // The receipt names the topic's alert id; a malformed one is reported as such.
        let valid_id = AlertId::new(&topic_id).ok();
        let receipt_id = valid_id
            .as_ref()
            .map_or_else(|| "invalid-id".to_owned(), ToString::to_string);
        let now = self.trusted_now();
        let sha256 = envelope_digest(&msg.payload);
        // A byte-identical copy sent while we listen is the service resending because it
        // lacks our `received`: acknowledge again, do not play again.
        let mut reacknowledge = false;
        // Bytes identical to a version already verified need no second verification (the
        // service resends a commune's alerts until every receiver answers).
        // A copy of one still held for the commune state is not accepted yet: no receipt.
        let held = self
            .held
            .iter()
            .any(|h| h.alert.id == topic_id && h.sha256 == sha256);
        let known = valid_id.is_some() && self.seen(&topic_id) == Some(sha256.as_str());
        let result = if known {
            reacknowledge = !msg.retain && !held;
            Ok(None)
        } else {
            wire::verify_envelope(&msg.payload, &self.keys, &topic_id, &self.cfg.commune, now).map(Some)
        }
        .and_then(|alert: Option<AlertPayload>| {
            let Some(alert) = alert else {
                return Ok(None);
            };
            // The payload's id equals the topic's; it must also be a valid id, since it
            // names receipts and lines of the state file.
            if valid_id.is_none() {
                return Err(Rejection::Malformed(format!(
                    "alert id {:?} is not 1 to 64 of A-Z, a-z, 0-9, -, _ and .",
                    alert.id
                )));
            }
            let expires = alert
                .expires
                .parse::<DateTime<Utc>>()
                .map_err(|e| Rejection::Malformed(format!("expires {:?}: {e}", alert.expires)))?;
            match self.seen(&alert.id) {
                // Retained redelivery on (re)subscribe: normal MQTT, already handled.
                Some(d) if msg.retain && d == sha256 => Ok(None),
                Some(d) if d == sha256 => {
                    reacknowledge = true;
                    Ok(None)
                }
                Some(_) => Err(Rejection::Replayed(alert.id.clone())),
                None => Ok(Some((alert, expires))),
            }
        });
        match result {
            Ok(None) => {
                if reacknowledge {
                    self.send(&receipt_id, ReceiptStatus::Received, None);
                    let outcome = self
                        .outcomes
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .get(&receipt_id)
                        .cloned();
                    if let Some((status, reason)) = outcome {
                        self.send(&receipt_id, status, reason);
                    }
                }
            }
            Ok(Some((alert, _))) if alert.status != "Actual" && !self.cfg.drills => {
                tracing::info!(alert_id = %alert.id, status = %alert.status, receiver = %self.cfg.receiver_id,
                    "not enrolled for drills: exercise or test not played");
                let _ = self.events.send(ReceiverEvent::DrillIgnored {
                    alert_id: alert.id.clone(),
                    status: alert.status.clone(),
                });
            }
            Ok(Some((alert, expires))) => {
                self.signed_at(&alert.sent.clone());
                if let Some(by) = self.superseded_by(&alert.id) {
                    tracing::info!(alert_id = %alert.id, by = %by, receiver = %self.cfg.receiver_id,
                        "alert already replaced by a newer message; not played");
                } else {
                    // Whether it came retained, queued in the session or live, the commune
                    // state decides (§4a): it waits for a state that knows it.
                    self.held.push(Held {
                        alert,
                        key_id: wire::envelope_key_id(&msg.payload).unwrap_or_default(),
                        sha256,
                        expires,
                        since: tokio::time::Instant::now(),
                    });
                    self.release().await;
                }
            }
            Err(reason) => {
                tracing::warn!(alert_id = %receipt_id, receiver = %self.cfg.receiver_id,
                    reason = %reason, "envelope rejected");
                self.send(&receipt_id, ReceiptStatus::Rejected, Some(reason.to_string()));
                let _ = self.events.send(ReceiverEvent::Rejected {
                    alert_id: receipt_id,
                    reason,
                });
            }
        }
    }

    /// Handles a message on the key set topic (§10a): a verified set newer than the one
    /// held is written to the key set file and then replaces the trusted keys at once;
    /// alerts held or scheduled under a key it no longer trusts are dropped as rejected.
    fn handle_key_set(&mut self, bytes: &[u8]) {
        let digest = envelope_digest(bytes);
        if self.key_set.as_ref().is_some_and(|(_, d)| *d == digest) {
            return; // the retained copy of the set applied already
        }
        let set =
            match wire::verify_key_set(bytes, &self.cfg.provisioning, self.cfg.topics.province().as_str()) {
                Ok(set) => set,
                Err(reason) => {
                    tracing::error!(receiver = %self.cfg.receiver_id, reason = %reason,
                    "key set refused: it does not verify against the provisioning keys");
                    let _ = self.events.send(ReceiverEvent::KeySetRefused {
                        reason: reason.to_string(),
                    });
                    return;
                }
            };
        if let Some((held, _)) = self.key_set
            && set.wire.seq <= held
        {
            tracing::warn!(receiver = %self.cfg.receiver_id, seq = set.wire.seq, held,
                "key set older than (or as old as) the one applied; ignored");
            let _ = self.events.send(ReceiverEvent::KeySetRefused {
                reason: format!("stale: key set {} is not newer than {held}", set.wire.seq),
            });
            return;
        }
        if let Some(path) = &self.cfg.key_set_file
            && let Err(e) = keys::persist(path, bytes)
        {
            // The revocation matters now: apply it, and say loudly that a restart loses it
            // until the broker's retained copy arrives again.
            tracing::error!(receiver = %self.cfg.receiver_id, path = %path.display(), error = %e,
                "key set applied but not saved");
        }
        let trusted = set.keys.ids();
        tracing::info!(receiver = %self.cfg.receiver_id, seq = set.wire.seq, trusted = ?trusted,
            revoked = ?set.wire.revoked, "key set applied");
        self.keys = set.keys;
        self.key_set = Some((set.wire.seq, digest));
        // What waits under a key no longer trusted never plays.
        let keys = &self.keys;
        let (held, dropped_held): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| keys.contains(&h.key_id));
        let (scheduled, dropped_scheduled): (Vec<Scheduled>, Vec<Scheduled>) =
            std::mem::take(&mut self.scheduled)
                .into_iter()
                .partition(|s| keys.contains(&s.key_id));
        self.held = held;
        self.scheduled = scheduled;
        for (id, key_id) in dropped_held
            .into_iter()
            .map(|h| (h.alert.id, h.key_id))
            .chain(dropped_scheduled.into_iter().map(|s| (s.alert.id, s.key_id)))
        {
            let reason = Rejection::UnknownKey(key_id);
            tracing::warn!(alert_id = %id, receiver = %self.cfg.receiver_id, reason = %reason,
                "waiting alert dropped: the key set no longer trusts its key");
            self.send(&id, ReceiptStatus::Rejected, Some(reason.to_string()));
            let _ = self.events.send(ReceiverEvent::Rejected { alert_id: id, reason });
        }
        let _ = self.events.send(ReceiverEvent::KeySetApplied {
            seq: set.wire.seq,
            trusted,
            revoked: set.wire.revoked,
        });
    }

    /// The alert that replaced `id` before it played here, if one did.
    fn superseded_by(&self, id: &str) -> Option<String> {
        match self.played.get(id) {
            Some(Mark::Superseded { by }) => Some(by.clone()),
            _ => None,
        }
    }

    /// Handles a message on the commune state topic: a verified state may decide the
    /// held alerts, and tells which alerts were replaced.
    async fn handle_state(&mut self, msg: InboundMessage) {
        // The same state again (each publication of the commune repeats it) was verified
        // already.
        let digest = envelope_digest(&msg.payload);
        let verified = match &self.last_state {
            Some((d, s)) if *d == digest => Ok(s.clone()),
            _ => wire::verify_state(&msg.payload, &self.keys, &self.cfg.commune),
        };
        let state = match verified {
            Ok(s) => {
                self.last_state = Some((digest, s.clone()));
                s
            }
            Err(reason) => {
                // A state is not an alert: nothing to receipt, but the operator must know.
                tracing::warn!(topic = %msg.topic, receiver = %self.cfg.receiver_id, reason = %reason,
                    "commune state rejected");
                return;
            }
        };
        self.signed_at(&state.as_of.clone());
        tracing::debug!(receiver = %self.cfg.receiver_id, seq = state.seq, retained = msg.retain,
            live = state.live.len(), replaced = state.replaced.len(), "commune state");
        if self.gate.on_state(state, msg.retain, std::time::Instant::now()) == gate::StateOutcome::Resubscribe
        {
            // It may be old (queued while we were away): ask for the retained one.
            let topic = self.cfg.topics.state(&self.cfg.commune);
            if let Err(e) = self.mqtt.resubscribe(&topic) {
                tracing::warn!(topic = %topic, error = %e, receiver = %self.cfg.receiver_id,
                    "subscribing to the commune state again failed");
            }
        }
        // Remember what it says was replaced, so that a copy arriving later is ignored.
        let replaced: Vec<(String, String, DateTime<Utc>)> = self
            .gate
            .trusted()
            .map(|s| {
                s.replaced
                    .iter()
                    .filter_map(|r| Some((r.id.clone(), r.by.clone(), r.until.parse().ok()?)))
                    .collect()
            })
            .unwrap_or_default();
        for (id, by, until) in replaced {
            if self.played.get(&id).is_none() && !self.pending.contains_key(&id) {
                self.record_superseded(&id, &by, until).await;
            }
        }
        self.release().await;
    }

    /// Decides the held alerts by the trusted commune state: what it lists as live is
    /// accepted (emergencies first), what it lists as replaced never plays, and the rest
    /// waits, at most [`STATE_WAIT`].
    async fn release(&mut self) {
        let mut held = std::mem::take(&mut self.held);
        held.sort_by_key(|h| {
            std::cmp::Reverse(MessageClass::from_code(&h.alert.class).unwrap_or(MessageClass::Normal))
        });
        let now = tokio::time::Instant::now();
        for h in held {
            // An alert accepted meanwhile may have replaced it.
            if let Some(by) = self.superseded_by(&h.alert.id) {
                tracing::info!(alert_id = %h.alert.id, by = %by, receiver = %self.cfg.receiver_id,
                    "held alert replaced by a newer message; not played");
                continue;
            }
            let verdict = self.gate.verdict(&h.alert.id);
            tracing::debug!(alert_id = %h.alert.id, receiver = %self.cfg.receiver_id, verdict = ?verdict,
                trusted_seq = self.gate.trusted().map(|s| s.seq), "held alert");
            match verdict {
                gate::Verdict::Accept => self.accept(h.alert, h.key_id, h.sha256, h.expires).await,
                gate::Verdict::Replaced { by, until } => {
                    tracing::info!(alert_id = %h.alert.id, by = %by, receiver = %self.cfg.receiver_id,
                        "the commune state says this alert was replaced; not played");
                    self.record_superseded(&h.alert.id, &by, until.max(h.expires))
                        .await;
                    let _ = self.events.send(ReceiverEvent::Replaced {
                        alert_id: h.alert.id,
                        by,
                    });
                }
                gate::Verdict::Wait if now >= h.since + STATE_WAIT => {
                    tracing::warn!(alert_id = %h.alert.id, receiver = %self.cfg.receiver_id,
                        waited_s = STATE_WAIT.as_secs(),
                        "no commune state knows this alert; accepting it rather than withholding a warning");
                    self.accept(h.alert, h.key_id, h.sha256, h.expires).await;
                }
                gate::Verdict::Wait => self.held.push(h),
            }
        }
    }

    /// When the next scheduled alert is due, if any is scheduled.
    fn next_scheduled(&self) -> Option<tokio::time::Instant> {
        let next = self.scheduled.iter().map(|s| s.effective).min()?;
        let wait = (next - self.trusted_now()).to_std().unwrap_or(Duration::ZERO);
        Some(tokio::time::Instant::now() + wait)
    }

    /// When a Normal `alert` that may play from `from` must wait for the commune's next
    /// announcement window: its opening; `None` if it need not wait.
    fn window_for(&self, alert: &AlertPayload, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if MessageClass::from_code(&alert.class) != Some(MessageClass::Normal) {
            return None;
        }
        self.cfg.windows.next_opening(from)
    }

    /// Hands the scheduled alerts whose `effective` time came to the programme.
    async fn start_due(&mut self) {
        let now = self.trusted_now();
        let (due, later): (Vec<Scheduled>, Vec<Scheduled>) = std::mem::take(&mut self.scheduled)
            .into_iter()
            .partition(|s| s.effective <= now);
        self.scheduled = later;
        for s in due {
            if self.superseded_by(&s.alert.id).is_some() {
                continue;
            }
            tracing::info!(alert_id = %s.alert.id, receiver = %self.cfg.receiver_id, "scheduled alert takes effect");
            self.enter(s.alert, s.sha256, s.expires).await;
        }
    }

    /// Writes that `by`, which expires at `expires`, replaced `id` before it played here.
    async fn record_superseded(&mut self, id: &str, by: &str, expires: DateTime<Utc>) {
        let append = self.played.record_superseded(id, by, expires);
        self.write(id, append).await;
    }

    /// A verified new version: report it received; take a renewal of what played here
    /// without playing it; hold one not yet effective; hand the rest to the programme.
    async fn accept(&mut self, alert: AlertPayload, key_id: String, sha256: String, expires: DateTime<Utc>) {
        self.send(&alert.id, ReceiptStatus::Received, None);
        // What it replaces and this receiver has not started (unseen, held, or waiting
        // for its time) must not play later, as it would if the broker still retains it.
        // What waits or plays, the programme stops.
        for r in &alert.references {
            self.scheduled.retain(|s| s.alert.id != *r);
            if self.played.get(r).is_none() && !self.pending.contains_key(r) {
                self.record_superseded(r, &alert.id, expires).await;
            }
        }
        // A renewal of an alert this receiver played (or is playing) says nothing new:
        // the same level, a later expiry (§8).
        if alert.renewal
            && let Some(renews) = alert
                .references
                .iter()
                .rev()
                .find(|r| self.played.played(r).is_some() || self.pending.contains_key(*r))
                .cloned()
        {
            tracing::info!(alert_id = %alert.id, renews = %renews, receiver = %self.cfg.receiver_id,
                "renewal of an alert that played here; not played again");
            self.record(&alert.id, &sha256, expires).await;
            self.send(&alert.id, ReceiptStatus::Acknowledged, None);
            let _ = self.events.send(ReceiverEvent::Acknowledged {
                alert_id: alert.id.clone(),
                renews,
            });
            return;
        }
        let now = self.trusted_now();
        let effective = alert.effective.parse::<DateTime<Utc>>().ok().filter(|e| *e > now);
        // A Normal message waits for the commune's next announcement window, from when it
        // takes effect.
        let effective = match self.window_for(&alert, effective.unwrap_or(now)) {
            Some(opening) => Some(opening),
            None => effective,
        };
        if let Some(effective) = effective.filter(|e| *e > now) {
            tracing::info!(alert_id = %alert.id, effective = %effective, receiver = %self.cfg.receiver_id,
                "alert accepted; it plays when it takes effect");
            let _ = self.events.send(ReceiverEvent::Scheduled {
                alert_id: alert.id.clone(),
                effective,
            });
            self.scheduled.push(Scheduled {
                alert,
                key_id,
                sha256,
                expires,
                effective,
            });
            return;
        }
        self.enter(alert, sha256, expires).await;
    }

    /// Hands an accepted alert that is in effect to the programme.
    async fn enter(&mut self, alert: AlertPayload, sha256: String, expires: DateTime<Utc>) {
        let class = MessageClass::from_code(&alert.class).unwrap_or_else(|| {
            tracing::warn!(alert_id = %alert.id, class = %alert.class,
                "unknown message class; playing it as normal");
            MessageClass::Normal
        });
        let slot = Slot {
            id: alert.id.clone(),
            class,
            expires,
            references: alert.references.clone(),
        };
        self.pending.insert(
            alert.id.clone(),
            Pending {
                alert: Box::new(alert),
                sha256,
                expires,
                rendered: 0,
                recorded: false,
                played: false,
            },
        );
        let actions = self.programme.arrive(slot, self.trusted_now());
        self.apply(actions).await;
    }

    /// Carries out the programme's actions, and those that follow from them (a printed
    /// alert ends at once, and the next one starts).
    async fn apply(&mut self, actions: Vec<Action>) {
        let mut work = VecDeque::from(actions);
        while let Some(action) = work.pop_front() {
            match action {
                Action::Play(id) => work.extend(self.start(&id).await),
                Action::Stop { id, reason } => {
                    self.stop_current().await;
                    match reason {
                        StopReason::Interrupted { by } => {
                            tracing::info!(alert_id = %id, by = %by, receiver = %self.cfg.receiver_id,
                                "playback interrupted by an emergency; it resumes afterwards");
                            let _ = self.events.send(ReceiverEvent::Interrupted { alert_id: id, by });
                        }
                        StopReason::Superseded { by } => {
                            tracing::info!(alert_id = %id, by = %by, receiver = %self.cfg.receiver_id,
                                "playback stopped: replaced by a newer message");
                            self.pending.remove(&id);
                        }
                    }
                }
                Action::Drop { id, reason } => {
                    let Some(p) = self.pending.remove(&id) else {
                        continue;
                    };
                    match reason {
                        DropReason::Expired => {
                            self.fail(
                                &id,
                                p.played,
                                format!(
                                    "expired: the alert expired at {} before it could play",
                                    p.alert.expires
                                ),
                            );
                        }
                        DropReason::Superseded { by } => {
                            tracing::info!(alert_id = %id, by = %by, receiver = %self.cfg.receiver_id,
                                "waiting alert dropped: replaced by a newer message");
                            // Remember it as replaced, so that its retained copy, if the
                            // broker still holds one, does not play after a reconnect: until
                            // the later of both expiries.
                            let until = self
                                .pending
                                .get(&by)
                                .map_or(p.expires, |n| n.expires.max(p.expires));
                            self.record_superseded(&id, &by, until).await;
                        }
                    }
                }
            }
        }
    }

    /// Writes the version to the played log before anything of it plays.
    async fn record(&mut self, id: &str, sha256: &str, expires: DateTime<Utc>) {
        let append = self.played.record(id, sha256, expires);
        self.write(id, append).await;
    }

    /// Writes a line of the played log, off the loop's thread.
    async fn write(&self, id: &str, append: Option<state::Append>) {
        let Some(append) = append else {
            return;
        };
        let written = tokio::task::spawn_blocking(move || append.write()).await;
        let error = match written {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        // Playing a warning matters more than never repeating one: play it anyway.
        tracing::error!(alert_id = %id, receiver = %self.cfg.receiver_id, error = %error,
            "state not recorded; a restart may play this alert again");
    }

    /// Starts, or resumes, playing `id`. Returns the actions that follow when the playing
    /// ends at once (printing, or nothing left to play).
    async fn start(&mut self, id: &str) -> Vec<Action> {
        let Some(p) = self.pending.get(id) else {
            return self.programme.finished(self.trusted_now());
        };
        if !p.recorded {
            let (sha256, expires) = (p.sha256.clone(), p.expires);
            self.record(id, &sha256, expires).await;
            if let Some(p) = self.pending.get_mut(id) {
                p.recorded = true;
            }
        }
        let Some(cmd) = self.command.clone() else {
            // Playing is handing the alert over: it is played at once, and done.
            self.mark_played(id);
            self.pending.remove(id);
            return self.programme.finished(self.trusted_now());
        };
        let Some(p) = self.pending.get(id) else {
            return self.programme.finished(self.trusted_now());
        };
        let remaining = p.alert.repeat.times.max(1).saturating_sub(p.rendered);
        if remaining == 0 {
            self.pending.remove(id);
            return self.programme.finished(self.trusted_now());
        }
        let text = speech_vi(&p.alert);
        let interval = Duration::from_secs(u64::from(p.alert.repeat.interval_s));
        let until_expiry = (p.expires - self.trusted_now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        let deadline = tokio::time::Instant::now() + until_expiry;
        self.runs += 1;
        let run = self.runs;
        let stop = CancellationToken::new();
        let tx = self.reports_tx.clone();
        let task_stop = stop.clone();
        let task_id = id.to_owned();
        let task = tokio::spawn(async move {
            let report = |kind| {
                let _ = tx.send(PlayerReport {
                    id: task_id.clone(),
                    run,
                    kind,
                });
            };
            let outcome = play::play(&cmd, &text, remaining, interval, deadline, &task_stop, || {
                report(ReportKind::Rendered)
            })
            .await;
            if outcome != Outcome::Stopped {
                report(ReportKind::Ended(outcome));
            }
        });
        tracing::info!(alert_id = %id, receiver = %self.cfg.receiver_id, renditions = remaining,
            "playing through the play command");
        self.current = Some(Current {
            id: id.to_owned(),
            run,
            stop,
            task,
        });
        Vec::new()
    }

    /// Stops the playback under way, if any, and waits until its command is dead.
    async fn stop_current(&mut self) {
        let Some(c) = self.current.take() else {
            return;
        };
        c.stop.cancel();
        if tokio::time::timeout(Duration::from_secs(5), c.task)
            .await
            .is_err()
        {
            tracing::error!(alert_id = %c.id, receiver = %self.cfg.receiver_id,
                "playback did not stop within 5 s");
        }
        // Renditions it completed before it stopped still count.
        while let Ok(r) = self.reports.try_recv() {
            if matches!(r.kind, ReportKind::Rendered) {
                self.rendered(&r.id);
            }
        }
    }

    async fn on_report(&mut self, r: PlayerReport) {
        match r.kind {
            ReportKind::Rendered => self.rendered(&r.id),
            ReportKind::Ended(outcome) => {
                if self.current.as_ref().map(|c| c.run) != Some(r.run) {
                    return;
                }
                self.current = None;
                let played = self.pending.remove(&r.id).is_some_and(|p| p.played);
                match outcome {
                    Outcome::Done | Outcome::Stopped => {}
                    Outcome::Failed(reason) => self.fail(&r.id, played, reason),
                    Outcome::Expired => self.fail(
                        &r.id,
                        played,
                        "expired: the alert expired before its first rendition completed".into(),
                    ),
                }
                let actions = self.programme.finished(self.trusted_now());
                self.apply(actions).await;
            }
        }
    }

    /// A rendition of `id` completed: the first one makes it played.
    fn rendered(&mut self, id: &str) {
        let Some(p) = self.pending.get_mut(id) else {
            return;
        };
        p.rendered = p.rendered.saturating_add(1);
        if !p.played {
            self.mark_played(id);
        }
    }

    /// Sends the `played` receipt and event, once per version.
    fn mark_played(&mut self, id: &str) {
        let Some(p) = self.pending.get_mut(id) else {
            return;
        };
        if p.played {
            return;
        }
        p.played = true;
        let alert = p.alert.clone();
        self.send(id, ReceiptStatus::Played, None);
        self.last_played = Some(id.to_owned());
        let _ = self.events.send(ReceiverEvent::Played(alert));
    }

    /// Reports that `id` could not be played; after it was played, only logs it, since
    /// its `played` receipt already went out.
    fn fail(&self, id: &str, played: bool, reason: String) {
        if played {
            tracing::warn!(alert_id = %id, receiver = %self.cfg.receiver_id, reason = %reason,
                "a later rendition did not complete");
            return;
        }
        tracing::error!(alert_id = %id, receiver = %self.cfg.receiver_id, reason = %reason,
            "accepted alert could not be played");
        self.send(id, ReceiptStatus::Failed, Some(reason.clone()));
        let _ = self.events.send(ReceiverEvent::Failed {
            alert_id: id.to_owned(),
            reason,
        });
    }
}

/// What a loudspeaker reads out: the headline, description and instruction, with an
/// exercise or test announced before and after (protocol §8). Unlike [`render_vi`], it
/// carries no codes or ids, which mean nothing spoken.
pub fn speech_vi(a: &AlertPayload) -> String {
    let notice = match a.status.as_str() {
        "Exercise" => Some("Đây là tin diễn tập, không phải tình huống thật."),
        "Test" => Some("Đây là tin thử nghiệm, không phải tình huống thật."),
        _ => None,
    };
    let mut parts: Vec<&str> = Vec::new();
    parts.extend(notice);
    parts.push(&a.headline);
    parts.push(&a.description);
    if !a.instruction.is_empty() {
        parts.push(&a.instruction);
    }
    parts.extend(notice);
    let mut text = parts.join("\n");
    text.push('\n');
    text
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
    // A Cancel ends a warning: it has no level to state. Otherwise an unassessed level
    // is said so.
    match a.risk_level {
        Some(l) => out.push_str(&format!("Cấp độ rủi ro thiên tai: cấp {l}\n")),
        None if a.msg_type == "Cancel" => {}
        None => out.push_str("Cấp độ rủi ro thiên tai: chưa xác định\n"),
    }
    if a.provisional {
        out.push_str("Lưu ý: mức cảnh báo tính từ số liệu tạm thời.\n");
    }
    let expires = a
        .expires
        .parse::<chrono::DateTime<Utc>>()
        .map(protocol::time::local_time_vi)
        .unwrap_or_else(|_| a.expires.clone());
    let plays = if a.repeat.times > 1 {
        format!(
            "Phát {} lần, cách nhau {} giây.",
            a.repeat.times, a.repeat.interval_s
        )
    } else {
        "Phát 1 lần.".to_owned()
    };
    out.push_str(&format!("{plays} Hiệu lực đến {expires}. Mã tin: {}\n", a.id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(msg_type: &str, times: u8, interval_s: u32, risk_level: Option<u8>) -> AlertPayload {
        AlertPayload {
            v: 1,
            id: "a-1".into(),
            province: "20".into(),
            msg_type: msg_type.into(),
            status: "Actual".into(),
            references: vec![],
            sent: "2026-10-09T01:00:00Z".into(),
            effective: "2026-10-09T01:00:00Z".into(),
            expires: "2026-10-09T07:00:00Z".into(),
            hazard: "flood".into(),
            risk_level,
            alarm_level: None,
            class: "priority".into(),
            communes: vec!["06385".into()],
            headline: "Hủy cảnh báo lũ".into(),
            description: "Cảnh báo lũ sông Trung tại Hữu Lũng đã hết hiệu lực.".into(),
            instruction: String::new(),
            repeat: wire::RepeatWire { times, interval_s },
            origin: "officer".into(),
            provisional: false,
            provisional_reasons: vec![],
            renewal: false,
        }
    }

    #[test]
    fn a_cancel_states_no_level_and_a_single_play_no_interval() {
        let text = render_vi(&payload("Cancel", 1, 0, None));
        assert!(!text.contains("Cấp độ rủi ro"), "{text}");
        assert!(text.contains("Phát 1 lần. Hiệu lực đến"), "{text}");
        assert!(!text.contains("cách nhau 0 giây"), "{text}");
        let text = render_vi(&payload("Alert", 3, 300, Some(2)));
        assert!(text.contains("Cấp độ rủi ro thiên tai: cấp 2"), "{text}");
        assert!(text.contains("Phát 3 lần, cách nhau 300 giây."), "{text}");
        let text = render_vi(&payload("Alert", 1, 0, None));
        assert!(text.contains("Cấp độ rủi ro thiên tai: chưa xác định"), "{text}");
    }
}
