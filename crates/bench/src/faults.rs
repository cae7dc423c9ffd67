//! What the fault scenarios (`bench kill`, `bench outage`) share: a fleet of simulated
//! receivers in the bench's own process, each with its played log in memory and its plays
//! counted per receiver (they outlive a killed service or broker, as real loudspeakers
//! do), and the tally of who played what: lost, played twice, or still waiting.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::Utc;
use dispatch::{Topics, TrustedKeys};
use domain::{CommuneCode, ReceiverId};
use mqtt::BrokerUrl;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use canhbao_server::Settings;
use canhbao_server::config::Sources;

/// One play, as the receiver saw it.
#[derive(Debug, Clone)]
pub(crate) struct Play {
    pub alert: String,
    /// What the alert says (status, hazard, level): two alerts with the same key are the
    /// same message issued twice.
    pub key: String,
    pub at: Instant,
}

/// Registers `n` receivers (enrolled for drills) round-robin over `communes`, in `store`.
pub(crate) async fn register(
    store: &store::Store,
    run: &str,
    n: usize,
    communes: &[CommuneCode],
) -> Result<Members> {
    let now = Utc::now();
    let mut out = Vec::with_capacity(n);
    // One broker password for the run's receivers (each logs in as itself with it): the
    // embedded broker takes a registered receiver's topics only from its own login.
    let credentials = api::fleet::new_broker_password()?;
    for i in 0..n {
        let id = ReceiverId::new(&format!("{run}-{i}"))?;
        let commune = communes[i % communes.len()].clone();
        store
            .register_receiver(&store::RegisteredReceiver {
                receiver_id: id.to_string(),
                commune: commune.to_string(),
                password_hash: Some(credentials.hash.clone()),
                trusted_keys: vec![],
                firmware: None,
                registered: now,
                drills: true,
            })
            .await?;
        out.push((id, commune));
    }
    Ok(Members {
        list: out,
        password: credentials.password,
    })
}

/// Receivers registered for a run, and the broker password they share.
pub(crate) struct Members {
    pub list: Vec<(ReceiverId, CommuneCode)>,
    pub password: secrecy::SecretString,
}

/// A heartbeat interval longer than any run: no burst of heartbeats lands inside one.
pub(crate) const NO_HEARTBEAT_BURST: Duration = Duration::from_secs(3600);

/// Simulated receivers running in this process.
pub(crate) struct Fleet {
    pub members: Vec<(ReceiverId, CommuneCode)>,
    plays: Arc<Mutex<Vec<Vec<Play>>>>,
    count: Arc<AtomicUsize>,
    stop: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl Fleet {
    /// Starts one receiver per member (played log in memory, a heartbeat every
    /// `heartbeat`, enrolled for drills), each reporting its plays.
    pub(crate) fn start(
        broker: &BrokerUrl,
        topics: &Topics,
        keys: &TrustedKeys,
        members: Members,
        heartbeat: Duration,
    ) -> Fleet {
        let Members {
            list: members,
            password,
        } = members;
        let plays = Arc::new(Mutex::new(vec![Vec::new(); members.len()]));
        let count = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (id, commune)) in members.iter().enumerate() {
            let cfg = canhbao_receiver::ReceiverConfig {
                broker: broker.clone(),
                receiver_id: id.clone(),
                commune: commune.clone(),
                topics: topics.clone(),
                keys: keys.clone(),
                provisioning: TrustedKeys::default(),
                key_set_file: None,
                username: Some(id.to_string()),
                password: Some(password.clone()),
                heartbeat,
                drills: true,
                tls: Default::default(),
                windows: Default::default(),
            };
            let playback = canhbao_receiver::Playback {
                played: canhbao_receiver::state::PlayedLog::in_memory(),
                command: None,
            };
            let (tx, mut rx) = mpsc::unbounded_channel();
            tasks.spawn(canhbao_receiver::run_with(cfg, playback, tx, stop.clone()));
            let (plays, count) = (plays.clone(), count.clone());
            tasks.spawn(async move {
                while let Some(ev) = rx.recv().await {
                    if let canhbao_receiver::ReceiverEvent::Played(a) = ev {
                        let play = Play {
                            key: format!(
                                "{}/{}/{}",
                                a.status,
                                a.hazard,
                                a.risk_level.map(|l| l.to_string()).unwrap_or_default()
                            ),
                            alert: a.id.clone(),
                            at: Instant::now(),
                        };
                        if let Ok(mut p) = plays.lock() {
                            p[i].push(play);
                        }
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        Fleet {
            members,
            plays,
            count,
            stop,
            tasks,
        }
    }

    /// Plays so far, over every receiver.
    pub(crate) fn plays(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub(crate) fn snapshot(&self) -> Vec<Vec<Play>> {
        self.plays.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// The receivers' MQTT client ids (their broker sessions).
    pub(crate) fn client_ids(&self) -> Vec<String> {
        self.members.iter().map(|(id, _)| format!("rx-{id}")).collect()
    }

    pub(crate) async fn stop(&mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Waits until the store shows every registered receiver online (each says so after it
/// subscribed), and the service at `base` answers `/readyz`.
pub(crate) async fn wait_online(
    store: &store::Store,
    n: usize,
    patience: Duration,
    http: &reqwest::Client,
    base: &str,
) -> Result<()> {
    let deadline = Instant::now() + patience;
    loop {
        let online = store
            .fleet()
            .await?
            .iter()
            .filter(|f| f.online == Some(true))
            .count();
        let up = ready(http, base).await;
        if up && online >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {online} of {n} receivers online (service ready: {up}) after {patience:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether canhbao at `base` answers `/readyz` with its database up.
pub(crate) async fn ready(http: &reqwest::Client, base: &str) -> bool {
    match http.get(format!("{base}/readyz")).send().await {
        Ok(r) if r.status().is_success() => r
            .json::<serde_json::Value>()
            .await
            .is_ok_and(|v| v["database"] == "ok"),
        _ => false,
    }
}

/// An alert the receivers must each play once.
#[derive(Debug, Clone)]
pub(crate) struct Expected {
    pub id: String,
    pub communes: HashSet<String>,
}

/// Who played what, against what was expected.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// (receiver, alert) pairs expected to play, and those that did at least once.
    pub expected: usize,
    pub played: usize,
    /// Pairs that did not play, per alert id.
    pub missing: BTreeMap<String, usize>,
    /// (receiver, alert) pairs that played more than once.
    pub twice: usize,
    /// (receiver, message) pairs that played two different alerts saying the same thing
    /// (the same bulletin issued twice).
    pub twice_same_message: usize,
    /// Plays of alerts that were not expected at all.
    pub unexpected: usize,
    /// The newest play of an expected alert.
    pub last_play: Option<Instant>,
}

impl Tally {
    pub fn complete(&self) -> bool {
        self.played == self.expected
    }
}

pub(crate) fn tally(fleet: &Fleet, plays: &[Vec<Play>], alerts: &[Expected]) -> Tally {
    let mut t = Tally::default();
    let wanted: HashSet<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
    for (i, (_, commune)) in fleet.members.iter().enumerate() {
        let mine = &plays[i];
        let mut per_alert: HashMap<&str, usize> = HashMap::new();
        let mut per_key: HashMap<&str, HashSet<&str>> = HashMap::new();
        for p in mine {
            *per_alert.entry(p.alert.as_str()).or_default() += 1;
            per_key
                .entry(p.key.as_str())
                .or_default()
                .insert(p.alert.as_str());
            if wanted.contains(p.alert.as_str()) {
                t.last_play = t.last_play.max(Some(p.at));
            } else {
                t.unexpected += 1;
            }
        }
        t.twice += per_alert.values().filter(|&&n| n > 1).count();
        t.twice_same_message += per_key.values().filter(|ids| ids.len() > 1).count();
        for a in alerts {
            if !a.communes.contains(commune.as_str()) {
                continue;
            }
            t.expected += 1;
            if per_alert.contains_key(a.id.as_str()) {
                t.played += 1;
            } else {
                *t.missing.entry(a.id.clone()).or_default() += 1;
            }
        }
    }
    t
}

/// What the store shows of `alerts`' receiver deliveries: rows, rows `played`, and the
/// count per state.
pub(crate) async fn store_states(
    store: &store::Store,
    alerts: &[Expected],
) -> Result<(usize, usize, BTreeMap<String, usize>)> {
    let (mut rows, mut played) = (0, 0);
    let mut states = BTreeMap::new();
    for a in alerts {
        for r in store.receiver_deliveries(&a.id).await? {
            rows += 1;
            if r.played.is_some() {
                played += 1;
            }
            *states.entry(r.state).or_default() += 1;
        }
    }
    Ok((rows, played, states))
}

/// A tiny seeded generator (SplitMix64), for reproducible fault times.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A seed from the clock, for a run that names none.
pub fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x5eed)
}

pub(crate) fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// How long a child service may take to be ready.
const START_PATIENCE: Duration = Duration::from_secs(60);

/// The broker a child service uses.
pub(crate) enum ChildBroker<'a> {
    /// An external broker at this URL.
    External(&'a str),
    /// Its embedded broker, on this loopback port.
    Embedded(u16),
}

/// What a bench's child service is: a fresh data directory (its SQLite file, keys and
/// log), HTTP on a loopback port, demo and feeds off, the bench's sender authoritative.
pub(crate) struct ChildSpec<'a> {
    pub program: &'a Path,
    pub data_dir: &'a Path,
    pub http_port: u16,
    pub broker: ChildBroker<'a>,
    pub topic_prefix: String,
    pub client_id: String,
    pub sender: &'a str,
    /// More variables, set last (a quick run's shorter outbox timings).
    pub extra: Vec<(String, String)>,
}

/// The service as a child process on a fixed data directory and port.
pub(crate) struct Service {
    pub program: PathBuf,
    pub config_dir: PathBuf,
    pub env_file: Option<String>,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    /// Its data directory (where it writes its public keys and admin token).
    pub data_dir: PathBuf,
    pub child: Option<Child>,
}

impl Service {
    /// The child `spec` describes (not started yet), and the settings it will run with:
    /// the bench's configuration plus its variables.
    pub(crate) fn configure(base: &Sources, spec: ChildSpec) -> Result<(Service, Settings)> {
        let (mode, broker) = match spec.broker {
            ChildBroker::External(url) => ("external", ("CANHBAO__MQTT__URL", url.to_owned())),
            ChildBroker::Embedded(port) => {
                ("embedded", ("CANHBAO__MQTT__LISTEN", format!("127.0.0.1:{port}")))
            }
        };
        let mut env: Vec<(String, String)> = [
            ("CANHBAO__SERVICE__DATA_DIR", spec.data_dir.display().to_string()),
            ("CANHBAO__DATABASE__URL", String::new()),
            ("CANHBAO__SIGNING__KEY_FILE", String::new()),
            ("CANHBAO__HTTP__LISTEN", format!("127.0.0.1:{}", spec.http_port)),
            ("CANHBAO__MQTT__MODE", mode.into()),
            broker,
            ("CANHBAO__MQTT__TOPIC_PREFIX", spec.topic_prefix),
            ("CANHBAO__MQTT__CLIENT_ID", spec.client_id),
            ("CANHBAO__DEMO__ENABLED", "false".into()),
            ("CANHBAO__INGEST__SOURCES", "[]".into()),
            (
                "CANHBAO__BULLETINS__AUTHORITATIVE_SENDERS",
                format!(r#"["{}"]"#, spec.sender),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        env.extend(spec.extra);
        let mut sources = base.clone();
        sources.vars.extend(env.iter().cloned());
        let settings = canhbao_server::config::load(&sources).map_err(|p| anyhow::anyhow!("{p}"))?;
        let service = Service {
            program: spec.program.to_owned(),
            config_dir: base.config_dir.clone(),
            env_file: base.env.clone(),
            env,
            log: spec.data_dir.join("service.log"),
            data_dir: spec.data_dir.to_owned(),
            child: None,
        };
        Ok((service, settings))
    }

    /// Starts it, waits until `base` answers `/readyz`, and reads the keys its alerts
    /// are signed with and its admin token.
    pub(crate) async fn start(
        &mut self,
        http: &reqwest::Client,
        base: &str,
    ) -> Result<(TrustedKeys, String)> {
        self.spawn()?;
        self.wait_ready(http, base).await?;
        let mut keys = TrustedKeys::default();
        canhbao_receiver::load_trusted_keys(&self.data_dir.join("signing-keys.pub.json"), &mut keys)?;
        let token = std::fs::read_to_string(self.data_dir.join("admin.token"))?;
        Ok((keys, token.trim().to_owned()))
    }

    pub(crate) fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(&self.program);
        cmd.arg("serve").arg("--config-dir").arg(&self.config_dir);
        if let Some(e) = &self.env_file {
            cmd.arg("--env").arg(e);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info,sqlx=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.child = Some(cmd.spawn().context("starting canhbao serve")?);
        Ok(())
    }

    /// SIGKILL: no grace, as a power cut or the OOM killer would.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// ERROR and WARN lines of the log, and the five most frequent of their messages
    /// (the text before the structured fields).
    pub(crate) fn log_summary(&self) -> (usize, usize, Vec<(String, usize)>) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let (mut errors, mut warnings) = (0, 0);
        let mut messages: BTreeMap<String, usize> = BTreeMap::new();
        for line in text.lines() {
            let level = if line.contains(" ERROR ") {
                errors += 1;
                "ERROR"
            } else if line.contains(" WARN ") {
                warnings += 1;
                "WARN"
            } else {
                continue;
            };
            // `time LEVEL message field=value ...`: the message up to the first field.
            let rest = line.split_once(&format!(" {level} ")).map_or(line, |(_, r)| r);
            let message: Vec<&str> = rest.split_whitespace().take_while(|w| !w.contains('=')).collect();
            *messages
                .entry(format!("{level} {}", message.join(" ")))
                .or_default() += 1;
        }
        let mut top: Vec<(String, usize)> = messages.into_iter().collect();
        top.sort_by_key(|b| std::cmp::Reverse(b.1));
        top.truncate(5);
        (errors, warnings, top)
    }

    pub(crate) fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub(crate) async fn wait_ready(&mut self, http: &reqwest::Client, base: &str) -> Result<()> {
        let deadline = Instant::now() + START_PATIENCE;
        while !ready(http, base).await {
            if let Some(status) = self.exited() {
                bail!("canhbao serve exited ({status}):\n{}", self.tail());
            }
            if Instant::now() > deadline {
                bail!(
                    "canhbao serve was not ready within {START_PATIENCE:?}:\n{}",
                    self.tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}
