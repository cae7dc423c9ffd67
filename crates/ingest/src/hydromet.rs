//! What the third-party hydro-meteorological decoders ([`crate::openmeteo`],
//! [`crate::usgs`]) produce: samples in canhbao's units at a feed's own points (a grid
//! point, a gauge site), then tied to configured stations by a [`PointMap`]. Pure: the
//! time is an argument.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use domain::{Forecast, Observation, Parameter, StationId};
use serde_json::{Value, json};

use crate::station::RowError;

/// Whether a feed's values were measured or are a model's forecast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleKind {
    Observed,
    Forecast,
}

/// One value in canhbao's unit for its parameter ([`Parameter::unit`]), at a feed's point.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The feed's own name for the place: `0`, `1`, ... for Open-Meteo locations in the
    /// order of the request; the monitoring location id (`USGS-01491000`) for USGS.
    pub point: String,
    pub parameter: Parameter,
    pub value: f64,
    pub at: DateTime<Utc>,
}

/// What a decoder made of one document.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub kind: SampleKind,
    pub samples: Vec<Sample>,
    /// Values that were not data: nulls past a model's horizon, USGS's -999999, series
    /// canhbao does not read. Counted, not refused.
    pub no_data: usize,
    /// Values refused one by one (the rest of the document is kept), with the field at fault.
    pub errors: Vec<RowError>,
}

impl Decoded {
    pub(crate) fn new(kind: SampleKind) -> Self {
        Self {
            kind,
            samples: Vec::new(),
            no_data: 0,
            errors: Vec::new(),
        }
    }

    /// The samples as JSON lines, for `canhbao ingest-file` and snapshot tests.
    pub fn to_json_lines(&self) -> Vec<Value> {
        let kind = match self.kind {
            SampleKind::Observed => "observation",
            SampleKind::Forecast => "forecast",
        };
        self.samples
            .iter()
            .map(|s| {
                json!({
                    "kind": kind,
                    "point": s.point,
                    "parameter": s.parameter.code(),
                    "value": (s.value * 1e6).round() / 1e6,
                    "unit": s.parameter.unit(),
                    "at": s.at,
                })
            })
            .collect()
    }
}

/// Where a feed's point goes: a configured station, and for water levels the offset from
/// the feed's gauge datum to the national datum the station's alarm levels use.
#[derive(Debug, Clone, PartialEq)]
pub struct PointTarget {
    pub station: StationId,
    pub water_level_offset_m: f64,
}

/// A feed's points, mapped to stations (from the source's `points` setting).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PointMap(pub HashMap<String, PointTarget>);

impl PointMap {
    /// Ties each sample to its station. A point with no station is refused once, with how
    /// many values it carried; a value that the station's checks refuse is refused alone.
    fn tie<T>(
        &self,
        decoded: &Decoded,
        mut make: impl FnMut(&Sample, StationId, f64) -> Result<T, domain::ObservationError>,
    ) -> (Vec<T>, Vec<RowError>) {
        let mut out = Vec::new();
        let mut errors = decoded.errors.clone();
        let mut unmapped: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &decoded.samples {
            let Some(target) = self.0.get(&s.point) else {
                *unmapped.entry(&s.point).or_default() += 1;
                continue;
            };
            let value = if s.parameter == Parameter::WaterLevel {
                s.value + target.water_level_offset_m
            } else {
                s.value
            };
            match make(s, target.station.clone(), value) {
                Ok(v) => out.push(v),
                Err(e) => errors.push(RowError {
                    field: format!("{}.{}@{}", s.point, e.field(), s.at.to_rfc3339()),
                    detail: e.to_string(),
                }),
            }
        }
        for (point, n) in unmapped {
            errors.push(RowError {
                field: format!("{point}.point"),
                detail: format!(
                    "point {point:?} is not mapped to a station ({n} values dropped); add it to the source's points"
                ),
            });
        }
        (out, errors)
    }

    /// Observed samples as observations received at `now`.
    pub fn observations(&self, decoded: &Decoded, now: DateTime<Utc>) -> (Vec<Observation>, Vec<RowError>) {
        self.tie(decoded, |s, station, value| {
            Observation::new(station, s.parameter.code(), value, s.parameter.unit(), s.at, now)
        })
    }

    /// Forecast samples as forecasts issued at `issued_at` (the feeds state no run time,
    /// so it is when canhbao fetched them: a later fetch replaces an earlier one).
    pub fn forecasts(&self, decoded: &Decoded, issued_at: DateTime<Utc>) -> (Vec<Forecast>, Vec<RowError>) {
        self.tie(decoded, |s, station, value| {
            Forecast::new(
                station,
                s.parameter.code(),
                value,
                s.parameter.unit(),
                s.at,
                issued_at,
            )
        })
    }
}

/// A JSON number, or a string holding one (USGS sends strings).
pub(crate) fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn points_are_tied_to_stations_with_the_datum_offset_and_unmapped_ones_are_named() {
        let mut decoded = Decoded::new(SampleKind::Observed);
        for (point, p, v) in [
            ("USGS-1", Parameter::WaterLevel, 1.5),
            ("USGS-1", Parameter::Discharge, 20.0),
            ("USGS-2", Parameter::WaterLevel, 2.0),
            ("USGS-2", Parameter::WaterLevel, 2.1),
        ] {
            decoded.samples.push(Sample {
                point: point.into(),
                parameter: p,
                value: v,
                at: at("2026-10-09T00:00:00Z"),
            });
        }
        let map = PointMap(HashMap::from([(
            "USGS-1".to_owned(),
            PointTarget {
                station: StationId::new("HUULUNG").unwrap(),
                water_level_offset_m: 15.0,
            },
        )]));
        let (obs, errors) = map.observations(&decoded, at("2026-10-09T01:00:00Z"));
        assert_eq!(obs.len(), 2);
        assert_eq!(
            obs[0].value(),
            16.5,
            "the offset moves the gauge height to the datum"
        );
        assert_eq!(obs[1].value(), 20.0, "discharge has no datum");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].detail.contains("\"USGS-2\"") && errors[0].detail.contains("2 values"));
    }
}
