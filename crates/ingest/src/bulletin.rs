//! From a CAP message to bulletins: the risk level an official sender states for a
//! hazard and communes. Pure; the mapping is configured (`[bulletins]`).
//!
//! A bulletin is trusted by the channel it came over, not by its `<sender>` string alone
//! ([`vouch`]): a configured sender over a channel that can vouch for it (an API key with
//! the bulletins scope, or a polled HTTPS source whose host is configured for the sender),
//! with its XML signature verified if it is signed (and required, by a configured
//! certificate, if the sender has one), states a level that overrides computed ones, up or
//! down. Otherwise it may only raise a level, as a pre-warning an officer confirms.

use std::collections::BTreeMap;

use domain::{AlertStatus, CommuneCode, Hazard, RiskLevel};
use rules::eval::Bulletin;

use crate::cap::CapAlert;
pub use desk::bulletin::BulletinChange;

/// How CAP fields map to bulletins.
#[derive(Debug, Clone, Default)]
pub struct BulletinSettings {
    /// Exact `<sender>` values taken as bulletins at all (others are refused).
    pub authoritative_senders: Vec<String>,
    /// For each sender, the hosts whose polled HTTPS sources vouch for it.
    pub authoritative_hosts: BTreeMap<String, Vec<String>>,
    /// For each sender that signs its CAP with XML-DSig, the certificates (DER) it signs
    /// with: its bulletins must then be signed by one of them.
    pub signing_certs: BTreeMap<String, Vec<Vec<u8>>>,
    /// `<parameter>` names that carry the Decision 18 risk level (1 to 5).
    pub level_parameters: Vec<String>,
    /// The `<parameter>` name that carries canhbao's hazard code (`flood`, ...).
    pub hazard_parameter: String,
    /// `<event>` wordings mapped to hazards, for senders that do not send the parameter;
    /// matched by [`event_hazard`].
    pub events: BTreeMap<String, Hazard>,
    /// The `<geocode>` name of a 5-digit commune code.
    pub commune_geocode: String,
    /// The `<geocode>` name of a province code; the province's own code means every commune.
    pub province_geocode: String,
    /// `<parameter>` names that announce when the sender's next bulletin will be issued
    /// (an RFC 3339 time); the poller polls then.
    pub next_issue_parameters: Vec<String>,
}

/// When the message says its sender's next bulletin will be issued, if it says so in one
/// of the configured parameters and that time is still ahead of `now`.
pub fn next_issue(
    cap: &CapAlert,
    settings: &BulletinSettings,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    cap.infos
        .iter()
        .flat_map(|i| i.parameters.iter())
        .filter(|(name, _)| settings.next_issue_parameters.contains(name))
        .filter_map(|(_, v)| chrono::DateTime::parse_from_rfc3339(v.trim()).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .filter(|t| *t > now)
        .min()
}

/// Over what a bulletin arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel<'a> {
    /// `POST /api/v1/bulletins` by an API key with the `bulletins` scope.
    BulletinsKey,
    /// `POST /api/v1/bulletins` by a person's login: who they are is known, but not that
    /// the forecasting service sent the bulletin.
    Person,
    /// A polled source at this URL.
    Polled { url: &'a str },
}

/// Why a configured sender's bulletin is not authoritative: it may then only raise a level,
/// as a pre-warning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unvouched {
    #[error("sender {0:?} is not configured ([bulletins] authoritative_senders)")]
    Sender(String),
    #[error("it was posted with a person's login, not an API key with the bulletins scope")]
    Person,
    #[error("it was polled from {0}, which is not HTTPS")]
    NotHttps(String),
    #[error("host {host:?} is not configured for sender {sender:?} ([bulletins.authoritative_hosts])")]
    Host { host: String, sender: String },
    #[error("its XML signature does not hold: {0}")]
    Signature(crate::dsig::DsigError),
    #[error(
        "it is not signed, and sender {0:?} signs with a configured certificate ([bulletins.signing_certs])"
    )]
    Unsigned(String),
    #[error(
        "it is signed with a certificate that is not configured for sender {0:?} ([bulletins.signing_certs])"
    )]
    Signer(String),
}

impl Unvouched {
    /// Whether it is the bulletin's signature at fault (tampering, or a signer's
    /// misconfiguration) rather than its channel: operators are told.
    pub fn is_signature(&self) -> bool {
        matches!(self, Self::Signature(_) | Self::Unsigned(_) | Self::Signer(_))
    }
}

/// Whether `cap` is authoritative, having come over `channel`: its sender is configured,
/// the channel vouches for it (a bulletins key, or an HTTPS source whose host is
/// configured for the sender), and its XML signature holds (checked whenever it is signed;
/// required, by one of the sender's certificates, when `[bulletins.signing_certs]` lists
/// any).
pub fn vouch(settings: &BulletinSettings, cap: &CapAlert, channel: Channel<'_>) -> Result<(), Unvouched> {
    channel_vouches(settings, &cap.sender, channel)?;
    let pinned = settings
        .signing_certs
        .get(&cap.sender)
        .map_or(&[][..], Vec::as_slice);
    let signature = match &cap.xml {
        Some(xml) => crate::dsig::verify(xml, pinned),
        None => crate::dsig::Signature::Unsigned,
    };
    match signature {
        crate::dsig::Signature::Invalid(e) => Err(Unvouched::Signature(e)),
        crate::dsig::Signature::Unsigned if pinned.is_empty() => Ok(()),
        crate::dsig::Signature::Unsigned => Err(Unvouched::Unsigned(cap.sender.clone())),
        crate::dsig::Signature::Valid { signers } => {
            if pinned.is_empty() || signers.iter().any(|s| pinned.contains(s)) {
                Ok(())
            } else {
                Err(Unvouched::Signer(cap.sender.clone()))
            }
        }
    }
}

/// Whether `channel` vouches for `sender`, a configured sender.
pub fn channel_vouches(
    settings: &BulletinSettings,
    sender: &str,
    channel: Channel<'_>,
) -> Result<(), Unvouched> {
    if !settings.authoritative_senders.iter().any(|s| s == sender) {
        return Err(Unvouched::Sender(sender.to_owned()));
    }
    match channel {
        Channel::BulletinsKey => Ok(()),
        Channel::Person => Err(Unvouched::Person),
        Channel::Polled { url } => {
            let Some((scheme, rest)) = url.split_once("://") else {
                return Err(Unvouched::NotHttps(url.to_owned()));
            };
            if !scheme.eq_ignore_ascii_case("https") {
                return Err(Unvouched::NotHttps(url.to_owned()));
            }
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let host = match host_port.rsplit_once(':') {
                Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
                _ => host_port,
            };
            let configured = settings
                .authoritative_hosts
                .get(sender)
                .is_some_and(|hosts| hosts.iter().any(|h| h.eq_ignore_ascii_case(host)));
            if configured {
                Ok(())
            } else {
                Err(Unvouched::Host {
                    host: host.to_owned(),
                    sender: sender.to_owned(),
                })
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BulletinError {
    #[error("sender {0:?} is not a configured bulletin sender ([bulletins] authoritative_senders)")]
    NotAuthoritative(String),
    #[error("status {0:?} is not taken as a bulletin (only Actual, Exercise and Test)")]
    Status(String),
    #[error("msgType {0:?} carries no bulletin")]
    MsgType(String),
    #[error("no <info> states a hazard canhbao knows (parameter {0:?} or a configured <event>)")]
    NoHazard(String),
    #[error("<info> for {hazard} has no <expires>; a bulletin must end")]
    NoExpiry { hazard: Hazard },
    #[error("<info> for {hazard}: risk level {value:?} is not 1 to 5")]
    Level { hazard: Hazard, value: String },
    #[error("<info> for {hazard} names no commune of the province (geocode {geocode:?})")]
    NoArea { hazard: Hazard, geocode: String },
    #[error("geocode {value:?} is not a commune of the province")]
    UnknownCommune { value: String },
}

impl BulletinError {
    /// The CAP field at fault, for the API's problem report.
    pub fn field(&self) -> &'static str {
        match self {
            Self::NotAuthoritative(_) => "sender",
            Self::Status(_) => "status",
            Self::MsgType(_) => "msgType",
            Self::NoHazard(_) => "info.parameter",
            Self::NoExpiry { .. } => "info.expires",
            Self::Level { .. } => "info.parameter",
            Self::NoArea { .. } | Self::UnknownCommune { .. } => "info.area.geocode",
        }
    }
}

/// Maps a CAP message to bulletins for a province with `province` code and `communes`.
pub fn to_bulletins(
    cap: &CapAlert,
    settings: &BulletinSettings,
    province: &str,
    communes: &[CommuneCode],
) -> Result<BulletinChange, BulletinError> {
    if !settings.authoritative_senders.iter().any(|s| s == &cap.sender) {
        return Err(BulletinError::NotAuthoritative(cap.sender.clone()));
    }
    let status =
        AlertStatus::from_code(&cap.status).ok_or_else(|| BulletinError::Status(cap.status.clone()))?;
    if !matches!(cap.msg_type.as_str(), "Alert" | "Update" | "Cancel") {
        return Err(BulletinError::MsgType(cap.msg_type.clone()));
    }
    // CAP references are "sender,identifier,sent" triples.
    let replaces: Vec<String> = cap
        .references
        .iter()
        .map(|r| r.split(',').nth(1).unwrap_or(r).to_owned())
        .collect();
    if cap.msg_type == "Cancel" {
        return Ok(BulletinChange {
            identifier: cap.identifier.clone(),
            status,
            authoritative: false,
            bulletins: Vec::new(),
            replaces,
        });
    }
    let mut bulletins = Vec::new();
    for info in &cap.infos {
        let param = |name: &str| {
            info.parameters
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let hazard = param(&settings.hazard_parameter)
            .and_then(Hazard::from_code)
            .or_else(|| event_hazard(&settings.events, &info.event));
        let Some(hazard) = hazard else { continue };
        let level = match settings.level_parameters.iter().find_map(|n| param(n)) {
            Some(v) => Some(
                v.trim()
                    .parse::<u8>()
                    .ok()
                    .and_then(RiskLevel::new)
                    .ok_or_else(|| BulletinError::Level {
                        hazard,
                        value: v.to_owned(),
                    })?,
            ),
            None => None,
        };
        let mut area = Vec::new();
        for (name, value) in info.areas.iter().flat_map(|a| a.geocodes.iter()) {
            if name == &settings.province_geocode && value == province {
                area.extend(communes.iter().cloned());
            } else if name == &settings.commune_geocode {
                let code = CommuneCode::new(value)
                    .ok()
                    .filter(|c| communes.contains(c))
                    .ok_or_else(|| BulletinError::UnknownCommune { value: value.clone() })?;
                area.push(code);
            }
        }
        area.sort();
        area.dedup();
        if area.is_empty() {
            return Err(BulletinError::NoArea {
                hazard,
                geocode: settings.commune_geocode.clone(),
            });
        }
        let expires = info.expires.ok_or(BulletinError::NoExpiry { hazard })?;
        bulletins.push(Bulletin {
            id: cap.identifier.clone(),
            sender: cap.sender.clone(),
            hazard,
            level,
            communes: area,
            effective: info.effective.unwrap_or(cap.sent),
            expires,
            authoritative: false,
            emergency: marked_emergency(&info.event) || marked_emergency(&info.headline),
            grade: domain::CapGrade::new(&info.urgency, &info.severity, &info.certainty),
        });
    }
    // Several languages of one message state the same thing: keep one per hazard.
    bulletins.dedup_by(|a, b| a.hazard == b.hazard && a.level == b.level && a.communes == b.communes);
    if bulletins.is_empty() {
        return Err(BulletinError::NoHazard(settings.hazard_parameter.clone()));
    }
    Ok(BulletinChange {
        identifier: cap.identifier.clone(),
        status,
        authoritative: false,
        bulletins,
        replaces,
    })
}

/// The text of an event heading as compared: Unicode NFC (Vietnamese typed with
/// combining marks equals the precomposed form), lower case, punctuation as spaces, one
/// space between words, with a space at each end so that words match whole.
fn normalise_event(text: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let mut out = String::from(" ");
    for c in text.chars().flat_map(char::to_lowercase).nfc() {
        let c = if c.is_alphanumeric() { c } else { ' ' };
        if c != ' ' || !out.ends_with(' ') {
            out.push(c);
        }
    }
    if !out.ends_with(' ') {
        out.push(' ');
    }
    out
}

/// Whether a bulletin's heading marks it as an emergency ("Tin lũ khẩn cấp", "TIN BÃO
/// KHẨN CẤP"): the national service's wording for its most urgent bulletins.
pub fn marked_emergency(heading: &str) -> bool {
    normalise_event(heading).contains(" khẩn cấp ")
}

/// The hazard a bulletin's `<event>` heading names, by the configured wordings
/// (`[bulletins.events]`): compared whole-word after [`normalise_event`], the wording
/// found earliest in the heading wins, the longest among those found at the same place
/// ("Lũ quét, sạt lở đất" is a flash flood, not a flood; "Lũ, ngập lụt" a flood).
pub fn event_hazard(events: &BTreeMap<String, Hazard>, heading: &str) -> Option<Hazard> {
    let heading = normalise_event(heading);
    events
        .iter()
        .filter_map(|(wording, hazard)| {
            let wording = normalise_event(wording);
            (wording.len() > 2)
                .then(|| heading.find(&wording))
                .flatten()
                .map(|at| (at, std::cmp::Reverse(wording.len()), *hazard))
        })
        .min_by_key(|(at, len, _)| (*at, *len))
        .map(|(_, _, hazard)| hazard)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped `[bulletins.events]` table.
    fn shipped_events() -> BTreeMap<String, Hazard> {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/default.toml"))
            .unwrap_or_default();
        let mut events = BTreeMap::new();
        let mut inside = false;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                inside = line == "[bulletins.events]";
                continue;
            }
            if let (true, Some((k, v))) = (inside, line.split_once('=')) {
                let (k, v) = (k.trim().trim_matches('"'), v.trim().trim_matches('"'));
                if let Some(h) = Hazard::from_code(v) {
                    events.insert(k.to_owned(), h);
                }
            }
        }
        events
    }

    #[test]
    fn real_bulletin_headings_map_to_their_hazard() {
        let events = shipped_events();
        assert!(events.len() >= 15, "{events:?}");
        let table: &[(&str, Option<Hazard>)] = &[
            ("Lũ", Some(Hazard::Flood)),
            ("Lũ, ngập lụt", Some(Hazard::Flood)),
            ("TIN CẢNH BÁO LŨ TRÊN CÁC SÔNG Ở BẮC BỘ", Some(Hazard::Flood)),
            ("Tin lũ khẩn cấp trên sông Kỳ Cùng", Some(Hazard::Flood)),
            ("Cảnh báo ngập lụt vùng trũng thấp", Some(Hazard::Flood)),
            ("Lũ quét, sạt lở đất", Some(Hazard::FlashFlood)),
            ("Sạt lở đất", Some(Hazard::FlashFlood)),
            (
                "TIN CẢNH BÁO LŨ QUÉT, SẠT LỞ ĐẤT, SỤT LÚN ĐẤT DO MƯA LŨ HOẶC DÒNG CHẢY",
                Some(Hazard::FlashFlood),
            ),
            (
                "Cảnh báo sạt lở đất, lũ quét tại khu vực tỉnh Lạng Sơn",
                Some(Hazard::FlashFlood),
            ),
            ("Sụt lún đất", Some(Hazard::FlashFlood)),
            ("Mưa lớn", Some(Hazard::HeavyRain)),
            ("Tin dự báo mưa lớn diện rộng", Some(Hazard::HeavyRain)),
            (
                "Tin cảnh báo mưa lớn, lũ quét, sạt lở đất",
                Some(Hazard::HeavyRain),
            ),
            ("Tin bão khẩn cấp", Some(Hazard::Storm)),
            ("TIN ÁP THẤP NHIỆT ĐỚI TRÊN ĐẤT LIỀN", Some(Hazard::Storm)),
            (
                "Tin không khí lạnh tăng cường, rét đậm, rét hại",
                Some(Hazard::Cold),
            ),
            ("Cảnh báo rét hại, băng giá, sương muối", Some(Hazard::Cold)),
            ("Tin nắng nóng", Some(Hazard::Heat)),
            ("Sương mù dày đặc trên cao tốc", Some(Hazard::Fog)),
            ("Cảnh báo dông, lốc, sét, mưa đá", Some(Hazard::Thunderstorm)),
            ("Lốc, sét, mưa đá", Some(Hazard::Thunderstorm)),
            ("Tin hạn hán", Some(Hazard::Drought)),
            ("Thông báo động đất", Some(Hazard::Earthquake)),
            // Typed with combining marks (NFD), as some editors do.
            (
                "Lu\u{303} que\u{301}t, sa\u{323}t lơ\u{309} đâ\u{301}t",
                Some(Hazard::FlashFlood),
            ),
            // A word inside another is not a match; nothing known is nothing.
            ("Tin gió mạnh trên biển", None),
            ("Lũy tre", None),
        ];
        for (heading, expected) in table {
            assert_eq!(event_hazard(&events, heading), *expected, "{heading:?}");
        }
    }

    fn settings() -> BulletinSettings {
        BulletinSettings {
            authoritative_senders: vec!["kttv-langson@example.vn".into()],
            authoritative_hosts: BTreeMap::from([(
                "kttv-langson@example.vn".to_owned(),
                vec!["cap.kttv-langson.example.vn".to_owned()],
            )]),
            level_parameters: vec!["riskLevel".into()],
            hazard_parameter: "hazard".into(),
            events: [("Lũ".to_owned(), Hazard::Flood)].into_iter().collect(),
            commune_geocode: "commune".into(),
            province_geocode: "province".into(),
            next_issue_parameters: vec!["nextIssue".into()],
            signing_certs: BTreeMap::new(),
        }
    }

    #[test]
    fn a_stated_next_issue_ahead_is_read_and_a_past_one_ignored() {
        let mut cap = fixture();
        let now: chrono::DateTime<chrono::Utc> = "2026-10-09T02:00:00Z".parse().unwrap();
        assert_eq!(next_issue(&cap, &settings(), now), None);
        cap.infos[0]
            .parameters
            .push(("nextIssue".into(), "2026-10-09T16:00:00+07:00".into()));
        assert_eq!(
            next_issue(&cap, &settings(), now),
            Some("2026-10-09T09:00:00Z".parse().unwrap())
        );
        let later: chrono::DateTime<chrono::Utc> = "2026-10-09T10:00:00Z".parse().unwrap();
        assert_eq!(next_issue(&cap, &settings(), later), None);
        cap.infos[0].parameters.push(("nextIssue".into(), "soon".into()));
        assert_eq!(
            next_issue(&cap, &settings(), later),
            None,
            "an unreadable time is not a schedule"
        );
    }

    fn fixture() -> CapAlert {
        let bytes = std::fs::read(format!(
            "{}/fixtures/cap/lang-son-flood-level3-CONSTRUCTED.xml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        crate::cap::parse_cap(&bytes).unwrap()
    }

    fn communes() -> Vec<CommuneCode> {
        ["06385", "06391"]
            .iter()
            .map(|c| CommuneCode::new(c).unwrap())
            .collect()
    }

    #[test]
    fn an_authoritative_bulletin_states_its_level_for_its_communes() {
        let change = to_bulletins(&fixture(), &settings(), "20", &communes()).unwrap();
        assert_eq!(change.status, AlertStatus::Actual);
        let b = &change.bulletins[0];
        assert_eq!((b.hazard, b.level.map(RiskLevel::get)), (Hazard::Flood, Some(3)));
        assert_eq!(b.communes, vec![CommuneCode::new("06385").unwrap()]);
        // How the sender graded it is kept, for the CAP that relays its level.
        let g = b.grade.as_ref().expect("the bulletin grades its event");
        let (u, s, c) = {
            let info = &fixture().infos[0];
            (
                info.urgency.clone(),
                info.severity.clone(),
                info.certainty.clone(),
            )
        };
        assert_eq!(
            (g.urgency(), g.severity(), g.certainty()),
            (u.as_str(), s.as_str(), c.as_str())
        );
        // A grade that is not CAP's is not invented into one.
        let mut cap = fixture();
        cap.infos[0].certainty = "Chắc chắn".into();
        let change = to_bulletins(&cap, &settings(), "20", &communes()).unwrap();
        assert_eq!(change.bulletins[0].grade, None);
    }

    #[test]
    fn a_landslide_bulletin_states_the_level_of_article_46() {
        // Without canhbao's hazard parameter, the heading decides; a landslide heading is
        // Art. 46's hazard, the one computed levels go to, so its level overrides theirs.
        let mut cap = fixture();
        cap.infos[0].event = "Tin cảnh báo sạt lở đất".into();
        cap.infos[0].parameters.retain(|(n, _)| n != "hazard");
        let mut settings = settings();
        settings.events = shipped_events();
        let change = to_bulletins(&cap, &settings, "20", &communes()).unwrap();
        assert_eq!(change.bulletins[0].hazard, Hazard::FlashFlood);
        // The code of earlier versions reads the same.
        cap.infos[0]
            .parameters
            .push(("hazard".into(), "landslide".into()));
        let change = to_bulletins(&cap, &settings, "20", &communes()).unwrap();
        assert_eq!(change.bulletins[0].hazard, Hazard::FlashFlood);
    }

    #[test]
    fn anything_else_is_refused_with_the_field_at_fault() {
        let mut cap = fixture();
        cap.sender = "someone@example.com".into();
        let e = to_bulletins(&cap, &settings(), "20", &communes()).unwrap_err();
        assert_eq!(e.field(), "sender");
        let mut cap = fixture();
        cap.infos[0].parameters[1].1 = "7".into();
        assert_eq!(
            to_bulletins(&cap, &settings(), "20", &communes())
                .unwrap_err()
                .field(),
            "info.parameter"
        );
        let mut cap = fixture();
        cap.infos[0].areas[0].geocodes[0].1 = "99999".into();
        assert_eq!(
            to_bulletins(&cap, &settings(), "20", &communes())
                .unwrap_err()
                .field(),
            "info.area.geocode"
        );
        let mut cap = fixture();
        cap.infos[0].expires = None;
        assert_eq!(
            to_bulletins(&cap, &settings(), "20", &communes())
                .unwrap_err()
                .field(),
            "info.expires"
        );
        // A province-wide geocode covers every commune; a Cancel replaces its references.
        let mut cap = fixture();
        cap.infos[0].areas[0].geocodes[0] = ("province".into(), "20".into());
        assert_eq!(
            to_bulletins(&cap, &settings(), "20", &communes())
                .unwrap()
                .bulletins[0]
                .communes
                .len(),
            2
        );
        let mut cap = fixture();
        cap.msg_type = "Cancel".into();
        cap.references = vec!["kttv-langson@example.vn,DBLU_11,2026-10-09T03:00:00+07:00".into()];
        let c = to_bulletins(&cap, &settings(), "20", &communes()).unwrap();
        assert_eq!(
            (c.bulletins.len(), c.replaces.clone()),
            (0, vec!["DBLU_11".to_owned()])
        );
    }

    #[test]
    fn a_bulletin_is_authoritative_only_over_a_channel_that_vouches_for_its_sender() {
        let s = settings();
        let sender = "kttv-langson@example.vn";
        // (sender, channel, authoritative?)
        let cases: &[(&str, Channel<'_>, bool)] = &[
            (sender, Channel::BulletinsKey, true),
            (sender, Channel::Person, false),
            (
                sender,
                Channel::Polled {
                    url: "https://cap.kttv-langson.example.vn/feed.atom",
                },
                true,
            ),
            (
                sender,
                Channel::Polled {
                    url: "https://CAP.kttv-langson.example.vn:8443/x?y",
                },
                true,
            ),
            // Plain HTTP can be spoofed on the way.
            (
                sender,
                Channel::Polled {
                    url: "http://cap.kttv-langson.example.vn/feed.atom",
                },
                false,
            ),
            // Another host, even one that says it is the sender.
            (
                sender,
                Channel::Polled {
                    url: "https://evil.example/kttv-langson",
                },
                false,
            ),
            (
                sender,
                Channel::Polled {
                    url: "https://cap.kttv-langson.example.vn.evil.example/",
                },
                false,
            ),
            (
                sender,
                Channel::Polled {
                    url: "https://x@evil.example/",
                },
                false,
            ),
            // A sender that is not configured is never authoritative.
            ("someone@example.vn", Channel::BulletinsKey, false),
            (
                "someone@example.vn",
                Channel::Polled {
                    url: "https://cap.kttv-langson.example.vn/",
                },
                false,
            ),
        ];
        for (sender, channel, expected) in cases {
            assert_eq!(
                channel_vouches(&s, sender, *channel).is_ok(),
                *expected,
                "{sender} over {channel:?}"
            );
        }
    }

    #[test]
    fn a_signed_bulletin_is_authoritative_only_if_its_signature_holds_and_its_signer_is_configured() {
        use crate::dsig::DsigError;
        use rustls_pki_types::pem::PemObject;
        let dir = format!("{}/fixtures/cap", env!("CARGO_MANIFEST_DIR"));
        let cap =
            |name: &str| crate::cap::parse_cap(&std::fs::read(format!("{dir}/{name}")).unwrap()).unwrap();
        let cert = |name: &str| {
            rustls_pki_types::CertificateDer::from_pem_file(format!("{dir}/signed/{name}"))
                .unwrap()
                .to_vec()
        };
        let unsigned = fixture();
        let rsa = cap("signed/lang-son-rsa-sha256-exc-c14n.xml");
        let ec = cap("signed/lang-son-ecdsa-p256-c14n-no-keyinfo.xml");
        let other = cap("signed/lang-son-signed-by-someone-else.xml");
        let mut tampered = rsa.clone();
        let xml = String::from_utf8(tampered.xml.as_deref().unwrap().to_vec()).unwrap();
        tampered.xml = Some(
            xml.replace("<value>3</value>", "<value>1</value>")
                .into_bytes()
                .into(),
        );
        let sender = "kttv-langson@example.vn".to_owned();
        let key = Channel::BulletinsKey;
        let https = Channel::Polled {
            url: "https://cap.kttv-langson.example.vn/a.xml",
        };

        // No certificate configured: a signature is checked when there is one.
        let s = settings();
        assert_eq!(vouch(&s, &unsigned, key), Ok(()));
        assert_eq!(vouch(&s, &rsa, https), Ok(()));
        assert_eq!(vouch(&s, &other, key), Ok(()));
        assert_eq!(
            vouch(&s, &tampered, https),
            Err(Unvouched::Signature(DsigError::Digest))
        );
        assert_eq!(
            vouch(&s, &ec, key),
            Err(Unvouched::Signature(DsigError::NoCertificate))
        );
        // A good signature does not make a channel vouch.
        assert_eq!(vouch(&s, &rsa, Channel::Person), Err(Unvouched::Person));

        // The sender's certificates configured: its bulletins must be signed by one.
        let mut s = settings();
        s.signing_certs.insert(
            sender.clone(),
            vec![cert("kttv-test-rsa.pem"), cert("kttv-test-ec.pem")],
        );
        assert_eq!(vouch(&s, &rsa, https), Ok(()));
        assert_eq!(vouch(&s, &ec, https), Ok(()));
        assert_eq!(
            vouch(&s, &unsigned, key),
            Err(Unvouched::Unsigned(sender.clone()))
        );
        assert_eq!(vouch(&s, &other, key), Err(Unvouched::Signer(sender.clone())));
        assert_eq!(
            vouch(&s, &tampered, key),
            Err(Unvouched::Signature(DsigError::Digest))
        );
        // The message names the fault for the operator.
        assert!(
            Unvouched::Signer(sender)
                .to_string()
                .contains("[bulletins.signing_certs]")
        );
    }
}
