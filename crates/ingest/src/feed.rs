//! A pure parser for CAP feeds in Atom or RSS 2.0, in their three patterns: an entry that
//! links to its CAP document (fetched then through the poller), an entry that carries
//! `cap:` summary fields, and an entry that embeds the whole alert. As with CAP itself,
//! any DTD is refused and no entity is expanded.

use chrono::{DateTime, Utc};
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::cap::{CapAlert, CapError, MAX_CAP_BYTES, parse_cap};

/// What an entry gives.
#[derive(Debug, Clone, PartialEq)]
pub enum EntryCap {
    /// The URL of the entry's CAP document.
    Linked(String),
    /// The whole alert, embedded in the entry.
    Embedded(Box<CapAlert>),
    /// Only `cap:` summary fields (no level): an index to follow up.
    Summary(CapSummary),
    /// Nothing CAP-related.
    None,
}

/// The `cap:` fields of an Atom index entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CapSummary {
    pub event: String,
    pub status: String,
    pub msg_type: String,
    pub effective: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
    pub area_desc: String,
    pub geocodes: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FeedEntry {
    pub id: String,
    pub title: String,
    pub cap: EntryCap,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    #[error(transparent)]
    Cap(#[from] CapError),
    #[error("the root element is <{0}>, not an Atom <feed> or an RSS <rss>")]
    NotFeed(String),
    #[error("entry {entry}: the embedded CAP alert is invalid: {source}")]
    Embedded { entry: usize, source: CapError },
}

const CAP_TYPES: [&str; 3] = [
    "application/cap+xml",
    "application/common-alerting-protocol+xml",
    "text/xml",
];

fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.attributes().flatten().find_map(|a| {
        (a.key.local_name().as_ref() == name.as_bytes())
            .then(|| String::from_utf8_lossy(&a.value).into_owned())
    })
}

fn local(e: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(e.local_name().as_ref()).into_owned()
}

/// Parses an Atom or RSS CAP feed.
pub fn parse_feed(bytes: &[u8]) -> Result<Vec<FeedEntry>, FeedError> {
    if bytes.len() > 8 * MAX_CAP_BYTES {
        return Err(CapError::TooLarge(bytes.len()).into());
    }
    let mut reader = Reader::from_reader(bytes);
    let mut buf = Vec::new();
    let mut depth = 0usize;
    let mut entries: Vec<FeedEntry> = Vec::new();
    // Inside an entry/item: its depth, its fields so far, and the current text.
    let mut entry: Option<(usize, FeedEntry, CapSummary, bool)> = None;
    let mut text = String::new();
    let mut geocode: (String, String) = Default::default();
    let xml = |reader: &Reader<&[u8]>, e: &dyn std::fmt::Display| CapError::Xml {
        position: reader.buffer_position(),
        reason: e.to_string(),
    };
    loop {
        let before = reader.buffer_position() as usize;
        let event = reader.read_event_into(&mut buf).map_err(|e| xml(&reader, &e))?;
        match event {
            Event::DocType(_) => return Err(CapError::Dtd.into()),
            Event::Start(e) => {
                let name = local(&e);
                if depth == 0 && name != "feed" && name != "rss" {
                    return Err(FeedError::NotFeed(name));
                }
                depth += 1;
                text.clear();
                match (&mut entry, name.as_str()) {
                    (None, "entry" | "item") => {
                        let blank = FeedEntry {
                            id: String::new(),
                            title: String::new(),
                            cap: EntryCap::None,
                        };
                        entry = Some((depth, blank, CapSummary::default(), false));
                    }
                    (Some((_, fe, _, _)), "alert") => {
                        // Slice the whole embedded alert out and parse it as CAP.
                        reader
                            .read_to_end_into(e.name(), &mut Vec::new())
                            .map_err(|err| xml(&reader, &err))?;
                        let stop = reader.buffer_position() as usize;
                        let n = entries.len();
                        let alert = parse_cap(&bytes[before..stop.min(bytes.len())])
                            .map_err(|source| FeedError::Embedded { entry: n, source })?;
                        fe.cap = EntryCap::Embedded(Box::new(alert));
                        depth -= 1;
                    }
                    (Some((_, _, _, in_geo)), "geocode") => *in_geo = true,
                    (Some((_, fe, _, _)), "link") => link(fe, &e),
                    _ => {}
                }
            }
            Event::Empty(e) => {
                if depth == 0 {
                    return Err(FeedError::NotFeed(local(&e)));
                }
                if let (Some((_, fe, _, _)), "link") = (&mut entry, local(&e).as_str()) {
                    link(fe, &e);
                }
            }
            Event::Text(t) => text.push_str(&t.decode().map_err(|e| xml(&reader, &e))?),
            Event::CData(t) => text.push_str(&String::from_utf8_lossy(&t)),
            Event::GeneralRef(r) => {
                let name = r.decode().map_err(|e| xml(&reader, &e))?;
                text.push_str(&crate::cap::entity(&name)?);
            }
            Event::End(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                let value = std::mem::take(&mut text).trim().to_owned();
                let closes_entry = entry.as_ref().is_some_and(|(at, ..)| *at == depth);
                if closes_entry {
                    if let Some((_, mut fe, sum, _)) = entry.take() {
                        let has_cap =
                            !sum.event.is_empty() || !sum.status.is_empty() || sum.expires.is_some();
                        if fe.cap == EntryCap::None && has_cap {
                            fe.cap = EntryCap::Summary(sum);
                        }
                        entries.push(fe);
                    }
                } else if let Some((_, fe, sum, in_geo)) = &mut entry {
                    let time = |v: &str| {
                        DateTime::parse_from_rfc3339(v)
                            .ok()
                            .map(|t| t.with_timezone(&Utc))
                    };
                    match name.as_str() {
                        "id" | "guid" if fe.id.is_empty() => fe.id = value,
                        "title" if fe.title.is_empty() => fe.title = value,
                        // RSS: <link>URL</link>
                        "link" if fe.cap == EntryCap::None && value.starts_with("http") => {
                            fe.cap = EntryCap::Linked(value)
                        }
                        "event" => sum.event = value,
                        "status" => sum.status = value,
                        "msgType" => sum.msg_type = value,
                        "effective" => sum.effective = time(&value),
                        "expires" => sum.expires = time(&value),
                        "areaDesc" => sum.area_desc = value,
                        "valueName" if *in_geo => geocode.0 = value,
                        "value" if *in_geo => geocode.1 = value,
                        "geocode" => {
                            *in_geo = false;
                            sum.geocodes.push(std::mem::take(&mut geocode));
                        }
                        _ => {}
                    }
                }
                depth = depth.saturating_sub(1);
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
        }
        buf.clear();
    }
    if depth != 0 {
        return Err(CapError::Xml {
            position: reader.buffer_position(),
            reason: "the document ends inside an element".into(),
        }
        .into());
    }
    Ok(entries)
}

/// An Atom `<link>` to a CAP document (by type, or `rel="related"` with a CAP type).
fn link(fe: &mut FeedEntry, e: &BytesStart<'_>) {
    let (Some(href), kind) = (attr(e, "href"), attr(e, "type")) else {
        return;
    };
    let is_cap = kind.as_deref().is_some_and(|t| CAP_TYPES.contains(&t));
    if is_cap && matches!(fe.cap, EntryCap::None | EntryCap::Summary(_)) {
        fe.cap = EntryCap::Linked(href);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/fixtures/feeds/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn the_three_feed_patterns_parse() {
        let linked = parse_feed(&fixture("usgs-earthquake-index-cap-link.atom")).unwrap();
        assert_eq!(linked.len(), 1);
        assert_eq!(
            linked[0].cap,
            EntryCap::Linked("http://earthquake.usgs.gov/earthquakes/catalogs/cap/us2010apcd".into())
        );
        let rss = parse_feed(&fixture("nyalert-cap-index.rss")).unwrap();
        assert!(rss.len() >= 2);
        assert!(
            matches!(&rss[0].cap, EntryCap::Linked(u) if u.contains("capID=NYAlert")),
            "{:?}",
            rss[0]
        );
        assert_eq!(rss[0].id, "NYAlert-ALLHAZALERT-3167113");

        let summary = parse_feed(&fixture("nws-cap-index-2010.atom")).unwrap();
        assert_eq!(summary.len(), 2);
        let EntryCap::Summary(s) = &summary[0].cap else {
            panic!("expected cap: summary fields, got {:?}", summary[0].cap)
        };
        assert_eq!((s.status.as_str(), s.msg_type.as_str()), ("Actual", "Alert"));
        assert!(
            s.expires.is_some() && !s.geocodes.is_empty() && !s.area_desc.is_empty(),
            "{s:?}"
        );

        let embedded = parse_feed(&fixture("eccc-signed-cap12-embedded.atom")).unwrap();
        let EntryCap::Embedded(a) = &embedded[0].cap else {
            panic!("expected an embedded alert, got {:?}", embedded[0].cap)
        };
        assert_eq!(a.infos.len(), 2, "en and fr");
        let amber = parse_feed(&fixture("amber-cap-embedded-in-entry.atom")).unwrap();
        assert!(
            matches!(&amber[0].cap, EntryCap::Embedded(_)),
            "{:?}",
            amber[0].cap
        );
    }

    #[test]
    fn hostile_feeds_are_refused() {
        assert_eq!(
            parse_feed(&fixture("xxe-external-entities-negative.atom")),
            Err(FeedError::Cap(CapError::Dtd))
        );
        assert!(matches!(
            parse_feed(b"<html/>"),
            Err(FeedError::NotFeed(_)) | Err(FeedError::Cap(_))
        ));
        assert!(matches!(
            parse_feed(b"<feed><entry><title>x"),
            Err(FeedError::Cap(CapError::Xml { .. }))
        ));
        let laughs = b"<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]><feed>&lol2;</feed>";
        assert_eq!(parse_feed(laughs), Err(FeedError::Cap(CapError::Dtd)));
    }
}
