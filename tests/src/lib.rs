//! The end-to-end harness: starts the real `canhbao` wiring in-process on free ports, with
//! a temporary SQLite file and either the embedded broker or an external one, and drives
//! it as its users do: HTTP for operators, MQTT receivers for communes.

pub use testkit::kannel;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use canhbao_receiver::{ReceiverConfig, ReceiverEvent};
use canhbao_server::config::{self, Sources};
use canhbao_server::{App, Settings};
use dispatch::{Topics, TrustedKeys};
use domain::{CommuneCode, ProvinceCode, ReceiverId};
use mqtt::{BrokerUrl, MqttHandle, MqttSettings};
use serde_json::Value;
use testkit::unique;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Which broker the app under test uses.
#[derive(Debug, Clone)]
pub enum Broker {
    /// The in-process rmqtt broker on a free loopback port.
    Embedded,
    /// An external broker such as Mosquitto, e.g. `mqtt://127.0.0.1:1883`.
    External(String),
}

/// The external broker to test against, when `CANHBAO_TEST_MQTT_URL` is set.
pub fn external_broker() -> Option<Broker> {
    testkit::service("CANHBAO_TEST_MQTT_URL").map(Broker::External)
}

pub fn repo_config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

/// The settings of a test instance: the shipped config, with free ports, a data
/// directory, the demo off, and a topic prefix and client id of its own so that tests
/// sharing an external broker never see each other's messages.
pub fn test_settings(data_dir: &Path, broker: &Broker, prefix: &str) -> Result<Settings> {
    test_settings_with(data_dir, broker, prefix, &[])
}

/// As [`test_settings`], with more `CANHBAO__...` variables.
pub fn test_settings_with(
    data_dir: &Path,
    broker: &Broker,
    prefix: &str,
    extra: &[(&str, &str)],
) -> Result<Settings> {
    let mut vars: Vec<(String, String)> = vec![
        (
            "CANHBAO__SERVICE__DATA_DIR".into(),
            data_dir.display().to_string(),
        ),
        ("CANHBAO__HTTP__LISTEN".into(), "127.0.0.1:0".into()),
        ("CANHBAO__MQTT__LISTEN".into(), "127.0.0.1:0".into()),
        ("CANHBAO__MQTT__TOPIC_PREFIX".into(), prefix.into()),
        ("CANHBAO__MQTT__CLIENT_ID".into(), unique("canhbao-test")),
        ("CANHBAO__DEMO__ENABLED".into(), "false".into()),
        ("CANHBAO__OUTBOX__IDLE_POLL_MS".into(), "200".into()),
        ("CANHBAO__SHUTDOWN__GRACE_S".into(), "5".into()),
        (
            "CANHBAO__BULLETINS__AUTHORITATIVE_SENDERS".into(),
            r#"["kttv-langson@example.vn"]"#.into(),
        ),
    ];
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    if let Broker::External(url) = broker {
        vars.push(("CANHBAO__MQTT__MODE".into(), "external".into()));
        vars.push(("CANHBAO__MQTT__URL".into(), url.clone()));
    }
    config::load(&Sources {
        config_dir: repo_config_dir(),
        env: None,
        vars,
        flags: vec![],
    })
    .map_err(|p| anyhow::anyhow!("{p}"))
}

/// `CANHBAO_TEST_E2E_DATABASE=postgres` runs the apps of the end-to-end suite on
/// PostgreSQL (the server `CANHBAO_TEST_POSTGRES_URL` names) instead of SQLite.
pub const E2E_DATABASE: &str = "CANHBAO_TEST_E2E_DATABASE";

/// Test databases kept until the test process ends: an app restarted on the same data
/// directory finds its database again (its URL is in the directory). The next run drops
/// them.
static KEPT: std::sync::Mutex<Vec<testkit::postgres::PgDatabase>> = std::sync::Mutex::new(Vec::new());

/// The database URL for an app on `data_dir`: `None` (its SQLite file) unless the suite
/// runs on PostgreSQL, then a database of its own.
async fn test_database(data_dir: &Path) -> Result<Option<String>> {
    match std::env::var(E2E_DATABASE).as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => return Ok(None),
        Ok("postgres") => {}
        Ok(other) => anyhow::bail!("{E2E_DATABASE}={other}: must be sqlite or postgres"),
    }
    let file = data_dir.join("test-database.url");
    if let Ok(url) = std::fs::read_to_string(&file) {
        return Ok(Some(url));
    }
    let pg = testkit::postgres::PgDatabase::from_env()
        .await
        .ok_or_else(|| anyhow::anyhow!("{E2E_DATABASE}=postgres needs {}", testkit::postgres::ENV))?;
    std::fs::create_dir_all(data_dir)?;
    std::fs::write(&file, &pg.url)?;
    let url = pg.url.clone();
    KEPT.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.push(pg);
    Ok(Some(url))
}

/// A running app and what a test needs to talk to it.
pub struct TestApp {
    pub app: App,
    pub base: String,
    pub token: String,
    pub broker: BrokerUrl,
    pub prefix: String,
    pub data_dir: PathBuf,
    /// The app's database: its SQLite file, or a PostgreSQL database of its own.
    pub database_url: String,
    pub http: reqwest::Client,
    /// Each receiver registered through [`TestApp::register_receiver`], with the broker
    /// password its registration gave: its receivers log in with it.
    passwords: std::sync::Mutex<std::collections::HashMap<String, String>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestApp {
    /// Starts an app with a fresh data directory.
    pub async fn spawn(broker: Broker) -> Result<TestApp> {
        Self::spawn_with(broker, &[]).await
    }

    /// Starts an app with a fresh data directory and more settings (`CANHBAO__DATABASE__URL`
    /// among them puts it on that database, whatever the suite runs on).
    pub async fn spawn_with(broker: Broker, extra: &[(&str, &str)]) -> Result<TestApp> {
        let dir = tempfile::tempdir()?;
        let data_dir = dir.path().to_path_buf();
        let prefix = format!("{}/v1", unique("cbtest"));
        let mut app = Self::start(&data_dir, &broker, &prefix, extra).await?;
        app._dir = Some(dir);
        Ok(app)
    }

    /// Starts an app on an existing data directory (to test restarts).
    pub async fn spawn_in(data_dir: &Path, broker: &Broker, prefix: &str) -> Result<TestApp> {
        Self::start(data_dir, broker, prefix, &[]).await
    }

    async fn start(
        data_dir: &Path,
        broker: &Broker,
        prefix: &str,
        extra: &[(&str, &str)],
    ) -> Result<TestApp> {
        // A database the caller names (e.g. through a proxy) wins over the suite's choice.
        let named = extra.iter().any(|(k, _)| *k == "CANHBAO__DATABASE__URL");
        let database = if named {
            None
        } else {
            test_database(data_dir).await?
        };
        let mut extra = extra.to_vec();
        if let Some(url) = &database {
            extra.push(("CANHBAO__DATABASE__URL", url));
        }
        let settings = test_settings_with(data_dir, broker, prefix, &extra)?;
        let database_url = settings.database_url.clone();
        let https = settings.http.tls.is_some();
        let app = App::start(settings).await?;
        let token = std::fs::read_to_string(data_dir.join("admin.token"))?
            .trim()
            .to_owned();
        let base = format!("{}://{}", if https { "https" } else { "http" }, app.http_addr);
        let broker = app.broker.clone();
        let t = TestApp {
            app,
            base,
            token,
            broker,
            prefix: prefix.to_owned(),
            data_dir: data_dir.to_path_buf(),
            database_url,
            // Over HTTPS, the harness's own client takes the test's certificate on trust;
            // a test checks the chain with a client of its own.
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .danger_accept_invalid_certs(https)
                .build()?,
            passwords: Default::default(),
            _dir: None,
        };
        t.wait_ready(Duration::from_secs(10)).await?;
        Ok(t)
    }

    /// Stops the app, keeping its data directory (returned) for a restart.
    pub async fn stop(self) -> (Option<tempfile::TempDir>, PathBuf) {
        self.app.stop().await;
        (self._dir, self.data_dir)
    }

    pub fn topics(&self) -> Topics {
        #[allow(clippy::unwrap_used)]
        Topics::new(&self.prefix, ProvinceCode::new("20").unwrap()).unwrap()
    }

    pub fn trusted_keys(&self) -> TrustedKeys {
        let mut keys = TrustedKeys::default();
        #[allow(clippy::unwrap_used)]
        keys.add_base64(&self.app.key_id, &self.app.public_key_b64)
            .unwrap();
        keys
    }

    /// The provisioning key the service publishes (protocol §10a), as a receiver is given
    /// it at enrolment.
    pub fn provisioning_keys(&self) -> Result<TrustedKeys> {
        let mut keys = TrustedKeys::default();
        canhbao_receiver::load_provisioning_keys(&self.data_dir.join("signing-keys.pub.json"), &mut keys)?;
        Ok(keys)
    }

    async fn wait_ready(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let r = self.http.get(format!("{}/readyz", self.base)).send().await;
            if matches!(&r, Ok(r) if r.status() == 200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("app not ready within {within:?}: {r:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// POSTs a JSON body to /api/v1/observations with the admin token.
    pub async fn post_observations(&self, body: &str) -> Result<(u16, Option<String>, Value)> {
        self.post_observations_as(Some(&self.token), body).await
    }

    pub async fn post_observations_as(
        &self,
        token: Option<&str>,
        body: &str,
    ) -> Result<(u16, Option<String>, Value)> {
        let mut req = self
            .http
            .post(format!("{}/api/v1/observations", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, ctype, body))
    }

    /// Gives `station` a reading of `value_m` minus 5 cm, 10 minutes ago: a station's
    /// first reading waits for the next one to confirm it (docs/rules.md, "Quality
    /// control"), so that a test's reading of about `value_m` now is taken as it is.
    pub async fn prime(&self, station: &str, value_m: f64) -> Result<()> {
        let at = (chrono::Utc::now() - chrono::Duration::minutes(10))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let body = format!(
            r#"{{"station":"{station}","parameter":"water_level","value":{},"unit":"m","observed_at":"{at}"}}"#,
            value_m - 0.05
        );
        let (status, _, answer) = self.post_observations(&body).await?;
        if status != 200 || answer["alerts"] != serde_json::json!([]) {
            bail!("priming {station}: {status} {answer}");
        }
        Ok(())
    }

    /// Creates an API token in the app's database (as `canhbao token-create` does).
    pub async fn create_token(&self, role: &str, label: &str, stations: &[&str]) -> Result<String> {
        self.create_key(role, label, stations, &[]).await
    }

    /// An API key with `scopes` (as `canhbao token-create --scope` makes).
    pub async fn create_key(
        &self,
        role: &str,
        label: &str,
        stations: &[&str],
        scopes: &[&str],
    ) -> Result<String> {
        let store = store::Store::open(&self.database_url).await?;
        let stations: Vec<String> = stations.iter().map(|s| s.to_string()).collect();
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        let token = canhbao_server::secrets::create_token(&store, role, label, &stations, &scopes).await?;
        store.close().await;
        Ok(token)
    }

    /// POSTs a body of any media type with the admin token (and a fresh Idempotency-Key,
    /// which the routes that send need).
    pub async fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Result<(u16, Value)> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", content_type)
            .header("idempotency-key", api::warnings::uuid_v4())
            .body(body.to_vec())
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json::<Value>().await.unwrap_or(Value::Null)))
    }

    /// A request as `token` with a JSON body: (status, body, whether it was a replay of
    /// an earlier answer to the same Idempotency-Key). `key: None` sends a fresh key.
    pub async fn call_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: &Value,
    ) -> Result<(u16, Value, bool)> {
        let key = key.map_or_else(api::warnings::uuid_v4, str::to_owned);
        let resp = self
            .http
            .request(method.parse()?, format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body.to_string())
            .send()
            .await?;
        let status = resp.status().as_u16();
        let replayed = resp.headers().contains_key("idempotent-replayed");
        Ok((
            status,
            resp.json::<Value>().await.unwrap_or(Value::Null),
            replayed,
        ))
    }

    /// Writes `draft` as a warning of the officer `token` and submits it; returns the
    /// alert it issued (a draft the two-person rule does not cover is issued at once).
    pub async fn issue_warning(&self, token: &str, draft: &Value) -> Result<String> {
        let (status, w, _) = self
            .call_as(token, "POST", "/api/v1/warnings", None, draft)
            .await?;
        anyhow::ensure!(status == 201, "draft: {status} {w}");
        let id = w["id"].as_str().context("the draft has no id")?.to_owned();
        let (status, issued, _) = self
            .call_as(
                token,
                "POST",
                &format!("/api/v1/warnings/{id}/submit"),
                None,
                &serde_json::json!({}),
            )
            .await?;
        anyhow::ensure!(status == 201, "submit: {status} {issued}");
        issued["alert_id"]
            .as_str()
            .map(str::to_owned)
            .context("the warning issued no alert")
    }

    /// GETs a text body (as `/metrics`) with the admin token.
    pub async fn get_text(&self, path: &str) -> Result<String> {
        Ok(self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?
            .text()
            .await?)
    }

    /// Adds a user with `role` (as `canhbao users add` does) and logs them in; returns
    /// their bearer token. Their identity in the API is `user:<name>`.
    pub async fn login_new_user(&self, name: &str, role: &str) -> Result<String> {
        let password = format!("{name}-password-123");
        canhbao_server::users::add(
            self.app.store(),
            &self.data_dir,
            name,
            role,
            Some(password.clone()),
        )
        .await?;
        let r: Value = self
            .http
            .post(format!("{}/api/v1/login", self.base))
            .header("content-type", "application/json")
            .body(serde_json::json!({"username": name, "password": password}).to_string())
            .send()
            .await?
            .json()
            .await?;
        r["token"]
            .as_str()
            .map(str::to_owned)
            .context("login gave no token")
    }

    pub async fn get(&self, path: &str) -> Result<(u16, Value)> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json::<Value>().await.unwrap_or(Value::Null)))
    }

    /// Polls `GET path` until `done` holds for the body, or fails after `within`.
    pub async fn wait_for(
        &self,
        path: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let (_, body) = self.get(path).await?;
            if done(&body) {
                return Ok(body);
            }
            if Instant::now() > deadline {
                bail!("condition on {path} not met within {within:?}; last body:\n{body:#}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Posts the live Lạng Sơn bulletin (`identifier`, level 3) from the authoritative
    /// sender and returns the id of the alert it raises.
    pub async fn issue_bulletin(&self, identifier: &str) -> Result<String> {
        let (status, body) = self
            .post(
                "/api/v1/bulletins",
                "application/cap+xml",
                &live_bulletin(identifier, "kttv-langson@example.vn", 3),
            )
            .await?;
        anyhow::ensure!(status == 200, "bulletin {identifier}: {status} {body}");
        body["alerts"][0]
            .as_str()
            .map(str::to_owned)
            .context("the bulletin raised no alert")
    }

    /// Cancels an alert as an admin, with `reason`; returns the Cancel's id.
    pub async fn cancel(&self, alert_id: &str, reason: &str) -> Result<String> {
        let body = serde_json::json!({ "reason": reason }).to_string();
        let (status, answer) = self
            .post(
                &format!("/api/v1/alerts/{alert_id}/cancel"),
                "application/json",
                body.as_bytes(),
            )
            .await?;
        anyhow::ensure!(status == 201, "cancel {alert_id}: {status} {answer}");
        answer["cancel_id"]
            .as_str()
            .map(str::to_owned)
            .context("no cancel_id")
    }

    /// Registers a receiver through the API, as an admin does (already registered is fine).
    pub async fn register_receiver(&self, commune: &str, id: &str) -> Result<()> {
        self.register_receiver_with(commune, id, true).await
    }

    /// Registers a receiver, enrolled for drills or not.
    pub async fn register_receiver_with(&self, commune: &str, id: &str, drills: bool) -> Result<()> {
        let body = serde_json::json!({"receiver_id": id, "commune": commune, "drills": drills});
        let (status, answer) = self
            .post(
                "/api/v1/receivers",
                "application/json",
                body.to_string().as_bytes(),
            )
            .await?;
        anyhow::ensure!(
            status == 201 || status == 409,
            "registering {id}: {status} {answer}"
        );
        if let Some(password) = answer["mqtt_password"].as_str() {
            self.passwords
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .insert(id.to_owned(), password.to_owned());
        }
        Ok(())
    }

    /// The broker password `id` was given when this harness registered it.
    pub fn receiver_password(&self, id: &str) -> Option<String> {
        self.passwords.lock().ok()?.get(id).cloned()
    }

    /// Registers and starts an in-process `canhbao-receiver` for `commune`, enrolled for
    /// drills (the harness's exercises reach it).
    pub async fn start_receiver(&self, commune: &str, id: &str) -> Result<TestReceiver> {
        self.register_receiver(commune, id).await?;
        self.start_unregistered_receiver(commune, id)
    }

    /// Registers and starts a receiver that is not enrolled for drills.
    pub async fn start_receiver_without_drills(&self, commune: &str, id: &str) -> Result<TestReceiver> {
        self.register_receiver_with(commune, id, false).await?;
        self.receiver(commune, id, None, false)
    }

    /// Registers and starts a receiver that plays through `command` (e.g. `sleep 60`: a
    /// loudspeaker that takes its time), reporting `played` only when it exits.
    pub async fn start_receiver_playing_with(
        &self,
        commune: &str,
        id: &str,
        command: &str,
    ) -> Result<TestReceiver> {
        self.register_receiver(commune, id).await?;
        self.receiver(
            commune,
            id,
            Some(canhbao_receiver::play::PlayCommand::parse(command)?),
            true,
        )
    }

    /// Starts an in-process `canhbao-receiver` that the registry does not know.
    pub fn start_unregistered_receiver(&self, commune: &str, id: &str) -> Result<TestReceiver> {
        self.receiver(commune, id, None, true)
    }

    fn receiver(
        &self,
        commune: &str,
        id: &str,
        command: Option<canhbao_receiver::play::PlayCommand>,
        drills: bool,
    ) -> Result<TestReceiver> {
        let password = self
            .passwords
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .get(id)
            .cloned();
        let cfg = ReceiverConfig {
            broker: self.broker.clone(),
            receiver_id: ReceiverId::new(id)?,
            commune: CommuneCode::new(commune)?,
            topics: self.topics(),
            keys: self.trusted_keys(),
            provisioning: self.provisioning_keys()?,
            key_set_file: Some(self.data_dir.join("receivers").join(format!("{id}.keys"))),
            // A registered receiver logs in as itself (the embedded broker, like
            // Mosquitto's generated ACL, keeps its own topics to its own login).
            username: password.as_ref().map(|_| id.to_owned()),
            password: password.map(secrecy::SecretString::from),
            heartbeat: Duration::from_secs(1),
            drills,
            tls: Default::default(),
            windows: Default::default(),
        };
        // A state file per receiver id in the app's data directory, as a real receiver
        // keeps: a restarted TestReceiver remembers what it played.
        let path = self.data_dir.join("receivers").join(format!("{id}.state"));
        let (played, _) = canhbao_receiver::state::PlayedLog::open(&path, chrono::Utc::now())?;
        let playback = canhbao_receiver::Playback { played, command };
        let stop = CancellationToken::new();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(canhbao_receiver::run_with(cfg, playback, tx, stop.clone()));
        Ok(TestReceiver {
            events: rx,
            key_sets: Default::default(),
            stop,
            task,
        })
    }

    /// A plain MQTT client on the same broker, for publishing what an attacker with write
    /// access to the broker would (on the embedded broker, whose ACL keeps alert topics
    /// to the service, it logs in with the service's own credentials).
    pub async fn raw_client(&self) -> Result<(MqttHandle, CancellationToken)> {
        let service = self.app.broker_service.clone();
        self.client(service.as_ref().map(|s| (s.username.clone(), s.password.clone())))
            .await
    }

    /// A plain anonymous MQTT client on the same broker, as anyone on the machine.
    pub async fn anonymous_client(&self) -> Result<(MqttHandle, CancellationToken)> {
        self.client(None).await
    }

    async fn client(
        &self,
        credentials: Option<(String, secrecy::SecretString)>,
    ) -> Result<(MqttHandle, CancellationToken)> {
        let (username, password) = credentials.unzip();
        let (handle, driver, _rx) = mqtt::connect(MqttSettings {
            broker: self.broker.clone(),
            client_id: unique("raw"),
            username,
            password,
            keep_alive: Duration::from_secs(30),
            persistent_session: false,
            subscriptions: vec![],
            last_will: None,
            on_connect: None,
            tls: Default::default(),
        });
        let stop = CancellationToken::new();
        tokio::spawn(driver.run(stop.clone()));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !handle.is_connected() {
            if Instant::now() > deadline {
                bail!("raw client could not connect to the broker");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok((handle, stop))
    }
}

impl TestApp {
    /// The alerts the broker retains for `commune` now: what a receiver that connects
    /// for the first time is given (alert ids, from the topics of non-empty messages).
    pub async fn retained_alerts(&self, commune: &str) -> Result<Vec<String>> {
        let commune = CommuneCode::new(commune)?;
        let topics = self.topics();
        let (_handle, driver, mut rx) = mqtt::connect(MqttSettings {
            broker: self.broker.clone(),
            client_id: unique("retained"),
            username: None,
            password: None,
            keep_alive: Duration::from_secs(30),
            persistent_session: false,
            subscriptions: vec![topics.alerts_filter(&commune)],
            last_will: None,
            on_connect: None,
            tls: Default::default(),
        });
        let stop = CancellationToken::new();
        tokio::spawn(driver.run(stop.clone()));
        let mut ids = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            if m.retain
                && !m.payload.is_empty()
                && let Some(id) = topics.parse_alert(&commune, &m.topic)
            {
                ids.push(id);
            }
        }
        stop.cancel();
        Ok(ids)
    }
}

/// A receiver running in-process.
pub struct TestReceiver {
    events: mpsc::UnboundedReceiver<ReceiverEvent>,
    /// Key set events (protocol §10a) set aside by [`TestReceiver::next`].
    key_sets: std::collections::VecDeque<ReceiverEvent>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl TestReceiver {
    /// The next event about an alert (connection and key set events are skipped; see
    /// [`TestReceiver::next_key_set`]).
    pub async fn next(&mut self, within: Duration) -> Result<ReceiverEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .context("no receiver event in time")?
                .context("receiver stopped")?;
            match ev {
                ReceiverEvent::Connected => {}
                ReceiverEvent::KeySetApplied { .. } | ReceiverEvent::KeySetRefused { .. } => {
                    self.key_sets.push_back(ev)
                }
                ev => return Ok(ev),
            }
        }
    }

    /// The next key set applied or refused, including those [`TestReceiver::next`] set
    /// aside; alert events on the way are dropped.
    pub async fn next_key_set(&mut self, within: Duration) -> Result<ReceiverEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(ev) = self.key_sets.pop_front() {
                return Ok(ev);
            }
            let ev = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .context("no key set event in time")?
                .context("receiver stopped")?;
            if matches!(
                ev,
                ReceiverEvent::KeySetApplied { .. } | ReceiverEvent::KeySetRefused { .. }
            ) {
                return Ok(ev);
            }
        }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// An observation body for `station` at the current time.
pub fn observation_now(station: &str, value_m: f64) -> String {
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    format!(
        r#"{{"station":"{station}","parameter":"water_level","value":{value_m},"unit":"m","observed_at":"{at}"}}"#
    )
}

/// The constructed Lạng Sơn CAP bulletin, re-timed to be live now.
#[allow(clippy::unwrap_used)]
pub fn live_bulletin(identifier: &str, sender: &str, level: u8) -> Vec<u8> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crates/ingest/fixtures/cap/lang-son-flood-level3-CONSTRUCTED.xml"
    ))
    .unwrap();
    let now = chrono::Utc::now();
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    text.replace("DBLU_12-09h00-LS-2026", identifier)
        .replace("kttv-langson@example.vn", sender)
        .replace("<value>3</value>", &format!("<value>{level}</value>"))
        .replace(
            "2026-10-09T09:00:00+07:00",
            &fmt(now - chrono::Duration::minutes(5)),
        )
        .replace(
            "2026-10-09T21:00:00+07:00",
            &fmt(now + chrono::Duration::hours(6)),
        )
        .into_bytes()
}
