//! `canhbao bench kill`: `canhbao serve` (a child process, SQLite, the external broker)
//! killed with SIGKILL at random points while it issues and dispatches a steady stream of
//! province-wide alerts to N simulated receivers, and restarted on the same data directory
//! each time. At the end, within a bound, every receiver must have played every accepted
//! alert exactly once: the bench counts alerts lost and versions played twice (goal 0
//! for both) and fails if either is not 0.
//!
//! Each alert is raised by an authoritative CAP bulletin with an identifier of its own
//! (statuses Exercise and Actual, each hazard escalating level by level, so that every
//! bulletin is a new or higher level and raises exactly one alert). A POST cut by the
//! kill is posted again after the restart: a bulletin already stored is a duplicate,
//! which raises nothing, so a retry is safe; the alert of each bulletin is found in the
//! store by its origin (a `bulletin` origin whose detail, `SENDER IDENTIFIER`, ends with
//! it: a CAP identifier has no spaces). Receivers run in the bench's process with
//! their played logs in memory: they outlive the service, as loudspeakers outlive a server
//! crash. The run cleans up after itself on the shared broker (sessions discarded,
//! retained messages cleared).

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use dispatch::Topics;
use domain::{AlertId, CommuneCode, Hazard};
use mqtt::BrokerUrl;

use crate::dispatch::{TempDir, clear_retained, forget_sessions, province_bulletin, unique};
use crate::faults::{
    ChildBroker, ChildSpec, Expected, Fleet, NO_HEARTBEAT_BURST, Rng, Service, Tally, register, secs,
    store_states, tally, wait_online,
};
use crate::footprint::free_port;
use canhbao_server::config::Sources;

const SENDER: &str = "canhbao-bench@example.invalid";
/// Statuses the bulletins alternate between; the receivers are enrolled for drills.
const STATUSES: [&str; 2] = ["Exercise", "Actual"];
/// How long the service may take to become ready after a start.
const START_PATIENCE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct KillBench {
    /// The `canhbao` binary to run as the service.
    pub program: PathBuf,
    pub receivers: usize,
    /// Alerts to issue, at most 100 (2 statuses × 10 hazards × 5 levels).
    pub alerts: usize,
    /// Time between two bulletins.
    pub pace: Duration,
    pub kills: usize,
    /// `mqtt://host:port` of the external broker.
    pub broker: String,
    pub seed: u64,
    /// `CANHBAO__...` settings for the service beyond the bench's own (the quick run's
    /// shorter outbox timings).
    pub env: Vec<(String, String)>,
    /// How long, after the last bulletin and the last restart, every alert may take to be
    /// played everywhere.
    pub patience: Duration,
}

/// One SIGKILL.
#[derive(Debug, Clone)]
pub struct Kill {
    /// Since the first bulletin.
    pub at: Duration,
    /// Bulletins answered by then, and whether one was in flight.
    pub answered: usize,
    pub in_flight: bool,
    /// Plays so far over every receiver, and the plays the answered alerts needed.
    pub plays: usize,
    pub plays_due: usize,
    /// From the kill until the restarted service was ready.
    pub down: Duration,
}

#[derive(Debug, Clone)]
pub struct KillReport {
    pub receivers: usize,
    pub communes: usize,
    pub broker: String,
    pub seed: u64,
    pub outbox: String,
    /// Bulletins posted, accepted (a 2xx, possibly on a retry), refused, and POSTs that
    /// were retried after a kill.
    pub bulletins: usize,
    pub accepted: usize,
    pub refused: Vec<String>,
    pub retried: usize,
    /// Accepted bulletins with no alert in the store, and with more than one.
    pub without_alert: usize,
    pub extra_alerts: usize,
    pub kills: Vec<Kill>,
    pub issue_time: Duration,
    pub tally: Tally,
    /// Alerts with a receiver that never played them, and (receiver, alert) pairs, both
    /// not counting deliveries the store shows as expired or superseded.
    pub lost_alerts: usize,
    pub lost_pairs: usize,
    /// Receiver deliveries per state in the store, at the end.
    pub store_states: BTreeMap<String, usize>,
    pub store_rows: usize,
    pub store_played: usize,
    /// Last restart (ready) until every receiver had played every accepted alert, and
    /// until the store showed it.
    pub last_restart_to_played: Option<Duration>,
    pub last_restart_to_stored: Option<Duration>,
    pub total: Duration,
    /// The service's log over every start: ERROR and WARN lines, and the most frequent
    /// messages among them (message, count).
    pub log_errors: usize,
    pub log_warnings: usize,
    pub log_top: Vec<(String, usize)>,
}

impl KillReport {
    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "kill bench: canhbao serve (SQLite) SIGKILLed {} times while it issues {} province-wide alerts to {} receivers over {} communes, broker {}, seed {}",
            self.kills.len(),
            self.bulletins,
            self.receivers,
            self.communes,
            self.broker,
            self.seed
        )?;
        writeln!(out, "  outbox: {}", self.outbox)?;
        writeln!(
            out,
            "  bulletins            {} posted in {:.1} s, {} accepted, {} refused, {} POSTs retried after a kill",
            self.bulletins,
            secs(self.issue_time),
            self.accepted,
            self.refused.len(),
            self.retried
        )?;
        for r in &self.refused {
            writeln!(out, "    refused: {r}")?;
        }
        for (i, k) in self.kills.iter().enumerate() {
            writeln!(
                out,
                "  kill {:<2}              at {:>6.2} s: {}, {}/{} bulletins answered{}, {}/{} plays of them; ready again after {:.2} s",
                i + 1,
                secs(k.at),
                if k.answered < self.bulletins {
                    "issuing"
                } else {
                    "dispatching"
                },
                k.answered,
                self.bulletins,
                if k.in_flight { " (a POST in flight)" } else { "" },
                k.plays,
                k.plays_due,
                secs(k.down)
            )?;
        }
        let t = &self.tally;
        writeln!(
            out,
            "  lost                 {} alerts ({} receiver-alert pairs never played; goal 0)",
            self.lost_alerts, self.lost_pairs
        )?;
        writeln!(
            out,
            "  played twice         {} receiver-alert pairs, {} receiver-bulletin pairs played as two alerts (goal 0)",
            t.twice, t.twice_same_message
        )?;
        writeln!(
            out,
            "  plays                {}/{} receiver-alert pairs played; {} plays of alerts no bulletin raised; {} bulletins without an alert, {} extra alerts",
            t.played, t.expected, t.unexpected, self.without_alert, self.extra_alerts
        )?;
        let states: Vec<String> = self
            .store_states
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        writeln!(
            out,
            "  store                {}/{} receiver deliveries played ({})",
            self.store_played,
            self.store_rows,
            states.join(", ")
        )?;
        let fmt = |d: Option<Duration>| d.map_or("not reached".to_owned(), |d| format!("{:.2} s", secs(d)));
        writeln!(
            out,
            "  last restart->played {}  (ready after the last kill until every receiver had played every alert, receiver side)",
            fmt(self.last_restart_to_played)
        )?;
        writeln!(
            out,
            "  last restart->stored {}  (the same, until the store showed `played` for all of them)",
            fmt(self.last_restart_to_stored)
        )?;
        writeln!(
            out,
            "  service log          {} ERROR, {} WARN lines over every start",
            self.log_errors, self.log_warnings
        )?;
        for (m, n) in &self.log_top {
            writeln!(out, "    {n:>6} x {m}")?;
        }
        writeln!(out, "  total                {:.1} s", secs(self.total))
    }

    /// Nothing lost, nothing played twice, and the store agrees.
    pub fn passed(&self) -> bool {
        self.lost_alerts == 0
            && self.lost_pairs == 0
            && self.tally.twice == 0
            && self.tally.twice_same_message == 0
            && self.without_alert == 0
            && self.extra_alerts == 0
            && self.store_played == self.store_rows
    }
}

/// The bulletin plan: (status, hazard, level) of the `i`-th alert. Each (status, hazard)
/// escalates one level every 20 bulletins (2 statuses × 10 hazards).
fn plan(i: usize) -> (&'static str, Hazard, u8) {
    let status = STATUSES[i % 2];
    let hazard = Hazard::ALL[(i / 2) % Hazard::ALL.len()];
    (status, hazard, (i / (2 * Hazard::ALL.len())) as u8 + 1)
}

/// Aborts a task when dropped (a failed run leaves nothing issuing).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the issuing task found for one bulletin.
#[derive(Debug, Clone, Default)]
struct Posted {
    identifier: String,
    accepted: bool,
    refused: Option<String>,
    /// POST attempts that got no answer.
    failures: usize,
}

/// Runs the scenario and writes its report; an error if anything was lost or played twice.
pub async fn bench_kill(base: &Sources, bench: &KillBench, out: &mut impl Write) -> Result<KillReport> {
    let report = run(base, bench).await?;
    report.write(out)?;
    ensure!(
        report.passed(),
        "the kill bench lost alerts or played some twice (see the report)"
    );
    Ok(report)
}

pub async fn run(base: &Sources, bench: &KillBench) -> Result<KillReport> {
    let most = STATUSES.len() * Hazard::ALL.len() * 5;
    ensure!(
        (1..=most).contains(&bench.alerts),
        "--alerts must be 1 to {most}: each (status, hazard) can escalate 5 times"
    );
    ensure!(bench.receivers > 0, "--receivers must be at least 1");
    let dir = TempDir::new()?;
    let data = dir.0.join("data");
    std::fs::create_dir_all(&data)?;
    let port = free_port()?;
    let base_url = format!("http://127.0.0.1:{port}");
    let prefix = format!("{}/v1", unique("cbkill"));
    let client_id = unique("canhbao-kill");
    let (mut service, settings) = Service::configure(
        base,
        ChildSpec {
            program: &bench.program,
            data_dir: &data,
            http_port: port,
            broker: ChildBroker::External(&bench.broker),
            topic_prefix: prefix.clone(),
            client_id: client_id.clone(),
            sender: SENDER,
            extra: bench.env.clone(),
        },
    )?;
    let communes: Vec<CommuneCode> = settings.area.communes.iter().map(|c| c.code.clone()).collect();
    ensure!(!communes.is_empty(), "the area file has no communes");
    let o = &settings.outbox;
    let outbox = format!(
        "lease {} s, resend {:?} s, idle poll {} ms, retry {}..{} ms{}",
        o.lease.as_secs(),
        o.resend.iter().map(Duration::as_secs).collect::<Vec<_>>(),
        o.idle_poll.as_millis(),
        o.retry_base.as_millis(),
        o.retry_max.as_millis(),
        if bench.env.is_empty() {
            " (the configuration's)"
        } else {
            " (shortened for the quick run)"
        }
    );
    let broker = BrokerUrl::parse(&bench.broker).map_err(|e| anyhow::anyhow!("--broker: {e}"))?;
    let topics = Topics::new(&prefix, settings.province.clone())?;

    // The receivers are registered before the first start, in the service's own store.
    let db = format!("sqlite://{}", data.join("canhbao.db").display());
    let store = store::Store::open(&db).await?;
    let members = register(&store, &unique("k"), bench.receivers, &communes).await?;
    store.close().await;

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let (keys, token) = service.start(&http, &base_url).await?;
    let mut fleet = Fleet::start(&broker, &topics, &keys, members, NO_HEARTBEAT_BURST);

    let result = drive(
        bench,
        &mut service,
        &fleet,
        &db,
        &http,
        &base_url,
        &token,
        &settings,
        outbox,
    )
    .await;

    // Clean up the shared broker whatever happened: the receivers and the service
    // stopped, their sessions discarded, their retained messages cleared.
    fleet.stop().await;
    service.kill();
    let mut sessions = fleet.client_ids();
    sessions.push(client_id);
    forget_sessions(&broker, sessions).await;
    let mut retained: Vec<String> = fleet.members.iter().map(|(id, _)| topics.status(id)).collect();
    let store = store::Store::open(&db).await?;
    for a in store.list_alerts(500).await.unwrap_or_default() {
        if let Ok(id) = AlertId::new(&a.id) {
            retained.extend(communes.iter().map(|c| topics.alert(c, &id)));
        }
    }
    store.close().await;
    clear_retained(&broker, &retained)
        .await
        .context("clearing the retained messages of the run")?;
    result
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    bench: &KillBench,
    service: &mut Service,
    fleet: &Fleet,
    db: &str,
    http: &reqwest::Client,
    base_url: &str,
    token: &str,
    settings: &canhbao_server::Settings,
    outbox: String,
) -> Result<KillReport> {
    let n = bench.receivers;
    // The bench holds the store open only while the service is not being killed: a
    // second process with the SQLite file open is no part of the scenario.
    let store = store::Store::open(db).await?;
    wait_online(&store, n, START_PATIENCE, http, base_url).await?;
    store.close().await;

    // The kills, at seeded random times over the issuing (and a little after it).
    let window = bench
        .pace
        .mul_f64(bench.alerts as f64 * 1.1)
        .max(Duration::from_secs(1));
    let mut rng = Rng::new(bench.seed);
    let mut plan_at: Vec<Duration> = (0..bench.kills)
        .map(|_| window.mul_f64(0.05 + 0.95 * rng.unit()))
        .collect();
    plan_at.sort();

    let run = unique("KILL");
    let answered = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let issuer = {
        let (http, base_url, token) = (http.clone(), base_url.to_owned(), token.to_owned());
        let (answered, in_flight) = (answered.clone(), in_flight.clone());
        let bulletins: Vec<(String, String)> = (0..bench.alerts)
            .map(|i| {
                let (status, hazard, level) = plan(i);
                let identifier = format!("{run}-{i}");
                let body = province_bulletin(&identifier, SENDER, hazard.code(), level, status, settings);
                (identifier, body)
            })
            .collect();
        let (pace, patience) = (bench.pace, bench.patience);
        tokio::spawn(async move {
            let mut posted = Vec::new();
            for (i, (identifier, body)) in bulletins.into_iter().enumerate() {
                tokio::time::sleep_until((t0 + pace * i as u32).into()).await;
                let mut p = Posted {
                    identifier,
                    ..Default::default()
                };
                let give_up = Instant::now() + patience;
                in_flight.store(true, Ordering::Relaxed);
                loop {
                    let sent = http
                        .post(format!("{base_url}/api/v1/bulletins"))
                        .bearer_auth(&token)
                        .header("content-type", "application/cap+xml")
                        .body(body.clone())
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status().is_success() => {
                            p.accepted = true;
                            break;
                        }
                        Ok(r) if r.status().is_client_error() => {
                            let status = r.status();
                            p.refused = Some(format!(
                                "{}: {status} {}",
                                p.identifier,
                                r.text().await.unwrap_or_default()
                            ));
                            break;
                        }
                        // No answer (the service died under it), or a 5xx: the same
                        // bulletin again once the service is back.
                        other => {
                            p.failures += 1;
                            if Instant::now() > give_up {
                                p.refused = Some(format!(
                                    "{}: no answer after {patience:?}: {other:?}",
                                    p.identifier
                                ));
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                in_flight.store(false, Ordering::Relaxed);
                answered.fetch_add(1, Ordering::Relaxed);
                posted.push(p);
            }
            (posted, t0.elapsed())
        })
    };
    let mut issuer = AbortOnDrop(issuer);

    let mut kills = Vec::new();
    let mut last_ready = t0;
    for at in plan_at {
        // At the planned time, but never before the service has been up a second.
        let when = (t0 + at).max(last_ready + Duration::from_secs(1));
        tokio::time::sleep_until(when.into()).await;
        let (a, f, plays) = (
            answered.load(Ordering::Relaxed),
            in_flight.load(Ordering::Relaxed),
            fleet.plays(),
        );
        let killed = Instant::now();
        service.kill();
        service.spawn()?;
        service.wait_ready(http, base_url).await?;
        last_ready = Instant::now();
        kills.push(Kill {
            at: killed - t0,
            answered: a,
            in_flight: f,
            plays,
            plays_due: a * n,
            down: last_ready - killed,
        });
    }
    let (posted, issue_time) = (&mut issuer.0).await.context("the issuing task failed")?;

    let store = store::Store::open(db).await?;
    let result = settle(
        bench, fleet, &store, kills, posted, issue_time, last_ready, t0, settings, outbox, service,
    )
    .await;
    store.close().await;
    result
}

/// After the last kill: finds every accepted bulletin's alert, waits for every play and
/// receipt within the bound, and counts.
#[allow(clippy::too_many_arguments)]
async fn settle(
    bench: &KillBench,
    fleet: &Fleet,
    store: &store::Store,
    kills: Vec<Kill>,
    posted: Vec<Posted>,
    issue_time: Duration,
    last_ready: Instant,
    t0: Instant,
    settings: &canhbao_server::Settings,
    outbox: String,
    service: &Service,
) -> Result<KillReport> {
    let n = bench.receivers;
    // Every accepted bulletin's alert, found by its origin.
    let accepted: Vec<&Posted> = posted.iter().filter(|p| p.accepted).collect();
    let mut expected = Vec::new();
    let (mut without_alert, mut extra_alerts) = (0, 0);
    let all = store.list_alerts(500).await?;
    for p in &accepted {
        let found: Vec<_> = all
            .iter()
            .filter(|a| {
                a.origin_kind == "bulletin"
                    && a.origin_detail.rsplit(' ').next() == Some(p.identifier.as_str())
            })
            .collect();
        match found.len() {
            0 => without_alert += 1,
            k => extra_alerts += k - 1,
        }
        for a in found {
            expected.push(Expected {
                id: a.id.clone(),
                communes: a.communes.iter().cloned().collect(),
            });
        }
    }

    // Wait, within the bound, for every play and every receipt.
    let deadline = Instant::now() + bench.patience;
    let (mut played_at, mut stored_at) = (None, None);
    loop {
        let t = tally(fleet, &fleet.snapshot(), &expected);
        if played_at.is_none() && t.complete() {
            played_at = Some(t.last_play.unwrap_or(last_ready).max(last_ready) - last_ready);
        }
        let (rows, played, _) = store_states(store, &expected).await?;
        if stored_at.is_none() && rows > 0 && rows == played {
            stored_at = Some(last_ready.elapsed());
        }
        if (played_at.is_some() && stored_at.is_some()) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A replay, if any, would show within a few seconds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = tally(fleet, &fleet.snapshot(), &expected);
    let (store_rows, store_played, states) = store_states(store, &expected).await?;
    // A pair the store shows as expired or superseded was not due any more.
    let mut excused: HashSet<(String, String)> = HashSet::new();
    for a in &expected {
        if t.missing.contains_key(&a.id) {
            for r in store.receiver_deliveries(&a.id).await? {
                if matches!(r.state.as_str(), "expired" | "superseded") {
                    excused.insert((r.receiver_id, a.id.clone()));
                }
            }
        }
    }
    let mut lost_alerts = 0;
    let mut lost_pairs = 0;
    let snapshot = fleet.snapshot();
    for a in &expected {
        let mut lost_here = 0;
        for (i, (id, commune)) in fleet.members.iter().enumerate() {
            if a.communes.contains(commune.as_str())
                && !snapshot[i].iter().any(|p| p.alert == a.id)
                && !excused.contains(&(id.to_string(), a.id.clone()))
            {
                lost_here += 1;
            }
        }
        lost_pairs += lost_here;
        if lost_here > 0 {
            lost_alerts += 1;
        }
    }
    lost_alerts += without_alert;
    let (log_errors, log_warnings, log_top) = service.log_summary();
    Ok(KillReport {
        log_errors,
        log_warnings,
        log_top,
        receivers: n,
        communes: settings.area.communes.len(),
        broker: bench.broker.clone(),
        seed: bench.seed,
        outbox,
        bulletins: posted.len(),
        accepted: accepted.len(),
        refused: posted.iter().filter_map(|p| p.refused.clone()).collect(),
        retried: posted.iter().filter(|p| p.failures > 0).count(),
        without_alert,
        extra_alerts,
        kills,
        issue_time,
        tally: t,
        lost_alerts,
        lost_pairs,
        store_states: states,
        store_rows,
        store_played,
        last_restart_to_played: played_at,
        last_restart_to_stored: stored_at,
        total: t0.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bulletin_of_the_plan_is_a_new_or_higher_level() {
        let mut seen: BTreeMap<(&str, &str), u8> = BTreeMap::new();
        let most = STATUSES.len() * Hazard::ALL.len() * 5;
        assert_eq!(most, 100, "the bench's default issues every alert of the plan");
        for i in 0..most {
            let (status, hazard, level) = plan(i);
            assert!((1..=5).contains(&level), "{i}: level {level}");
            let before = seen.insert((status, hazard.code()), level);
            assert!(
                before.is_none_or(|b| b < level),
                "{i}: {status} {hazard:?} {before:?} -> {level}"
            );
        }
        assert_eq!(seen.len(), 2 * Hazard::ALL.len());
    }

    #[test]
    fn the_seeded_generator_repeats_itself_and_stays_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            let x = a.unit();
            assert_eq!(x, b.unit());
            assert!((0.0..1.0).contains(&x));
        }
    }
}
