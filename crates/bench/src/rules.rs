//! `canhbao-bench rules`: parse-only against parse + rules over the same synthetic year.

use std::io::Write;
use std::time::Instant;

use anyhow::Result;
use canhbao_server::places::Area;
use canhbao_server::tools::inputs_for;
use chrono::{DateTime, Duration, Utc};
use rules::RuleSet;
use rules::replay::{ReplaySettings, replay};

/// A year of 10-minute water levels for every station, as CSV: a slow seasonal swell
/// with flood peaks, crossing each station's alarm levels several times. Only its first
/// `days` days are written.
pub fn synthetic_year_csv(area: &Area, start: DateTime<Utc>, days: u32) -> String {
    let mut out = String::from("station,parameter,value,unit,observed_at\n");
    let steps = 365 * 144;
    for s in &area.stations {
        let base = s.bd1_m.map(|l| l.value).unwrap_or(100.0) - 1.5;
        let span = s.bd3_m.map(|l| l.value).unwrap_or(base + 4.0) - base + 1.0;
        for i in 0..steps.min(days.saturating_mul(144)) {
            let t = start + Duration::minutes(10 * i64::from(i));
            let x = f64::from(i) / f64::from(steps);
            let season = (x * std::f64::consts::TAU).sin().max(0.0);
            let flood = ((x * 40.0 * std::f64::consts::TAU).sin().max(0.0)).powi(8);
            let v = base + span * (0.4 * season + 0.8 * flood);
            out.push_str(&format!(
                "{},water_level,{v:.2},m,{}\n",
                s.id,
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
    }
    out
}

/// `canhbao bench rules`: parse-only against parse + rules over the same synthetic year.
/// `days` of the year are replayed (365: all of it).
pub fn bench_rules(set: &RuleSet, area: &Area, rounds: usize, days: u32, out: &mut impl Write) -> Result<()> {
    let start: DateTime<Utc> = "2025-01-01T00:00:00Z".parse()?;
    let csv = synthetic_year_csv(area, start, days);
    let inputs = inputs_for(
        area,
        &area
            .stations
            .iter()
            .map(|s| (s.id.to_string(), 2u8))
            .collect::<Vec<_>>(),
    )?;
    let rows = csv.lines().count() - 1;
    let mut parse_s = Vec::new();
    let mut full_s = Vec::new();
    let mut transitions = 0;
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        let h = ingest::history::parse_csv("bench.csv", &csv)?;
        std::hint::black_box(&h);
        parse_s.push(t.elapsed().as_secs_f64());

        let t = Instant::now();
        let h = ingest::history::parse_csv("bench.csv", &csv)?;
        let replayed = replay(set, &inputs, h, ReplaySettings::for_rules(set), |_, _| {});
        transitions = replayed.timeline.len();
        full_s.push(t.elapsed().as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (p, f) = (median(&mut parse_s), median(&mut full_s));
    writeln!(
        out,
        "rules bench: {rows} readings ({} stations x {days} days at 10 min), {} rules",
        area.stations.len(),
        set.rules.len()
    )?;
    writeln!(
        out,
        "  baseline parse only      {:>8.3} s  {:>12.0} readings/s",
        p,
        rows as f64 / p
    )?;
    writeln!(
        out,
        "  parse + rules + states   {:>8.3} s  {:>12.0} readings/s",
        f,
        rows as f64 / f
    )?;
    writeln!(
        out,
        "  ratio (throughput)       {:>8.3}x  (goal >= 0.5x); {transitions} transitions",
        p / f
    )?;
    Ok(())
}
