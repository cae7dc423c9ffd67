//! Pure decoders for Open-Meteo: the forecast API (`api.open-meteo.com/v1/forecast`,
//! hourly precipitation, temperature, wind, gusts and visibility) and the flood API
//! (`flood-api.open-meteo.com/v1/flood`, daily river discharge). Both give forecasts at grid
//! points; a request with several coordinates answers with an array, and point `N` is the
//! N-th location of the request (the answer's coordinates are the grid cell's, not the
//! request's, so they cannot name the point).
//!
//! Units are read from `*_units` and converted (°F, inch, mph, kn, m/s are accepted); a
//! unit canhbao cannot convert refuses that variable. Times are local to the response's
//! `utc_offset_seconds` (or `unixtime`). `null` values, as past a model's horizon, are no data.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
use domain::{Parameter, units};
use serde_json::{Map, Value};

use crate::hydromet::{Decoded, Sample, SampleKind, number};
use crate::station::RowError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenMeteoError {
    #[error("not JSON: {0}")]
    Json(String),
    /// The API's own error body (`{"error": true, "reason": ...}`), sent with HTTP 400.
    #[error("Open-Meteo refused the request: {0}")]
    Api(String),
    #[error("location {index}: {reason}")]
    Location { index: usize, reason: String },
}

/// A variable canhbao reads, where it goes and how its unit converts.
struct Variable {
    names: &'static [&'static str],
    parameter: Parameter,
    convert: fn(f64, &str) -> Option<f64>,
}

fn to_beaufort(v: f64, unit: &str) -> Option<f64> {
    units::wind_to_m_s(v, unit).map(units::beaufort_from_m_s)
}

/// Hourly forecast variables (current and legacy names).
const HOURLY: [Variable; 5] = [
    Variable {
        names: &["precipitation", "rain"],
        parameter: Parameter::Rainfall,
        convert: units::depth_to_mm,
    },
    Variable {
        names: &["temperature_2m"],
        parameter: Parameter::AirTemperature,
        convert: units::temperature_to_c,
    },
    Variable {
        names: &["wind_speed_10m", "windspeed_10m"],
        parameter: Parameter::WindBeaufort,
        convert: to_beaufort,
    },
    Variable {
        names: &["wind_gusts_10m", "windgusts_10m"],
        parameter: Parameter::WindGustBeaufort,
        convert: to_beaufort,
    },
    Variable {
        names: &["visibility"],
        parameter: Parameter::Visibility,
        convert: units::length_to_m,
    },
];

const DAILY_FLOOD: [Variable; 1] = [Variable {
    names: &["river_discharge"],
    parameter: Parameter::Discharge,
    convert: units::discharge_to_m3_s,
}];

/// Decodes a forecast API response: hourly values as forecasts.
pub fn parse_forecast(body: &[u8]) -> Result<Decoded, OpenMeteoError> {
    parse(body, "hourly", &HOURLY)
}

/// Decodes a flood API response: daily river discharge as forecasts valid at the start
/// of each local day.
pub fn parse_flood(body: &[u8]) -> Result<Decoded, OpenMeteoError> {
    parse(body, "daily", &DAILY_FLOOD)
}

fn parse(body: &[u8], block: &str, variables: &[Variable]) -> Result<Decoded, OpenMeteoError> {
    let root: Value = serde_json::from_slice(body).map_err(|e| OpenMeteoError::Json(e.to_string()))?;
    if root.get("error").and_then(Value::as_bool) == Some(true) {
        let reason = root
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        return Err(OpenMeteoError::Api(reason.chars().take(300).collect()));
    }
    let locations: Vec<&Value> = match &root {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    let mut out = Decoded::new(SampleKind::Forecast);
    for (index, loc) in locations.into_iter().enumerate() {
        let err = |reason: String| OpenMeteoError::Location { index, reason };
        let Value::Object(loc) = loc else {
            return Err(err("is not a JSON object".into()));
        };
        let offset = match loc.get("utc_offset_seconds") {
            None => 0,
            Some(v) => v
                .as_i64()
                .filter(|s| s.abs() <= 18 * 3600)
                .ok_or_else(|| err(format!("utc_offset_seconds {v} is not an offset in seconds")))?,
        };
        let Some(Value::Object(series)) = loc.get(block) else {
            return Err(err(format!("has no {block:?} block (request {block}=...)")));
        };
        let units_of = loc.get(&format!("{block}_units")).and_then(Value::as_object);
        let times = times(series, units_of, offset).map_err(|r| err(format!("{block}.time: {r}")))?;
        let point = index.to_string();
        let mut found = false;
        for var in variables {
            let Some((name, Value::Array(values))) =
                var.names.iter().find_map(|n| series.get(*n).map(|v| (*n, v)))
            else {
                continue;
            };
            found = true;
            let field = |i: usize| format!("{point}.{block}.{name}[{i}]");
            if values.len() != times.len() {
                return Err(err(format!(
                    "{block}.{name} has {} values for {} times",
                    values.len(),
                    times.len()
                )));
            }
            let unit = units_of
                .and_then(|u| u.get(name))
                .and_then(Value::as_str)
                .unwrap_or(var.parameter.unit());
            for (i, (v, at)) in values.iter().zip(&times).enumerate() {
                if v.is_null() {
                    out.no_data += 1;
                    continue;
                }
                let Some(raw) = number(v) else {
                    out.errors.push(RowError {
                        field: field(i),
                        detail: format!("{v} is not a number"),
                    });
                    continue;
                };
                match (var.convert)(raw, unit) {
                    Some(value) => out.samples.push(Sample {
                        point: point.clone(),
                        parameter: var.parameter,
                        value,
                        at: *at,
                    }),
                    None => {
                        out.errors.push(RowError {
                            field: format!("{point}.{block}_units.{name}"),
                            detail: format!("unit {unit:?} cannot be converted to {}", var.parameter.unit()),
                        });
                        break;
                    }
                }
            }
        }
        if !found {
            let wanted: Vec<&str> = variables.iter().map(|v| v.names[0]).collect();
            return Err(err(format!("{block} holds none of {}", wanted.join(", "))));
        }
    }
    Ok(out)
}

/// The block's times in UTC: ISO 8601 local times (`2024-07-02T00:00` or, for daily
/// blocks, `2024-07-02`) shifted by the offset, or Unix seconds.
fn times(
    series: &Map<String, Value>,
    units_of: Option<&Map<String, Value>>,
    offset: i64,
) -> Result<Vec<DateTime<Utc>>, String> {
    let Some(Value::Array(raw)) = series.get("time") else {
        return Err("missing or not an array".into());
    };
    let unixtime = units_of.and_then(|u| u.get("time")).and_then(Value::as_str) == Some("unixtime");
    raw.iter()
        .enumerate()
        .map(|(i, t)| {
            if unixtime {
                return t
                    .as_i64()
                    .and_then(|s| DateTime::from_timestamp(s, 0))
                    .ok_or_else(|| format!("[{i}] {t} is not a Unix time"));
            }
            let s = t.as_str().ok_or_else(|| format!("[{i}] {t} is not a string"))?;
            let local = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M")
                .or_else(|_| NaiveDate::parse_from_str(s, "%Y-%m-%d").map(|d| d.and_time(Default::default())))
                .map_err(|e| format!("[{i}] {s:?} is not an ISO 8601 local time: {e}"))?;
            Ok(local.and_utc() - Duration::seconds(offset))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/fixtures/feeds/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn the_forecast_fixture_gives_hourly_rain_temperature_wind_and_gusts() {
        let d = parse_forecast(&fixture("open-meteo-forecast-hourly-CONSTRUCTED.json")).unwrap();
        assert_eq!(d.kind, SampleKind::Forecast);
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        let rain: Vec<&Sample> = d
            .samples
            .iter()
            .filter(|s| s.parameter == Parameter::Rainfall)
            .collect();
        // 48 steps, the last 2 null past the model's horizon.
        assert_eq!(rain.len(), 46);
        // Local midnight in Asia/Dhaka (GMT+6) is 18:00 UTC the day before.
        assert_eq!(
            rain[0].at,
            "2024-07-01T18:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        let peak = rain.iter().map(|s| s.value).fold(0.0, f64::max);
        assert_eq!(peak, 41.7);
        let gust = d
            .samples
            .iter()
            .filter(|s| s.parameter == Parameter::WindGustBeaufort)
            .map(|s| s.value)
            .fold(0.0, f64::max);
        assert_eq!(gust, 9.0, "87 km/h gusts are Beaufort 9");
        assert_eq!(
            d.no_data,
            4 * 2,
            "precipitation, temperature, wind and gusts are each null twice"
        );
    }

    #[test]
    fn the_flood_fixture_gives_daily_discharge() {
        let d = parse_flood(&fixture("open-meteo-flood-api-river-discharge.json")).unwrap();
        let v: Vec<(String, f64)> = d.samples.iter().map(|s| (s.at.to_rfc3339(), s.value)).collect();
        assert_eq!(
            v,
            [
                ("2026-10-03T00:00:00+00:00".to_owned(), 593.29),
                ("2026-10-04T00:00:00+00:00".to_owned(), 668.88),
                ("2026-10-05T00:00:00+00:00".to_owned(), 690.83)
            ]
        );
    }

    #[test]
    fn errors_are_specific() {
        let e = parse_forecast(&fixture("open-meteo-error-400-CONSTRUCTED.json")).unwrap_err();
        assert!(
            matches!(&e, OpenMeteoError::Api(r) if r.contains("tempeture_2m")),
            "{e}"
        );
        assert!(matches!(
            parse_forecast(b"{\"hourly\":"),
            Err(OpenMeteoError::Json(_))
        ));
        let short = br#"{"hourly":{"time":["2024-07-02T00:00","2024-07-02T01:00"],"precipitation":[1.0]}}"#;
        let e = parse_forecast(short).unwrap_err();
        assert!(e.to_string().contains("1 values for 2 times"), "{e}");
        let bad_unit = br#"{"hourly_units":{"precipitation":"furlong"},"hourly":{"time":["2024-07-02T00:00"],"precipitation":[1.0]}}"#;
        let d = parse_forecast(bad_unit).unwrap();
        assert!(
            d.samples.is_empty() && d.errors[0].detail.contains("furlong"),
            "{d:?}"
        );
        let e = parse_forecast(br#"{"daily":{}}"#).unwrap_err();
        assert!(e.to_string().contains("no \"hourly\" block"), "{e}");
        let imperial = r#"{"hourly_units":{"time":"unixtime","precipitation":"inch","temperature_2m":"°F"},"hourly":{"time":[1727740800],"precipitation":[1.0],"temperature_2m":[212]}}"#.as_bytes();
        let d = parse_forecast(imperial).unwrap();
        assert_eq!(d.samples[0].value, 25.4);
        assert!((d.samples[1].value - 100.0).abs() < 1e-9);
        assert_eq!(d.samples[0].at.to_rfc3339(), "2024-10-01T00:00:00+00:00");
    }

    #[test]
    fn several_locations_are_points_in_request_order() {
        let one =
            r#"{"utc_offset_seconds":25200,"hourly":{"time":["2026-10-09T07:00"],"precipitation":[5.0]}}"#;
        let body = format!("[{one},{one}]");
        let d = parse_forecast(body.as_bytes()).unwrap();
        let points: Vec<&str> = d.samples.iter().map(|s| s.point.as_str()).collect();
        assert_eq!(points, ["0", "1"]);
        assert_eq!(d.samples[0].at.to_rfc3339(), "2026-10-09T00:00:00+00:00");
    }
}
