//! The demo source of the embedded profile: replays a bundled water-level series for
//! Lạng Sơn's stations, one step per tick, stamped with the current time, so that a
//! newcomer sees alerts flow within a minute. Its alerts have CAP status Exercise.

use std::time::Duration;

use chrono::Utc;
use domain::{AlertStatus, Observation, StationId};
use tokio_util::sync::CancellationToken;

use desk::{Pipeline, Source};

/// The bundled series (`demo/series.csv`).
pub const SERIES_CSV: &str = include_str!("../demo/series.csv");

/// One step of the series.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoReading {
    pub step: u32,
    pub station: StationId,
    pub value_m: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("demo series line {line}: {reason}")]
pub struct SeriesError {
    pub line: usize,
    pub reason: String,
}

/// Parses the series CSV (`step,station,value_m`, `#` comments, one header line).
pub fn parse_series(csv: &str) -> Result<Vec<DemoReading>, SeriesError> {
    let mut out = Vec::new();
    let mut header_seen = false;
    for (i, line) in csv.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !header_seen {
            header_seen = true;
            continue;
        }
        let err = |reason: String| SeriesError { line: i + 1, reason };
        let fields: Vec<&str> = line.split(',').collect();
        let [step, station, value] = fields[..] else {
            return Err(err(format!("expected 3 fields, got {}", fields.len())));
        };
        out.push(DemoReading {
            step: step.parse().map_err(|e| err(format!("step {step:?}: {e}")))?,
            station: StationId::new(station).map_err(|e| err(e.to_string()))?,
            value_m: value.parse().map_err(|e| err(format!("value {value:?}: {e}")))?,
        });
    }
    Ok(out)
}

/// Replays the series through `pipeline`, one step every `interval`, then stops.
pub async fn run_demo(pipeline: Pipeline, interval: Duration, shutdown: CancellationToken) {
    let series = match parse_series(SERIES_CSV) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "demo series is invalid; demo source not started");
            return;
        }
    };
    let source = Source {
        name: "demo".into(),
        alert_status: AlertStatus::Exercise,
    };
    let last = series.iter().map(|r| r.step).max().unwrap_or(0);
    tracing::info!(
        steps = last + 1,
        interval_ms = interval.as_millis() as u64,
        "demo source replaying bundled series"
    );
    for step in 0..=last {
        let now = Utc::now();
        let batch: Vec<Observation> = series
            .iter()
            .filter(|r| r.step == step && pipeline.station(&r.station).is_some())
            .filter_map(|r| Observation::new(r.station.clone(), "water_level", r.value_m, "m", now, now).ok())
            .collect();
        match pipeline.accept(batch, &source, now).await {
            Ok(report) if !report.alerts.is_empty() => {
                tracing::info!(step, alerts = report.alerts.len(), "demo step raised alerts")
            }
            Ok(_) => tracing::debug!(step, "demo step stored"),
            Err(e) => tracing::error!(step, error = %e, "demo step failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
    tracing::info!("demo series complete");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_series_parses_and_crosses_bd3_at_huu_lung() {
        let series = parse_series(SERIES_CSV).unwrap();
        assert_eq!(series.len(), 30);
        let peak = series
            .iter()
            .filter(|r| r.station.as_str() == "HUULUNG")
            .map(|r| r.value_m)
            .fold(f64::MIN, f64::max);
        assert!(
            peak > 19.0,
            "the demo must show an emergency (BĐ3 is 19.00 m at Hữu Lũng)"
        );
    }

    #[test]
    fn a_bad_line_is_reported_with_its_number() {
        let e = parse_series("step,station,value_m\n0,HUULUNG,abc\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("\"abc\""));
    }
}
