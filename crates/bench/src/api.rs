//! `canhbao bench api`: operators' reads under concurrent load (the alert list, and the
//! delivery matrix of a province-wide alert with N registered receivers), against a
//! trivial axum handler served in the same process, driven by the same load generator in
//! the same run. The service runs in-process on a temporary SQLite file and the embedded
//! broker.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use chrono::Utc;
use domain::CommuneCode;
use store::Store;

use crate::dispatch::{TempDir, median, settings};
use crate::receipts::{insert_bench_alert, register_bench_receivers};
use canhbao_server::App;
use canhbao_server::config::Sources;

/// What to measure.
#[derive(Debug, Clone)]
pub struct ApiBench {
    /// Alerts in the store (the list shows the newest 50).
    pub alerts: usize,
    /// Registered receivers, all tracked for the newest alert (its delivery matrix).
    pub receivers: usize,
    /// Requests per endpoint and round, and how many are in flight at once.
    pub requests: usize,
    pub concurrency: usize,
    pub rounds: usize,
}

/// One endpoint's figures in one round.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub failed: usize,
}

#[derive(Debug, Clone)]
pub struct ApiReport {
    pub bench: ApiBench,
    /// Per round: (trivial handler, alert list, delivery matrix).
    pub rounds: Vec<[Load; 3]>,
    pub matrix_bytes: usize,
}

impl ApiReport {
    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        let b = &self.bench;
        writeln!(
            out,
            "api bench: {} requests per endpoint, {} in flight, {} alerts, delivery matrix of {} receivers ({} bytes), median of {} rounds",
            b.requests,
            b.concurrency,
            b.alerts,
            b.receivers,
            self.matrix_bytes,
            self.rounds.len()
        )?;
        let pick = |i: usize| {
            let el = median(self.rounds.iter().map(|r| r[i].elapsed).collect());
            let p50 = median(self.rounds.iter().map(|r| r[i].p50).collect());
            let p99 = median(self.rounds.iter().map(|r| r[i].p99).collect());
            let failed: usize = self.rounds.iter().map(|r| r[i].failed).sum();
            (
                Load {
                    elapsed: el,
                    p50,
                    p99,
                    failed,
                },
                b.requests as f64 / el.as_secs_f64().max(1e-9),
            )
        };
        let (_, base) = pick(0);
        for (i, label) in [
            "baseline trivial handler ",
            "GET /api/v1/alerts       ",
            "GET …/{id}/deliveries    ",
        ]
        .iter()
        .enumerate()
        {
            let (l, rate) = pick(i);
            writeln!(
                out,
                "  {label} {rate:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ratio {:>6.3}x  failed {}",
                l.p50.as_secs_f64() * 1000.0,
                l.p99.as_secs_f64() * 1000.0,
                rate / base.max(1e-9),
                l.failed
            )?;
        }
        Ok(())
    }
}

/// `requests` GETs of `url`, `concurrency` at a time over kept-alive connections.
async fn load(http: &reqwest::Client, url: &str, token: &str, requests: usize, concurrency: usize) -> Load {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let per = requests.div_ceil(concurrency.max(1));
    for w in 0..concurrency.max(1) {
        let n = per.min(requests.saturating_sub(w * per));
        let (http, url, token) = (http.clone(), url.to_owned(), token.to_owned());
        tasks.spawn(async move {
            let mut times = Vec::with_capacity(n);
            let mut failed = 0;
            for _ in 0..n {
                let t = Instant::now();
                let ok = match http.get(&url).bearer_auth(&token).send().await {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                };
                times.push(t.elapsed());
                failed += usize::from(!ok);
            }
            (times, failed)
        });
    }
    let mut times = Vec::with_capacity(requests);
    let mut failed = 0;
    while let Some(Ok((t, f))) = tasks.join_next().await {
        times.extend(t);
        failed += f;
    }
    let elapsed = started.elapsed();
    times.sort();
    let at = |q: f64| {
        times
            .get(((times.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    Load {
        elapsed,
        p50: at(0.5),
        p99: at(0.99),
        failed,
    }
}

/// Writes `alerts` alerts (the newest to every commune, tracked for `receivers`
/// registered receivers) straight into the store at `url`.
pub(crate) async fn populate(
    url: &str,
    communes: &[CommuneCode],
    alerts: usize,
    receivers: usize,
) -> Result<String> {
    let store = Store::open(url).await?;
    let now = Utc::now();
    let mut last = String::new();
    for n in 0..alerts.max(1) {
        if n + 1 == alerts.max(1) {
            // Registered before the newest alert, so that only it tracks them all.
            register_bench_receivers(&store, communes, receivers, now).await?;
        }
        let id = format!("bench-api-{n}");
        insert_bench_alert(
            &store,
            &id,
            communes,
            now + chrono::Duration::milliseconds(n as i64),
        )
        .await?;
        last = id;
    }
    store.close().await;
    Ok(last)
}

pub async fn bench_api(
    base: &Sources,
    communes: &[CommuneCode],
    bench: &ApiBench,
    out: &mut impl Write,
) -> Result<ApiReport> {
    let dir = TempDir::new()?;
    let settings = settings(base, &dir.0, None)?;
    let newest = populate(&settings.database_url, communes, bench.alerts, bench.receivers).await?;
    let app = App::start(settings).await?;
    let token = std::fs::read_to_string(dir.0.join("admin.token"))?
        .trim()
        .to_owned();
    let base_url = format!("http://{}", app.http_addr);

    // The baseline: a handler that does nothing, in the same process and runtime.
    let trivial = axum::Router::new().route(
        "/trivial",
        axum::routing::get(|| async { axum::Json(serde_json::json!({"ok": true})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let trivial_url = format!("http://{}/trivial", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, trivial).await });

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(bench.concurrency)
        .build()?;
    let list_url = format!("{base_url}/api/v1/alerts?limit=50");
    let matrix_url = format!("{base_url}/api/v1/alerts/{newest}/deliveries");
    let matrix = http
        .get(&matrix_url)
        .bearer_auth(&token)
        .send()
        .await?
        .error_for_status()
        .context("the delivery matrix")?
        .bytes()
        .await?;
    let rows = matrix
        .windows(b"\"receiver_id\"".len())
        .filter(|w| w == b"\"receiver_id\"")
        .count();
    ensure!(
        rows >= bench.receivers,
        "the delivery matrix shows {rows} receivers, not {}",
        bench.receivers
    );
    let mut rounds = Vec::new();
    for _ in 0..bench.rounds.max(1) {
        let a = load(&http, &trivial_url, &token, bench.requests, bench.concurrency).await;
        let b = load(&http, &list_url, &token, bench.requests, bench.concurrency).await;
        let c = load(&http, &matrix_url, &token, bench.requests, bench.concurrency).await;
        rounds.push([a, b, c]);
    }
    server.abort();
    app.stop().await;
    let report = ApiReport {
        bench: bench.clone(),
        rounds,
        matrix_bytes: matrix.len(),
    };
    report.write(out)?;
    let failed: usize = report.rounds.iter().flatten().map(|l| l.failed).sum();
    ensure!(failed == 0, "{failed} requests failed");
    Ok(report)
}
