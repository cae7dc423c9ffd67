//! `canhbao bench outage`: the broker dies in the middle of a dispatch and stays away for
//! a while; the figure is the time from its return until every receiver has played every
//! alert (as the receivers saw it, and as the store shows it), with none played twice.
//!
//! The bench starts a Mosquitto of its own (`/usr/sbin/mosquitto`, on a free loopback
//! port, persistence off: it comes back with no retained message, session or
//! subscription), the service in-process on it (SQLite in a temporary directory), and N
//! simulated receivers. It issues a few province-wide bulletins, SIGKILLs Mosquitto once
//! a tenth of the plays are done, waits `--outage-s`, and starts it again on the same
//! port. What was not delivered then comes back by the outbox's retries and resends
//! (`[outbox] resend_s`, reported) and by the clients' reconnection back-off.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use dispatch::{Topics, TrustedKeys};
use domain::{CommuneCode, Hazard};

use crate::dispatch::{SENDER, TempDir, province_bulletin, settings, unique};
use crate::faults::{
    Expected, Fleet, NO_HEARTBEAT_BURST, Tally, ready, register, secs, store_states, tally, wait_online,
};
use crate::footprint::free_port;
use canhbao_server::config::Sources;
use canhbao_server::{App, Settings};

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

#[derive(Debug, Clone)]
pub struct OutageBench {
    pub receivers: usize,
    /// Province-wide alerts issued before the outage.
    pub alerts: usize,
    pub outage: Duration,
    /// `[outbox] resend_s` for the run, instead of the configuration's (the quick run).
    pub resend_s: Option<Vec<u64>>,
    /// How long, after the broker's return, delivery may take before the run fails.
    pub patience: Duration,
}

#[derive(Debug, Clone)]
pub struct OutageReport {
    pub receivers: usize,
    pub communes: usize,
    pub alerts: usize,
    pub outbox: String,
    /// Plays over every receiver when the broker was killed (receiver side), and
    /// `played` receiver deliveries the store held then.
    pub plays_before: usize,
    pub stored_before: usize,
    /// Issue (first POST) until the kill.
    pub kill_at: Duration,
    /// Kill until the broker listened again.
    pub outage: Duration,
    /// Return until the service's `/readyz` was 200 again (its broker connection back).
    pub service_back: Option<Duration>,
    /// Return until every receiver had played every alert (receiver side), and until the
    /// store showed it.
    pub return_to_played: Option<Duration>,
    pub return_to_stored: Option<Duration>,
    pub tally: Tally,
    pub store_rows: usize,
    pub store_played: usize,
    pub store_states: std::collections::BTreeMap<String, usize>,
}

impl OutageReport {
    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        let total = self.tally.expected;
        writeln!(
            out,
            "outage bench: Mosquitto (own, persistence off) SIGKILLed mid-dispatch of {} province-wide alerts to {} receivers over {} communes, down {:.1} s",
            self.alerts,
            self.receivers,
            self.communes,
            secs(self.outage)
        )?;
        writeln!(out, "  outbox: {}", self.outbox)?;
        writeln!(
            out,
            "  before the kill      {}/{} plays (receiver side), {} `played` in the store, killed {:.1} ms after the first POST",
            self.plays_before,
            total,
            self.stored_before,
            self.kill_at.as_secs_f64() * 1000.0
        )?;
        let fmt = |d: Option<Duration>| d.map_or("not reached".to_owned(), |d| format!("{:.2} s", secs(d)));
        writeln!(
            out,
            "  return->service up   {}  (the broker listening again until the service's /readyz is 200)",
            fmt(self.service_back)
        )?;
        writeln!(
            out,
            "  return->all played   {}  (until every receiver had verified and played every alert, receiver side)",
            fmt(self.return_to_played)
        )?;
        writeln!(
            out,
            "  return->all stored   {}  (until the store showed `played` from every receiver for every alert)",
            fmt(self.return_to_stored)
        )?;
        let states: Vec<String> = self
            .store_states
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        writeln!(
            out,
            "  lost                 {} receiver-alert pairs never played (goal 0); {}/{} played",
            total - self.tally.played,
            self.tally.played,
            total
        )?;
        writeln!(
            out,
            "  played twice         {} receiver-alert pairs (goal 0)",
            self.tally.twice + self.tally.twice_same_message
        )?;
        writeln!(
            out,
            "  store                {}/{} receiver deliveries played ({})",
            self.store_played,
            self.store_rows,
            states.join(", ")
        )
    }

    pub fn passed(&self) -> bool {
        self.tally.complete()
            && self.tally.twice == 0
            && self.tally.twice_same_message == 0
            && self.store_rows == self.tally.expected
            && self.store_played == self.store_rows
    }
}

/// A Mosquitto of the bench's own on a loopback port, without persistence: a restart
/// forgets every retained message and session. Killed when dropped. `tests/faults` uses
/// it too.
pub struct Mosquitto {
    child: Option<Child>,
    conf: PathBuf,
    log: PathBuf,
    port: u16,
}

impl Mosquitto {
    pub fn start(dir: &Path, port: u16) -> Result<Mosquitto> {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 100000\n\
                 log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n"
            ),
        )?;
        let mut m = Mosquitto {
            child: None,
            conf,
            log: dir.join("mosquitto.log"),
            port,
        };
        m.launch()?;
        Ok(m)
    }

    /// Starts it (again, after [`Mosquitto::kill`]) on the same port, with nothing
    /// remembered.
    pub fn launch(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {MOSQUITTO}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("mosquitto exited with {status}: {}", self.tail());
            }
            if Instant::now() > deadline {
                bail!("mosquitto did not listen within 10 s: {}", self.tail());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// SIGKILL: no clean shutdown, no last wills, nothing saved.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The last lines of its log, over every start.
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn bench_outage(base: &Sources, bench: &OutageBench, out: &mut impl Write) -> Result<OutageReport> {
    let report = run(base, bench).await?;
    report.write(out)?;
    ensure!(
        report.passed(),
        "the outage bench lost deliveries or played some twice (see the report)"
    );
    Ok(report)
}

pub async fn run(base: &Sources, bench: &OutageBench) -> Result<OutageReport> {
    ensure!(bench.receivers > 0, "--receivers must be at least 1");
    ensure!(
        (1..=Hazard::ALL.len()).contains(&bench.alerts),
        "--alerts must be 1 to {} for the outage (one hazard each)",
        Hazard::ALL.len()
    );
    ensure!(
        Path::new(MOSQUITTO).exists(),
        "{MOSQUITTO} is not installed: the outage bench starts and kills a Mosquitto of its own"
    );
    let dir = TempDir::new()?;
    let port = free_port()?;
    let mut mosquitto = Mosquitto::start(&dir.0, port)?;
    let mut sources = base.clone();
    if let Some(resend) = &bench.resend_s {
        sources.flags.push((
            "outbox.resend_s".into(),
            toml::Value::Array(resend.iter().map(|&s| toml::Value::Integer(s as i64)).collect()),
        ));
    }
    let data = dir.0.join("data");
    std::fs::create_dir_all(&data)?;
    let settings = settings(&sources, &data, Some(&format!("mqtt://127.0.0.1:{port}")))?;
    let o = &settings.outbox;
    let outbox = format!(
        "resend {:?} s, retry {}..{} ms, idle poll {} ms{}",
        o.resend.iter().map(Duration::as_secs).collect::<Vec<_>>(),
        o.retry_base.as_millis(),
        o.retry_max.as_millis(),
        o.idle_poll.as_millis(),
        if bench.resend_s.is_some() {
            " (resend shortened for the quick run)"
        } else {
            " (the configuration's)"
        }
    );
    let communes: Vec<CommuneCode> = settings.area.communes.iter().map(|c| c.code.clone()).collect();
    ensure!(!communes.is_empty(), "the area file has no communes");
    let topics = Topics::new(&settings.mqtt.topic_prefix, settings.province.clone())?;
    let bulletins: Vec<String> = (0..bench.alerts)
        .map(|i| {
            province_bulletin(
                &unique(&format!("OUTAGE{i}")),
                SENDER,
                Hazard::ALL[i].code(),
                3,
                "Exercise",
                &settings,
            )
        })
        .collect();
    let app = App::start(settings.clone()).await?;
    let members = register(app.store(), &unique("o"), bench.receivers, &communes).await?;
    let mut keys = TrustedKeys::default();
    keys.add_base64(&app.key_id, &app.public_key_b64)?;
    let mut fleet = Fleet::start(&app.broker, &topics, &keys, members, NO_HEARTBEAT_BURST);
    let result = drive(
        bench,
        &app,
        &mut mosquitto,
        &fleet,
        &data,
        bulletins,
        &settings,
        outbox,
    )
    .await;
    fleet.stop().await;
    app.stop().await;
    drop(mosquitto);
    result
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    bench: &OutageBench,
    app: &App,
    mosquitto: &mut Mosquitto,
    fleet: &Fleet,
    data: &Path,
    bulletins: Vec<String>,
    settings: &Settings,
    outbox: String,
) -> Result<OutageReport> {
    let store = app.store();
    let n = bench.receivers;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let base = format!("http://{}", app.http_addr);
    let token = std::fs::read_to_string(data.join("admin.token"))?
        .trim()
        .to_owned();
    wait_online(store, n, Duration::from_secs(120), &http, &base).await?;

    let t0 = Instant::now();
    let mut expected = Vec::new();
    for b in bulletins {
        let r = http
            .post(format!("{base}/api/v1/bulletins"))
            .bearer_auth(&token)
            .header("content-type", "application/cap+xml")
            .body(b)
            .send()
            .await?;
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        ensure!(status.is_success(), "the bulletin was refused: {status} {body}");
        let ids: Vec<String> = body["alerts"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        let [id] = &ids[..] else {
            bail!("expected the bulletin to raise one alert, got {body}");
        };
        let alert = store
            .get_alert(id)
            .await?
            .context("the raised alert is not in the store")?;
        expected.push(Expected {
            id: id.clone(),
            communes: alert.communes.into_iter().collect(),
        });
    }
    let total = n * expected.len();
    // Dispatch under way: a tenth of the plays done.
    let threshold = (total / 10).max(1);
    while fleet.plays() < threshold {
        if t0.elapsed() > Duration::from_secs(120) {
            bail!("the dispatch did not start: {} plays after 120 s", fleet.plays());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    mosquitto.kill();
    let killed = Instant::now();
    let plays_before = fleet.plays();
    let (_, stored_before, _) = store_states(store, &expected).await?;
    if plays_before >= total {
        bail!("the dispatch ended before the broker could be killed ({plays_before} plays)");
    }
    tokio::time::sleep_until((killed + bench.outage).into()).await;
    mosquitto.launch()?;
    let returned = Instant::now();

    let deadline = returned + bench.patience;
    let (mut service_back, mut played_at, mut stored_at) = (None, None, None);
    loop {
        if service_back.is_none() && ready(&http, &base).await {
            service_back = Some(returned.elapsed());
        }
        let t = tally(fleet, &fleet.snapshot(), &expected);
        if played_at.is_none() && t.complete() {
            played_at = Some(t.last_play.unwrap_or(returned).max(returned) - returned);
        }
        let (rows, played, _) = store_states(store, &expected).await?;
        if stored_at.is_none() && rows == total && played == rows {
            stored_at = Some(returned.elapsed());
        }
        if (service_back.is_some() && played_at.is_some() && stored_at.is_some()) || Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A replay, if any, would show within a few seconds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = tally(fleet, &fleet.snapshot(), &expected);
    let (store_rows, store_played, store_states) = store_states(store, &expected).await?;
    Ok(OutageReport {
        receivers: n,
        communes: settings.area.communes.len(),
        alerts: expected.len(),
        outbox,
        plays_before,
        stored_before,
        kill_at: killed - t0,
        outage: returned - killed,
        service_back,
        return_to_played: played_at,
        return_to_stored: stored_at,
        tally: t,
        store_rows,
        store_played,
        store_states,
    })
}
