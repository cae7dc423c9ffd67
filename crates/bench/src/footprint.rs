//! `canhbao bench footprint`: `canhbao serve` as a child process (SQLite, the embedded
//! broker), its time from start to ready and its resident memory once idle, on an empty
//! store (the baseline) and on one with N registered receivers all tracked for a live
//! province-wide alert, measured in the same run. Linux only (it reads `/proc`).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use domain::CommuneCode;

use crate::api::populate;
use crate::dispatch::{TempDir, median};

#[derive(Debug, Clone)]
pub struct FootprintBench {
    /// The `canhbao` binary to start.
    pub program: std::path::PathBuf,
    pub receivers: usize,
    /// How long the service idles before its memory is read.
    pub idle: Duration,
    pub rounds: usize,
}

/// One start: time to ready, and resident memory (now and at its peak), in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Start {
    pub ready: Duration,
    pub rss_kib: u64,
    pub peak_kib: u64,
}

#[derive(Debug, Clone)]
pub struct FootprintReport {
    pub bench: FootprintBench,
    /// Per round: (empty store, loaded store).
    pub rounds: Vec<(Start, Start)>,
}

impl FootprintReport {
    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        let pick = |f: fn(&(Start, Start)) -> Start| {
            let v: Vec<Start> = self.rounds.iter().map(f).collect();
            let mut rss: Vec<u64> = v.iter().map(|s| s.rss_kib).collect();
            let mut peak: Vec<u64> = v.iter().map(|s| s.peak_kib).collect();
            rss.sort_unstable();
            peak.sort_unstable();
            Start {
                ready: median(v.iter().map(|s| s.ready).collect()),
                rss_kib: rss[rss.len() / 2],
                peak_kib: peak[peak.len() / 2],
            }
        };
        let (empty, loaded) = (pick(|r| r.0), pick(|r| r.1));
        writeln!(
            out,
            "footprint bench: canhbao serve (SQLite, embedded broker), idle {} s, median of {} rounds",
            self.bench.idle.as_secs(),
            self.rounds.len()
        )?;
        let mib = |k: u64| k as f64 / 1024.0;
        writeln!(
            out,
            "  baseline empty store         start->ready {:>7.1} ms  RSS {:>6.1} MiB  peak {:>6.1} MiB",
            empty.ready.as_secs_f64() * 1000.0,
            mib(empty.rss_kib),
            mib(empty.peak_kib)
        )?;
        writeln!(
            out,
            "  {:>6} receivers tracked     start->ready {:>7.1} ms  RSS {:>6.1} MiB  peak {:>6.1} MiB",
            self.bench.receivers,
            loaded.ready.as_secs_f64() * 1000.0,
            mib(loaded.rss_kib),
            mib(loaded.peak_kib)
        )?;
        writeln!(
            out,
            "  ratio (loaded / empty)       start->ready {:>6.2}x  RSS {:>6.2}x",
            loaded.ready.as_secs_f64() / empty.ready.as_secs_f64().max(1e-9),
            loaded.rss_kib as f64 / empty.rss_kib.max(1) as f64
        )
    }
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
pub(crate) fn memory(pid: u32) -> Result<(u64, u64)> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc (Linux only)")?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// Starts `canhbao serve` on `data_dir`, waits until ready, idles, reads its memory.
async fn start(program: &Path, config_dir: &Path, data_dir: &Path, idle: Duration) -> Result<Start> {
    let http = free_port()?;
    let mut child = Command::new(program)
        .arg("serve")
        .arg("--config-dir")
        .arg(config_dir)
        .env("CANHBAO__SERVICE__DATA_DIR", data_dir)
        .env("CANHBAO__HTTP__LISTEN", format!("127.0.0.1:{http}"))
        .env("CANHBAO__MQTT__MODE", "embedded")
        .env("CANHBAO__MQTT__LISTEN", format!("127.0.0.1:{}", free_port()?))
        .env("CANHBAO__DEMO__ENABLED", "false")
        .env("CANHBAO__INGEST__SOURCES", "[]")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting canhbao serve")?;
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let url = format!("http://127.0.0.1:{http}/readyz");
    let result = async {
        loop {
            if let Ok(r) = client.get(&url).send().await
                && r.status().is_success()
            {
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!("canhbao serve exited before it was ready: {status}");
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("canhbao serve was not ready within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ready = started.elapsed();
        tokio::time::sleep(idle).await;
        let (rss_kib, peak_kib) = memory(child.id())?;
        Ok(Start {
            ready,
            rss_kib,
            peak_kib,
        })
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

pub async fn bench_footprint(
    config_dir: &Path,
    communes: &[CommuneCode],
    bench: &FootprintBench,
    out: &mut impl Write,
) -> Result<FootprintReport> {
    let mut rounds = Vec::new();
    for _ in 0..bench.rounds.max(1) {
        // Both stores exist and are migrated before the service starts: the figures
        // compare starting on them, not creating them.
        let empty_dir = TempDir::new()?;
        let url = format!("sqlite://{}", empty_dir.0.join("canhbao.db").display());
        store::Store::open(&url).await?.close().await;
        let empty = start(&bench.program, config_dir, &empty_dir.0, bench.idle).await?;
        let loaded_dir = TempDir::new()?;
        let url = format!("sqlite://{}", loaded_dir.0.join("canhbao.db").display());
        populate(&url, communes, 1, bench.receivers).await?;
        let loaded = start(&bench.program, config_dir, &loaded_dir.0, bench.idle).await?;
        rounds.push((empty, loaded));
    }
    let report = FootprintReport {
        bench: bench.clone(),
        rounds,
    };
    report.write(out)?;
    Ok(report)
}
