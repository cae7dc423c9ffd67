//! `canhbao bench dispatch`: the time from issuing one alert to the whole province until
//! the store holds a `received` receipt from every one of N simulated receivers, against
//! a raw publish of the same envelope bytes to the same commune topics, with one MQTT
//! client, to N plain subscribers on the same broker, measured in the same run.
//!
//! Each round starts a fresh service (temporary data directory and SQLite file, demo and
//! feeds off, a topic prefix and client ids of its own) as a `canhbao serve` child process,
//! on the external broker or with its embedded one. It registers
//! the receivers round-robin over the area file's communes and starts them in the bench's
//! process, and cleans up after itself: receivers and service stopped, their broker
//! sessions discarded and the retained messages it left cleared.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use chrono::Utc;
use dispatch::{Topics, TrustedKeys};
use domain::{AlertId, CommuneCode, ReceiverId};
use mqtt::{BrokerUrl, MqttHandle, MqttSettings};
pub use testkit::unique;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::faults::{ChildBroker, ChildSpec, Fleet, NO_HEARTBEAT_BURST, Service, register, wait_online};
use canhbao_server::Settings;
use canhbao_server::config::{MqttMode, Sources};

/// The bulletin's sender, made authoritative for the bench's own instance only.
pub(crate) const SENDER: &str = "canhbao-bench@example.invalid";
/// How often the store is asked whether every receiver has acknowledged.
const POLL: Duration = Duration::from_millis(10);
/// How long a round may take to connect, or to deliver, before it fails.
const PATIENCE: Duration = Duration::from_secs(120);

/// What to measure.
#[derive(Debug, Clone)]
pub struct DispatchBench {
    pub receivers: usize,
    /// `mqtt://host:port` of the external broker (Mosquitto), `embedded`: the
    /// service's own broker, on a free loopback port, or `spawn`: a Mosquitto the bench
    /// starts for the run with the deploy configuration's queue limit.
    pub broker: String,
    pub rounds: usize,
    /// The `canhbao` binary, run as the service with the embedded broker.
    pub program: PathBuf,
}

/// One round's figures.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    /// Issue (POST of the bulletin) until the store shows `received` from every receiver.
    pub received: Duration,
    /// Issue until the store shows `played` from every receiver.
    pub played: Duration,
    /// Issue until the POST was answered (the alert committed to the store).
    pub answered: Duration,
    /// Issue until the last receiver had verified and played the alert, as the receivers
    /// themselves saw it (before their receipts travel back): what the raw baseline
    /// measures, one way.
    pub delivered: Duration,
    /// First raw publish until every plain subscriber holds the message.
    pub raw: Duration,
    /// Receivers whose `received` and `played` the store showed, subscribers that got
    /// the raw message.
    pub counted_received: usize,
    pub counted_played: usize,
    pub counted_raw: usize,
    /// Per receiver, issue until the store recorded its `received`: median and 99th
    /// percentile.
    pub received_p50: Duration,
    pub received_p99: Duration,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct DispatchReport {
    pub receivers: usize,
    pub communes: usize,
    pub broker: String,
    pub envelope_bytes: usize,
    pub rounds: Vec<Round>,
}

pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl DispatchReport {
    pub fn median_received(&self) -> Duration {
        median(self.rounds.iter().map(|r| r.received).collect())
    }
    pub fn median_played(&self) -> Duration {
        median(self.rounds.iter().map(|r| r.played).collect())
    }
    pub fn median_raw(&self) -> Duration {
        median(self.rounds.iter().map(|r| r.raw).collect())
    }

    /// Writes the report in the style of `bench rules`.
    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        let (raw, rec, played) = (self.median_raw(), self.median_received(), self.median_played());
        let answered = median(self.rounds.iter().map(|r| r.answered).collect());
        let delivered = median(self.rounds.iter().map(|r| r.delivered).collect());
        writeln!(
            out,
            "dispatch bench: {} receivers over {} communes, broker {}, envelope {} bytes, median of {} rounds",
            self.receivers,
            self.communes,
            self.broker,
            self.envelope_bytes,
            self.rounds.len()
        )?;
        writeln!(
            out,
            "  baseline raw publish      {:>9.1} ms  first of {} QoS 1 publishes (one client) until all {} plain subscribers hold it",
            ms(raw),
            self.communes,
            self.receivers
        )?;
        writeln!(
            out,
            "  canhbao issue->answered   {:>9.1} ms  POST of the bulletin until its answer (parsed, assessed, signed, committed)",
            ms(answered)
        )?;
        writeln!(
            out,
            "  canhbao issue->delivered  {:>9.1} ms  until the last receiver had verified and played it (receiver side, one way)",
            ms(delivered)
        )?;
        writeln!(
            out,
            "  canhbao issue->received   {:>9.1} ms  POST of a province-wide CAP bulletin until the store holds `received` from all {} receivers (polled every {} ms)",
            ms(rec),
            self.receivers,
            POLL.as_millis()
        )?;
        writeln!(
            out,
            "  canhbao issue->played     {:>9.1} ms  the same, until `played` from all of them",
            ms(played)
        )?;
        writeln!(
            out,
            "  per receiver, received    p50 {:>7.1} ms  p99 {:>7.1} ms  (issue until the store recorded each receiver's `received`)",
            ms(median(self.rounds.iter().map(|r| r.received_p50).collect())),
            ms(median(self.rounds.iter().map(|r| r.received_p99).collect()))
        )?;
        let ratio = |d: Duration| d.as_secs_f64() / raw.as_secs_f64().max(1e-9);
        writeln!(
            out,
            "  ratio (time)              {:>9.2}x  canhbao received in the store / raw publish",
            ratio(rec)
        )?;
        writeln!(
            out,
            "  ratio (one way)           {:>9.2}x  canhbao delivered / raw publish",
            ratio(delivered)
        )?;
        let list = |f: fn(&Round) -> Duration| {
            self.rounds
                .iter()
                .map(|r| format!("{:.1}", ms(f(r))))
                .collect::<Vec<_>>()
                .join(" ")
        };
        writeln!(
            out,
            "  rounds (ms): raw [{}]  answered [{}]  delivered [{}]  received [{}]  played [{}]",
            list(|r| r.raw),
            list(|r| r.answered),
            list(|r| r.delivered),
            list(|r| r.received),
            list(|r| r.played)
        )?;
        let min = |f: fn(&Round) -> usize| self.rounds.iter().map(f).min().unwrap_or(0);
        writeln!(
            out,
            "  counted (fewest in a round): received {}/{}, played {}/{}, raw {}/{}",
            min(|r| r.counted_received),
            self.receivers,
            min(|r| r.counted_played),
            self.receivers,
            min(|r| r.counted_raw),
            self.receivers
        )
    }
}

/// A temporary directory, removed when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new() -> Result<Self> {
        let path = std::env::temp_dir().join(unique("canhbao-bench"));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The bench instance's settings: the configured ones, with a temporary SQLite file and
/// key, the external broker (`None`: the embedded one, on a free port), a fresh topic prefix
/// and client id, no demo and no feeds.
pub(crate) fn settings(base: &Sources, data_dir: &std::path::Path, broker: Option<&str>) -> Result<Settings> {
    use toml::Value::{Array, Boolean, String as S};
    let mut sources = base.clone();
    let prefix = format!("{}/v1", unique("cbbench"));
    match broker {
        Some(url) => sources.flags.extend([
            ("mqtt.mode".into(), S("external".into())),
            ("mqtt.url".into(), S(url.into())),
        ]),
        None => sources.flags.extend([
            ("mqtt.mode".into(), S("embedded".into())),
            ("mqtt.listen".into(), S("127.0.0.1:0".into())),
        ]),
    }
    sources.flags.extend([
        ("service.data_dir".into(), S(data_dir.display().to_string())),
        ("database.url".into(), S(String::new())),
        ("signing.key_file".into(), S(String::new())),
        ("http.listen".into(), S("127.0.0.1:0".into())),
        ("mqtt.topic_prefix".into(), S(prefix)),
        ("mqtt.client_id".into(), S(unique("canhbao-bench"))),
        ("demo.enabled".into(), Boolean(false)),
        ("ingest.sources".into(), Array(vec![])),
        (
            "bulletins.authoritative_senders".into(),
            Array(vec![S(SENDER.into())]),
        ),
    ]);
    canhbao_server::config::load(&sources).map_err(|p| anyhow::anyhow!("{p}"))
}

/// A CAP bulletin from `sender` for the whole province (see
/// [`testkit::cap::province_bulletin`]), in the terms `settings` reads bulletins with.
pub fn province_bulletin(
    identifier: &str,
    sender: &str,
    hazard: &str,
    level: u8,
    status: &str,
    settings: &Settings,
) -> String {
    testkit::cap::province_bulletin(
        identifier,
        sender,
        hazard,
        level,
        status,
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

/// The external broker `--broker` names; `None` for `embedded`.
fn external(bench: &DispatchBench) -> Option<&str> {
    (bench.broker != "embedded").then_some(bench.broker.as_str())
}

/// Runs the scenario: `rounds` of (canhbao, then the raw baseline on the same broker).
/// `--broker spawn` starts a Mosquitto of the bench's own for the run, configured as
/// `deploy/mosquitto/canhbao.conf` queues (100,000 messages a client).
pub async fn run(base: &Sources, bench: &DispatchBench) -> Result<DispatchReport> {
    if bench.broker == "spawn" {
        let dir = TempDir::new()?;
        let port = crate::footprint::free_port()?;
        let _mosquitto = crate::outage::Mosquitto::start(&dir.0, port)?;
        let own = DispatchBench {
            broker: format!("mqtt://127.0.0.1:{port}"),
            ..bench.clone()
        };
        let mut report = Box::pin(run(base, &own)).await?;
        report.broker = format!("{} (a Mosquitto started for the bench)", report.broker);
        return Ok(report);
    }
    ensure!(bench.receivers > 0, "--receivers must be at least 1");
    let probe = settings(base, &std::env::temp_dir(), external(bench))?;
    let communes: Vec<CommuneCode> = probe.area.communes.iter().map(|c| c.code.clone()).collect();
    ensure!(!communes.is_empty(), "the area file has no communes");
    let broker = match &probe.mqtt.mode {
        MqttMode::External { url, .. } => format!("mqtt://{}:{}", url.host, url.port),
        _ => "embedded (the service's own)".to_owned(),
    };
    let mut rounds = Vec::new();
    let mut envelope_bytes = 0;
    for _ in 0..bench.rounds.max(1) {
        let (round, envelope_len) = canhbao_round(base, bench, &communes).await?;
        envelope_bytes = envelope_len;
        rounds.push(round);
    }
    Ok(DispatchReport {
        receivers: bench.receivers,
        communes: communes.len(),
        broker,
        envelope_bytes,
        rounds,
    })
}

/// A plain client on the broker, connected.
async fn client(broker: &BrokerUrl, id: String, subscriptions: Vec<String>) -> Result<Client> {
    let (handle, driver, inbound) = mqtt::connect(MqttSettings {
        broker: broker.clone(),
        client_id: id,
        username: None,
        password: None,
        keep_alive: Duration::from_secs(60),
        persistent_session: false,
        subscriptions,
        last_will: None,
        on_connect: None,
        tls: Default::default(),
    });
    let stop = CancellationToken::new();
    let task = tokio::spawn(driver.run(stop.clone()));
    let c = Client {
        handle,
        stop,
        task,
        inbound,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c.handle.is_connected() {
        if Instant::now() > deadline {
            c.close().await;
            bail!("could not connect to the broker");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(c)
}

struct Client {
    handle: MqttHandle,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    inbound: mpsc::Receiver<mqtt::InboundMessage>,
}

impl Client {
    /// Disconnects after what was queued has been handed to the broker.
    async fn close(self) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Discards the broker sessions of these client ids (a clean-session connect does), so
/// that the run leaves no persistent sessions behind.
pub(crate) async fn forget_sessions(broker: &BrokerUrl, ids: Vec<String>) {
    for chunk in ids.chunks(200) {
        let mut set = tokio::task::JoinSet::new();
        for id in chunk {
            let (broker, id) = (broker.clone(), id.clone());
            set.spawn(async move {
                if let Ok(c) = client(&broker, id, vec![]).await {
                    c.close().await;
                }
            });
        }
        while set.join_next().await.is_some() {}
    }
}

/// Publishes an empty retained message to each topic, clearing what is retained there,
/// and waits until the broker has taken them all (a last message to itself comes back).
pub(crate) async fn clear_retained(broker: &BrokerUrl, topics: &[String]) -> Result<()> {
    let id = unique("cbbench-clear");
    let done = format!("{id}/done");
    let mut c = client(broker, id, vec![done.clone()]).await?;
    let result = async {
        for t in topics {
            c.handle.publish(t, Vec::new(), true).await?;
        }
        c.handle.publish(&done, b"done".to_vec(), false).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout_at(deadline, c.inbound.recv()).await {
                Ok(Some(m)) if m.topic == done => return Ok(()),
                Ok(Some(_)) => {}
                _ => bail!(
                    "the broker did not confirm the clearing of {} retained messages",
                    topics.len()
                ),
            }
        }
    }
    .await;
    c.close().await;
    result
}

/// Open files of process `pid` (Linux).
fn open_files(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// What a round talks to: the service (a `canhbao serve` child process, as in
/// production: in the bench's own process it would share a runtime with the receivers),
/// its store, broker and HTTP API, its admin token and the keys its alerts are signed with.
struct Target {
    service: Service,
    store: store::Store,
    broker: BrokerUrl,
    base: String,
    token: String,
    keys: TrustedKeys,
}

impl Target {
    /// How many files the service holds open.
    fn open_files(&self) -> Option<usize> {
        open_files(self.service.child.as_ref()?.id())
    }

    /// On the embedded broker: discards the receivers' broker sessions and waits until
    /// the service holds no more open files than `open_at_start`, up to `PATIENCE`. The
    /// embedded broker keeps a receiver's socket open with its persistent session after
    /// it left, and the raw subscribers would otherwise find the service's open files
    /// used up (10,000 receivers and 10,000 subscribers pass a usual limit of 20,000).
    async fn release_sessions(&self, client_ids: Vec<String>, open_at_start: usize) {
        forget_sessions(&self.broker, client_ids).await;
        let deadline = Instant::now() + PATIENCE;
        while self.open_files().is_some_and(|n| n > open_at_start + 16) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(mut self) {
        self.store.close().await;
        self.service.kill();
    }
}

/// Starts the round's service, its data in `data_dir`: on the external broker, or with its
/// embedded broker on a free port. Returns it with the settings it runs with.
async fn start(
    base: &Sources,
    bench: &DispatchBench,
    data_dir: &std::path::Path,
) -> Result<(Target, Settings)> {
    let http_port = crate::footprint::free_port()?;
    let (broker, broker_url) = match external(bench) {
        Some(url) => (ChildBroker::External(url), url.to_owned()),
        None => {
            let port = crate::footprint::free_port()?;
            (ChildBroker::Embedded(port), format!("mqtt://127.0.0.1:{port}"))
        }
    };
    let (mut service, settings) = Service::configure(
        base,
        ChildSpec {
            program: &bench.program,
            data_dir,
            http_port,
            broker,
            topic_prefix: format!("{}/v1", unique("cbbench")),
            client_id: unique("canhbao-bench"),
            sender: SENDER,
            extra: Vec::new(),
        },
    )?;
    let base_url = format!("http://127.0.0.1:{http_port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let (keys, token) = service.start(&http, &base_url).await?;
    let db = format!("sqlite://{}", data_dir.join("canhbao.db").display());
    let target = Target {
        store: store::Store::open(&db).await?,
        broker: BrokerUrl::parse(&broker_url).map_err(|e| anyhow::anyhow!("--broker: {e}"))?,
        base: base_url,
        token,
        keys,
        service,
    };
    Ok((target, settings))
}

/// One round: canhbao, then the raw baseline on the same broker (the embedded one lives
/// as long as the service). The round's figures and the envelope's length.
async fn canhbao_round(
    base: &Sources,
    bench: &DispatchBench,
    communes: &[CommuneCode],
) -> Result<(Round, usize)> {
    let dir = TempDir::new()?;
    let (target, settings) = start(base, bench, &dir.0).await?;
    let topics = Topics::new(&settings.mqtt.topic_prefix, settings.province.clone())?;
    let app_client = settings.mqtt.client_id.clone();
    // CAP status Exercise, so that nothing it reaches could take it for real.
    let bulletin = province_bulletin(&unique("BENCH"), SENDER, "flood", 3, "Exercise", &settings);
    let broker = target.broker.clone();
    let open_at_start = target.open_files().unwrap_or_default();
    let mut fleet = None;
    let result = drive(&target, &topics, bench.receivers, communes, bulletin, &mut fleet).await;
    let ids: Vec<ReceiverId> = fleet
        .as_ref()
        .map(|f: &Fleet| f.members.iter().map(|(id, _)| id.clone()).collect())
        .unwrap_or_default();
    if let Some(f) = fleet.as_mut() {
        f.stop().await;
    }
    if external(bench).is_none() {
        target
            .release_sessions(ids.iter().map(|id| format!("rx-{id}")).collect(), open_at_start)
            .await;
    }
    let result = match result {
        Ok((mut round, envelope, alert_id)) => raw_round(
            &broker,
            &settings,
            communes,
            bench.receivers,
            &envelope,
            &alert_id,
        )
        .await
        .map(|(raw, counted)| {
            round.raw = raw;
            round.counted_raw = counted;
            (round, envelope, alert_id)
        }),
        Err(e) => Err(e),
    };
    let result = result.map_err(|e| {
        e.context(format!(
            "the service's log ended with:\n{}",
            target.service.tail()
        ))
    });
    target.stop().await;
    if external(bench).is_none() {
        // The embedded broker went with the service, and what it held with it.
        return result.map(|(round, envelope, _)| (round, envelope.len()));
    }
    let mut sessions: Vec<String> = ids.iter().map(|id| format!("rx-{id}")).collect();
    sessions.push(app_client);
    forget_sessions(&broker, sessions).await;
    let mut retained: Vec<String> = ids.iter().map(|id| topics.status(id)).collect();
    if let Ok((_, _, alert_id)) = &result
        && let Ok(id) = AlertId::new(alert_id)
    {
        retained.extend(communes.iter().map(|c| topics.alert(c, &id)));
    }
    clear_retained(&broker, &retained)
        .await
        .context("clearing the retained messages of the round")?;
    result.map(|(round, envelope, _)| (round, envelope.len()))
}

async fn drive(
    target: &Target,
    topics: &Topics,
    n: usize,
    communes: &[CommuneCode],
    bulletin: String,
    fleet: &mut Option<Fleet>,
) -> Result<(Round, Vec<u8>, String)> {
    let store = &target.store;
    let http = reqwest::Client::builder().timeout(PATIENCE).build()?;
    let (base, token) = (&target.base, &target.token);

    // The bench issues Exercise alerts: its receivers are enrolled for drills, and no
    // heartbeat burst may land inside the measurement.
    let members = register(store, &unique("b"), n, communes).await?;
    let running = fleet.insert(Fleet::start(
        &target.broker,
        topics,
        &target.keys,
        members,
        NO_HEARTBEAT_BURST,
    ));
    // Ready: the service's broker connection is up and every receiver said `online`
    // (sent after its subscription, so it is subscribed).
    wait_online(store, n, PATIENCE, &http, base).await?;

    let t0 = Instant::now();
    let issued = Utc::now();
    let resp = http
        .post(format!("{base}/api/v1/bulletins"))
        .bearer_auth(token)
        .header("content-type", "application/cap+xml")
        .body(bulletin)
        .send()
        .await?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    ensure!(status.is_success(), "the bulletin was refused: {status} {body}");
    let alerts: Vec<&str> = body["alerts"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let [alert_id] = alerts[..] else {
        bail!("expected the bulletin to issue one alert, got {body}");
    };
    let answered = t0.elapsed();
    let (mut received, mut played) = (None, None);
    loop {
        let plays = running.snapshot();
        let of_alert = plays.iter().flatten().filter(|p| p.alert == alert_id);
        let delivered_n = of_alert.clone().count();
        let delivered = of_alert.map(|p| p.at - t0).max().unwrap_or_default();
        let rows = store.receiver_deliveries(alert_id).await?;
        let counted_received = rows.iter().filter(|r| r.received.is_some()).count();
        let counted_played = rows.iter().filter(|r| r.played.is_some()).count();
        if received.is_none() && counted_received >= n {
            received = Some(t0.elapsed());
        }
        if played.is_none() && counted_played >= n {
            played = Some(t0.elapsed());
        }
        if let (Some(received), Some(played)) = (received, played)
            && delivered_n >= n
        {
            ensure!(rows.len() == n, "{} deliveries for {n} receivers", rows.len());
            let alert = store
                .get_alert(alert_id)
                .await?
                .context("the issued alert is not in the store")?;
            let mut each: Vec<Duration> = rows
                .iter()
                .filter_map(|r| r.received)
                .map(|at| (at - issued).to_std().unwrap_or_default())
                .collect();
            each.sort();
            let at = |q: f64| {
                each.get(((each.len() as f64 - 1.0) * q).round() as usize)
                    .copied()
                    .unwrap_or_default()
            };
            let round = Round {
                received,
                played,
                answered,
                delivered,
                raw: Duration::ZERO,
                counted_received,
                counted_played,
                counted_raw: 0,
                received_p50: at(0.5),
                received_p99: at(0.99),
            };
            return Ok((
                round,
                dispatch::wire::envelope_bytes(&alert.signed),
                alert_id.to_owned(),
            ));
        }
        if t0.elapsed() > PATIENCE {
            bail!(
                "after {PATIENCE:?}, {counted_received} of {n} receivers received and {counted_played} played alert {alert_id}"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The baseline: the same bytes, one QoS 1 publish per commune topic (not retained) under
/// a prefix of its own, to `n` plain subscribers spread as the receivers are. Returns the
/// time from the first publish until the last subscriber holds it, and how many did.
async fn raw_round(
    broker: &BrokerUrl,
    settings: &Settings,
    communes: &[CommuneCode],
    n: usize,
    envelope: &[u8],
    alert_id: &str,
) -> Result<(Duration, usize)> {
    let topics = Topics::new(
        &format!("{}/v1", unique("cbbench-raw")),
        settings.province.clone(),
    )?;
    let alert = AlertId::new(alert_id)?;
    let probe = AlertId::new("probe")?;
    let publisher = client(broker, unique("cbbench-pub"), vec![]).await?;
    let stop = CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel::<Option<Instant>>();
    let mut subs = tokio::task::JoinSet::new();
    for i in 0..n {
        let commune = &communes[i % communes.len()];
        let (want, probe_topic) = (topics.alert(commune, &alert), topics.alert(commune, &probe));
        let (filter, broker, tx, stop) = (
            topics.alerts_filter(commune),
            broker.clone(),
            tx.clone(),
            stop.clone(),
        );
        subs.spawn(async move {
            // 10,000 connecting at once can outlast a broker's handshake timeout or be
            // refused as busy: try again, as a receiver would (under a new client id, so
            // as not to take over the late first try), until the round's patience runs out.
            let deadline = Instant::now() + PATIENCE;
            let mut c = loop {
                match client(&broker, unique("cbbench-sub"), vec![filter.clone()]).await {
                    Ok(c) => break c,
                    Err(_) if Instant::now() < deadline && !stop.is_cancelled() => {}
                    Err(_) => return,
                }
            };
            let mut probed = false;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    m = c.inbound.recv() => match m {
                        None => break,
                        Some(m) if m.topic == probe_topic && !probed && !m.payload.is_empty() => {
                            probed = true;
                            let _ = tx.send(None);
                        }
                        Some(m) if m.topic == want && !m.payload.is_empty() => {
                            let _ = tx.send(Some(Instant::now()));
                        }
                        Some(_) => {}
                    },
                }
            }
            c.stop.cancel();
            let _ = c.task.await;
        });
    }
    drop(tx);
    let probes: Vec<String> = communes.iter().map(|c| topics.alert(c, &probe)).collect();
    let result = async {
        // Every subscriber is subscribed once it holds the retained probe of its commune.
        for t in &probes {
            publisher.handle.publish(t, b"probe".to_vec(), true).await?;
        }
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut ready = 0;
        while ready < n {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(None)) => ready += 1,
                Ok(Some(Some(_))) => {}
                _ => bail!("only {ready} of {n} raw subscribers subscribed"),
            }
        }
        let t0 = Instant::now();
        for c in communes {
            publisher
                .handle
                .publish(&topics.alert(c, &alert), envelope.to_vec(), false)
                .await?;
        }
        let (mut got, mut last) = (0, t0);
        while got < n {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Some(at))) => {
                    got += 1;
                    last = last.max(at);
                }
                Ok(Some(None)) => {}
                _ => bail!("only {got} of {n} raw subscribers got the message"),
            }
        }
        Ok((last - t0, got))
    }
    .await;
    stop.cancel();
    while subs.join_next().await.is_some() {}
    for t in &probes {
        let _ = publisher.handle.publish(t, Vec::new(), true).await;
    }
    publisher.close().await;
    result
}

/// Runs the scenario and writes its report.
pub async fn bench_dispatch(
    base: &Sources,
    bench: &DispatchBench,
    out: &mut impl Write,
) -> Result<DispatchReport> {
    let report = run(base, bench).await?;
    report.write(out)?;
    Ok(report)
}
