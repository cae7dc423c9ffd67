//! `canhbao bench rules`, its second part: what the follower's timer costs when it runs
//! the rules every minute on what is stored ([`desk::Pipeline::evaluate_rules`]: one
//! transaction per alert status, the stored levels read, the rules run over the recent
//! readings of every series), against the work each minute brings anyway: storing one
//! reading from every station, in the same SQLite file, in the same run.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use desk::{Pipeline, Source};
use dispatch::Signer;
use domain::{AlertStatus, Observation};
use tokio::sync::Notify;

use crate::dispatch::{TempDir, median};
use canhbao_server::config::Settings;

/// Stores `days` of the synthetic readings (every station, every 10 minutes), then times
/// `rounds` timed rules runs against `rounds` stores of one reading per station.
pub async fn bench_timer(settings: &Settings, rounds: usize, days: u32, out: &mut impl Write) -> Result<()> {
    let area = &settings.area;
    let dir = TempDir::new()?;
    let store = store::Store::open(&format!("sqlite://{}", dir.0.join("timer.db").display())).await?;
    let start: DateTime<Utc> = "2025-01-01T00:00:00Z".parse()?;
    let csv = crate::rules::synthetic_year_csv(area, start, days);
    let readings = ingest::history::parse_csv("bench.csv", &csv)?;
    let end = readings
        .iter()
        .map(|r| r.at)
        .max()
        .context("no synthetic readings")?;
    // Every station as area 2, as in the replay part: the flood rules have work to do.
    let classes: Vec<(String, u8)> = area.stations.iter().map(|s| (s.id.to_string(), 2)).collect();
    let topics = dispatch::Topics::new(&settings.mqtt.topic_prefix, settings.province.clone())?;
    let pipeline = Pipeline::new(
        store.clone(),
        area.stations.clone(),
        Arc::new(Signer::from_seed(&[9; 32])),
        topics,
        settings.alerts.clone(),
        Arc::new(Notify::new()),
    )
    .with_engine(
        settings.rules.clone(),
        canhbao_server::tools::inputs_for(area, &classes)?,
    );
    let source = Source {
        name: "bench".into(),
        alert_status: AlertStatus::Actual,
    };
    let observation = |station: &domain::StationId, param: rules::series::Param, value: f64, at, now| {
        Observation::new(station.clone(), param.code(), value, param.unit(), at, now)
            .map_err(|e| anyhow::anyhow!("synthetic reading: {e}"))
    };
    // The stored history, a day at a time (the rules run after each, as in service).
    let mut stored = 0;
    for day in readings.chunk_by(|a, b| a.at.date_naive() == b.at.date_naive()) {
        let now = day.iter().map(|r| r.at).max().unwrap_or(end);
        let batch = day
            .iter()
            .map(|r| observation(&r.station, r.param, r.value, r.at, now))
            .collect::<Result<Vec<_>>>()?;
        stored += pipeline.accept(batch, &source, now).await?.stored;
    }
    let mut baseline = Vec::new();
    let mut timed = Vec::new();
    let mut transitions = 0;
    for round in 0..rounds.max(1) {
        // One minute later each round: one new reading from every station (the baseline),
        // then the timer's rules run.
        let now = end + chrono::Duration::minutes(1 + round as i64);
        let batch = readings
            .iter()
            .rev()
            .take(area.stations.len())
            .map(|r| observation(&r.station, r.param, r.value, now, now))
            .collect::<Result<Vec<_>>>()?;
        let t = Instant::now();
        pipeline.accept(batch, &source, now).await?;
        baseline.push(t.elapsed());
        let t = Instant::now();
        transitions += pipeline.evaluate_rules(now).await?.transitions;
        timed.push(t.elapsed());
    }
    let (b, r) = (median(baseline), median(timed));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    writeln!(
        out,
        "timed rules run: a store of {stored} readings ({} stations x {days} days), {} rounds",
        area.stations.len(),
        rounds.max(1)
    )?;
    writeln!(
        out,
        "  baseline: one reading per station stored  {:>8.2} ms",
        ms(b)
    )?;
    writeln!(
        out,
        "  the timer's rules run (3 statuses)        {:>8.2} ms  ({:.3}% of its 60 s period); {transitions} transitions",
        ms(r),
        r.as_secs_f64() / 60.0 * 100.0
    )?;
    writeln!(
        out,
        "  ratio (rules run / baseline)              {:>8.2}x",
        r.as_secs_f64() / b.as_secs_f64().max(1e-9)
    )?;
    Ok(())
}
