//! What the tests that run `canhbao serve` as a child process share.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use canhbao_receiver::{Playback, ReceiverConfig, ReceiverEvent, state::PlayedLog};
use canhbao_server::Settings;
use dispatch::{Topics, TrustedKeys};
use domain::{CommuneCode, ProvinceCode, ReceiverId};
use mqtt::BrokerUrl;
use serde_json::Value;
use testkit::kannel::free_port;
use testkit::unique;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The sender made authoritative in these tests' services.
pub const SENDER: &str = "kttv-langson@example.vn";

/// The service as a child process, killed when the test ends.
pub struct Service(pub Child);

impl Service {
    /// SIGKILL: no grace, no cleanup, as a power cut or the OOM killer would.
    pub fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The last lines of the service's log, newest first.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(40).collect();
    lines.join("\n")
}

/// Starts `canhbao serve` on the repository's config with `env`, appending its output to
/// `log`.
pub fn spawn_service(log: &Path, env: &[(&str, String)]) -> Service {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_canhbao"));
    command
        .arg("serve")
        .arg("--config-dir")
        .arg(repo().join("config"))
        .env("CANHBAO__DEMO__ENABLED", "false")
        .env(
            "CANHBAO__BULLETINS__AUTHORITATIVE_SENDERS",
            format!(r#"["{SENDER}"]"#),
        )
        .env("RUST_LOG", "info")
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    for (k, v) in env {
        command.env(k, v);
    }
    Service(command.spawn().unwrap())
}

pub async fn wait_ready(http: &reqwest::Client, base: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Ready, and canhbao's answer (not another program that took the port).
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
            && r.json::<serde_json::Value>()
                .await
                .is_ok_and(|v| v["database"] == "ok")
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the service did not become ready: {}",
            tail(log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A CAP bulletin from the authoritative sender for the whole province.
pub fn bulletin(identifier: &str, hazard: &str, level: u8) -> String {
    let settings = canhbao_server::config::load(&canhbao_server::Sources {
        config_dir: repo().join("config"),
        ..Default::default()
    })
    .unwrap();
    province_bulletin(identifier, hazard, level, &settings)
}

/// A CAP bulletin from [`SENDER`] stating `hazard` at `level` for the whole province, in
/// the terms `settings` reads bulletins with.
pub fn province_bulletin(identifier: &str, hazard: &str, level: u8, settings: &Settings) -> String {
    testkit::cap::province_bulletin(
        identifier,
        SENDER,
        hazard,
        level,
        "Actual",
        &testkit::cap::BulletinTerms {
            hazard_parameter: settings.bulletins.hazard_parameter.clone(),
            level_parameter: settings
                .bulletins
                .level_parameters
                .first()
                .cloned()
                .unwrap_or_else(|| "riskLevel".to_owned()),
            province_geocode: settings.bulletins.province_geocode.clone(),
            province: settings.province.to_string(),
        },
    )
}

/// The province's commune codes, from the area file.
pub fn communes() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("config/areas/lang-son.toml")).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    doc["commune"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].as_str().unwrap().to_owned())
        .collect()
}

/// Simulated loudspeaker receivers (canhbao's own receiver agent, each with its played
/// log on disk), registered with the service and connected to the broker.
pub struct Fleet {
    /// Each receiver's played alert ids, in order.
    pub played: Arc<Mutex<HashMap<String, Vec<String>>>>,
    pub ids: Vec<String>,
    pub topics: Topics,
    broker: String,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    /// Registers `n` receivers over the province's communes through `base` (with an
    /// admin `token`), trusting the keys in `keys_file`, and waits until all are connected.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        http: &reqwest::Client,
        base: &str,
        token: &str,
        keys_file: &Path,
        state_dir: &Path,
        broker: &str,
        prefix: &str,
        n: usize,
    ) -> Fleet {
        let communes = communes();
        let mut keys = TrustedKeys::default();
        canhbao_receiver::load_trusted_keys(keys_file, &mut keys).unwrap();
        let mut provisioning = TrustedKeys::default();
        canhbao_receiver::load_provisioning_keys(keys_file, &mut provisioning).unwrap();
        let topics = Topics::new(prefix, ProvinceCode::new("20").unwrap()).unwrap();
        let played: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
        let stop = CancellationToken::new();
        let (connected_tx, mut connected_rx) = mpsc::unbounded_channel::<()>();
        let mut tasks = Vec::new();
        let mut ids = Vec::new();
        for i in 0..n {
            let commune = &communes[i % communes.len()];
            let id = format!("sim-{commune}-{i}");
            let body = serde_json::json!({"receiver_id": id, "commune": commune}).to_string();
            let r = http
                .post(format!("{base}/api/v1/receivers"))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 201);
            let registered: serde_json::Value = r.json().await.unwrap();
            let password = registered["mqtt_password"].as_str().map(str::to_owned);
            let (log, _) =
                PlayedLog::open(&state_dir.join(format!("{id}.state")), chrono::Utc::now()).unwrap();
            let cfg = ReceiverConfig {
                broker: BrokerUrl::parse(broker).unwrap(),
                receiver_id: ReceiverId::new(&id).unwrap(),
                commune: CommuneCode::new(commune).unwrap(),
                topics: topics.clone(),
                keys: keys.clone(),
                provisioning: provisioning.clone(),
                key_set_file: Some(state_dir.join(format!("{id}.keys"))),
                username: password.as_ref().map(|_| id.clone()),
                password: password.map(secrecy::SecretString::from),
                heartbeat: Duration::from_secs(5),
                drills: true,
                tls: Default::default(),
                windows: Default::default(),
            };
            let (tx, mut rx) = mpsc::unbounded_channel();
            let playback = Playback {
                played: log,
                command: None,
            };
            tasks.push(tokio::spawn(canhbao_receiver::run_with(
                cfg,
                playback,
                tx,
                stop.clone(),
            )));
            let played = played.clone();
            let connected = connected_tx.clone();
            let rid = id.clone();
            tasks.push(tokio::spawn(async move {
                let mut first = true;
                while let Some(ev) = rx.recv().await {
                    match ev {
                        ReceiverEvent::Connected if first => {
                            first = false;
                            let _ = connected.send(());
                        }
                        ReceiverEvent::Played(a) => played
                            .lock()
                            .unwrap()
                            .entry(rid.clone())
                            .or_default()
                            .push(a.id.clone()),
                        _ => {}
                    }
                }
            }));
            ids.push(id);
        }
        for _ in 0..n {
            tokio::time::timeout(Duration::from_secs(60), connected_rx.recv())
                .await
                .expect("every receiver connects");
        }
        Fleet {
            played,
            ids,
            topics,
            broker: broker.to_owned(),
            stop,
            tasks,
        }
    }

    /// Plays so far, over all receivers.
    pub fn plays(&self) -> usize {
        self.played.lock().unwrap().values().map(Vec::len).sum()
    }

    /// Every receiver played each of `alerts` exactly once.
    pub fn assert_each_played_once(&self, alerts: &[String]) {
        let played = self.played.lock().unwrap().clone();
        assert_eq!(played.len(), self.ids.len(), "every receiver played something");
        let mut want = alerts.to_vec();
        want.sort();
        for (rx, ids) in &played {
            let mut sorted = ids.clone();
            sorted.sort();
            assert_eq!(sorted, want, "{rx} must play each alert exactly once");
        }
    }

    /// Stops the receivers and leaves the shared broker as it was: the retained alerts
    /// and statuses cleared.
    pub async fn stop_and_clean(self, alerts: &[String]) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        let (raw, driver, _rx) = mqtt::connect(mqtt::MqttSettings {
            broker: BrokerUrl::parse(&self.broker).unwrap(),
            client_id: unique("fleet-clean"),
            username: None,
            password: None,
            keep_alive: Duration::from_secs(30),
            persistent_session: false,
            subscriptions: vec![],
            last_will: None,
            on_connect: None,
            tls: Default::default(),
        });
        let driver_stop = CancellationToken::new();
        let driver = tokio::spawn(driver.run(driver_stop.clone()));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !raw.is_connected() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for id in alerts {
            for c in communes() {
                let topic = self
                    .topics
                    .alert(&CommuneCode::new(&c).unwrap(), &domain::AlertId::new(id).unwrap());
                let _ = raw.publish(&topic, Vec::new(), true).await;
            }
        }
        for id in &self.ids {
            let _ = raw
                .publish(
                    &self.topics.status(&ReceiverId::new(id).unwrap()),
                    Vec::new(),
                    true,
                )
                .await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        driver_stop.cancel();
        let _ = driver.await;
    }
}

/// Waits until every one of `receivers` registered receivers reported `played` for each
/// of `alerts`, as the service at `base` shows it; panics with the logs' tails after
/// `within`.
pub async fn wait_all_played(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    alerts: &[String],
    receivers: usize,
    within: Duration,
    logs: &[&Path],
) {
    let deadline = Instant::now() + within;
    for id in alerts {
        loop {
            // A busy service may answer slowly: a failed poll is retried until the deadline.
            let d: Value = match http
                .get(format!("{base}/api/v1/alerts/{id}"))
                .bearer_auth(token)
                .send()
                .await
            {
                Ok(r) => {
                    let status = r.status();
                    let v = r.json().await.unwrap_or(Value::Null);
                    if !status.is_success() {
                        eprintln!("GET alert {id}: {status} {v}");
                    }
                    v
                }
                Err(e) => {
                    eprintln!("GET alert {id}: {e}");
                    Value::Null
                }
            };
            let rows = d["receiver_deliveries"].as_array().cloned().unwrap_or_default();
            let done = rows.iter().filter(|r| r["state"] == "played").count();
            if rows.len() == receivers && done == receivers {
                break;
            }
            if Instant::now() >= deadline {
                let tails: Vec<String> = logs
                    .iter()
                    .map(|l| format!("{}:\n{}", l.display(), tail(l)))
                    .collect();
                panic!(
                    "alert {id}: {done} of {} receivers played; logs, newest first:\n{}",
                    rows.len(),
                    tails.join("\n\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Posts three province-wide bulletins (flood, flash flood and landslide, heavy rain, level 2) to `base`;
/// each raises one alert to all 65 communes. Returns the alert ids.
pub async fn issue_province_alerts(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    tag: &str,
) -> Vec<String> {
    let mut alerts = Vec::new();
    for (n, hazard) in ["flood", "flash_flood", "heavy_rain"].iter().enumerate() {
        let r = http
            .post(format!("{base}/api/v1/bulletins"))
            .bearer_auth(token)
            .header("content-type", "application/cap+xml")
            .body(bulletin(&unique(&format!("{tag}{n}-")), hazard, 2))
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap();
        let ids = body["alerts"].as_array().cloned().unwrap_or_default();
        assert_eq!(ids.len(), 1, "{hazard}: {body}");
        alerts.push(ids[0].as_str().unwrap().to_owned());
    }
    alerts
}

/// One instance: its own data directory, port, client id and log.
pub struct Instance {
    pub data_dir: PathBuf,
    pub base: String,
    pub log: PathBuf,
    pub env: Vec<(&'static str, String)>,
}

impl Instance {
    pub fn new(root: &Path, name: &str, database: &str, broker: &str, prefix: &str, feed: &str) -> Instance {
        let data_dir = root.join(name);
        let port = free_port();
        let env = vec![
            ("CANHBAO__SERVICE__DATA_DIR", data_dir.display().to_string()),
            ("CANHBAO__DATABASE__URL", database.to_owned()),
            ("CANHBAO__HTTP__LISTEN", format!("127.0.0.1:{port}")),
            ("CANHBAO__MQTT__MODE", "external".into()),
            ("CANHBAO__MQTT__URL", broker.to_owned()),
            ("CANHBAO__MQTT__TOPIC_PREFIX", prefix.to_owned()),
            ("CANHBAO__MQTT__CLIENT_ID", unique(&format!("canhbao-{name}"))),
            ("CANHBAO__OUTBOX__IDLE_POLL_MS", "1000".into()),
            ("CANHBAO__OUTBOX__LEASE_S", "10".into()),
            ("CANHBAO__OUTBOX__RESEND_S", "[2, 5]".into()),
            // A source nobody answers: what is tested is who polls it.
            (
                "CANHBAO__INGEST__SOURCES",
                format!(
                    r#"[{{ id = "gauge", url = "{feed}", format = "cap", interval_s = 2, timeout_s = 1 }}]"#
                ),
            ),
        ];
        Instance {
            data_dir,
            base: format!("http://127.0.0.1:{port}"),
            log: root.join(format!("{name}.log")),
            env,
        }
    }

    pub fn start(&self) -> Service {
        let env: Vec<(&str, String)> = self.env.iter().map(|(k, v)| (*k, v.clone())).collect();
        spawn_service(&self.log, &env)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Copies the signing keyring of one instance to another: every instance signs with the
/// province's key, which receivers trust.
pub fn share_keys(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("keyring")).unwrap();
    for entry in std::fs::read_dir(from.join("keyring")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join("keyring").join(entry.file_name())).unwrap();
    }
    if from.join("signing.key").exists() {
        std::fs::copy(from.join("signing.key"), to.join("signing.key")).unwrap();
    }
}

impl Instance {
    /// Runs `canhbao ARGS` as an operator on this instance's host does: its config
    /// directory and environment, `stdin` written to the command. Panics with the output
    /// if it fails.
    pub fn admin(&self, args: &[&str], stdin: &str) -> String {
        use std::io::Write;
        let mut command = Command::new(env!("CARGO_BIN_EXE_canhbao"));
        command
            .args(args)
            .env("CANHBAO_CONFIG_DIR", repo().join("config"))
            .env("CANHBAO__DEMO__ENABLED", "false")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in &self.env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "canhbao {args:?}: {text}");
        text
    }
}

/// Two instances on one PostgreSQL database and one broker, as docs/operations.md sets
/// them up: the first started, its keyring copied to the second, then the second.
pub struct Pair {
    pub a: Instance,
    pub b: Instance,
    pub service_a: Service,
    pub service_b: Service,
    /// The first instance's bootstrap admin token.
    pub token: String,
    pub http: reqwest::Client,
    pub prefix: String,
}

impl Pair {
    pub async fn start(root: &Path, database: &str, broker: &str, tag: &str) -> Pair {
        let prefix = format!("{}/v1", unique(tag));
        // A source nobody answers: what the tests look at is who polls it.
        let feed = format!("http://127.0.0.1:{}/cap.xml", free_port());
        let a = Instance::new(root, "a", database, broker, &prefix, &feed);
        let b = Instance::new(root, "b", database, broker, &prefix, &feed);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let service_a = a.start();
        wait_ready(&http, &a.base, &a.log).await;
        share_keys(&a.data_dir, &b.data_dir);
        let service_b = b.start();
        wait_ready(&http, &b.base, &b.log).await;
        let token = std::fs::read_to_string(a.data_dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        Pair {
            a,
            b,
            service_a,
            service_b,
            token,
            http,
            prefix,
        }
    }
}

impl Fleet {
    /// `n` receivers registered through instance `a`, trusting its keys, their state under
    /// `root/rx`.
    #[allow(clippy::too_many_arguments)]
    pub async fn through(
        http: &reqwest::Client,
        a: &Instance,
        token: &str,
        root: &Path,
        broker: &str,
        prefix: &str,
        n: usize,
    ) -> Fleet {
        Fleet::start(
            http,
            &a.base,
            token,
            &a.data_dir.join("signing-keys.pub.json"),
            &root.join("rx"),
            broker,
            prefix,
            n,
        )
        .await
    }

    /// Waits until the fleet has played `n` times in all: a dispatch under way.
    pub async fn wait_for_plays(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.plays() < n {
            assert!(Instant::now() < deadline, "the dispatch never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
