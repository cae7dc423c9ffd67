//! Pure decoders for USGS Water Data, a second provider of water level and discharge:
//! the OGC API (`api.waterdata.usgs.gov/ogcapi/v0/collections/continuous/items`, and
//! `latest-continuous` in the same shape) and the legacy NWIS instantaneous values
//! (`waterservices.usgs.gov/nwis/iv/?format=json`, deprecated by USGS).
//!
//! Gage height (parameter 00065) becomes `water_level` and discharge (00060) becomes
//! `discharge`; other parameters are counted as no data. Feet become metres and ft³/s
//! m³/s; -999999 (NWIS's `noDataValue`) and nulls are no data. Points are the monitoring
//! location ids (`USGS-01491000`) in both APIs, so one `points` mapping serves either.
//! Gage height is on the gauge's own datum: the point mapping adds the offset to the
//! national datum.

use chrono::{DateTime, Utc};
use domain::{Parameter, units};
use serde_json::Value;

use crate::hydromet::{Decoded, Sample, SampleKind, number};
use crate::station::RowError;

/// NWIS's marker for "no value".
pub const NO_DATA: f64 = -999_999.0;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsgsError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("not a GeoJSON FeatureCollection (OGC API items)")]
    NotCollection,
    #[error("no value.timeSeries array (NWIS IV JSON)")]
    NotTimeSeries,
    #[error("{at}: {reason}")]
    Series { at: String, reason: String },
}

fn parameter(code: &str) -> Option<Parameter> {
    match code {
        "00065" => Some(Parameter::WaterLevel),
        "00060" => Some(Parameter::Discharge),
        _ => None,
    }
}

fn convert(parameter: Parameter, value: f64, unit: &str) -> Option<f64> {
    match parameter {
        Parameter::WaterLevel => units::length_to_m(value, unit),
        Parameter::Discharge => units::discharge_to_m3_s(value, unit),
        _ => None,
    }
}

fn time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("time {s:?} is not RFC 3339 with an offset: {e}"))
}

/// What a value's series says about it.
#[derive(Clone, Copy)]
struct Series<'a> {
    point: &'a str,
    parameter: Parameter,
    unit: &'a str,
    no_data: f64,
}

/// Adds one raw value to `out`: no data, refused, or a converted sample.
fn push(out: &mut Decoded, field: String, series: &Series<'_>, raw: &Value, at: &str) {
    let Series {
        point,
        parameter,
        unit,
        no_data,
    } = *series;
    if raw.is_null() {
        out.no_data += 1;
        return;
    }
    let Some(v) = number(raw) else {
        out.errors.push(RowError {
            field: format!("{field}.value"),
            detail: format!("{raw} is not a number"),
        });
        return;
    };
    if v == no_data || v == NO_DATA {
        out.no_data += 1;
        return;
    }
    let at = match time(at) {
        Ok(t) => t,
        Err(detail) => {
            out.errors.push(RowError {
                field: format!("{field}.time"),
                detail,
            });
            return;
        }
    };
    match convert(parameter, v, unit) {
        Some(value) => out.samples.push(Sample {
            point: point.to_owned(),
            parameter,
            value,
            at,
        }),
        None => out.errors.push(RowError {
            field: format!("{field}.unit"),
            detail: format!("unit {unit:?} cannot be converted to {}", parameter.unit()),
        }),
    }
}

fn parse_json(body: &[u8]) -> Result<Value, UsgsError> {
    serde_json::from_slice(body).map_err(|e| UsgsError::Json(e.to_string()))
}

/// Decodes OGC API `continuous` (or `latest-continuous`) items.
pub fn parse_ogc(body: &[u8]) -> Result<Decoded, UsgsError> {
    let root = parse_json(body)?;
    let Some(Value::Array(features)) = root.get("features") else {
        return Err(UsgsError::NotCollection);
    };
    let mut out = Decoded::new(SampleKind::Observed);
    for (i, f) in features.iter().enumerate() {
        let at = format!("features[{i}]");
        let Some(p) = f.get("properties").filter(|p| p.is_object()) else {
            return Err(UsgsError::Series {
                at,
                reason: "has no properties object".into(),
            });
        };
        let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or_default();
        let Some(parameter) = parameter(s("parameter_code")) else {
            out.no_data += 1;
            continue;
        };
        let point = s("monitoring_location_id");
        if point.is_empty() {
            out.errors.push(RowError {
                field: format!("{at}.monitoring_location_id"),
                detail: "is missing".into(),
            });
            continue;
        }
        let raw = p.get("value").unwrap_or(&Value::Null);
        let series = Series {
            point,
            parameter,
            unit: s("unit_of_measure"),
            no_data: NO_DATA,
        };
        push(&mut out, at, &series, raw, s("time"));
    }
    Ok(out)
}

/// Decodes legacy NWIS instantaneous values (WaterML as JSON).
pub fn parse_iv(body: &[u8]) -> Result<Decoded, UsgsError> {
    let root = parse_json(body)?;
    let Some(Value::Array(series)) = root.get("value").and_then(|v| v.get("timeSeries")) else {
        return Err(UsgsError::NotTimeSeries);
    };
    let mut out = Decoded::new(SampleKind::Observed);
    for (i, ts) in series.iter().enumerate() {
        let at = format!("timeSeries[{i}]");
        let err = |reason: &str| UsgsError::Series {
            at: at.clone(),
            reason: reason.into(),
        };
        let site = ts
            .pointer("/sourceInfo/siteCode/0")
            .ok_or_else(|| err("has no sourceInfo.siteCode"))?;
        let code = site.get("value").and_then(Value::as_str).unwrap_or_default();
        let agency = site.get("agencyCode").and_then(Value::as_str).unwrap_or("USGS");
        if code.is_empty() {
            return Err(err("sourceInfo.siteCode has no value"));
        }
        let point = format!("{agency}-{code}");
        let variable = ts.get("variable").ok_or_else(|| err("has no variable"))?;
        let var_code = variable
            .pointer("/variableCode/0/value")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(parameter) = parameter(var_code) else {
            out.no_data += 1;
            continue;
        };
        let unit = variable
            .pointer("/unit/unitCode")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let no_data = variable
            .get("noDataValue")
            .and_then(Value::as_f64)
            .unwrap_or(NO_DATA);
        let Some(Value::Array(blocks)) = ts.get("values") else {
            return Err(err("has no values array"));
        };
        let series = Series {
            point: &point,
            parameter,
            unit,
            no_data,
        };
        for (b, block) in blocks.iter().enumerate() {
            let Some(Value::Array(values)) = block.get("value") else {
                continue;
            };
            for (j, v) in values.iter().enumerate() {
                let raw = v.get("value").unwrap_or(&Value::Null);
                let when = v.get("dateTime").and_then(Value::as_str).unwrap_or_default();
                let field = format!("{at}.values[{b}].value[{j}]");
                push(&mut out, field, &series, raw, when);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/fixtures/feeds/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn ogc_items_convert_feet_and_cubic_feet() {
        let d = parse_ogc(&fixture("usgs-ogc-latest-continuous.json")).unwrap();
        assert_eq!(d.kind, SampleKind::Observed);
        assert_eq!(d.samples.len(), 2);
        let level = &d.samples[0];
        assert_eq!(
            (level.point.as_str(), level.parameter),
            ("USGS-06904500", Parameter::WaterLevel)
        );
        assert!((level.value - 1.59 * 0.3048).abs() < 1e-12);
        assert_eq!(level.at.to_rfc3339(), "2026-08-07T18:45:00+00:00");
        let flow = &d.samples[1];
        assert_eq!(flow.parameter, Parameter::Discharge);
        assert!((flow.value - 535.0 * 0.028_316_846_592).abs() < 1e-9);
    }

    #[test]
    fn iv_series_give_both_sites_and_both_parameters() {
        let d = parse_iv(&fixture("usgs-waterservices-iv-discharge-gageheight.json")).unwrap();
        assert_eq!(d.samples.len(), 20, "4 series of 5 values");
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        let first = &d.samples[0];
        assert_eq!(
            (first.point.as_str(), first.parameter),
            ("USGS-01491000", Parameter::Discharge)
        );
        assert!((first.value - 974.0 * 0.028_316_846_592).abs() < 1e-9);
        // 00:00 EST is 05:00 UTC.
        assert_eq!(first.at.to_rfc3339(), "2019-02-14T05:00:00+00:00");
    }

    #[test]
    fn no_data_and_bad_values_are_told_apart() {
        let body = br#"{"type":"FeatureCollection","features":[
            {"properties":{"monitoring_location_id":"USGS-1","parameter_code":"00065","time":"2026-10-09T00:00:00+00:00","value":"-999999","unit_of_measure":"ft"}},
            {"properties":{"monitoring_location_id":"USGS-1","parameter_code":"00065","time":"2026-10-09T00:15:00+00:00","value":null,"unit_of_measure":"ft"}},
            {"properties":{"monitoring_location_id":"USGS-1","parameter_code":"00010","time":"2026-10-09T00:15:00+00:00","value":"12","unit_of_measure":"degC"}},
            {"properties":{"monitoring_location_id":"USGS-1","parameter_code":"00065","time":"2026-10-09T00:30:00+00:00","value":"abc","unit_of_measure":"ft"}},
            {"properties":{"monitoring_location_id":"USGS-1","parameter_code":"00065","time":"yesterday","value":"1.0","unit_of_measure":"ft"}},
            {"properties":{"monitoring_location_id":"USGS-1","parameter_code":"00065","time":"2026-10-09T00:45:00+00:00","value":"1.0","unit_of_measure":"furlong"}}
        ]}"#;
        let d = parse_ogc(body).unwrap();
        assert!(d.samples.is_empty());
        assert_eq!(d.no_data, 3);
        let fields: Vec<&str> = d.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["features[3].value", "features[4].time", "features[5].unit"]
        );
        assert_eq!(parse_ogc(b"{}"), Err(UsgsError::NotCollection));
        assert_eq!(parse_iv(b"{\"value\":{}}"), Err(UsgsError::NotTimeSeries));
        assert!(matches!(parse_iv(b"[1,"), Err(UsgsError::Json(_))));
    }
}
