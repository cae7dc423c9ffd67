//! A pure parser for CAP 1.2 messages (OASIS Common Alerting Protocol), keeping what
//! canhbao needs: the message header, and per `<info>` its event, times, parameters and
//! areas with geocodes. Hostile input is refused: any DTD (so no entity expansion and no
//! external entity), unknown entities, and oversized documents.

use chrono::{DateTime, Utc};
use quick_xml::Reader;
use quick_xml::events::Event;

/// Largest CAP document accepted.
pub const MAX_CAP_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapError {
    #[error("the document is {0} bytes; at most {MAX_CAP_BYTES} are accepted")]
    TooLarge(usize),
    #[error("the document declares a DTD; DTDs and entities are refused (XXE protection)")]
    Dtd,
    #[error("unknown entity &{0}; (only the five XML entities and character references are allowed)")]
    Entity(String),
    #[error("malformed XML at byte {position}: {reason}")]
    Xml { position: u64, reason: String },
    #[error("the root element is <{0}>, not a CAP <alert>")]
    NotCap(String),
    #[error("<{0}> is required in a CAP alert")]
    Missing(&'static str),
    #[error("<{element}> {value:?} is not a valid CAP {what}")]
    Invalid {
        element: &'static str,
        value: String,
        what: &'static str,
    },
}

/// One `<area>`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CapArea {
    pub area_desc: String,
    pub geocodes: Vec<(String, String)>,
}

/// One `<info>` block (one language).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CapInfo {
    pub language: String,
    pub event: String,
    pub effective: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
    pub headline: String,
    /// `<urgency>`, `<severity>`, `<certainty>` as the sender wrote them.
    pub urgency: String,
    pub severity: String,
    pub certainty: String,
    pub parameters: Vec<(String, String)>,
    pub areas: Vec<CapArea>,
}

/// A parsed CAP alert.
#[derive(Debug, Clone, PartialEq)]
pub struct CapAlert {
    pub identifier: String,
    pub sender: String,
    pub sent: DateTime<Utc>,
    pub status: String,
    pub msg_type: String,
    pub scope: String,
    /// `sender,identifier,sent` triples, as CAP writes them, split on whitespace.
    pub references: Vec<String>,
    pub infos: Vec<CapInfo>,
    /// The XML document as received, for its signature ([`crate::dsig`]); `None` for a
    /// message that was not XML (NWS JSON).
    pub xml: Option<std::sync::Arc<[u8]>>,
}

fn time(element: &'static str, value: &str) -> Result<DateTime<Utc>, CapError> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| CapError::Invalid {
            element,
            value: value.to_owned(),
            what: "date-time",
        })
}

/// Resolves one of the five XML entities or a character reference; anything else is refused.
pub(crate) fn entity(name: &str) -> Result<String, CapError> {
    let named = match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => None,
    };
    if let Some(c) = named {
        return Ok(c.to_string());
    }
    let code = if let Some(hex) = name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
        u32::from_str_radix(hex, 16).ok()
    } else if let Some(dec) = name.strip_prefix('#') {
        dec.parse().ok()
    } else {
        None
    };
    code.and_then(char::from_u32)
        .map(|c| c.to_string())
        .ok_or_else(|| CapError::Entity(name.to_owned()))
}

/// Parses a CAP 1.2 document.
pub fn parse_cap(bytes: &[u8]) -> Result<CapAlert, CapError> {
    if bytes.len() > MAX_CAP_BYTES {
        return Err(CapError::TooLarge(bytes.len()));
    }
    let mut reader = Reader::from_reader(bytes);
    let mut buf = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut header: Vec<(String, String)> = Vec::new();
    let mut infos: Vec<CapInfo> = Vec::new();
    let mut param: (String, String) = Default::default();
    let xml = |reader: &Reader<&[u8]>, e: &dyn std::fmt::Display| CapError::Xml {
        position: reader.buffer_position(),
        reason: e.to_string(),
    };
    loop {
        let event = reader.read_event_into(&mut buf).map_err(|e| xml(&reader, &e))?;
        match event {
            Event::DocType(_) => return Err(CapError::Dtd),
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if path.is_empty() && name != "alert" {
                    return Err(CapError::NotCap(name));
                }
                match (path.last().map(String::as_str), name.as_str()) {
                    (Some("alert"), "info") => infos.push(CapInfo::default()),
                    (Some("info"), "area") => {
                        if let Some(i) = infos.last_mut() {
                            i.areas.push(CapArea::default());
                        }
                    }
                    (Some("info"), "parameter") | (Some("area"), "geocode") => param = Default::default(),
                    _ => {}
                }
                path.push(name);
                text.clear();
            }
            Event::Empty(e) => {
                if path.is_empty() {
                    return Err(CapError::NotCap(
                        String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                    ));
                }
            }
            Event::Text(t) => text.push_str(&t.decode().map_err(|e| xml(&reader, &e))?),
            Event::CData(t) => text.push_str(&String::from_utf8_lossy(&t)),
            Event::GeneralRef(r) => text.push_str(&entity(&r.decode().map_err(|e| xml(&reader, &e))?)?),
            Event::End(_) => {
                let Some(name) = path.pop() else { break };
                let value = std::mem::take(&mut text).trim().to_owned();
                let parent = path.last().map(String::as_str);
                match (parent, name.as_str()) {
                    (Some("alert"), "info") | (None, _) => {}
                    (Some("alert"), _) => header.push((name, value)),
                    (Some("info"), "parameter") => {
                        if let Some(i) = infos.last_mut() {
                            i.parameters.push(std::mem::take(&mut param));
                        }
                    }
                    (Some("parameter" | "geocode"), "valueName") => param.0 = value,
                    (Some("parameter" | "geocode"), "value") => param.1 = value,
                    (Some("area"), "geocode") => {
                        if let Some(a) = infos.last_mut().and_then(|i| i.areas.last_mut()) {
                            a.geocodes.push(std::mem::take(&mut param));
                        }
                    }
                    (Some("area"), "areaDesc") => {
                        if let Some(a) = infos.last_mut().and_then(|i| i.areas.last_mut()) {
                            a.area_desc = value;
                        }
                    }
                    (Some("info"), field) => {
                        if let Some(i) = infos.last_mut() {
                            match field {
                                "language" => i.language = value,
                                "event" => i.event = value,
                                "headline" => i.headline = value,
                                "urgency" => i.urgency = value,
                                "severity" => i.severity = value,
                                "certainty" => i.certainty = value,
                                "effective" => i.effective = Some(time("effective", &value)?),
                                "expires" => i.expires = Some(time("expires", &value)?),
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
        }
        buf.clear();
    }
    if !path.is_empty() {
        return Err(CapError::Xml {
            position: reader.buffer_position(),
            reason: format!("the document ends inside <{}>", path.join("><")),
        });
    }
    let get = |name: &'static str| {
        header
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
            .ok_or(CapError::Missing(name))
    };
    let one_of = |element: &'static str, value: String, allowed: &[&str], what: &'static str| {
        if allowed.contains(&value.as_str()) {
            Ok(value)
        } else {
            Err(CapError::Invalid { element, value, what })
        }
    };
    let identifier = get("identifier")?;
    let sender = get("sender")?;
    let sent = time("sent", &get("sent")?)?;
    let status = one_of(
        "status",
        get("status")?,
        &["Actual", "Exercise", "System", "Test", "Draft"],
        "status",
    )?;
    let msg_type = one_of(
        "msgType",
        get("msgType")?,
        &["Alert", "Update", "Cancel", "Ack", "Error"],
        "msgType",
    )?;
    let scope = one_of(
        "scope",
        get("scope")?,
        &["Public", "Restricted", "Private"],
        "scope",
    )?;
    let references = get("references")
        .map(|r| r.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    Ok(CapAlert {
        identifier,
        sender,
        sent,
        status,
        msg_type,
        scope,
        references,
        infos,
        xml: Some(bytes.into()),
    })
}

/// A named check of a parsed CAP message, in the manner of Google's CAP validator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule's name, such as `cap.missing-expires`.
    pub rule: &'static str,
    pub detail: String,
}

impl Finding {
    /// Whether the finding makes the message unusable as a bulletin (rather than merely old).
    pub fn is_fatal(&self) -> bool {
        !matches!(self.rule, "cap.stale" | "cap.expired")
    }
}

/// How old a message may be before `cap.stale` flags it.
pub const STALE_AFTER: chrono::Duration = chrono::Duration::days(2);

/// Checks a parsed message at `now`; an empty list means it passes every rule.
pub fn validate(a: &CapAlert, now: DateTime<Utc>) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut push = |rule: &'static str, detail: String| out.push(Finding { rule, detail });
    if matches!(a.msg_type.as_str(), "Update" | "Cancel") && a.references.is_empty() {
        push(
            "cap.update-without-references",
            format!("an {} must reference the messages it changes", a.msg_type),
        );
    }
    if a.msg_type != "Cancel" && a.infos.is_empty() {
        push(
            "cap.no-info",
            format!("an {} without <info> says nothing", a.msg_type),
        );
    }
    for (i, info) in a.infos.iter().enumerate() {
        match info.expires {
            None => push("cap.missing-expires", format!("info[{i}] has no <expires>")),
            Some(exp) => {
                let start = info.effective.unwrap_or(a.sent);
                if start > exp {
                    push(
                        "cap.effective-after-expires",
                        format!("info[{i}] takes effect at {start} after it expires at {exp}"),
                    );
                }
                if exp <= now {
                    push("cap.expired", format!("info[{i}] expired at {exp}"));
                }
            }
        }
    }
    if now - a.sent > STALE_AFTER {
        push(
            "cap.stale",
            format!(
                "sent at {}, more than {} days ago",
                a.sent,
                STALE_AFTER.num_days()
            ),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/fixtures/cap/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn real_cap_messages_parse() {
        let a = parse_cap(&fixture("oasis-a4-amber-alert-en-es.xml")).unwrap();
        assert_eq!(a.infos.len(), 2, "two languages");
        assert_eq!(a.msg_type, "Alert");
        let au = parse_cap(&fixture("au-rfs-fire-prefixed-ns-circles.xml")).unwrap();
        assert_eq!(au.infos.len(), 2, "namespace-prefixed elements");
        let cancel = parse_cap(&fixture("ipaws-cancel-signed.xml")).unwrap();
        assert_eq!((cancel.msg_type.as_str(), cancel.infos.len()), ("Cancel", 0));
        assert!(!cancel.references.is_empty());
        let ls = parse_cap(&fixture("lang-son-flood-level3-CONSTRUCTED.xml")).unwrap();
        assert_eq!(ls.sender, "kttv-langson@example.vn");
        assert_eq!(ls.infos[0].parameters[1], ("riskLevel".into(), "3".into()));
        assert_eq!(
            ls.infos[0].areas[0].geocodes,
            vec![("commune".into(), "06385".into())]
        );
        assert_eq!(
            ls.infos[0].expires.unwrap().to_rfc3339(),
            "2026-10-09T14:00:00+00:00"
        );
    }

    #[test]
    fn every_shared_sample_parses_except_the_negatives() {
        let dir = format!("{}/fixtures/cap", env!("CARGO_MANIFEST_DIR"));
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|x| x != "xml") {
                continue;
            }
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let got = parse_cap(&std::fs::read(&path).unwrap());
            let negative = name.contains("negative") || name.starts_with("invalid-");
            assert_eq!(got.is_err(), negative, "{name}: {got:?}");
            n += 1;
        }
        assert_eq!(n, 16, "15 shared samples and one constructed");
        let be = parse_cap(&fixture("be-rain-update-4-languages.xml")).unwrap();
        assert_eq!(be.infos.len(), 4, "four languages");
        let de = parse_cap(&fixture("de-dwd-thunderstorm-update-polygons.xml")).unwrap();
        assert!(de.infos[0].areas.iter().map(|a| a.geocodes.len()).sum::<usize>() >= 71);
        let cn = parse_cap(&fixture("cn-thunder-update-zh-en.xml")).unwrap();
        assert!(cn.infos.iter().any(|i| i.language.starts_with("zh")));
    }

    #[test]
    fn named_checks_flag_what_a_validator_would() {
        let now: DateTime<Utc> = "2026-10-09T03:00:00Z".parse().unwrap();
        let ls = parse_cap(&fixture("lang-son-flood-level3-CONSTRUCTED.xml")).unwrap();
        assert_eq!(validate(&ls, now), vec![]);
        let rules = |a: &CapAlert, now| validate(a, now).into_iter().map(|f| f.rule).collect::<Vec<_>>();
        let mut bad = ls.clone();
        bad.msg_type = "Update".into();
        bad.infos[0].effective = Some("2026-10-10T00:00:00Z".parse().unwrap());
        assert_eq!(
            rules(&bad, now),
            vec!["cap.update-without-references", "cap.effective-after-expires"]
        );
        let mut bad = ls.clone();
        bad.infos[0].expires = None;
        assert_eq!(rules(&bad, now), vec!["cap.missing-expires"]);
        let later: DateTime<Utc> = "2026-10-12T00:00:00Z".parse().unwrap();
        assert_eq!(rules(&ls, later), vec!["cap.expired", "cap.stale"]);
    }

    #[test]
    fn hostile_and_invalid_cap_is_refused_precisely() {
        assert_eq!(
            parse_cap(&fixture("xxe-external-entities-negative.xml")),
            Err(CapError::Dtd)
        );
        assert_eq!(
            parse_cap(&fixture("invalid-missing-scope.xml")),
            Err(CapError::Missing("scope"))
        );
        assert!(matches!(parse_cap(b"<html><body/></html>"), Err(CapError::NotCap(n)) if n == "html"));
        assert!(matches!(
            parse_cap(b"<alert><identifier>x"),
            Err(CapError::Xml { .. })
        ));
        assert!(matches!(
            parse_cap(b"<alert><identifier>&bogus;</identifier></alert>"),
            Err(CapError::Entity(e)) if e == "bogus"
        ));
        assert!(matches!(
            parse_cap(&vec![b' '; MAX_CAP_BYTES + 1]),
            Err(CapError::TooLarge(_))
        ));
    }
}
