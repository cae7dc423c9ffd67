//! An alert: what people receive, with CAP 1.2 semantics. An Update or a Cancel is a
//! new alert with its own id that references the earlier ones.

use chrono::{DateTime, Utc};
use std::ops::Deref;

use crate::{AlarmLevel, AlertId, CommuneCode, Hazard, MessageClass, ProvinceCode, RiskLevel, StationId};

/// CAP `msgType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgType {
    Alert,
    Update,
    Cancel,
}

impl MsgType {
    pub fn code(self) -> &'static str {
        match self {
            Self::Alert => "Alert",
            Self::Update => "Update",
            Self::Cancel => "Cancel",
        }
    }
    pub fn from_code(code: &str) -> Option<Self> {
        [Self::Alert, Self::Update, Self::Cancel]
            .into_iter()
            .find(|m| m.code() == code)
    }
}

/// CAP `status`: only `Actual` is meant for the public.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertStatus {
    Actual,
    Exercise,
    Test,
}

impl AlertStatus {
    pub fn code(self) -> &'static str {
        match self {
            Self::Actual => "Actual",
            Self::Exercise => "Exercise",
            Self::Test => "Test",
        }
    }
    pub fn from_code(code: &str) -> Option<Self> {
        [Self::Actual, Self::Exercise, Self::Test]
            .into_iter()
            .find(|m| m.code() == code)
    }
}

/// Who or what raised the alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertOrigin {
    /// Computed by a rule from observations: a pre-warning until confirmed.
    Computed { rule_id: String },
    /// Issued by a duty officer.
    Officer { user: String },
    /// Relayed from an official bulletin, whose stated level is authoritative; `grade` is
    /// how its sender graded it, which the relayed CAP keeps.
    Bulletin { source: String, grade: Option<CapGrade> },
}

/// A CAP message's own grading of its event: `urgency`, `severity` and `certainty`, each
/// one of the values CAP 1.2 allows (§3.2.2). A bulletin's grade is kept when canhbao
/// relays its level: the sender knows better how sure and how urgent it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapGrade {
    urgency: &'static str,
    severity: &'static str,
    certainty: &'static str,
}

impl CapGrade {
    const URGENCY: [&'static str; 5] = ["Immediate", "Expected", "Future", "Past", "Unknown"];
    const SEVERITY: [&'static str; 5] = ["Extreme", "Severe", "Moderate", "Minor", "Unknown"];
    const CERTAINTY: [&'static str; 6] = [
        "Observed",
        "Likely",
        "Possible",
        "Unlikely",
        "Unknown",
        "Very Likely",
    ];

    /// The grade from the three CAP values; `None` if any is missing or not CAP's
    /// (a grade the sender did not give is not invented). CAP 1.0's "Very Likely" reads
    /// as CAP 1.2's "Likely".
    pub fn new(urgency: &str, severity: &str, certainty: &str) -> Option<Self> {
        let find = |list: &[&'static str], v: &str| list.iter().copied().find(|x| *x == v.trim());
        let certainty = match find(&Self::CERTAINTY, certainty)? {
            "Very Likely" => "Likely",
            c => c,
        };
        Some(Self {
            urgency: find(&Self::URGENCY, urgency)?,
            severity: find(&Self::SEVERITY, severity)?,
            certainty,
        })
    }

    pub fn urgency(&self) -> &'static str {
        self.urgency
    }
    pub fn severity(&self) -> &'static str {
        self.severity
    }
    pub fn certainty(&self) -> &'static str {
        self.certainty
    }

    /// As stored: `urgency/severity/certainty`.
    pub fn code(&self) -> String {
        format!("{}/{}/{}", self.urgency, self.severity, self.certainty)
    }

    /// From [`CapGrade::code`].
    pub fn from_code(code: &str) -> Option<Self> {
        let mut it = code.split('/');
        let g = Self::new(it.next()?, it.next()?, it.next()?)?;
        it.next().is_none().then_some(g)
    }
}

/// Why the station follower sent a computed alarm-level alert: the state of the river at
/// the station rose (issue, escalate), held (renew), or fell (de-escalate, all-clear).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowKind {
    Issue,
    Escalate,
    /// The same level, with a later expiry: receivers that played the alert it replaces
    /// take it without playing it again.
    Renew,
    /// The same level restated at its class's cadence while fresh readings hold it: a new
    /// announcement, which receivers play (unlike a renewal).
    Restate,
    DeEscalate,
    /// The river fell below every alarm level: the incident is over.
    AllClear,
}

impl FollowKind {
    pub fn code(self) -> &'static str {
        match self {
            Self::Issue => "issue",
            Self::Escalate => "escalate",
            Self::Renew => "renew",
            Self::Restate => "restate",
            Self::DeEscalate => "de-escalate",
            Self::AllClear => "all-clear",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        [
            Self::Issue,
            Self::Escalate,
            Self::Renew,
            Self::Restate,
            Self::DeEscalate,
            Self::AllClear,
        ]
        .into_iter()
        .find(|k| k.code() == code)
    }
}

/// How often a receiver repeats the message after first playing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeat {
    /// Plays in total, at least 1.
    pub times: u8,
    /// Seconds between plays.
    pub interval_s: u32,
}

/// Everything an alert says, before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSpec {
    pub id: AlertId,
    pub province: ProvinceCode,
    pub msg_type: MsgType,
    pub status: AlertStatus,
    pub references: Vec<AlertId>,
    pub origin: AlertOrigin,
    pub hazard: Hazard,
    pub risk_level: Option<RiskLevel>,
    pub alarm_level: Option<AlarmLevel>,
    pub station: Option<StationId>,
    pub class: MessageClass,
    pub communes: Vec<CommuneCode>,
    pub sent: DateTime<Utc>,
    pub effective: DateTime<Utc>,
    pub expires: DateTime<Utc>,
    pub headline: String,
    pub description: String,
    pub instruction: String,
    pub repeat: Repeat,
    /// Why the alert's level is provisional (a threshold tagged S, M or NF, a provisional
    /// mapping, a computed pre-warning). Empty when every input is official.
    pub provisional: Vec<String>,
    /// The text in English, when an officer gave it (for CAP consumers abroad; receivers
    /// play the Vietnamese).
    pub english: Option<Translation>,
    /// For an alert the station follower sent: why.
    pub follow: Option<FollowKind>,
}

/// An alert's text in another language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    pub headline: String,
    pub description: String,
    pub instruction: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    #[error("an alert needs at least one target commune")]
    NoCommunes,
    #[error("expires ({expires}) must be after effective ({effective})")]
    ExpiresBeforeEffective {
        effective: DateTime<Utc>,
        expires: DateTime<Utc>,
    },
    #[error("{0} must not be empty")]
    EmptyText(&'static str),
    #[error("an {0} must reference the alert it changes")]
    MissingReference(&'static str),
    #[error("repeat.times must be at least 1")]
    NoPlays,
}

/// A validated alert. Read its fields through `Deref<Target = AlertSpec>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert(AlertSpec);

impl Alert {
    pub fn new(mut spec: AlertSpec) -> Result<Self, AlertError> {
        spec.communes.sort();
        spec.communes.dedup();
        if spec.communes.is_empty() {
            return Err(AlertError::NoCommunes);
        }
        if spec.expires <= spec.effective {
            return Err(AlertError::ExpiresBeforeEffective {
                effective: spec.effective,
                expires: spec.expires,
            });
        }
        for (name, text) in [("headline", &spec.headline), ("description", &spec.description)] {
            if text.trim().is_empty() {
                return Err(AlertError::EmptyText(name));
            }
        }
        if let Some(en) = &spec.english {
            for (name, text) in [("headline_en", &en.headline), ("description_en", &en.description)] {
                if text.trim().is_empty() {
                    return Err(AlertError::EmptyText(name));
                }
            }
        }
        if spec.msg_type != MsgType::Alert && spec.references.is_empty() {
            return Err(AlertError::MissingReference(spec.msg_type.code()));
        }
        if spec.repeat.times == 0 {
            return Err(AlertError::NoPlays);
        }
        Ok(Self(spec))
    }

    pub fn is_provisional(&self) -> bool {
        !self.0.provisional.is_empty()
    }

    /// Whether the alert has expired at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.0.expires
    }
}

impl Deref for Alert {
    type Target = AlertSpec;
    fn deref(&self) -> &AlertSpec {
        &self.0
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_cap_grade_takes_only_the_values_cap_allows() {
        let g = CapGrade::new("Immediate", "Extreme", "Very Likely").unwrap();
        assert_eq!(g.certainty(), "Likely", "CAP 1.0's Very Likely reads as Likely");
        assert_eq!(CapGrade::from_code(&g.code()), Some(g));
        assert_eq!(CapGrade::new("Immediate", "Severe", "chắc chắn"), None);
        assert_eq!(CapGrade::new("", "Severe", "Observed"), None);
        assert_eq!(CapGrade::from_code("Immediate/Severe/Observed/x"), None);
    }
    use super::*;

    fn spec() -> AlertSpec {
        let t: DateTime<Utc> = "2026-10-09T01:00:00Z".parse().unwrap();
        AlertSpec {
            id: AlertId::new("a1").unwrap(),
            province: ProvinceCode::new("20").unwrap(),
            msg_type: MsgType::Alert,
            status: AlertStatus::Actual,
            references: vec![],
            origin: AlertOrigin::Computed {
                rule_id: "flood.alarm-crossing".into(),
            },
            hazard: Hazard::Flood,
            risk_level: None,
            alarm_level: Some(AlarmLevel::Bd3),
            station: None,
            class: MessageClass::Emergency,
            communes: vec![
                CommuneCode::new("06391").unwrap(),
                CommuneCode::new("06385").unwrap(),
                CommuneCode::new("06391").unwrap(),
            ],
            sent: t,
            effective: t,
            expires: t + chrono::Duration::hours(6),
            headline: "h".into(),
            description: "d".into(),
            instruction: String::new(),
            repeat: Repeat {
                times: 3,
                interval_s: 300,
            },
            provisional: vec![],
            english: None,
            follow: None,
        }
    }

    #[test]
    fn alerts_are_validated_and_communes_deduplicated() {
        let a = Alert::new(spec()).unwrap();
        assert_eq!(a.communes.len(), 2);
        assert_eq!(a.communes[0].as_str(), "06385");
        assert!(!a.is_expired(a.effective));
        assert!(a.is_expired(a.expires));

        let mut s = spec();
        s.communes.clear();
        assert_eq!(Alert::new(s), Err(AlertError::NoCommunes));
        let mut s = spec();
        s.expires = s.effective;
        assert!(matches!(
            Alert::new(s),
            Err(AlertError::ExpiresBeforeEffective { .. })
        ));
        let mut s = spec();
        s.msg_type = MsgType::Cancel;
        assert_eq!(Alert::new(s), Err(AlertError::MissingReference("Cancel")));
    }
}

/// The signed bytes of an alert (or of any message of the receiver protocol), kept so that
/// every re-publication is byte-identical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPayload {
    pub payload: Vec<u8>,
    pub key_id: String,
    pub sig: String,
}
