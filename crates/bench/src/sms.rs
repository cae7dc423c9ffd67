//! `canhbao bench sms`: the time to put one alert through a running Kannel to N
//! recipients by canhbao's SMS channel (fallback decided, outbox written, claimed and
//! marked `sending`, sent within the gateway's limits, outcomes recorded, and every
//! delivery report applied through the API), against a plain loop of `sendsms` requests
//! for the same texts to the same Kannel from the same machine, in the same run.
//!
//! The canhbao instance is a fresh one (temporary data directory and SQLite file, the
//! embedded broker, demo and feeds off) whose directory holds N commune chairs spread over
//! the province's communes and no loudspeaker receiver, so that one province-wide Actual
//! bulletin sends SMS to all of them at once. Point it at a Kannel whose SMSC is fake
//! (`fakesmsc`): every message goes out.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use chrono::Utc;
use sms::kannel::{Encoding, KannelConfig, sendsms_url};
use sms::message::{MessageRef, SendOutcome, SmsMessage};

use crate::dispatch::{TempDir, median, ms, province_bulletin, unique};
use canhbao_server::config::Sources;

const SENDER: &str = "canhbao-bench@example.invalid";
const POLL: Duration = Duration::from_millis(20);
const PATIENCE: Duration = Duration::from_secs(600);

/// What to measure.
#[derive(Debug, Clone)]
pub struct SmsBench {
    pub recipients: usize,
    /// smsbox's root, e.g. `http://127.0.0.1:13013`.
    pub kannel: String,
    pub username: String,
    pub password: String,
    /// Requests in flight at once, for canhbao and for the concurrent baseline.
    pub in_flight: usize,
    pub rounds: usize,
}

/// One round's figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct SmsRound {
    /// Issue until Kannel had taken every message.
    pub submitted: Duration,
    /// Issue until every message's `delivered` report was applied.
    pub delivered: Duration,
    /// N plain sendsms requests one after another (no delivery reports asked for).
    pub loop_sequential: Duration,
    /// N sendsms requests asking for every delivery report as canhbao does (to a local
    /// sink that answers at once), `in_flight` at a time.
    pub loop_with_reports: Duration,
    pub counted_delivered: usize,
}

#[derive(Debug, Clone)]
pub struct SmsReport {
    pub recipients: usize,
    pub communes: usize,
    pub in_flight: usize,
    pub segments: i64,
    pub encoding: String,
    pub rounds: Vec<SmsRound>,
}

impl SmsReport {
    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        let pick = |f: fn(&SmsRound) -> Duration| median(self.rounds.iter().map(f).collect());
        let (sub, del, seq, conc) = (
            pick(|r| r.submitted),
            pick(|r| r.delivered),
            pick(|r| r.loop_sequential),
            pick(|r| r.loop_with_reports),
        );
        let rate = |d: Duration| self.recipients as f64 / d.as_secs_f64().max(1e-9);
        writeln!(
            out,
            "sms bench: {} recipients over {} communes, one {} text of {} parts, {} in flight, median of {} rounds",
            self.recipients,
            self.communes,
            self.encoding,
            self.segments,
            self.in_flight,
            self.rounds.len()
        )?;
        writeln!(
            out,
            "  baseline sendsms loop      {:>9.1} ms  {:>7.0} msg/s  plain requests one after another, no delivery reports",
            ms(seq),
            rate(seq)
        )?;
        writeln!(
            out,
            "  baseline with reports      {:>9.1} ms  {:>7.0} msg/s  the same asking for every report (dlr-mask 31, to a sink), {} in flight",
            ms(conc),
            rate(conc),
            self.in_flight
        )?;
        writeln!(
            out,
            "  canhbao issue->submitted   {:>9.1} ms  {:>7.0} msg/s  POST of the bulletin until Kannel took every message",
            ms(sub),
            rate(sub)
        )?;
        writeln!(
            out,
            "  canhbao issue->delivered   {:>9.1} ms  {:>7.0} msg/s  until every `delivered` report was applied",
            ms(del),
            rate(del)
        )?;
        writeln!(
            out,
            "  ratio (time)               {:>9.2}x  canhbao submitted / plain loop; {:.2}x / loop with reports",
            sub.as_secs_f64() / seq.as_secs_f64().max(1e-9),
            sub.as_secs_f64() / conc.as_secs_f64().max(1e-9)
        )?;
        let fewest = self.rounds.iter().map(|r| r.counted_delivered).min().unwrap_or(0);
        writeln!(
            out,
            "  counted (fewest in a round): delivered {fewest}/{}",
            self.recipients
        )
    }
}

/// Runs the bench and writes its report.
pub async fn bench_sms(base: &Sources, bench: &SmsBench, out: &mut impl Write) -> Result<SmsReport> {
    ensure!(bench.recipients > 0, "--recipients must be at least 1");
    ensure!(bench.in_flight > 0, "--in-flight must be at least 1");
    let mut rounds = Vec::new();
    let mut last = (0, String::new(), 0);
    for _ in 0..bench.rounds.max(1) {
        let (mut round, sent, communes) = canhbao_round(base, bench).await?;
        last = (sent.segments, sent.encoding.clone(), communes);
        // The same text in the same encoding, to the same numbers.
        round.loop_sequential = baseline(bench, &sent, 1, None).await?;
        let (sink, reports) = report_sink().await?;
        round.loop_with_reports = baseline(bench, &sent, bench.in_flight, Some(&sink)).await?;
        drain(&reports, bench.recipients).await;
        rounds.push(round);
    }
    let report = SmsReport {
        recipients: bench.recipients,
        communes: last.2,
        in_flight: bench.in_flight,
        segments: last.0,
        encoding: last.1,
        rounds,
    };
    report.write(out)?;
    Ok(report)
}

/// A free loopback port (the DLR URL must be known before the service starts).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn recipient(i: usize) -> String {
    format!("+8491{:07}", i)
}

async fn canhbao_round(base: &Sources, bench: &SmsBench) -> Result<(SmsRound, store::SmsRecord, usize)> {
    use toml::Value::{Array, Boolean, Integer, String as S, Table};
    let dir = TempDir::new()?;
    let port = free_port()?;
    let mut gateway = toml::Table::new();
    for (k, v) in [
        ("id", S("bench".into())),
        ("kind", S("kannel".into())),
        ("url", S(bench.kannel.clone())),
        ("username", S(bench.username.clone())),
        ("password_env", S("CANHBAO_SECRET_BENCH_PASSWORD".into())),
        ("dlr_secret_env", S("CANHBAO_SECRET_BENCH_DLR".into())),
        ("per_second", Integer(1_000_000)),
        ("max_in_flight", Integer(i64::try_from(bench.in_flight)?)),
        ("timeout_ms", Integer(30_000)),
    ] {
        gateway.insert(k.into(), v);
    }
    let mut sources = base.clone();
    sources.vars.extend([
        ("CANHBAO_SECRET_BENCH_PASSWORD".into(), bench.password.clone()),
        ("CANHBAO_SECRET_BENCH_DLR".into(), unique("dlr-secret")),
    ]);
    sources.flags.extend([
        ("service.data_dir".into(), S(dir.0.display().to_string())),
        ("database.url".into(), S(String::new())),
        ("signing.key_file".into(), S(String::new())),
        ("http.listen".into(), S(format!("127.0.0.1:{port}"))),
        ("mqtt.mode".into(), S("embedded".into())),
        ("mqtt.listen".into(), S("127.0.0.1:0".into())),
        ("mqtt.client_id".into(), S(unique("canhbao-bench"))),
        ("demo.enabled".into(), Boolean(false)),
        ("ingest.sources".into(), Array(vec![])),
        (
            "bulletins.authoritative_senders".into(),
            Array(vec![S(SENDER.into())]),
        ),
        ("sms.public_url".into(), S(format!("http://127.0.0.1:{port}"))),
        ("sms.gateways".into(), Array(vec![Table(gateway)])),
        ("sms.batch".into(), Integer(512)),
        ("sms.sweep_ms".into(), Integer(200)),
        // Nothing may move to another gateway or be given up on during the run.
        ("sms.report_deadline_s".into(), Integer(3600)),
    ]);
    let settings = canhbao_server::config::load(&sources).map_err(|p| anyhow::anyhow!("{p}"))?;
    let communes: Vec<String> = settings
        .area
        .communes
        .iter()
        .map(|c| c.code.to_string())
        .collect();
    ensure!(!communes.is_empty(), "the area file has no communes");
    let bulletin = province_bulletin(&unique("SMSBENCH"), SENDER, "flood", 3, "Actual", &settings);
    let app = canhbao_server::App::start(settings).await?;
    let result = drive(&app, &dir.0, bench, &communes, bulletin).await;
    app.stop().await;
    let (round, sent) = result?;
    Ok((round, sent, communes.len()))
}

async fn drive(
    app: &canhbao_server::App,
    data_dir: &std::path::Path,
    bench: &SmsBench,
    communes: &[String],
    bulletin: String,
) -> Result<(SmsRound, store::SmsRecord)> {
    let store = app.store();
    let now = Utc::now();
    let mut tx = store.begin().await?;
    for i in 0..bench.recipients {
        tx.upsert_contact(&store::ContactRecord {
            phone: recipient(i),
            name: format!("Chủ tịch {i}"),
            commune: communes[i % communes.len()].clone(),
            role: "commune_chair".into(),
            language: "vi".into(),
            opted_out: false,
            updated: now,
        })
        .await?;
    }
    tx.commit().await?;
    let token = std::fs::read_to_string(data_dir.join("admin.token"))?
        .trim()
        .to_owned();
    let http = reqwest::Client::builder().no_proxy().timeout(PATIENCE).build()?;
    let started = Instant::now();
    let answer = http
        .post(format!("http://{}/api/v1/bulletins", app.http_addr))
        .bearer_auth(&token)
        .header("content-type", "application/cap+xml")
        .body(bulletin)
        .send()
        .await?;
    let status = answer.status();
    let body: serde_json::Value = answer.json().await?;
    if !status.is_success() {
        bail!("the bulletin was refused: {status} {body}");
    }
    let alert_id = body["alerts"][0]
        .as_str()
        .context("the bulletin raised no alert")?
        .to_owned();
    let mut round = SmsRound::default();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let states = store.sms_states().await?;
        let count = |names: &[&str]| -> usize {
            states
                .iter()
                .filter(|(s, _)| names.contains(&s.as_str()))
                .map(|(_, n)| usize::try_from(*n).unwrap_or(0))
                .sum()
        };
        let taken = count(&["submitted", "buffered", "smsc_accepted", "delivered"]);
        let delivered = count(&["delivered"]);
        if round.submitted.is_zero() && taken == bench.recipients {
            round.submitted = started.elapsed();
        }
        if delivered == bench.recipients {
            round.delivered = started.elapsed();
            round.counted_delivered = delivered;
            break;
        }
        let stuck = count(&["failed", "unconfirmed", "unreported", "expired"]);
        if stuck > 0 || Instant::now() > deadline {
            bail!(
                "{delivered} of {} delivered, {stuck} failed or unconfirmed after {:?}: {states:?}",
                bench.recipients,
                started.elapsed()
            );
        }
        tokio::time::sleep(POLL).await;
    }
    let rows = store.sms_for_alert(&alert_id).await?;
    let first = rows.into_iter().next().context("no sms was written")?;
    Ok((round, first))
}

/// A local HTTP endpoint that answers every request `200 ok` at once: where the baseline's
/// delivery reports go.
/// Returns its URL and the count of reports it took.
async fn report_sink() -> Result<(String, std::sync::Arc<std::sync::atomic::AtomicUsize>)> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/dlr", listener.local_addr()?);
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let app = axum::Router::new().fallback(move || {
        seen.fetch_add(1, Ordering::Relaxed);
        async { "ok" }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, count))
}

/// Waits until the sink has taken a report for each message and no more come for a
/// second, so that the next round does not start behind Kannel's backlog of reports (a
/// report Kannel cannot hand over would clog it for later runs).
async fn drain(count: &std::sync::atomic::AtomicUsize, at_least: usize) {
    use std::sync::atomic::Ordering;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = (count.load(Ordering::Relaxed), Instant::now());
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = count.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if now >= at_least && last.1.elapsed() >= Duration::from_secs(1) {
            return;
        }
    }
}

/// N sendsms requests for the same text and numbers, `in_flight` at a time; with `sink`,
/// asking for every delivery report there, as canhbao does; without, plain requests as a
/// script would send them.
async fn baseline(
    bench: &SmsBench,
    sent: &store::SmsRecord,
    in_flight: usize,
    sink: Option<&str>,
) -> Result<Duration> {
    let config = KannelConfig {
        base_url: bench.kannel.clone(),
        username: bench.username.clone(),
        password: bench.password.clone().into(),
        from: "CANHBAO".into(),
        dlr_url_base: sink.unwrap_or("http://127.0.0.1:9/unused").to_owned(),
        dlr_secret: "baseline-secret-baseline".into(),
    };
    let mut urls = Vec::with_capacity(bench.recipients);
    for i in 0..bench.recipients {
        let msg = SmsMessage {
            to: recipient(i),
            text: sent.text.clone(),
            encoding: if sent.encoding == Encoding::Gsm7.label() {
                Encoding::Gsm7
            } else {
                Encoding::Ucs2
            },
            message_ref: MessageRef::new(&format!("b{i}"))?,
        };
        let url = sendsms_url(&config, &msg)?.expose().to_owned();
        urls.push(match sink {
            Some(_) => url,
            None => url.split("&dlr-mask=").next().unwrap_or(&url).to_owned(),
        });
    }
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(in_flight)
        .build()?;
    let queue = std::sync::Arc::new(std::sync::Mutex::new(urls));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let (queue, http) = (queue.clone(), http.clone());
        workers.spawn(async move {
            loop {
                let next = queue
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .pop();
                let Some(url) = next else {
                    return Ok::<(), anyhow::Error>(());
                };
                let answer = http.get(&url).send().await?;
                let status = answer.status().as_u16();
                let body = answer.text().await?;
                match sms::kannel::parse_sendsms_answer(status, &body) {
                    Ok(SendOutcome::Accepted | SendOutcome::Queued) => {}
                    other => bail!("kannel refused a baseline message: {other:?}"),
                }
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    Ok(started.elapsed())
}
