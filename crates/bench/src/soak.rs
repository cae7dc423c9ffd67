//! `canhbao bench soak`: `canhbao serve` as a child process (SQLite, the embedded broker,
//! as deployed by default) under a steady load for a bounded time: every station's reading
//! every `--obs-every-s`, a province-wide alert every `--alert-every-s`, and N simulated
//! receivers heartbeating. It samples the service's resident memory as it goes, and at
//! the end counts what was lost (an accepted alert some receiver never played) and what
//! was played twice. Its baseline is the service's own memory once warmed up, in the same
//! run. Linux only (it reads `/proc`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use chrono::Utc;
use dispatch::{Topics, TrustedKeys};
use domain::CommuneCode;
use mqtt::BrokerUrl;

use crate::dispatch::{TempDir, province_bulletin, unique};
use crate::faults::{Expected, Fleet, register, tally};
use crate::footprint::{free_port, memory};
use canhbao_server::Settings;

/// Communes of each alert: the k-th alert covers a group of them, in turn, and a group's
/// level rises by one each time its turn comes again, so that every bulletin raises an
/// alert (a level already in force raises none).
const GROUP: usize = 5;

/// The bulletins' sender, made authoritative for the soaked instance only.
const SENDER: &str = "canhbao-soak@example.invalid";
/// How long the end may take for every accepted alert to be played everywhere.
const SETTLE: Duration = Duration::from_secs(180);

#[derive(Debug, Clone)]
pub struct SoakBench {
    /// The `canhbao` binary to start.
    pub program: PathBuf,
    pub duration: Duration,
    pub receivers: usize,
    /// Each receiver's heartbeat interval.
    pub heartbeat: Duration,
    /// Every station reports this often.
    pub obs_every: Duration,
    /// A new province-wide alert this often.
    pub alert_every: Duration,
    /// How long each alert is live (its CAP `expires`). Shorter than the run, the run
    /// shows what the service holds once alerts end as well as begin.
    pub alert_life: Duration,
    /// The service's memory is read this often.
    pub sample_every: Duration,
}

/// One reading of the service's memory.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Duration,
    pub rss_kib: u64,
    pub db_kib: u64,
}

#[derive(Debug, Clone, Default)]
pub struct SoakReport {
    pub receivers: usize,
    pub alert_life: Duration,
    pub stations: usize,
    pub duration: Duration,
    pub samples: Vec<Sample>,
    pub observations_posted: usize,
    pub alerts_accepted: usize,
    /// Requests the service refused or did not answer.
    pub request_errors: usize,
    /// (alert, receiver) pairs never played, and played more than once.
    pub lost: usize,
    pub twice: usize,
    /// From the end of the load until every accepted alert was played everywhere.
    pub settled: Option<Duration>,
    /// WARN and ERROR lines the service logged.
    pub warnings: usize,
    pub errors: usize,
    pub first_errors: Vec<String>,
}

impl SoakReport {
    /// The sample taken once the service had warmed up: the first after a sixth of the run.
    fn warmed(&self) -> Option<Sample> {
        let after = self.duration / 6;
        self.samples.iter().find(|s| s.at >= after).copied()
    }

    pub fn growth_kib(&self) -> i64 {
        match (self.warmed(), self.samples.last()) {
            (Some(w), Some(l)) => l.rss_kib as i64 - w.rss_kib as i64,
            _ => 0,
        }
    }

    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mib = |k: u64| k as f64 / 1024.0;
        writeln!(
            out,
            "soak bench: canhbao serve (SQLite, embedded broker) for {:.1} min: {} receivers heartbeating, {} stations, {} alerts (each live {:.1} min), {} observation posts",
            self.duration.as_secs_f64() / 60.0,
            self.receivers,
            self.stations,
            self.alerts_accepted,
            self.alert_life.as_secs_f64() / 60.0,
            self.observations_posted
        )?;
        let (Some(warm), Some(last)) = (self.warmed(), self.samples.last()) else {
            return writeln!(out, "  no memory samples");
        };
        let peak = self.samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
        writeln!(
            out,
            "  baseline RSS once warm      {:>7.1} MiB  at {:.1} min",
            mib(warm.rss_kib),
            warm.at.as_secs_f64() / 60.0
        )?;
        writeln!(
            out,
            "  RSS at the end              {:>7.1} MiB  peak {:.1} MiB; ratio end / warm {:.2}x; growth {:+.1} MiB ({:+.1} MiB per hour)",
            mib(last.rss_kib),
            mib(peak),
            last.rss_kib as f64 / warm.rss_kib.max(1) as f64,
            self.growth_kib() as f64 / 1024.0,
            self.growth_kib() as f64 / 1024.0 * 3600.0 / (last.at - warm.at).as_secs_f64().max(1.0)
        )?;
        writeln!(
            out,
            "  database file               {:>7.1} MiB once warm, {:.1} MiB at the end",
            mib(warm.db_kib),
            mib(last.db_kib)
        )?;
        let step = (self.samples.len() / 12).max(1);
        let series: Vec<String> = self
            .samples
            .iter()
            .step_by(step)
            .map(|s| format!("{:.0}m:{:.1}", s.at.as_secs_f64() / 60.0, mib(s.rss_kib)))
            .collect();
        writeln!(out, "  RSS over time (MiB)         {}", series.join(" "))?;
        writeln!(
            out,
            "  lost {} (alert, receiver) pairs, played twice {}; every alert played everywhere {} after the load stopped",
            self.lost,
            self.twice,
            match self.settled {
                Some(d) => format!("{:.1} s", d.as_secs_f64()),
                None => format!("NOT within {} s", SETTLE.as_secs()),
            }
        )?;
        writeln!(
            out,
            "  requests refused or unanswered {}; service log: {} warnings, {} errors",
            self.request_errors, self.warnings, self.errors
        )?;
        for e in &self.first_errors {
            writeln!(out, "    {e}")?;
        }
        Ok(())
    }
}

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    Ok(memory(pid)?.0)
}

/// The SQLite file with its write-ahead log, in KiB.
fn db_kib(data_dir: &Path) -> u64 {
    ["canhbao.db", "canhbao.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(data_dir.join(f)).ok())
        .map(|m| m.len() / 1024)
        .sum()
}

/// The child service, killed when dropped.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn bench_soak(
    settings: &Settings,
    config_dir: &Path,
    bench: &SoakBench,
    out: &mut impl Write,
) -> Result<SoakReport> {
    ensure!(bench.receivers > 0, "--receivers must be at least 1");
    let communes: Vec<CommuneCode> = settings.area.communes.iter().map(|c| c.code.clone()).collect();
    ensure!(!communes.is_empty(), "the area file has no communes");
    let dir = TempDir::new()?;
    let data = dir.0.join("data");
    std::fs::create_dir_all(&data)?;

    // The receivers are registered (enrolled for drills: the alerts are Exercises) before
    // the service starts.
    let store = store::Store::open(&format!("sqlite://{}", data.join("canhbao.db").display())).await?;
    let members = register(&store, &unique("soak"), bench.receivers, &communes).await?;
    store.close().await;

    let (http_port, mqtt_port) = (free_port()?, free_port()?);
    let log = dir.0.join("service.log");
    let child = Command::new(&bench.program)
        .arg("serve")
        .arg("--config-dir")
        .arg(config_dir)
        .env("CANHBAO__SERVICE__DATA_DIR", &data)
        .env("CANHBAO__HTTP__LISTEN", format!("127.0.0.1:{http_port}"))
        .env("CANHBAO__MQTT__MODE", "embedded")
        .env("CANHBAO__MQTT__LISTEN", format!("127.0.0.1:{mqtt_port}"))
        .env("CANHBAO__DEMO__ENABLED", "false")
        .env("CANHBAO__INGEST__SOURCES", "[]")
        .env(
            "CANHBAO__BULLETINS__AUTHORITATIVE_SENDERS",
            format!("[\"{SENDER}\"]"),
        )
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting canhbao serve")?;
    let service = Service(child);
    let pid = service.0.id();
    let base = format!("http://127.0.0.1:{http_port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let started = Instant::now();
    while !http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("canhbao serve was not ready within 60 s: {}", tail(&log));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let token = std::fs::read_to_string(data.join("admin.token"))?
        .trim()
        .to_owned();
    let mut keys = TrustedKeys::default();
    canhbao_receiver::load_trusted_keys(&data.join("signing-keys.pub.json"), &mut keys)?;

    let topics = Topics::new(&settings.mqtt.topic_prefix, settings.province.clone())?;
    let broker = BrokerUrl::parse(&format!("mqtt://127.0.0.1:{mqtt_port}"))?;
    let mut fleet = Fleet::start(&broker, &topics, &keys, members, bench.heartbeat);
    let result = drive(&http, &base, &token, settings, bench, pid, &data, &fleet).await;
    fleet.stop().await;
    drop(service);
    let mut report = result?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    report.warnings = text.lines().filter(|l| l.contains(" WARN ")).count();
    let errors: Vec<&str> = text.lines().filter(|l| l.contains(" ERROR ")).collect();
    report.errors = errors.len();
    report.first_errors = errors.iter().take(5).map(|l| l.to_string()).collect();
    report.write(out)?;
    Ok(report)
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    settings: &Settings,
    bench: &SoakBench,
    pid: u32,
    data: &Path,
    fleet: &Fleet,
) -> Result<SoakReport> {
    let n = bench.receivers;
    // Everyone connected and subscribed first (their `online` status is stored).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let fleet: serde_json::Value = http
            .get(format!("{base}/api/v1/receivers"))
            .bearer_auth(token)
            .send()
            .await?
            .json()
            .await
            .unwrap_or_default();
        let online: u64 = fleet["coverage"]
            .as_array()
            .map_or(0, |c| c.iter().filter_map(|c| c["online"].as_u64()).sum());
        if online as usize >= n {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {online} of {n} receivers online after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut report = SoakReport {
        receivers: n,
        alert_life: bench.alert_life,
        stations: settings.area.stations.len(),
        duration: bench.duration,
        ..SoakReport::default()
    };
    let mut accepted: Vec<Expected> = Vec::new();
    let t0 = Instant::now();
    let (mut next_obs, mut next_alert, mut next_sample) = (t0, t0 + bench.alert_every / 2, t0);
    let mut round = 0u32;
    let mut alerts_posted = 0;
    let communes: Vec<String> = settings
        .area
        .communes
        .iter()
        .map(|c| c.code.to_string())
        .collect();
    while t0.elapsed() < bench.duration {
        let now = Instant::now();
        if now >= next_sample {
            report.samples.push(Sample {
                at: t0.elapsed(),
                rss_kib: rss_kib(pid)?,
                db_kib: db_kib(data),
            });
            next_sample += bench.sample_every;
        }
        if now >= next_obs {
            round += 1;
            // Every station, below its first alarm level: ordinary days.
            let at = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let readings: Vec<serde_json::Value> = settings
                .area
                .stations
                .iter()
                .map(|s| {
                    let bd1 = s.bd1_m.map(|l| l.value).unwrap_or(100.0);
                    let v = bd1 - 1.5 + f64::from(round % 10) * 0.05;
                    serde_json::json!({"station": s.id.to_string(), "parameter": "water_level",
                        "value": (v * 100.0).round() / 100.0, "unit": "m", "observed_at": at})
                })
                .collect();
            let r = http
                .post(format!("{base}/api/v1/observations"))
                .bearer_auth(token)
                .json(&readings)
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => report.observations_posted += 1,
                _ => report.request_errors += 1,
            }
            next_obs += bench.obs_every;
        }
        if now >= next_alert {
            let bulletin = soak_bulletin(alerts_posted, settings, &communes, bench.alert_life);
            alerts_posted += 1;
            let r = http
                .post(format!("{base}/api/v1/bulletins"))
                .bearer_auth(token)
                .header("content-type", "application/cap+xml")
                .body(bulletin)
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => {
                    let body: serde_json::Value = r.json().await.unwrap_or_default();
                    for a in body["alerts"].as_array().into_iter().flatten() {
                        if let Some(id) = a.as_str() {
                            accepted.push(Expected {
                                id: id.to_owned(),
                                communes: communes[group(alerts_posted - 1, communes.len())]
                                    .iter()
                                    .cloned()
                                    .collect(),
                            });
                        }
                    }
                }
                _ => report.request_errors += 1,
            }
            next_alert += bench.alert_every;
        }
        let wake = next_obs.min(next_alert).min(next_sample);
        tokio::time::sleep_until(tokio::time::Instant::from_std(wake)).await;
    }
    report.samples.push(Sample {
        at: t0.elapsed(),
        rss_kib: rss_kib(pid)?,
        db_kib: db_kib(data),
    });
    report.alerts_accepted = accepted.len();

    // The load stops; every accepted alert must reach every receiver, once.
    let ended = Instant::now();
    let count = || {
        let t = tally(fleet, &fleet.snapshot(), &accepted);
        (
            t.expected - t.played,
            t.twice + t.twice_same_message + t.unexpected,
        )
    };
    loop {
        (report.lost, report.twice) = count();
        if report.lost == 0 {
            report.settled = Some(ended.elapsed());
            break;
        }
        if ended.elapsed() > SETTLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Late duplicates would show now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    (report.lost, report.twice) = count();
    Ok(report)
}

/// The communes (as indices into the area's list) the `k`-th bulletin covers.
fn group(k: usize, communes: usize) -> std::ops::Range<usize> {
    let groups = communes.div_ceil(GROUP).max(1);
    let start = (k % groups) * GROUP;
    start..(start + GROUP).min(communes)
}

/// The `k`-th bulletin: flood for its group of communes, at level 2 the first time the
/// group's turn comes, one higher each time after (at most 5), live for `life`.
fn soak_bulletin(k: usize, settings: &Settings, communes: &[String], life: Duration) -> String {
    let groups = communes.len().div_ceil(GROUP).max(1);
    let level = (2 + k / groups).min(5) as u8;
    let mut xml = province_bulletin(&unique("SOAK"), SENDER, "flood", level, "Exercise", settings);
    let expires = (chrono::Utc::now()
        + chrono::Duration::from_std(life).unwrap_or(chrono::Duration::hours(2)))
    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if let (Some(a), Some(b)) = (xml.find("<expires>"), xml.find("</expires>")) {
        xml.replace_range(a + "<expires>".len()..b, &expires);
    }
    let province = format!(
        "<geocode><valueName>{}</valueName><value>{}</value></geocode>",
        settings.bulletins.province_geocode, settings.province
    );
    let these: String = communes[group(k, communes.len())]
        .iter()
        .map(|c| {
            format!(
                "<geocode><valueName>{}</valueName><value>{c}</value></geocode>",
                settings.bulletins.commune_geocode
            )
        })
        .collect();
    xml.replace(&province, &these)
}
