//! A duty officer's draft as JSON: read with every faulty field named at once, and
//! written back in one canonical shape (what a warning stores).
//!
//! Fields: `hazard`, `communes` (codes), `headline` and `description` are required;
//! `risk_level` (1-5), `class` (`emergency`, `priority`, `normal`; default by level),
//! `instruction`, `status` (`Actual`, `Exercise`, `Test`; default `Actual`), `effective`
//! and `expires` (RFC 3339), `valid_minutes` (default 360, used when `expires` is not
//! given) and `escalation` (`{"steps": 1|2, "reason": "..."}`, Decision 18 Art. 4) are
//! optional.

use chrono::{DateTime, Duration, Utc};
use desk::compose::{Draft, Escalation};
use domain::{AlertStatus, CommuneCode, Hazard, MessageClass, RiskLevel};
use serde_json::{Value, json};

use crate::error::{ApiError, FieldError};

/// The longest a draft may stay in force: a week.
pub const MAX_VALID_MINUTES: i64 = 7 * 24 * 60;
/// Longest texts, in characters: a CAP headline is meant to be short; the rest is what a
/// loudspeaker reads out in a few minutes.
pub const MAX_HEADLINE: usize = 160;
pub const MAX_DESCRIPTION: usize = 4000;
pub const MAX_INSTRUCTION: usize = 2000;
pub const MAX_REASON: usize = 500;

/// Reads a draft. Unknown fields are refused, so that a misspelt one is not ignored.
pub fn parse_draft(v: &Value, known: &[CommuneCode]) -> Result<Draft, ApiError> {
    let mut errors = Vec::new();
    let mut fail = |field: &str, detail: String| {
        errors.push(FieldError {
            field: field.to_owned(),
            detail,
        })
    };
    let Some(obj) = v.as_object() else {
        return Err(ApiError::unprocessable("body", "the draft must be a JSON object"));
    };
    for k in obj.keys() {
        // A polygon gets its own answer below.
        if !FIELDS.contains(&k.as_str()) && k != "polygon" && k != "area" {
            fail(
                k,
                format!("unknown field {k:?}; fields are {}", FIELDS.join(", ")),
            );
        }
    }
    let text = |name: &str| {
        v.get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or_default()
    };
    let hazard = Hazard::from_code(text("hazard"));
    if hazard.is_none() {
        fail(
            "hazard",
            format!(
                "hazard {:?} is not a hazard code such as \"flood\"",
                text("hazard")
            ),
        );
    }
    let risk_level = match v.get("risk_level") {
        None | Some(Value::Null) => None,
        Some(l) => {
            let level = l
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .and_then(RiskLevel::new);
            if level.is_none() {
                fail("risk_level", format!("risk_level {l} must be 1 to 5"));
            }
            level
        }
    };
    let class = match v.get("class") {
        None | Some(Value::Null) => None,
        Some(c) => {
            let class = c.as_str().and_then(MessageClass::from_code);
            if class.is_none() {
                fail(
                    "class",
                    format!("class {c} must be emergency, priority or normal"),
                );
            }
            class
        }
    };
    let status = match v.get("status") {
        None | Some(Value::Null) => Some(AlertStatus::Actual),
        Some(s) => s.as_str().and_then(AlertStatus::from_code),
    };
    if status.is_none() {
        fail("status", "status must be Actual, Exercise or Test".into());
    }
    let mut communes = Vec::new();
    match v.get("communes").and_then(Value::as_array) {
        Some(list) if list.len() > known.len() => fail(
            "communes",
            format!("{} communes listed; the province has {}", list.len(), known.len()),
        ),
        Some(list) if !list.is_empty() => {
            for (i, c) in list.iter().enumerate() {
                match c.as_str().map(CommuneCode::new) {
                    Some(Ok(code)) if known.contains(&code) => {
                        if !communes.contains(&code) {
                            communes.push(code)
                        }
                    }
                    _ => fail(
                        &format!("communes[{i}]"),
                        format!("{} is not a commune code of this province", shorten(c)),
                    ),
                }
            }
        }
        _ => fail("communes", "communes must list at least one commune code".into()),
    }
    for (field, max) in [
        ("headline", MAX_HEADLINE),
        ("description", MAX_DESCRIPTION),
        ("instruction", MAX_INSTRUCTION),
        ("headline_en", MAX_HEADLINE),
        ("description_en", MAX_DESCRIPTION),
        ("instruction_en", MAX_INSTRUCTION),
    ] {
        let optional = field == "instruction" || field.ends_with("_en");
        match v.get(field) {
            None | Some(Value::Null) if optional => {}
            Some(Value::String(s)) if s.chars().count() > max => fail(
                field,
                format!("{field} has {} characters; at most {max}", s.chars().count()),
            ),
            Some(Value::String(s)) if !s.trim().is_empty() || field.starts_with("instruction") => {}
            Some(Value::String(_)) | None | Some(Value::Null) => fail(field, format!("{field} is required")),
            Some(other) => fail(field, format!("{field} must be a string, not {other}")),
        }
    }
    let mut time = |name: &str| match v.get(name) {
        None | Some(Value::Null) => None,
        Some(t) => match t.as_str().map(DateTime::parse_from_rfc3339) {
            Some(Ok(t)) => Some(t.with_timezone(&Utc)),
            _ => {
                fail(name, format!("{name} {} is not an RFC 3339 time", shorten(t)));
                None
            }
        },
    };
    let effective = time("effective");
    let expires = time("expires");
    if let (Some(e), Some(x)) = (effective, expires)
        && x <= e
    {
        fail("expires", format!("expires {x} must be after effective {e}"));
    }
    let valid_minutes = match v.get("valid_minutes") {
        None | Some(Value::Null) => 360,
        Some(m) => match m.as_i64().filter(|m| (1..=MAX_VALID_MINUTES).contains(m)) {
            Some(m) => m,
            None => {
                fail(
                    "valid_minutes",
                    format!("valid_minutes {} must be 1 to {MAX_VALID_MINUTES}", shorten(m)),
                );
                360
            }
        },
    };
    let sms = match v.get("channels") {
        None | Some(Value::Null) => true,
        Some(Value::Array(list)) => {
            let names: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
            let known = names.len() == list.len() && names.iter().all(|c| ["loudspeaker", "sms"].contains(c));
            if !known || !names.contains(&"loudspeaker") {
                fail(
                    "channels",
                    "channels must be [\"loudspeaker\"] or [\"loudspeaker\", \"sms\"]: loudspeakers carry every warning, and SMS reaches officials where they cannot".into(),
                );
            }
            names.contains(&"sms")
        }
        Some(other) => {
            fail(
                "channels",
                format!("channels must be a list, not {}", shorten(other)),
            );
            true
        }
    };
    if v.get("polygon").is_some() || v.get("area").is_some() {
        fail(
            "polygon",
            "target communes by code: canhbao has no commune boundaries to resolve a polygon against".into(),
        );
    }
    let has = |name: &str| !text(name).is_empty();
    if has("headline_en") != has("description_en") || (has("instruction_en") && !has("headline_en")) {
        fail(
            "headline_en",
            "an English text needs headline_en and description_en together".into(),
        );
    }
    let english = has("headline_en").then(|| domain::Translation {
        headline: text("headline_en").to_owned(),
        description: text("description_en").to_owned(),
        instruction: text("instruction_en").to_owned(),
    });
    let escalation = match v.get("escalation") {
        None | Some(Value::Null) => None,
        Some(e) => {
            let steps = e
                .get("steps")
                .and_then(Value::as_u64)
                .filter(|s| (1..=2).contains(s));
            let reason = e
                .get("reason")
                .and_then(Value::as_str)
                .map(str::trim)
                .unwrap_or_default();
            if steps.is_none() {
                fail(
                    "escalation.steps",
                    "escalation.steps must be 1 or 2 (Decision 18 Art. 4)".into(),
                );
            }
            if reason.is_empty() || reason.chars().count() > MAX_REASON {
                fail(
                    "escalation.reason",
                    format!("escalation.reason is required, at most {MAX_REASON} characters"),
                );
            }
            if risk_level.is_none() {
                fail("escalation", "an escalation needs a risk_level to raise".into());
            }
            steps.map(|s| Escalation {
                steps: u8::try_from(s).unwrap_or(1),
                reason: reason.to_owned(),
            })
        }
    };
    match (hazard, status) {
        (Some(hazard), Some(status)) if errors.is_empty() => Ok(Draft {
            hazard,
            risk_level,
            class,
            communes,
            headline: text("headline").to_owned(),
            description: text("description").to_owned(),
            instruction: text("instruction").to_owned(),
            status,
            effective,
            expires,
            valid_for: Duration::minutes(valid_minutes),
            escalation,
            english,
            sms,
        }),
        _ => Err(invalid(errors)),
    }
}

const FIELDS: [&str; 16] = [
    "channels",
    "headline_en",
    "description_en",
    "instruction_en",
    "hazard",
    "risk_level",
    "class",
    "communes",
    "headline",
    "description",
    "instruction",
    "status",
    "effective",
    "expires",
    "valid_minutes",
    "escalation",
];

/// A 422 naming every fault, the first in `field` and `detail`.
pub fn invalid(errors: Vec<FieldError>) -> ApiError {
    let first = errors.first().cloned().unwrap_or(FieldError {
        field: "body".into(),
        detail: "invalid".into(),
    });
    ApiError::unprocessable(first.field, first.detail).with_errors(errors)
}

/// A value quoted in an error, cut to 60 characters (a hostile value is not echoed whole).
fn shorten(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}...", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

/// The draft in the shape [`parse_draft`] reads.
pub fn draft_json(d: &Draft) -> Value {
    json!({
        "hazard": d.hazard.code(),
        "risk_level": d.risk_level.map(RiskLevel::get),
        "class": d.class.map(MessageClass::code),
        "communes": d.communes.iter().map(CommuneCode::as_str).collect::<Vec<_>>(),
        "headline": d.headline,
        "description": d.description,
        "instruction": d.instruction,
        "status": d.status.code(),
        "effective": d.effective.map(|t| t.to_rfc3339()),
        "expires": d.expires.map(|t| t.to_rfc3339()),
        "valid_minutes": d.valid_for.num_minutes(),
        "escalation": d.escalation.as_ref().map(|e| json!({"steps": e.steps, "reason": e.reason})),
        "headline_en": d.english.as_ref().map(|e| &e.headline),
        "description_en": d.english.as_ref().map(|e| &e.description),
        "instruction_en": d.english.as_ref().map(|e| &e.instruction),
        "channels": if d.sms { json!(["loudspeaker", "sms"]) } else { json!(["loudspeaker"]) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn communes() -> Vec<CommuneCode> {
        vec![
            CommuneCode::new("06385").unwrap(),
            CommuneCode::new("05977").unwrap(),
        ]
    }

    #[test]
    fn a_draft_survives_its_canonical_form() {
        let v = json!({"hazard": "flood", "risk_level": 2, "communes": ["06385", "06385"],
            "headline": " Lũ ", "description": "Nước lên", "expires": "2026-12-01T00:00:00+07:00",
            "escalation": {"steps": 1, "reason": "mưa lớn cùng lũ"},
            "headline_en": "Flood", "description_en": "Water rising."});
        let d = parse_draft(&v, &communes()).unwrap();
        assert_eq!(d.communes.len(), 1);
        assert_eq!(d.headline, "Lũ");
        assert_eq!(parse_draft(&draft_json(&d), &communes()).unwrap(), d);
    }

    #[test]
    fn every_fault_is_named() {
        let v = json!({"hazard": "lava", "risk_level": 9, "communes": ["99999", "' OR 1=1 --"],
            "headline": "x".repeat(161), "description": "", "colour": "red",
            "effective": "2026-12-02T00:00:00Z", "expires": "2026-12-01T00:00:00Z",
            "escalation": {"steps": 3}});
        let e = parse_draft(&v, &communes()).unwrap_err();
        let fields: Vec<&str> = e.errors.iter().map(|f| f.field.as_str()).collect();
        for f in [
            "colour",
            "headline",
            "description",
            "hazard",
            "risk_level",
            "communes[0]",
            "communes[1]",
            "expires",
            "escalation.steps",
            "escalation.reason",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        assert_eq!(e.status, axum::http::StatusCode::UNPROCESSABLE_ENTITY);
    }
}
