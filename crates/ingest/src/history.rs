//! A pure parser for historical observation files, for backtesting (`canhbao replay`):
//! CSV with the header `station,parameter,value,observed_at` (an optional `unit` column
//! is checked), or a JSON array of objects with those fields.

use chrono::{DateTime, Utc};
use domain::StationId;
use rules::replay::HistoricReading;
use rules::series::Param;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}:{line}: {reason}")]
pub struct HistoryError {
    pub source_name: String,
    /// 1-based line (CSV) or item (JSON) number.
    pub line: usize,
    pub reason: String,
}

fn reading(
    station: &str,
    parameter: &str,
    value: f64,
    unit: Option<&str>,
    at: &str,
) -> Result<HistoricReading, String> {
    let station = StationId::new(station).map_err(|e| e.to_string())?;
    let param = Param::from_code(parameter).ok_or_else(|| format!("parameter {parameter:?} is not known"))?;
    if let Some(u) = unit.filter(|u| !u.is_empty())
        && u != param.unit()
    {
        return Err(format!(
            "unit {u:?} is wrong for {parameter}: expected {:?}",
            param.unit()
        ));
    }
    if !value.is_finite() {
        return Err("value is not a finite number".into());
    }
    let at = DateTime::parse_from_rfc3339(at)
        .map_err(|e| format!("observed_at {at:?}: {e}"))?
        .with_timezone(&Utc);
    Ok(HistoricReading {
        station,
        param,
        at,
        value,
    })
}

/// Parses CSV history.
pub fn parse_csv(source_name: &str, text: &str) -> Result<Vec<HistoricReading>, HistoryError> {
    let err = |line: usize, reason: String| HistoryError {
        source_name: source_name.to_owned(),
        line,
        reason,
    };
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
    let Some((hl, header)) = lines.next() else {
        return Ok(Vec::new());
    };
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    let col = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(cs), Some(cp), Some(cv), Some(ct)) =
        (col("station"), col("parameter"), col("value"), col("observed_at"))
    else {
        return Err(err(
            hl + 1,
            "the header must name station, parameter, value and observed_at".into(),
        ));
    };
    let cu = col("unit");
    let mut out = Vec::new();
    for (i, line) in lines {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() != cols.len() {
            return Err(err(
                i + 1,
                format!("{} fields, the header has {}", f.len(), cols.len()),
            ));
        }
        let value: f64 = f[cv]
            .parse()
            .map_err(|_| err(i + 1, format!("value {:?} is not a number", f[cv])))?;
        out.push(reading(f[cs], f[cp], value, cu.map(|c| f[c]), f[ct]).map_err(|r| err(i + 1, r))?);
    }
    Ok(out)
}

/// Parses JSON history (an array of observation objects, as `POST /api/v1/observations`).
pub fn parse_json(source_name: &str, text: &str) -> Result<Vec<HistoricReading>, HistoryError> {
    let err = |line: usize, reason: String| HistoryError {
        source_name: source_name.to_owned(),
        line,
        reason,
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| err(e.line(), e.to_string()))?;
    let items = value
        .as_array()
        .ok_or_else(|| err(1, "expected a JSON array of observations".into()))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let s = |k: &str| item.get(k).and_then(|v| v.as_str());
            let (Some(station), Some(parameter), Some(at)) = (s("station"), s("parameter"), s("observed_at"))
            else {
                return Err(err(
                    i + 1,
                    "station, parameter and observed_at must be strings".into(),
                ));
            };
            let value = item
                .get("value")
                .and_then(|v| v.as_f64())
                .ok_or_else(|| err(i + 1, "value must be a number".into()))?;
            reading(station, parameter, value, s("unit"), at).map_err(|r| err(i + 1, r))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_json_history_parse_and_faults_name_their_line() {
        let csv =
            "station,parameter,value,unit,observed_at\nHUULUNG,water_level,17.37,m,2025-10-08T01:00:00Z\n";
        let r = parse_csv("h.csv", csv).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].value, 17.37);
        let bad =
            "station,parameter,value,unit,observed_at\nHUULUNG,water_level,17.37,cm,2025-10-08T01:00:00Z\n";
        let e = parse_csv("h.csv", bad).unwrap_err();
        assert_eq!((e.line, e.to_string().contains("unit \"cm\"")), (2, true), "{e}");
        assert!(parse_csv("h.csv", "a,b\n1,2\n").is_err());
        let json = r#"[{"station":"HUULUNG","parameter":"water_level","value":19.4,"unit":"m","observed_at":"2025-10-08T02:00:00Z"}]"#;
        assert_eq!(parse_json("h.json", json).unwrap().len(), 1);
        let e = parse_json(
            "h.json",
            r#"[{"station":"HUULUNG","parameter":"water_level","value":"x","observed_at":"t"}]"#,
        )
        .unwrap_err();
        assert_eq!(e.line, 1);
    }
}
