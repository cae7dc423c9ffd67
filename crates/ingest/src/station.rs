//! canhbao's own station formats (`docs/station-formats.md`): JSON (one observation or an
//! array) and CSV. Pure parsers that check every row and report every bad one, each with
//! the field at fault (`[2].value`, `line 4.unit`), so that a batch is accepted or
//! refused as a whole.

use chrono::{DateTime, Utc};
use domain::{Observation, StationId};
use serde_json::{Map, Value};

/// One refused row: the field at fault and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub field: String,
    pub detail: String,
}

impl RowError {
    fn new(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            detail: detail.into(),
        }
    }
}

const FIELDS: [&str; 5] = ["station", "parameter", "value", "unit", "observed_at"];

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn string_field<'a>(obj: &'a Map<String, Value>, at: &str, name: &str) -> Result<&'a str, RowError> {
    match obj.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(RowError::new(
            format!("{at}{name}"),
            format!("{name} must be a string, not {}", kind(other)),
        )),
        None => Err(RowError::new(
            format!("{at}{name}"),
            format!("{name} is required"),
        )),
    }
}

/// Checks one observation's fields, whatever format they came in.
fn observation(
    at: &str,
    station: &str,
    parameter: &str,
    value: f64,
    unit: &str,
    observed_at: &str,
    now: DateTime<Utc>,
) -> Result<Observation, RowError> {
    let station =
        StationId::new(station).map_err(|e| RowError::new(format!("{at}station"), e.to_string()))?;
    let observed_at = DateTime::parse_from_rfc3339(observed_at)
        .map_err(|e| {
            RowError::new(
                format!("{at}observed_at"),
                format!(
                    "observed_at {} is not an RFC 3339 time with an offset: {e}",
                    domain::quote(observed_at)
                ),
            )
        })?
        .with_timezone(&Utc);
    Observation::new(station, parameter, value, unit, observed_at, now)
        .map_err(|e| RowError::new(format!("{at}{}", e.field()), e.to_string()))
}

fn json_item(item: &Value, at: &str, now: DateTime<Utc>) -> Result<Observation, RowError> {
    let root = if at.is_empty() {
        "body".to_owned()
    } else {
        at.trim_end_matches('.').to_owned()
    };
    let obj = item.as_object().ok_or_else(|| {
        RowError::new(
            root,
            format!("an observation must be an object, not {}", kind(item)),
        )
    })?;
    if let Some(extra) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(RowError::new(
            format!("{at}{extra}"),
            format!(
                "unknown field {}; expected {}",
                domain::quote(extra),
                FIELDS.join(", ")
            ),
        ));
    }
    let station = string_field(obj, at, "station")?;
    let parameter = string_field(obj, at, "parameter")?;
    let value = match obj.get("value") {
        Some(Value::Number(n)) => n
            .as_f64()
            .ok_or_else(|| RowError::new(format!("{at}value"), "value is not representable as a number"))?,
        Some(other) => {
            return Err(RowError::new(
                format!("{at}value"),
                format!("value must be a number, not {}", kind(other)),
            ));
        }
        None => return Err(RowError::new(format!("{at}value"), "value is required")),
    };
    let unit = string_field(obj, at, "unit")?;
    let observed_at = string_field(obj, at, "observed_at")?;
    observation(at, station, parameter, value, unit, observed_at, now)
}

fn collect(
    results: impl Iterator<Item = Result<Observation, RowError>>,
) -> Result<Vec<Observation>, Vec<RowError>> {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for r in results {
        match r {
            Ok(o) => ok.push(o),
            Err(e) => bad.push(e),
        }
    }
    if bad.is_empty() { Ok(ok) } else { Err(bad) }
}

fn size_check(n: usize, max_batch: usize) -> Result<(), Vec<RowError>> {
    if n == 0 {
        return Err(vec![RowError::new("body", "no observation in the body")]);
    }
    if n > max_batch {
        return Err(vec![RowError::new(
            "body",
            format!("{n} observations in one batch; at most {max_batch}"),
        )]);
    }
    Ok(())
}

/// One row of a batch: where it is (`[2].`, `line 4.`, or empty for a lone object: the
/// prefix of its fields' names) and what it gave.
pub type Row = (String, Result<Observation, RowError>);

/// Parses the JSON format: one observation object, or an array of them.
pub fn parse_json(
    body: &[u8],
    now: DateTime<Utc>,
    max_batch: usize,
) -> Result<Vec<Observation>, Vec<RowError>> {
    collect(json_rows(body, now, max_batch)?.into_iter().map(|(_, r)| r))
}

/// As [`parse_json`], every row on its own, so that a caller can check more of each good
/// row (its station) and name every bad row at once. `Err` when the body as a whole is
/// refused.
pub fn json_rows(body: &[u8], now: DateTime<Utc>, max_batch: usize) -> Result<Vec<Row>, Vec<RowError>> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| vec![RowError::new("body", format!("the body is not valid JSON: {e}"))])?;
    match &value {
        Value::Array(items) => {
            size_check(items.len(), max_batch)?;
            Ok(items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let at = format!("[{i}].");
                    let r = json_item(item, &at, now);
                    (at, r)
                })
                .collect())
        }
        _ => Ok(vec![(String::new(), json_item(&value, "", now))]),
    }
}

/// Parses the CSV format: a header naming `station,parameter,value,unit,observed_at` (in
/// any order), then one observation per line. `#` starts a comment line.
pub fn parse_csv(
    text: &str,
    now: DateTime<Utc>,
    max_batch: usize,
) -> Result<Vec<Observation>, Vec<RowError>> {
    collect(csv_rows(text, now, max_batch)?.into_iter().map(|(_, r)| r))
}

/// As [`parse_csv`], every row on its own (see [`json_rows`]).
pub fn csv_rows(text: &str, now: DateTime<Utc>, max_batch: usize) -> Result<Vec<Row>, Vec<RowError>> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let Some((hl, header)) = lines.next() else {
        return Err(vec![RowError::new("body", "the file is empty")]);
    };
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    let missing: Vec<&str> = FIELDS.iter().copied().filter(|f| !cols.contains(f)).collect();
    if !missing.is_empty() {
        return Err(vec![RowError::new(
            format!("line {}", hl + 1),
            format!("the header lacks {}", missing.join(", ")),
        )]);
    }
    let col = |name: &str| cols.iter().position(|c| *c == name).unwrap_or(0);
    let (cs, cp, cv, cu, ct) = (
        col("station"),
        col("parameter"),
        col("value"),
        col("unit"),
        col("observed_at"),
    );
    let rows: Vec<(usize, &str)> = lines.collect();
    size_check(rows.len(), max_batch)?;
    Ok(rows
        .into_iter()
        .map(|(i, line)| {
            let at = format!("line {}.", i + 1);
            let row = || {
                let f: Vec<&str> = line.split(',').map(str::trim).collect();
                if f.len() != cols.len() {
                    return Err(RowError::new(
                        format!("line {}", i + 1),
                        format!("{} fields, the header has {}", f.len(), cols.len()),
                    ));
                }
                let value: f64 = f[cv].parse().map_err(|_| {
                    RowError::new(
                        format!("{at}value"),
                        format!("value {} is not a number", domain::quote(f[cv])),
                    )
                })?;
                observation(&at, f[cs], f[cp], value, f[cu], f[ct], now)
            };
            let r = row();
            (at, r)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-10-09T02:00:00Z".parse().unwrap()
    }

    fn fields_of(body: &str) -> Vec<String> {
        parse_json(body.as_bytes(), now(), 100)
            .err()
            .map(|v| v.into_iter().map(|e| e.field).collect())
            .unwrap_or_default()
    }

    const OK: &str = r#"{"station":"HUULUNG","parameter":"water_level","value":19.4,"unit":"m","observed_at":"2026-10-09T01:00:00Z"}"#;

    #[test]
    fn every_malformed_json_row_is_named() {
        assert!(fields_of(OK).is_empty());
        assert!(fields_of(&format!("[{OK},{OK}]")).is_empty());
        let cases = [
            ("{", "body"),
            ("[]", "body"),
            ("42", "body"),
            (
                r#"{"parameter":"water_level","value":1,"unit":"m","observed_at":"2026-10-09T01:00:00Z"}"#,
                "station",
            ),
            (&OK.replace("19.4", "\"19.4\""), "value"),
            (&OK.replace("\"m\"", "\"cm\""), "unit"),
            (&OK.replace("2026-10-09T01:00:00Z", "yesterday"), "observed_at"),
            (
                &OK.replace("2026-10-09T01:00:00Z", "2026-10-09T01:00:00"),
                "observed_at",
            ),
            (&OK.replace("HUULUNG", "huu lung"), "station"),
            (&OK.replace("value", "valeu"), "valeu"),
        ];
        for (body, field) in cases {
            assert_eq!(fields_of(body), vec![field.to_owned()], "{body}");
        }
        let bad_value = OK.replace("19.4", "1e300");
        let bad_unit = OK.replace("\"m\"", "\"ft\"");
        assert_eq!(
            fields_of(&format!("[{OK},{bad_value},{OK},{bad_unit}]")),
            vec!["[1].value", "[3].unit"],
            "every bad row is listed"
        );
        assert_eq!(fields_of(&format!("[{}]", vec![OK; 101].join(","))), vec!["body"]);
    }

    #[test]
    fn csv_rows_parse_and_every_bad_line_is_named() {
        let csv = "# Hữu Lũng\nstation,parameter,value,unit,observed_at\nHUULUNG,water_level,19.4,m,2026-10-09T01:00:00Z\nHUULUNG,rainfall,12.5,mm,2026-10-09T01:00:00Z\n";
        assert_eq!(parse_csv(csv, now(), 100).unwrap().len(), 2);
        let bad = "station,parameter,value,unit,observed_at\nHUULUNG,water_level,x,m,2026-10-09T01:00:00Z\nHUULUNG,water_level,1,cm,2026-10-09T01:00:00Z\nHUULUNG,water_level\n";
        let fields: Vec<String> = parse_csv(bad, now(), 100)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, vec!["line 2.value", "line 3.unit", "line 4"]);
        let e = parse_csv("station,value\n", now(), 100).unwrap_err();
        assert!(
            e[0].detail.contains("lacks parameter, unit, observed_at"),
            "{e:?}"
        );
    }
}
