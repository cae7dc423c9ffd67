//! A pure parser for NWS alerts GeoJSON (`api.weather.gov/alerts`), as a bulletin source.
//! Each feature becomes a CAP alert (the API's properties are CAP's fields), so that the
//! same validation and bulletin mapping apply. Geometry may be a polygon or null.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::cap::{CapAlert, CapArea, CapInfo};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NwsError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("not a GeoJSON FeatureCollection of alerts")]
    NotCollection,
    #[error("feature {index}: {field} {reason}")]
    Feature {
        index: usize,
        field: &'static str,
        reason: String,
    },
}

fn text(p: &Value, field: &str) -> String {
    p.get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn time(index: usize, p: &Value, field: &'static str) -> Result<Option<DateTime<Utc>>, NwsError> {
    match p.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| NwsError::Feature {
                index,
                field,
                reason: format!("{s:?} is not a time: {e}"),
            }),
        Some(other) => Err(NwsError::Feature {
            index,
            field,
            reason: format!("{other} is not a string"),
        }),
    }
}

/// Pairs of `{name: [values]}` as CAP parameters or geocodes.
fn pairs(v: Option<&Value>) -> Vec<(String, String)> {
    let Some(Value::Object(map)) = v else {
        return Vec::new();
    };
    map.iter()
        .flat_map(|(k, vals)| match vals {
            Value::Array(a) => a
                .iter()
                .filter_map(Value::as_str)
                .map(|s| (k.clone(), s.to_owned()))
                .collect(),
            Value::String(s) => vec![(k.clone(), s.clone())],
            _ => Vec::new(),
        })
        .collect()
}

/// Parses a FeatureCollection of NWS alerts.
pub fn parse_nws(bytes: &[u8]) -> Result<Vec<CapAlert>, NwsError> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| NwsError::Json(e.to_string()))?;
    let features = doc
        .get("features")
        .and_then(Value::as_array)
        .ok_or(NwsError::NotCollection)?;
    features
        .iter()
        .enumerate()
        .map(|(index, f)| {
            let p = f.get("properties").ok_or(NwsError::Feature {
                index,
                field: "properties",
                reason: "is missing".into(),
            })?;
            let identifier = match text(p, "identifier") {
                s if !s.is_empty() => s,
                _ => text(p, "id"),
            };
            let sent = time(index, p, "sent")?.ok_or(NwsError::Feature {
                index,
                field: "sent",
                reason: "is missing".into(),
            })?;
            let references = p
                .get("references")
                .and_then(Value::as_array)
                .map(|refs| {
                    refs.iter()
                        .map(|r| {
                            format!(
                                "{},{},{}",
                                text(r, "sender"),
                                text(r, "identifier"),
                                text(r, "sent")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(CapAlert {
                identifier,
                sender: text(p, "sender"),
                sent,
                status: text(p, "status"),
                msg_type: text(p, "messageType"),
                scope: "Public".into(),
                references,
                infos: vec![CapInfo {
                    language: "en-US".into(),
                    event: text(p, "event"),
                    effective: time(index, p, "effective")?,
                    expires: time(index, p, "expires")?,
                    headline: text(p, "headline"),
                    urgency: text(p, "urgency"),
                    severity: text(p, "severity"),
                    certainty: text(p, "certainty"),
                    parameters: pairs(p.get("parameters")),
                    areas: vec![CapArea {
                        area_desc: text(p, "areaDesc"),
                        geocodes: pairs(p.get("geocode")),
                    }],
                }],
                xml: None,
            })
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
    fn nws_alerts_become_cap_alerts_with_references_and_geocodes() {
        let one = parse_nws(&fixture("api-alerts-active-zone-flood-watch.geojson")).unwrap();
        assert_eq!(one.len(), 1);
        let a = &one[0];
        assert_eq!(
            (a.msg_type.as_str(), a.infos[0].event.as_str()),
            ("Update", "Flood Watch")
        );
        assert_eq!(a.references.len(), 4);
        assert!(
            a.references
                .iter()
                .any(|r| r.contains(",NWS-IDP-PROD-3964821-3368352,"))
        );
        assert!(
            a.infos[0].areas[0]
                .geocodes
                .iter()
                .any(|(k, v)| k == "UGC" && v == "ORZ001")
        );
        assert!(a.infos[0].parameters.iter().any(|(k, _)| k == "VTEC"));
        assert!(crate::cap::validate(a, a.sent).iter().all(|f| !f.is_fatal()));
        let two = parse_nws(&fixture("api-alerts-active-zone-flood-watch-second.geojson")).unwrap();
        assert_eq!(two.len(), 2);
    }

    #[test]
    fn malformed_nws_input_is_refused_precisely() {
        assert!(matches!(parse_nws(b"{"), Err(NwsError::Json(_))));
        assert_eq!(parse_nws(b"{\"type\":\"Feature\"}"), Err(NwsError::NotCollection));
        let e = parse_nws(br#"{"features":[{"properties":{"sent":"yesterday"}}]}"#).unwrap_err();
        assert!(
            matches!(
                e,
                NwsError::Feature {
                    index: 0,
                    field: "sent",
                    ..
                }
            ),
            "{e}"
        );
    }
}
