//! The reference receiver against a real broker: what it remembers across a restart, how
//! an emergency interrupts, how a failing play command is reported, and the simulated
//! fleet of the binary.
//!
//! These need an MQTT broker that allows anonymous clients, named by
//! `CANHBAO_TEST_MQTT_URL` (e.g. `mqtt://127.0.0.1:1883`); without it they pass at once.
//! Each test uses a topic prefix of its own, and clears the retained alerts it published.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use canhbao_receiver::play::PlayCommand;
use canhbao_receiver::state::PlayedLog;
use canhbao_receiver::{Playback, ReceiverConfig, ReceiverEvent, run_with};
use chrono::Utc;
use domain::{AlertId, CommuneCode, ProvinceCode, ReceiverId};
use mqtt::{BrokerUrl, InboundMessage, MqttHandle, MqttSettings};
use protocol::wire::{self, AlertPayload, ReceiptWire, RepeatWire, envelope_bytes};
use protocol::{Signer, Topics, TrustedKeys};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);
const HUU_LUNG: &str = "06385";

fn broker() -> Option<BrokerUrl> {
    let url = testkit::service("CANHBAO_TEST_MQTT_URL")?;
    Some(BrokerUrl::parse(&url).unwrap())
}

/// A name no other test run uses.
fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{tag}-{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A test's own world on the broker: its topics, its signing key, and a monitor client
/// that publishes alerts and collects receipts and statuses.
struct World {
    broker: BrokerUrl,
    topics: Topics,
    prefix: String,
    signer: Signer,
    monitor: MqttHandle,
    inbound: mpsc::Receiver<InboundMessage>,
    stop: CancellationToken,
    published: Vec<String>,
    /// Receivers started, whose persistent sessions the broker should forget at the end.
    receivers: Vec<String>,
    /// Whether the receivers it starts are enrolled for drills.
    drills: bool,
    /// The commune states, kept as the service keeps them (protocol §4a): per commune,
    /// the live messages and the replaced ones.
    seq: i64,
    states: std::collections::BTreeMap<String, CommuneBook>,
}

/// What the world published for one commune: live (id, expires) and replaced (id, by,
/// until).
#[derive(Default)]
struct CommuneBook {
    live: Vec<(String, String)>,
    replaced: Vec<(String, String, String)>,
}

impl World {
    async fn new(broker: BrokerUrl) -> World {
        let prefix = format!("canhbao-test/{}", unique("rx"));
        let topics = Topics::new(&prefix, ProvinceCode::new("20").unwrap()).unwrap();
        let (monitor, driver, inbound) = mqtt::connect(MqttSettings {
            broker: broker.clone(),
            client_id: unique("monitor"),
            username: None,
            password: None,
            keep_alive: Duration::from_secs(30),
            persistent_session: false,
            subscriptions: vec![format!("{prefix}/receipts/+"), format!("{prefix}/status/+")],
            last_will: None,
            on_connect: None,
            tls: Default::default(),
        });
        let stop = CancellationToken::new();
        tokio::spawn(driver.run(stop.clone()));
        let deadline = Instant::now() + WAIT;
        while !monitor.is_connected() {
            assert!(Instant::now() < deadline, "cannot connect to the test broker");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let the subscription settle before anything is published.
        tokio::time::sleep(Duration::from_millis(200)).await;
        World {
            broker,
            topics,
            prefix,
            signer: Signer::from_seed(&[7; 32]),
            monitor,
            inbound,
            stop,
            published: Vec::new(),
            receivers: Vec::new(),
            drills: true,
            seq: 0,
            states: Default::default(),
        }
    }

    fn keys(&self) -> TrustedKeys {
        let mut keys = TrustedKeys::default();
        keys.add(self.signer.public_key());
        keys
    }

    /// The world's provisioning key (protocol §10a): it signs key sets only.
    fn provisioning() -> Signer {
        Signer::from_seed(&[9; 32])
    }

    fn provisioning_keys(&self) -> TrustedKeys {
        let mut keys = TrustedKeys::default();
        keys.add(World::provisioning().public_key());
        keys
    }

    /// Publishes, retained, a key set `seq` that trusts `keys` and revokes `revoked`,
    /// signed by `by`; returns its envelope.
    async fn publish_key_set(
        &mut self,
        seq: u64,
        keys: &[&Signer],
        revoked: &[&Signer],
        by: &Signer,
    ) -> Vec<u8> {
        let set = wire::KeySetWire {
            v: 1,
            kind: wire::KEY_SET.into(),
            province: "20".into(),
            seq,
            issued: wire::timestamp(Utc::now()),
            keys: keys
                .iter()
                .map(|k| wire::KeyWire {
                    key_id: k.key_id().to_owned(),
                    public_key: base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        k.public_key().as_bytes(),
                    ),
                })
                .collect(),
            revoked: revoked.iter().map(|k| k.key_id().to_owned()).collect(),
        };
        let bytes = envelope_bytes(&by.sign(wire::to_json(&set)));
        self.publish_raw_key_set(bytes.clone()).await;
        bytes
    }

    async fn publish_raw_key_set(&mut self, bytes: Vec<u8>) {
        let topic = self.topics.key_set();
        self.monitor.publish(&topic, bytes, true).await.unwrap();
        self.published.push(topic);
    }

    /// Publishes `alert` (and its commune state) signed by the key of `seed`.
    async fn publish_signed(&mut self, alert: &AlertPayload, seed: [u8; 32]) {
        let own = std::mem::replace(&mut self.signer, Signer::from_seed(&seed));
        self.publish(alert).await;
        self.signer = own;
    }

    fn config(&mut self, receiver: &str, commune: &str) -> ReceiverConfig {
        self.receivers.push(receiver.to_owned());
        ReceiverConfig {
            broker: self.broker.clone(),
            receiver_id: ReceiverId::new(receiver).unwrap(),
            commune: CommuneCode::new(commune).unwrap(),
            topics: self.topics.clone(),
            keys: self.keys(),
            provisioning: self.provisioning_keys(),
            key_set_file: None,
            username: None,
            password: None,
            heartbeat: Duration::from_millis(200),
            drills: self.drills,
            tls: Default::default(),
            windows: Default::default(),
        }
    }

    /// Signs `alert` and publishes it, retained, on its topic for every target commune,
    /// each after the commune's state that knows it, as the service does.
    async fn publish(&mut self, alert: &AlertPayload) {
        self.seq += 1;
        for c in &alert.communes {
            let book = self.states.entry(c.clone()).or_default();
            for r in &alert.references {
                if let Some(i) = book.live.iter().position(|(id, _)| id == r) {
                    let (id, expires) = book.live.remove(i);
                    let until = expires.max(alert.expires.clone());
                    book.replaced.push((id, alert.id.clone(), until));
                }
            }
            if !book.live.iter().any(|(id, _)| *id == alert.id) {
                book.live.push((alert.id.clone(), alert.expires.clone()));
            }
            let state = wire::CommuneStateWire {
                v: 1,
                kind: wire::COMMUNE_STATE.into(),
                province: "20".into(),
                commune: c.clone(),
                seq: self.seq,
                as_of: wire::timestamp(Utc::now()),
                live: book
                    .live
                    .iter()
                    .map(|(id, expires)| wire::LiveWire {
                        id: id.clone(),
                        expires: expires.clone(),
                    })
                    .collect(),
                replaced: book
                    .replaced
                    .iter()
                    .map(|(id, by, until)| wire::ReplacedWire {
                        id: id.clone(),
                        by: by.clone(),
                        until: until.clone(),
                    })
                    .collect(),
            };
            let topic = self.topics.state(&CommuneCode::new(c).unwrap());
            let bytes = envelope_bytes(&self.signer.sign(wire::to_json(&state)));
            self.monitor.publish(&topic, bytes, true).await.unwrap();
            self.published.push(topic);
        }
        let bytes = envelope_bytes(&self.signer.sign(wire::to_json(alert)));
        for c in &alert.communes {
            let topic = self
                .topics
                .alert(&CommuneCode::new(c).unwrap(), &AlertId::new(&alert.id).unwrap());
            self.monitor.publish(&topic, bytes.clone(), true).await.unwrap();
            self.published.push(topic);
        }
    }

    /// The receipts that arrived so far (statuses are skipped).
    fn receipts(&mut self) -> Vec<ReceiptWire> {
        let mut out = Vec::new();
        while let Ok(m) = self.inbound.try_recv() {
            if m.topic.starts_with(&format!("{}/receipts/", self.prefix)) {
                out.push(serde_json::from_slice(&m.payload).unwrap());
            }
        }
        out
    }

    /// Waits for receipts until `done` holds for all received so far; returns them.
    async fn receipts_until(
        &mut self,
        mut all: Vec<ReceiptWire>,
        done: impl Fn(&[ReceiptWire]) -> bool,
    ) -> Vec<ReceiptWire> {
        let deadline = Instant::now() + WAIT;
        while !done(&all) {
            assert!(Instant::now() < deadline, "receipts so far: {all:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
            all.extend(self.receipts());
        }
        all
    }

    /// Clears the retained alerts this test published, and makes the broker forget the
    /// persistent sessions of its receivers (a clean-session connect under their client
    /// ids), so that a shared broker does not collect them run after run.
    async fn clear(self) {
        for topic in &self.published {
            self.monitor.publish(topic, Vec::new(), true).await.unwrap();
        }
        for id in &self.receivers {
            let (handle, driver, _rx) = mqtt::connect(MqttSettings {
                broker: self.broker.clone(),
                client_id: format!("rx-{id}"),
                username: None,
                password: None,
                keep_alive: Duration::from_secs(30),
                persistent_session: false,
                subscriptions: vec![],
                last_will: None,
                on_connect: None,
                tls: Default::default(),
            });
            let stop = CancellationToken::new();
            let task = tokio::spawn(driver.run(stop.clone()));
            let deadline = Instant::now() + WAIT;
            while !handle.is_connected() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            stop.cancel();
            task.await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.stop.cancel();
    }
}

fn alert(id: &str, class: &str, headline: &str) -> AlertPayload {
    let now = Utc::now();
    AlertPayload {
        v: 1,
        id: id.to_owned(),
        province: "20".into(),
        msg_type: "Alert".into(),
        status: "Exercise".into(),
        references: vec![],
        sent: wire::timestamp(now),
        effective: wire::timestamp(now),
        expires: wire::timestamp(now + chrono::Duration::minutes(30)),
        hazard: "flood".into(),
        risk_level: None,
        alarm_level: Some(1),
        class: class.to_owned(),
        communes: vec![HUU_LUNG.into()],
        headline: headline.to_owned(),
        description: "Mực nước sông Trung tại Hữu Lũng đang lên.".into(),
        instruction: String::new(),
        repeat: RepeatWire {
            times: 1,
            interval_s: 0,
        },
        origin: "officer".into(),
        provisional: false,
        provisional_reasons: vec![],
        renewal: false,
    }
}

/// A receiver running in the test.
struct Rx {
    events: mpsc::UnboundedReceiver<ReceiverEvent>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Rx {
    fn start(cfg: ReceiverConfig, playback: Playback) -> Rx {
        let (tx, events) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_with(cfg, playback, tx, stop.clone()));
        Rx { events, stop, task }
    }

    async fn connected(&mut self) {
        match timeout(WAIT, self.events.recv()).await.unwrap().unwrap() {
            ReceiverEvent::Connected => {}
            other => panic!("expected to connect first, got {other:?}"),
        }
    }

    /// The next event other than a connection.
    async fn next(&mut self) -> ReceiverEvent {
        loop {
            let ev = timeout(WAIT, self.events.recv())
                .await
                .expect("no receiver event in time")
                .expect("receiver stopped");
            if !matches!(ev, ReceiverEvent::Connected) {
                return ev;
            }
        }
    }

    /// Every event other than a connection within `window`.
    async fn quiet_for(&mut self, window: Duration) -> Vec<ReceiverEvent> {
        let deadline = Instant::now() + window;
        let mut got = Vec::new();
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            if !matches!(ev, ReceiverEvent::Connected) {
                got.push(ev);
            }
        }
        got
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

fn played(ev: &ReceiverEvent) -> Option<&str> {
    match ev {
        ReceiverEvent::Played(a) => Some(a.id.as_str()),
        _ => None,
    }
}

fn statuses<'a>(receipts: &'a [ReceiptWire], alert_id: &str) -> Vec<&'a str> {
    receipts
        .iter()
        .filter(|r| r.alert_id == alert_id)
        .map(|r| r.status.as_str())
        .collect()
}

#[tokio::test]
async fn a_restarted_receiver_ignores_the_retained_alert_it_played_but_plays_its_update() {
    let Some(url) = broker() else { return };
    let mut w = World::new(url).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("rx.state");
    let rx_id = unique("loa");
    let first = alert(&unique("a"), "normal", "Thông báo lũ trên sông Trung");
    w.publish(&first).await;

    let (log, _) = PlayedLog::open(&state, Utc::now()).unwrap();
    let mut rx = Rx::start(
        w.config(&rx_id, HUU_LUNG),
        Playback {
            played: log,
            command: None,
        },
    );
    assert_eq!(played(&rx.next().await), Some(first.id.as_str()));
    let receipts = w
        .receipts_until(Vec::new(), |r| statuses(r, &first.id) == ["received", "played"])
        .await;
    assert!(receipts.iter().all(|r| r.receiver_id == rx_id));
    // The service resends the same bytes while it lacks a receipt: the receiver sends its
    // receipts again and plays nothing.
    w.publish(&first).await;
    w.receipts_until(receipts, |r| {
        statuses(r, &first.id) == ["received", "played", "received", "played"]
    })
    .await;
    let more = rx.quiet_for(Duration::from_millis(500)).await;
    assert!(more.iter().all(|e| played(e).is_none()), "played twice: {more:?}");
    rx.stop().await;
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(text.contains(&first.id), "the played version is on disk: {text}");

    // Restart on the same state file. The broker hands the retained alert over again;
    // the receiver must stay silent about it, yet play the update that replaces it.
    let (log, report) = PlayedLog::open(&state, Utc::now()).unwrap();
    assert_eq!(report.kept, 1);
    let mut rx = Rx::start(
        w.config(&rx_id, HUU_LUNG),
        Playback {
            played: log,
            command: None,
        },
    );
    rx.connected().await;
    // A receiver without the state file gets the retained alert: it really is redelivered.
    let mut fresh = Rx::start(w.config(&unique("loa-fresh"), HUU_LUNG), Playback::default());
    assert_eq!(played(&fresh.next().await), Some(first.id.as_str()));

    let mut update = alert(&unique("u"), "normal", "Cập nhật: lũ trên sông Trung");
    update.msg_type = "Update".into();
    update.references = vec![first.id.clone()];
    w.publish(&update).await;
    assert_eq!(played(&rx.next().await), Some(update.id.as_str()));
    let more = rx.quiet_for(Duration::from_millis(700)).await;
    assert!(more.is_empty(), "nothing else may happen: {more:?}");

    // The same id with other bytes is a replay, and is reported.
    let mut forged = first.clone();
    forged.headline = "Thông báo lũ đã qua".into();
    w.publish(&forged).await;
    match rx.next().await {
        ReceiverEvent::Rejected { alert_id, reason } => {
            assert_eq!(alert_id, first.id);
            assert_eq!(reason.code(), "replayed");
        }
        other => panic!("a different version of a played id must be rejected, got {other:?}"),
    }
    let receipts = w
        .receipts_until(Vec::new(), |r| {
            r.iter().any(|x| x.receiver_id == rx_id && x.status == "rejected")
        })
        .await;
    let mine: Vec<&ReceiptWire> = receipts.iter().filter(|r| r.receiver_id == rx_id).collect();
    let of_first: Vec<&str> = mine
        .iter()
        .filter(|r| r.alert_id == first.id)
        .map(|r| r.status.as_str())
        .collect();
    assert_eq!(of_first, ["rejected"], "no receipt for the redelivery: {mine:#?}");
    assert!(
        mine.iter()
            .filter(|r| r.alert_id == first.id && r.status == "rejected")
            .all(|r| r.reason.as_deref().unwrap_or("").starts_with("replayed: "))
    );
    rx.stop().await;
    fresh.stop().await;
    w.clear().await;
}

#[tokio::test]
async fn a_receiver_that_comes_back_plays_the_cancel_and_never_the_alert_it_cancels() {
    let Some(url) = broker() else { return };
    let mut w = World::new(url).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("rx.state");
    // Both are live and retained when the receiver arrives; the broker hands them over
    // in no set order.
    let original = alert(&unique("a"), "emergency", "Lũ trên sông Trung");
    let mut cancel = alert(&unique("c"), "priority", "Hủy bỏ: lũ trên sông Trung");
    cancel.msg_type = "Cancel".into();
    cancel.references = vec![original.id.clone()];
    w.publish(&original).await;
    w.publish(&cancel).await;

    let rx_id = unique("loa");
    for restart in [false, true] {
        let (played_log, _) = PlayedLog::open(&state, Utc::now()).unwrap();
        let mut rx = Rx::start(
            w.config(&rx_id, HUU_LUNG),
            Playback {
                played: played_log,
                command: None,
            },
        );
        let events = rx.quiet_for(Duration::from_millis(1500)).await;
        let ids: Vec<&str> = events.iter().filter_map(played).collect();
        if restart {
            assert_eq!(ids, Vec::<&str>::new(), "{events:?}");
        } else {
            assert_eq!(ids, [cancel.id.as_str()], "{events:?}");
        }
        // Besides, at most the commune state's word that the original was replaced.
        assert!(
            events.iter().all(|e| played(e).is_some()
                || matches!(e, ReceiverEvent::Replaced { alert_id, .. } if *alert_id == original.id)),
            "{events:?}"
        );
        rx.stop().await;
    }
    let receipts = w.receipts();
    assert_eq!(statuses(&receipts, &original.id), Vec::<&str>::new());
    assert_eq!(statuses(&receipts, &cancel.id), ["received", "played"]);
    w.clear().await;
}

/// Writes a play script: a text containing "SLOW" plays for 30 s (in a child of the
/// shell, as a pipeline would), anything else at once. Each slow start appends the
/// shell's pid, which is also its process group, to `pids`.
fn slow_player(dir: &Path) -> (PlayCommand, std::path::PathBuf) {
    let script = dir.join("play.sh");
    let pids = dir.join("slow.pids");
    std::fs::write(
        &script,
        format!(
            "text=$(cat)\ncase \"$text\" in\n  *SLOW*) echo $$ >> {pids}; sleep 30 ;;\nesac\nexit 0\n",
            pids = pids.display()
        ),
    )
    .unwrap();
    let cmd = PlayCommand::parse(&format!("sh {}", script.display())).unwrap();
    (cmd, pids)
}

fn pids(file: &Path) -> Vec<i32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

async fn wait_for_pids(file: &Path, n: usize) -> Vec<i32> {
    let deadline = Instant::now() + WAIT;
    loop {
        let p = pids(file);
        if p.len() >= n {
            return p;
        }
        assert!(Instant::now() < deadline, "the play command did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Live processes in process group `pgid`, from /proc (Linux).
fn group_members(pgid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2).and_then(|f| f.parse::<i32>().ok()) == Some(pgid) && fields.first() != Some(&"Z") {
            found.push(pid);
        }
    }
    found
}

#[tokio::test]
async fn an_emergency_interrupts_a_long_normal_playback_which_resumes_after_it() {
    let Some(url) = broker() else { return };
    let mut w = World::new(url).await;
    let dir = tempfile::tempdir().unwrap();
    let (cmd, pid_file) = slow_player(dir.path());
    let rx_id = unique("loa");
    let mut rx = Rx::start(
        w.config(&rx_id, HUU_LUNG),
        Playback {
            played: PlayedLog::in_memory(),
            command: Some(cmd),
        },
    );
    rx.connected().await;

    let normal = alert(&unique("n"), "normal", "SLOW: lịch tiêm phòng cho gia súc");
    w.publish(&normal).await;
    let first_run = wait_for_pids(&pid_file, 1).await[0];

    let emergency = alert(&unique("e"), "emergency", "Lũ quét trên suối Hữu Lũng");
    w.publish(&emergency).await;
    match rx.next().await {
        ReceiverEvent::Interrupted { alert_id, by } => {
            assert_eq!((alert_id, by), (normal.id.clone(), emergency.id.clone()));
        }
        other => panic!("the emergency must interrupt the normal alert, got {other:?}"),
    }
    assert_eq!(played(&rx.next().await), Some(emergency.id.as_str()));

    // The normal alert starts again after the emergency; its first run was killed with
    // everything it started.
    let second_run = wait_for_pids(&pid_file, 2).await[1];
    assert_ne!(first_run, second_run);
    assert_eq!(group_members(first_run), Vec::<i32>::new());

    // Stopping the receiver silences the loudspeaker too.
    rx.stop().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(group_members(second_run), Vec::<i32>::new());

    let receipts = w
        .receipts_until(Vec::new(), |r| {
            statuses(r, &emergency.id) == ["received", "played"]
        })
        .await;
    assert_eq!(
        statuses(&receipts, &normal.id),
        ["received"],
        "never completed, so never played"
    );
    w.clear().await;
}

#[tokio::test]
async fn a_play_command_that_fails_is_reported_as_failed() {
    let Some(url) = broker() else { return };
    let mut w = World::new(url).await;
    let rx_id = unique("loa");
    let mut rx = Rx::start(
        w.config(&rx_id, HUU_LUNG),
        Playback {
            played: PlayedLog::in_memory(),
            command: Some(PlayCommand::parse("false").unwrap()),
        },
    );
    rx.connected().await;
    let a = alert(&unique("f"), "priority", "Thông báo mưa lớn");
    w.publish(&a).await;
    match rx.next().await {
        ReceiverEvent::Failed { alert_id, reason } => {
            assert_eq!(alert_id, a.id);
            assert!(reason.contains("exit status: 1"), "{reason}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    let receipts = w
        .receipts_until(Vec::new(), |r| statuses(r, &a.id) == ["received", "failed"])
        .await;
    let failed = receipts
        .iter()
        .find(|r| r.status == "failed")
        .and_then(|r| r.reason.clone())
        .unwrap();
    assert!(failed.contains("\"false\" failed"), "{failed}");
    rx.stop().await;
    w.clear().await;
}

/// Whether `line` is the simulation's report of one receiver playing one alert.
fn is_played(line: &str) -> bool {
    line.starts_with("sim-") && line.contains(" played ")
}

/// One run of the binary's `--simulate`.
struct Simulation<'a> {
    receivers: usize,
    communes: &'a [&'a str],
    /// Run until this many alerts played (counted from the printed lines).
    played: usize,
    /// With `--quiet`, nothing is printed until the end: run until every receiver's
    /// online status arrived instead (keep it small: the monitor counts them).
    quiet: bool,
    within: Duration,
}

/// Runs `sim` on the same state directory as any earlier run, stops it with SIGINT once
/// it got where it should, and returns what it printed.
async fn simulate(w: &mut World, state_dir: &Path, sim: Simulation<'_>) -> String {
    use base64::Engine as _;
    use tokio::io::AsyncBufReadExt as _;
    let public = base64::engine::general_purpose::STANDARD.encode(w.signer.public_key().as_bytes());
    let n = sim.receivers.to_string();
    let communes = sim.communes.join(",");
    let dir = state_dir.display().to_string();
    let key = format!("{}={public}", w.signer.key_id());
    let url = std::env::var("CANHBAO_TEST_MQTT_URL").unwrap();
    let mut args = vec![
        "--broker",
        &url,
        "--prefix",
        &w.prefix,
        "--trusted-key",
        &key,
        "--simulate",
        &n,
        "--communes",
        &communes,
        "--state-dir",
        &dir,
        "--heartbeat-s",
        "1",
        // The test's alerts are exercises: the simulated fleet is enrolled for drills.
        "--drills",
    ];
    if sim.quiet {
        args.push("--quiet");
    }
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_canhbao-receiver"))
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = String::new();
    let (mut played, mut online, mut all_connected) = (0, 0, false);
    let started = Instant::now();
    let deadline = started + sim.within;
    let ready = |played, online, all_connected| {
        if sim.quiet {
            online >= sim.receivers
        } else {
            all_connected && played >= sim.played
        }
    };
    while !ready(played, online, all_connected) {
        tokio::select! {
            line = stdout.next_line() => {
                let line = line.unwrap().expect("the simulation ended early");
                played += usize::from(is_played(&line));
                all_connected |= line.starts_with("all ") && line.contains(" connected");
                out.push_str(&line);
                out.push('\n');
            }
            m = w.inbound.recv() => {
                let m = m.unwrap();
                if !m.retain && m.topic.contains("/status/")
                    && String::from_utf8_lossy(&m.payload).contains("\"online\"")
                {
                    online += 1;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                panic!("{played} played, {online} online, all connected: {all_connected}\n{out}")
            }
        }
    }
    eprintln!(
        "{} simulated receivers ready after {:?}",
        sim.receivers,
        started.elapsed()
    );
    // Time for a heartbeat tick (which counts as connected), and for any stray replay.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    while let Some(line) = timeout(WAIT, stdout.next_line()).await.unwrap().unwrap() {
        out.push_str(&line);
        out.push('\n');
    }
    let status = timeout(WAIT, child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}\n{out}");
    out
}

#[tokio::test]
async fn a_simulated_fleet_plays_each_alert_once_per_receiver_even_across_a_restart() {
    let Some(url) = broker() else { return };
    let mut w = World::new(url).await;
    let dir = tempfile::tempdir().unwrap();
    let mut a = alert(&unique("sim-a"), "emergency", "Lũ trên sông Trung");
    a.communes = vec![HUU_LUNG.into(), "05977".into()];
    w.publish(&a).await;

    // 30 receivers over 3 communes: the 20 of the two targeted communes play it.
    let communes = ["06385", "05977", "06391"];
    let sim = |quiet| Simulation {
        receivers: 30,
        communes: &communes,
        played: 20,
        quiet,
        within: WAIT,
    };
    let out = simulate(&mut w, dir.path(), sim(false)).await;
    assert!(out.contains(&format!("sim-06385-0 played {}\n", a.id)), "{out}");
    assert!(out.contains(&format!("sim-05977-1 played {}\n", a.id)), "{out}");
    assert!(!out.contains("sim-06391-2 played"), "{out}");
    assert_eq!(out.lines().filter(|l| is_played(l)).count(), 20, "{out}");
    assert!(
        out.contains(
            "simulated 30 receivers over 3 communes: 30 connected, 20 played (1 distinct alerts), 0 rejected, 0 failed\n"
        ),
        "{out}"
    );
    assert!(out.contains(&format!("  {}: played by 20\n", a.id)), "{out}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        30,
        "a state file each"
    );
    w.receipts();

    // Again, quietly, on the same state files: the retained alert is redelivered, and
    // ignored without a receipt.
    let out = simulate(&mut w, dir.path(), sim(true)).await;
    assert!(
        out.starts_with(
            "simulated 30 receivers over 3 communes: 30 connected, 0 played (0 distinct alerts), 0 rejected, 0 failed\n"
        ),
        "only the totals: {out}"
    );
    assert_eq!(w.receipts(), Vec::new());
    w.clear().await;
}

#[tokio::test]
async fn a_receiver_not_enrolled_for_drills_ignores_exercises_and_plays_real_alerts() {
    let Some(url) = broker() else { return };
    let mut w = World::new(url).await;
    w.drills = false;
    let rx_id = unique("loa");
    let mut rx = Rx::start(w.config(&rx_id, HUU_LUNG), Playback::default());
    rx.connected().await;
    let drill = alert(&unique("d"), "priority", "Diễn tập: lũ");
    w.publish(&drill).await;
    match rx.next().await {
        ReceiverEvent::DrillIgnored { alert_id, status } => {
            assert_eq!(
                (alert_id.as_str(), status.as_str()),
                (drill.id.as_str(), "Exercise")
            );
        }
        other => panic!("expected the exercise to be ignored, got {other:?}"),
    }
    let mut real = alert(&unique("r"), "priority", "Lũ trên sông Trung");
    real.status = "Actual".into();
    w.publish(&real).await;
    match rx.next().await {
        ReceiverEvent::Played(a) => assert_eq!(a.id, real.id),
        other => panic!("expected the real alert to play, got {other:?}"),
    }
    let receipts = w
        .receipts_until(Vec::new(), |r| statuses(r, &real.id) == ["received", "played"])
        .await;
    assert!(
        statuses(&receipts, &drill.id).is_empty(),
        "no receipt for an ignored drill: {receipts:?}"
    );
    rx.stop().await;
    w.clear().await;
}

#[tokio::test]
async fn a_receiver_back_on_its_persistent_session_never_plays_what_a_waiting_update_replaced() {
    let Some(url) = broker() else { return };
    let mut w = World::new(url).await;
    let rx_id = unique("loa");
    // Online once: the broker now keeps a session for it, and queues for it while away.
    let mut rx = Rx::start(w.config(&rx_id, HUU_LUNG), Playback::default());
    rx.connected().await;
    rx.stop().await;
    // Away: an alert, its Update with a shorter expiry, then a Cancel of the incident.
    let original = alert(&unique("a"), "emergency", "Lũ trên sông Trung vượt báo động 3");
    let mut update = alert(&unique("u"), "emergency", "Cập nhật: lũ trên sông Trung");
    update.msg_type = "Update".into();
    update.references = vec![original.id.clone()];
    update.expires = wire::timestamp(Utc::now() + chrono::Duration::minutes(5));
    let mut cancel = alert(&unique("c"), "priority", "Hủy bỏ: lũ trên sông Trung");
    cancel.msg_type = "Cancel".into();
    cancel.references = vec![original.id.clone(), update.id.clone()];
    w.publish(&original).await;
    w.publish(&update).await;
    w.publish(&cancel).await;
    // Every message reached the broker before the receiver comes back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Back: queued copies come first (not flagged as retained), then the retained ones.
    let mut rx = Rx::start(w.config(&rx_id, HUU_LUNG), Playback::default());
    let events = rx.quiet_for(Duration::from_millis(2500)).await;
    let ids: Vec<&str> = events.iter().filter_map(played).collect();
    assert_eq!(ids, [cancel.id.as_str()], "{events:?}");
    rx.stop().await;
    let receipts = w.receipts();
    assert_eq!(statuses(&receipts, &original.id), Vec::<&str>::new());
    assert_eq!(statuses(&receipts, &update.id), Vec::<&str>::new());
    w.clear().await;
}

#[tokio::test]
async fn a_renewal_of_an_alert_that_played_is_acknowledged_and_not_played_again() {
    let Some(url) = broker() else { return };
    let mut w = World::new(url).await;
    let rx_id = unique("loa");
    let mut rx = Rx::start(w.config(&rx_id, HUU_LUNG), Playback::default());
    rx.connected().await;
    let first = alert(&unique("a"), "emergency", "Lũ trên sông Trung vượt báo động 3");
    w.publish(&first).await;
    assert_eq!(played(&rx.next().await), Some(first.id.as_str()));
    let mut renewal = alert(&unique("r"), "emergency", "Cảnh báo lũ (tiếp theo)");
    renewal.msg_type = "Update".into();
    renewal.references = vec![first.id.clone()];
    renewal.renewal = true;
    w.publish(&renewal).await;
    match rx.next().await {
        ReceiverEvent::Acknowledged { alert_id, renews } => {
            assert_eq!(
                (alert_id.as_str(), renews.as_str()),
                (renewal.id.as_str(), first.id.as_str())
            );
        }
        other => panic!("a renewal must be acknowledged, got {other:?}"),
    }
    w.receipts_until(Vec::new(), |r| {
        statuses(r, &renewal.id) == ["received", "acknowledged"]
    })
    .await;
    // A receiver that never played the alert plays its renewal.
    let mut late = Rx::start(w.config(&unique("loa-late"), HUU_LUNG), Playback::default());
    assert_eq!(played(&late.next().await), Some(renewal.id.as_str()));
    rx.stop().await;
    late.stop().await;
    w.clear().await;
}

#[tokio::test]
async fn an_alert_plays_when_it_takes_effect_not_before() {
    let Some(url) = broker() else { return };
    let mut w = World::new(url).await;
    let mut rx = Rx::start(w.config(&unique("loa"), HUU_LUNG), Playback::default());
    rx.connected().await;
    let mut later = alert(&unique("s"), "priority", "Thông báo lịch xả lũ hồ chứa");
    let effective = Utc::now() + chrono::Duration::seconds(3);
    later.effective = wire::timestamp(effective);
    w.publish(&later).await;
    match rx.next().await {
        ReceiverEvent::Scheduled { alert_id, .. } => assert_eq!(alert_id, later.id),
        other => panic!("expected it scheduled, got {other:?}"),
    }
    assert_eq!(played(&rx.next().await), Some(later.id.as_str()));
    // RFC 3339 seconds: it may play within the second its effective time names.
    assert!(
        Utc::now() >= effective - chrono::Duration::seconds(1),
        "played too early"
    );
    rx.stop().await;
    w.clear().await;
}

#[tokio::test]
async fn a_normal_message_waits_for_the_communes_announcement_window_and_a_warning_never_does() {
    let Some(url) = broker() else { return };
    let mut w = World::new(url).await;
    // A window twelve hours from now: the commune's programme is not on air.
    let hour = (Utc::now()
        .with_timezone(&protocol::time::vietnam())
        .format("%H")
        .to_string()
        .parse::<u32>()
        .unwrap()
        + 12)
        % 24;
    let windows =
        canhbao_receiver::windows::AnnouncementWindows::parse(&[format!("{hour:02}:00-{hour:02}:30")])
            .unwrap();
    let mut cfg = w.config(&unique("loa"), HUU_LUNG);
    cfg.windows = windows.clone();
    let mut rx = Rx::start(cfg, Playback::default());
    rx.connected().await;
    let notice = alert(&unique("n"), "normal", "Thông báo lịch tiêm phòng gia súc");
    w.publish(&notice).await;
    match rx.next().await {
        ReceiverEvent::Scheduled { alert_id, effective } => {
            assert_eq!(alert_id, notice.id);
            assert_eq!(
                Some(effective),
                windows.next_opening(Utc::now()),
                "the window's opening"
            );
        }
        other => panic!("a normal message must wait for the window, got {other:?}"),
    }
    // A priority warning plays at once, window or not.
    let warning = alert(&unique("p"), "priority", "Lũ trên sông Trung vượt báo động 2");
    w.publish(&warning).await;
    assert_eq!(played(&rx.next().await), Some(warning.id.as_str()));
    rx.stop().await;
    w.clear().await;
}

/// The seeds of the world's alert-signing keys in the key set tests: the one it starts
/// with, a second one, and an attacker's.
const FIRST: [u8; 32] = [7; 32];
const SECOND: [u8; 32] = [8; 32];
const ATTACKER: [u8; 32] = [66; 32];

fn rejected_for(ev: &ReceiverEvent) -> Option<(&str, &'static str)> {
    match ev {
        ReceiverEvent::Rejected { alert_id, reason } => Some((alert_id.as_str(), reason.code())),
        _ => None,
    }
}

#[tokio::test]
async fn a_key_set_adds_and_revokes_keys_and_a_forged_or_stale_one_changes_nothing() {
    let Some(url) = broker() else { return };
    let mut w = World::new(url).await;
    let (first, second, attacker) = (
        Signer::from_seed(&FIRST),
        Signer::from_seed(&SECOND),
        Signer::from_seed(&ATTACKER),
    );
    let mut rx = Rx::start(w.config(&unique("loa-keys"), HUU_LUNG), Playback::default());
    rx.connected().await;

    // Not provisioned with the second key: its alert is refused.
    let a = alert(&unique("k2-early"), "priority", "Tin ký bằng khóa mới");
    w.publish_signed(&a, SECOND).await;
    assert_eq!(
        rejected_for(&rx.next().await),
        Some((a.id.as_str(), "unknown_key"))
    );

    // The provisioning key adds it.
    let set1 = w
        .publish_key_set(1, &[&first, &second], &[], &World::provisioning())
        .await;
    match rx.next().await {
        ReceiverEvent::KeySetApplied {
            seq,
            trusted,
            revoked,
        } => {
            assert_eq!(seq, 1);
            assert_eq!(trusted.len(), 2);
            assert!(revoked.is_empty());
        }
        other => panic!("expected the key set applied, got {other:?}"),
    }
    let b = alert(&unique("k2"), "priority", "Tin ký bằng khóa mới");
    w.publish_signed(&b, SECOND).await;
    assert_eq!(played(&rx.next().await), Some(b.id.as_str()));

    // The first key is revoked: the very next alert it signed is rejected.
    w.publish_key_set(2, &[&second], &[&first], &World::provisioning())
        .await;
    assert!(matches!(
        rx.next().await,
        ReceiverEvent::KeySetApplied { seq: 2, .. }
    ));
    let c = alert(&unique("k1-revoked"), "emergency", "Tin ký bằng khóa đã thu hồi");
    w.publish_signed(&c, FIRST).await;
    assert_eq!(
        rejected_for(&rx.next().await),
        Some((c.id.as_str(), "unknown_key"))
    );

    // A key set signed by an alert key (even a trusted one), not the provisioning key,
    // is refused, and the attacker's key it names is not trusted.
    w.publish_key_set(9, &[&second, &attacker], &[], &second).await;
    match rx.next().await {
        ReceiverEvent::KeySetRefused { reason } => assert!(reason.starts_with("unknown_key"), "{reason}"),
        other => panic!("a forged key set must be refused, got {other:?}"),
    }
    let d = alert(&unique("attacker"), "emergency", "Tin giả");
    w.publish_signed(&d, ATTACKER).await;
    assert_eq!(
        rejected_for(&rx.next().await),
        Some((d.id.as_str(), "unknown_key"))
    );

    // An old key set replayed (it once was genuine) cannot bring the revoked key back.
    w.publish_raw_key_set(set1).await;
    match rx.next().await {
        ReceiverEvent::KeySetRefused { reason } => assert!(reason.starts_with("stale"), "{reason}"),
        other => panic!("a replayed older key set must be refused, got {other:?}"),
    }
    let e = alert(&unique("k1-again"), "emergency", "Tin ký bằng khóa đã thu hồi");
    w.publish_signed(&e, FIRST).await;
    assert_eq!(
        rejected_for(&rx.next().await),
        Some((e.id.as_str(), "unknown_key"))
    );
    rx.stop().await;
    w.clear().await;
}

#[tokio::test]
async fn a_receiver_offline_during_a_key_change_takes_it_on_reconnect_and_keeps_it_across_restarts() {
    let Some(url) = broker() else { return };
    let mut w = World::new(url).await;
    let dir = tempfile::tempdir().unwrap();
    let rx_id = unique("loa-away");
    let config = |w: &mut World| {
        let mut cfg = w.config(&rx_id, HUU_LUNG);
        cfg.key_set_file = Some(dir.path().join("rx.keys"));
        cfg
    };
    let mut rx = Rx::start(config(&mut w), Playback::default());
    rx.connected().await;
    rx.stop().await;

    // While it is away, the first key is revoked for the second.
    let (first, second) = (Signer::from_seed(&FIRST), Signer::from_seed(&SECOND));
    w.publish_key_set(1, &[&second], &[&first], &World::provisioning())
        .await;
    let mut rx = Rx::start(config(&mut w), Playback::default());
    assert!(matches!(
        rx.next().await,
        ReceiverEvent::KeySetApplied { seq: 1, .. }
    ));
    let a = alert(&unique("old-key"), "emergency", "Tin ký bằng khóa đã thu hồi");
    w.publish_signed(&a, FIRST).await;
    assert_eq!(
        rejected_for(&rx.next().await),
        Some((a.id.as_str(), "unknown_key"))
    );
    rx.stop().await;

    // The broker loses its retained key set: the receiver kept its own copy.
    let topic = w.topics.key_set();
    w.monitor.publish(&topic, Vec::new(), true).await.unwrap();
    let mut rx = Rx::start(config(&mut w), Playback::default());
    // The broker still retains the alert of the revoked key: it is rejected again.
    assert_eq!(
        rejected_for(&rx.next().await),
        Some((a.id.as_str(), "unknown_key"))
    );
    let c = alert(&unique("new-key"), "emergency", "Tin ký bằng khóa mới");
    w.publish_signed(&c, SECOND).await;
    assert_eq!(played(&rx.next().await), Some(c.id.as_str()));
    rx.stop().await;
    w.clear().await;
}
