//! Pure composition of an alert from an assessment: text, class, lifetime and repeats.

use std::collections::HashMap;

use crate::render::flood_follow_text;
use chrono::{DateTime, Duration, Utc};
use domain::{
    Alert, AlertError, AlertId, AlertOrigin, AlertSpec, AlertStatus, FollowKind, MessageClass, MsgType,
    Parameter, Repeat, Station, StationId,
};
use protocol::Topics;
use rules::follow::{Decision, FollowSettings};
use rules::quality::{FirstReading, QcSettings};

/// How computed alerts are shaped, how readings are checked and how alerts follow a
/// station's state; from the `[alerts]` and `[ingest]` settings and the rules' limits.
/// Operational choices of canhbao, not figures of a regulation.
#[derive(Debug, Clone)]
pub struct AlertPolicy {
    /// Lifetime of a computed alert from the time it is issued (or renewed).
    pub ttl: Duration,
    /// A reading older than this does not say what the river does now: it is stored and
    /// checked, but decides no state.
    pub max_reading_age: Duration,
    pub repeat_emergency: Repeat,
    pub repeat_priority: Repeat,
    pub repeat_normal: Repeat,
    /// The step check: the fastest plausible change of a water level, m per hour. A
    /// faster change waits for the next reading to confirm it.
    pub max_water_level_rate_m_per_h: Option<f64>,
    /// The persistence check: a water level unchanged for this long is stuck.
    pub stuck_after: Option<Duration>,
    /// The range check, per parameter code (the rules' plausible ranges).
    pub ranges: HashMap<String, (f64, f64)>,
    /// What a station's first reading needs, unless the station says otherwise.
    pub first_reading: FirstReading,
    /// Stations whose first reading is handled otherwise.
    pub first_reading_at: HashMap<StationId, FirstReading>,
    /// Lifetime of an all-clear.
    pub all_clear_ttl: Duration,
    /// A live alert is renewed when it would expire within this.
    pub renew_before: Duration,
    /// While the level holds, a live alert is restated this often, by class (Emergency,
    /// Priority); see [`FollowSettings`].
    pub restate_emergency: Option<Duration>,
    pub restate_priority: Option<Duration>,
    /// A computed Emergency resting on a figure that is not verified waits this long for
    /// a duty officer's confirmation, then goes out anyway; `None` sends it at once.
    pub confirm_unverified_emergency: Option<Duration>,
    /// Without fresh readings, a live alert is renewed on the last known state until the
    /// newest reading is this old.
    pub blind_renew: Duration,
    /// How long a level must fail to hold before it comes down (the rules' hold).
    pub hold: Duration,
    /// The water-level hysteresis margin, m (the rules' margin).
    pub margin_m: f64,
}

impl Default for AlertPolicy {
    /// The shipped defaults (`config/default.toml`, `config/rules/settings.toml`).
    fn default() -> Self {
        Self {
            ttl: Duration::hours(6),
            max_reading_age: Duration::hours(3),
            repeat_emergency: Repeat {
                times: 3,
                interval_s: 300,
            },
            repeat_priority: Repeat {
                times: 2,
                interval_s: 600,
            },
            repeat_normal: Repeat {
                times: 1,
                interval_s: 0,
            },
            max_water_level_rate_m_per_h: Some(3.0),
            stuck_after: Some(Duration::hours(6)),
            ranges: HashMap::from([("water_level".to_owned(), (-10.0, 3000.0))]),
            first_reading: FirstReading::Confirm,
            first_reading_at: HashMap::new(),
            all_clear_ttl: Duration::hours(2),
            renew_before: Duration::hours(1),
            restate_emergency: Some(Duration::hours(2)),
            restate_priority: Some(Duration::hours(3)),
            confirm_unverified_emergency: Some(Duration::minutes(10)),
            blind_renew: Duration::hours(24),
            hold: Duration::hours(3),
            margin_m: 0.10,
        }
    }
}

impl AlertPolicy {
    /// The follower's settings.
    pub fn follow(&self) -> FollowSettings {
        FollowSettings {
            fresh: self.max_reading_age,
            hold: self.hold,
            margin_m: self.margin_m,
            renew_before: self.renew_before,
            restate_emergency: self.restate_emergency,
            restate_priority: self.restate_priority,
            blind_renew: self.blind_renew,
        }
    }

    /// The checks for `parameter` at `station` in a series of `status`. Only real
    /// readings get the step, persistence and first-reading checks: an exercise replays
    /// a series compressed in time.
    pub fn qc(&self, station: &StationId, parameter: Parameter, status: AlertStatus) -> QcSettings {
        let water = parameter == Parameter::WaterLevel;
        let full = QcSettings {
            range: self.ranges.get(parameter.code()).copied(),
            max_rate_per_h: self.max_water_level_rate_m_per_h.filter(|_| water),
            stuck_after: self.stuck_after.filter(|_| water),
            first: if water {
                self.first_reading_at
                    .get(station)
                    .copied()
                    .unwrap_or(self.first_reading)
            } else {
                FirstReading::Accept
            },
        };
        if status == AlertStatus::Actual {
            full
        } else {
            full.range_only()
        }
    }

    fn repeat_for(&self, class: MessageClass) -> Repeat {
        match class {
            MessageClass::Emergency => self.repeat_emergency,
            MessageClass::Priority => self.repeat_priority,
            MessageClass::Normal => self.repeat_normal,
        }
    }
}

/// A station follower's alert (see [`rules::follow`]): what `decision` says for
/// `station`, issued at `now`, referencing `references` (every earlier message of the
/// incident; an Update when not empty). `None` when the decision sends nothing, or the
/// level has no threshold (which the follower never picks).
#[allow(clippy::too_many_arguments)]
pub fn follow_alert(
    station: &Station,
    decision: Decision,
    id: AlertId,
    references: Vec<AlertId>,
    topics: &Topics,
    policy: &AlertPolicy,
    status: AlertStatus,
    now: DateTime<Utc>,
) -> Option<Result<Alert, AlertError>> {
    let (kind, level, from, reading, blind) = match decision {
        Decision::Nothing => return None,
        Decision::Issue { level, reading } => (FollowKind::Issue, level, None, reading, false),
        Decision::Escalate { from, to, reading } => (FollowKind::Escalate, to, from, reading, false),
        Decision::Renew {
            level,
            reading,
            blind,
            restate,
        } => (
            if restate {
                FollowKind::Restate
            } else {
                FollowKind::Renew
            },
            level,
            None,
            reading,
            blind,
        ),
        Decision::DeEscalate { from, to, reading } => {
            (FollowKind::DeEscalate, to, Some(from), reading, false)
        }
        Decision::AllClear { from, reading } => (FollowKind::AllClear, from, Some(from), reading, false),
    };
    let a = rules::alarm_assessment(station, level, reading.value, reading.at)?;
    let mut text = flood_follow_text(station, &a, kind, from, blind);
    if status != AlertStatus::Actual {
        text.headline = format!("[DIỄN TẬP] {}", text.headline);
    }
    let all_clear = kind == FollowKind::AllClear;
    let class = if all_clear {
        MessageClass::Priority
    } else {
        a.class
    };
    let mut provisional = a.provisional.clone();
    if all_clear {
        // The all-clear states no level: only what its threshold and mapping rest on.
        provisional.retain(|p| !p.starts_with("risk level not assessed"));
    }
    Some(Alert::new(AlertSpec {
        id,
        province: topics.province().clone(),
        msg_type: if references.is_empty() {
            MsgType::Alert
        } else {
            MsgType::Update
        },
        status,
        references,
        origin: AlertOrigin::Computed {
            rule_id: a.rule_id.to_owned(),
        },
        hazard: a.hazard,
        risk_level: a.risk_level,
        alarm_level: (!all_clear).then_some(a.alarm_level),
        station: Some(a.station.clone()),
        class,
        communes: a.communes.clone(),
        sent: now,
        effective: now,
        expires: now
            + if all_clear {
                policy.all_clear_ttl
            } else {
                policy.ttl
            },
        headline: text.headline,
        description: text.description,
        instruction: text.instruction,
        repeat: if all_clear {
            Repeat {
                times: 1,
                interval_s: 0,
            }
        } else {
            policy.repeat_for(class)
        },
        provisional,
        english: None,
        follow: Some(kind),
    }))
}

/// How long a computed alert waits for a duty officer's confirmation: an Emergency that
/// starts or raises a warning (not a restatement or renewal of one already out) and rests
/// on a figure that is not verified (`unverified`) waits for the policy's time; anything
/// else goes out at once. The reference expects an operator to confirm Emergency messages
/// (§4.3, engineering advice); a verified figure or an authoritative bulletin needs none.
pub fn confirmation_wait(alert: &Alert, unverified: bool, policy: &AlertPolicy) -> Option<Duration> {
    let starts = matches!(
        alert.follow,
        None | Some(FollowKind::Issue) | Some(FollowKind::Escalate)
    );
    let computed = matches!(alert.origin, AlertOrigin::Computed { .. });
    (alert.class == MessageClass::Emergency && computed && starts && unverified)
        .then_some(policy.confirm_unverified_emergency)
        .flatten()
}

/// The loudspeaker class of a risk level (reference §4.2, Circular 39/2020): Emergency,
/// played at once, for level 3 and above, for every flash-flood and landslide warning,
/// and for a bulletin its sender marks as an emergency ("khẩn cấp"); Priority otherwise.
pub fn risk_class(
    hazard: domain::Hazard,
    level: domain::RiskLevel,
    bulletin_emergency: bool,
) -> MessageClass {
    if level.get() >= 3 || hazard == domain::Hazard::FlashFlood || bulletin_emergency {
        MessageClass::Emergency
    } else {
        MessageClass::Priority
    }
}

/// The alert for a risk level that a rule auto-issues, for `communes`, issued at `now`.
#[allow(clippy::too_many_arguments)]
pub fn risk_alert(
    a: &rules::eval::Assessment,
    level: domain::RiskLevel,
    communes: Vec<domain::CommuneCode>,
    id: AlertId,
    topics: &Topics,
    policy: &AlertPolicy,
    status: AlertStatus,
    now: DateTime<Utc>,
) -> Result<Alert, AlertError> {
    risk_update(a, level, communes, Vec::new(), id, topics, policy, status, now)
}

/// As [`risk_alert`], as an Update of the incident `references` when it is not empty
/// (a level that came down: "hạ xuống cấp N").
#[allow(clippy::too_many_arguments)]
pub fn risk_update(
    a: &rules::eval::Assessment,
    level: domain::RiskLevel,
    communes: Vec<domain::CommuneCode>,
    references: Vec<AlertId>,
    id: AlertId,
    topics: &Topics,
    policy: &AlertPolicy,
    status: AlertStatus,
    now: DateTime<Utc>,
) -> Result<Alert, AlertError> {
    use crate::render::LevelFrom;
    let (from, origin) = match &a.source {
        rules::eval::LevelSource::Computed => (
            LevelFrom::Computed { official: a.official },
            AlertOrigin::Computed {
                rule_id: a.rules.join(" "),
            },
        ),
        rules::eval::LevelSource::Bulletin {
            id,
            sender,
            authoritative,
            grade,
            issued,
            ..
        } => (
            LevelFrom::Bulletin {
                id,
                sender,
                vouched: *authoritative,
                issued: Some(*issued),
            },
            AlertOrigin::Bulletin {
                source: format!("{sender} {id}"),
                grade: grade.clone(),
            },
        ),
    };
    let mut text = crate::render::risk_level_text(a.hazard, level, from, now);
    if !references.is_empty() {
        text.headline = format!(
            "Cảnh báo cấp độ rủi ro thiên tai do {}: hạ xuống cấp {}",
            a.hazard.name_vi(),
            level.get()
        );
    }
    if status != AlertStatus::Actual {
        text.headline = format!("[DIỄN TẬP] {}", text.headline);
    }
    let class = risk_class(a.hazard, level, a.bulletin_emergency());
    let mut provisional = a.provisional_reasons.clone();
    if !a.official && provisional.is_empty() {
        provisional.push("the level is computed, not stated by an official bulletin".into());
    }
    Alert::new(AlertSpec {
        id,
        province: topics.province().clone(),
        msg_type: if references.is_empty() {
            MsgType::Alert
        } else {
            MsgType::Update
        },
        status,
        references,
        origin,
        hazard: a.hazard,
        risk_level: Some(level),
        alarm_level: None,
        station: None,
        class,
        communes,
        sent: now,
        effective: now,
        expires: now + policy.ttl,
        headline: text.headline,
        description: text.description,
        instruction: text.instruction,
        repeat: policy.repeat_for(class),
        provisional,
        english: None,
        follow: None,
    })
}

/// Every message of `previous`'s incident, itself last: what an Update of it references.
/// `None` when a stored id is not valid.
pub(crate) fn incident_references(previous: &store::AlertRecord) -> Option<Vec<AlertId>> {
    previous
        .references
        .iter()
        .chain([&previous.id])
        .map(|r| AlertId::new(r).ok())
        .collect()
}

/// Whether a live risk-level alert is due to be restated at `now`: at its class's
/// cadence (an Emergency every `restate_emergency`, others every `restate_priority`), and
/// in any case before it expires.
pub fn risk_restate_due(previous: &store::AlertRecord, policy: &AlertPolicy, now: DateTime<Utc>) -> bool {
    let every = if previous.class == MessageClass::Emergency.code() {
        policy.restate_emergency
    } else {
        policy.restate_priority
    };
    previous.expires - now <= policy.renew_before || every.is_some_and(|e| now - previous.sent >= e)
}

/// The restatement of a live risk-level alert while its level holds: an Update of the
/// whole incident, the same hazard, level and class, for `communes` (those where the level
/// still holds), saying "(tiếp theo)" with the time of now; a bulletin's level cites
/// `bulletin` (id, sender, issue time), the live bulletin that states it now. `None` when a stored
/// code is not one canhbao knows.
pub fn restate_risk_alert(
    previous: &store::AlertRecord,
    communes: Vec<domain::CommuneCode>,
    bulletin: Option<(&str, &str, DateTime<Utc>)>,
    id: AlertId,
    topics: &Topics,
    policy: &AlertPolicy,
    now: DateTime<Utc>,
) -> Option<Result<Alert, AlertError>> {
    use crate::render::LevelFrom;
    let hazard = domain::Hazard::from_code(&previous.hazard)?;
    let level = previous
        .risk_level
        .and_then(|l| u8::try_from(l).ok())
        .and_then(domain::RiskLevel::new)?;
    let class = MessageClass::from_code(&previous.class)?;
    let status = AlertStatus::from_code(&previous.status)?;
    let references = incident_references(previous)?;
    let (from, origin) = match (previous.origin_kind.as_str(), bulletin) {
        ("bulletin", Some((bid, sender, issued))) => (
            LevelFrom::Bulletin {
                id: bid,
                sender,
                vouched: true,
                issued: Some(issued),
            },
            AlertOrigin::Bulletin {
                source: format!("{sender} {bid}"),
                grade: previous.grade.clone(),
            },
        ),
        ("computed", _) => (
            LevelFrom::Computed {
                official: previous.provisional.is_empty(),
            },
            AlertOrigin::Computed {
                rule_id: previous.origin_detail.clone(),
            },
        ),
        _ => return None,
    };
    let mut text = crate::render::risk_level_text(hazard, level, from, now);
    text.headline = format!(
        "Cảnh báo cấp độ rủi ro thiên tai do {} (tiếp theo): cấp {}",
        hazard.name_vi(),
        level.get()
    );
    if status != AlertStatus::Actual {
        text.headline = format!("[DIỄN TẬP] {}", text.headline);
    }
    Some(Alert::new(AlertSpec {
        id,
        province: topics.province().clone(),
        msg_type: MsgType::Update,
        status,
        references,
        origin,
        hazard,
        risk_level: Some(level),
        alarm_level: None,
        station: None,
        class,
        communes,
        sent: now,
        effective: now,
        expires: now + policy.ttl,
        headline: text.headline,
        description: text.description,
        instruction: text.instruction,
        repeat: policy.repeat_for(class),
        provisional: previous.provisional.clone(),
        english: None,
        follow: None,
    }))
}

/// The end of a risk level that a live alert announced: an Update of the incident, like
/// the station follower's all-clear (CAP responseType AllClear, urgency Past), priority,
/// played once, live for the all-clear time. `None` when a stored code is not known.
pub fn risk_end_alert(
    previous: &store::AlertRecord,
    id: AlertId,
    topics: &Topics,
    policy: &AlertPolicy,
    now: DateTime<Utc>,
) -> Option<Result<Alert, AlertError>> {
    let hazard = domain::Hazard::from_code(&previous.hazard)?;
    let status = AlertStatus::from_code(&previous.status)?;
    let communes: Vec<domain::CommuneCode> = previous
        .communes
        .iter()
        .map(|c| domain::CommuneCode::new(c).ok())
        .collect::<Option<_>>()?;
    let references = incident_references(previous)?;
    let origin = match previous.origin_kind.as_str() {
        "bulletin" => AlertOrigin::Bulletin {
            source: previous.origin_detail.clone(),
            grade: None,
        },
        "computed" => AlertOrigin::Computed {
            rule_id: previous.origin_detail.clone(),
        },
        _ => return None,
    };
    let name = hazard.name_vi();
    let mut headline = format!("Hết cảnh báo cấp độ rủi ro thiên tai do {name}");
    if status != AlertStatus::Actual {
        headline = format!("[DIỄN TẬP] {headline}");
    }
    let from = previous.risk_level.unwrap_or_default();
    Some(Alert::new(AlertSpec {
        id,
        province: topics.province().clone(),
        msg_type: MsgType::Update,
        status,
        references,
        origin,
        hazard,
        risk_level: None,
        alarm_level: None,
        station: None,
        class: MessageClass::Priority,
        communes,
        sent: now,
        effective: now,
        expires: now + policy.all_clear_ttl,
        headline,
        description: format!(
            "Lúc {}, cấp độ rủi ro thiên tai do {name} (trước đó cấp {from}) đã kết thúc.",
            crate::render::local_time_vi(now)
        ),
        instruction: "Tiếp tục theo dõi thông báo của chính quyền địa phương; chỉ trở lại nơi nguy hiểm khi được thông báo an toàn."
            .to_owned(),
        repeat: Repeat {
            times: 1,
            interval_s: 0,
        },
        provisional: Vec::new(),
        english: None,
        follow: Some(FollowKind::AllClear),
    }))
}

/// A duty officer's warning before it is issued.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub hazard: domain::Hazard,
    pub risk_level: Option<domain::RiskLevel>,
    /// `None`: emergency from risk level 3, priority below (reference §4.2).
    pub class: Option<MessageClass>,
    pub communes: Vec<domain::CommuneCode>,
    pub headline: String,
    pub description: String,
    pub instruction: String,
    pub status: AlertStatus,
    /// When it takes effect; `None`: at issue.
    pub effective: Option<DateTime<Utc>>,
    /// When it ends; `None`: `valid_for` after it takes effect.
    pub expires: Option<DateTime<Utc>>,
    /// How long it stays in force when `expires` is not given.
    pub valid_for: Duration,
    /// The compound escalation of Decision 18 Art. 4, applied by the officer.
    pub escalation: Option<Escalation>,
    /// The text in English, for CAP consumers abroad (optional).
    pub english: Option<domain::Translation>,
    /// Whether it may go by SMS (the fallback to officials); loudspeakers always carry it.
    pub sms: bool,
}

/// An officer's compound escalation: +1 or +2 on the computed level, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct Escalation {
    pub steps: u8,
    pub reason: String,
}

impl Draft {
    /// The level the alert carries: the draft's, raised by its escalation (never above 5).
    pub fn level(&self) -> Result<Option<domain::RiskLevel>, DraftError> {
        match (self.risk_level, &self.escalation) {
            (level, None) => Ok(level),
            (None, Some(_)) => Err(DraftError::EscalationWithoutLevel),
            (Some(level), Some(e)) => {
                if e.reason.trim().is_empty() {
                    return Err(DraftError::EscalationWithoutReason);
                }
                level
                    .escalated(e.steps)
                    .map(Some)
                    .ok_or(DraftError::EscalationSteps(e.steps))
            }
        }
    }
}

/// Why a draft cannot become an alert.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DraftError {
    #[error("an escalation needs a risk level to raise")]
    EscalationWithoutLevel,
    #[error("an escalation needs a reason")]
    EscalationWithoutReason,
    #[error("an escalation raises a level by 1 or 2 (Decision 18 Art. 4), not {0}")]
    EscalationSteps(u8),
    #[error("it would already have expired at {expires}")]
    AlreadyExpired { expires: DateTime<Utc> },
    #[error(transparent)]
    Alert(#[from] AlertError),
}

/// The class a draft gets when its officer names none: as [`risk_class`] (emergency from
/// risk level 3 after any escalation, and for flash floods and landslides), priority below.
pub fn draft_class(draft: &Draft) -> MessageClass {
    let level = draft.level().ok().flatten().or(draft.risk_level);
    draft.class.unwrap_or(match level {
        Some(l) => risk_class(draft.hazard, l, false),
        None if draft.hazard == domain::Hazard::FlashFlood => MessageClass::Emergency,
        None => MessageClass::Priority,
    })
}

/// The alert a draft would be if `by` issued it at `now`: its class, repeats from the
/// `[alerts]` policy, and its lifetime. `references` are every earlier message of the
/// incident when it is an Update (empty for a new alert). An alert whose `expires` has
/// passed at `now` is refused.
pub fn officer_alert(
    draft: &Draft,
    by: &str,
    id: AlertId,
    references: Vec<AlertId>,
    topics: &Topics,
    policy: &AlertPolicy,
    now: DateTime<Utc>,
) -> Result<Alert, DraftError> {
    let class = draft_class(draft);
    let risk_level = draft.level()?;
    let effective = draft.effective.unwrap_or(now);
    let expires = draft.expires.unwrap_or(effective + draft.valid_for);
    if expires <= now {
        return Err(DraftError::AlreadyExpired { expires });
    }
    let mut description = draft.description.trim().to_owned();
    if let (Some(e), Some(from), Some(to)) = (&draft.escalation, draft.risk_level, risk_level) {
        description.push_str(&format!(
            "\nCấp độ rủi ro được nâng từ cấp {} lên cấp {} theo Điều 4 Quyết định 18/2021/QĐ-TTg: {}.",
            from.get(),
            to.get(),
            e.reason.trim()
        ));
    }
    Ok(Alert::new(AlertSpec {
        id,
        province: topics.province().clone(),
        msg_type: if references.is_empty() {
            MsgType::Alert
        } else {
            MsgType::Update
        },
        status: draft.status,
        references,
        origin: AlertOrigin::Officer { user: by.to_owned() },
        hazard: draft.hazard,
        risk_level,
        alarm_level: None,
        station: None,
        class,
        communes: draft.communes.clone(),
        sent: now,
        effective,
        expires,
        headline: draft.headline.trim().to_owned(),
        description,
        instruction: draft.instruction.trim().to_owned(),
        repeat: match class {
            MessageClass::Emergency => policy.repeat_emergency,
            MessageClass::Priority => policy.repeat_priority,
            MessageClass::Normal => policy.repeat_normal,
        },
        provisional: vec![],
        english: draft.english.clone(),
        follow: None,
    })?)
}

/// The alert a Cancel ends: what [`cancel_alert`] needs of it.
#[derive(Debug, Clone)]
pub struct Cancelled {
    pub id: AlertId,
    /// Every earlier message of the incident, which the Cancel references too.
    pub references: Vec<AlertId>,
    pub headline: String,
    pub hazard: domain::Hazard,
    pub class: MessageClass,
    pub communes: Vec<domain::CommuneCode>,
    pub status: AlertStatus,
    pub expires: DateTime<Utc>,
}

/// The Cancel of `original`, by `by` at `now`: it reaches the same communes with the same
/// class (a cancelled emergency is announced as urgently as it was raised), plays once,
/// and lives as long as the original would have, so that a receiver that comes back
/// before then still hears that it is over.
pub fn cancel_alert(
    original: &Cancelled,
    reason: &str,
    by: &str,
    id: AlertId,
    topics: &Topics,
    now: DateTime<Utc>,
) -> Result<Alert, AlertError> {
    let reason = reason.trim();
    // Read aloud: no identifier, only what people heard.
    let mut description = format!("Tin cảnh báo \"{}\" đã được hủy bỏ.", original.headline);
    if !reason.is_empty() {
        description.push_str(&format!(" Lý do: {reason}."));
    }
    Alert::new(AlertSpec {
        id,
        province: topics.province().clone(),
        msg_type: MsgType::Cancel,
        status: original.status,
        references: original
            .references
            .iter()
            .chain([&original.id])
            .cloned()
            .collect(),
        origin: AlertOrigin::Officer { user: by.to_owned() },
        hazard: original.hazard,
        risk_level: None,
        alarm_level: None,
        station: None,
        class: original.class,
        communes: original.communes.clone(),
        sent: now,
        effective: now,
        expires: original.expires,
        headline: format!("HỦY BỎ: {}", original.headline),
        description,
        instruction: String::new(),
        repeat: Repeat {
            times: 1,
            interval_s: 0,
        },
        provisional: vec![],
        english: None,
        follow: None,
    })
}

#[cfg(test)]
mod cancel_tests {
    use super::*;

    #[test]
    fn a_cancel_references_the_original_and_keeps_its_class_and_reach() {
        let now: DateTime<Utc> = "2026-10-09T02:00:00Z".parse().unwrap();
        let topics = Topics::new("canhbao/v1", domain::ProvinceCode::new("20").unwrap()).unwrap();
        let original = Cancelled {
            id: AlertId::new("a-1").unwrap(),
            references: vec![AlertId::new("a-0").unwrap()],
            headline: "Lũ trên BĐ3 tại Hữu Lũng".into(),
            hazard: domain::Hazard::Flood,
            class: MessageClass::Emergency,
            communes: vec![domain::CommuneCode::new("06385").unwrap()],
            status: AlertStatus::Actual,
            expires: now + Duration::hours(5),
        };
        let c = cancel_alert(
            &original,
            "đo sai",
            "truc-ban",
            AlertId::new("c-1").unwrap(),
            &topics,
            now,
        )
        .unwrap();
        assert_eq!(c.msg_type, MsgType::Cancel);
        // The whole incident: the update it ends and the alert that update replaced.
        assert_eq!(
            c.references,
            vec![AlertId::new("a-0").unwrap(), original.id.clone()]
        );
        assert_eq!((c.class, c.expires), (MessageClass::Emergency, original.expires));
        assert!(c.description.contains("Lý do: đo sai."), "{}", c.description);
        assert!(c.headline.starts_with("HỦY BỎ:"));
    }
}

#[cfg(test)]
mod officer_tests {
    use super::*;
    use domain::{CommuneCode, Hazard, RiskLevel};

    fn now() -> DateTime<Utc> {
        "2026-10-09T02:00:00Z".parse().unwrap()
    }

    fn topics() -> Topics {
        Topics::new("canhbao/v1", domain::ProvinceCode::new("20").unwrap()).unwrap()
    }

    fn policy() -> AlertPolicy {
        AlertPolicy::default()
    }

    fn draft(level: u8) -> Draft {
        Draft {
            hazard: Hazard::Flood,
            risk_level: RiskLevel::new(level),
            class: None,
            communes: vec![CommuneCode::new("06385").unwrap()],
            headline: "Lũ sông Thương".into(),
            description: "Mực nước lên nhanh.".into(),
            instruction: String::new(),
            status: AlertStatus::Actual,
            effective: None,
            expires: None,
            valid_for: Duration::hours(2),
            escalation: None,
            english: None,
            sms: true,
        }
    }

    fn issue(d: &Draft, references: Vec<AlertId>) -> Result<Alert, DraftError> {
        officer_alert(
            d,
            "user:an",
            AlertId::new("w-1").unwrap(),
            references,
            &topics(),
            &policy(),
            now(),
        )
    }

    #[test]
    fn an_escalation_raises_the_level_and_the_class_and_says_why() {
        let mut d = draft(2);
        assert_eq!(issue(&d, vec![]).unwrap().class, MessageClass::Priority);
        d.escalation = Some(Escalation {
            steps: 2,
            reason: "mưa lớn cùng lũ".into(),
        });
        let a = issue(&d, vec![]).unwrap();
        assert_eq!(a.risk_level, RiskLevel::new(4));
        assert_eq!(a.class, MessageClass::Emergency);
        assert!(a.description.contains("từ cấp 2 lên cấp 4") && a.description.contains("mưa lớn cùng lũ"));
        d.escalation = Some(Escalation {
            steps: 3,
            reason: "x".into(),
        });
        assert_eq!(issue(&d, vec![]), Err(DraftError::EscalationSteps(3)));
        d.escalation = Some(Escalation {
            steps: 1,
            reason: " ".into(),
        });
        assert_eq!(issue(&d, vec![]), Err(DraftError::EscalationWithoutReason));
        let mut no_level = draft(1);
        no_level.risk_level = None;
        no_level.escalation = Some(Escalation {
            steps: 1,
            reason: "x".into(),
        });
        assert_eq!(issue(&no_level, vec![]), Err(DraftError::EscalationWithoutLevel));
    }

    #[test]
    fn a_draft_cannot_be_issued_expired_or_ending_before_it_starts() {
        let mut d = draft(3);
        d.expires = Some(now() - Duration::minutes(1));
        assert!(matches!(
            issue(&d, vec![]),
            Err(DraftError::AlreadyExpired { .. })
        ));
        d.expires = Some(now() + Duration::hours(1));
        d.effective = Some(now() + Duration::hours(2));
        assert!(matches!(
            issue(&d, vec![]),
            Err(DraftError::Alert(AlertError::ExpiresBeforeEffective { .. }))
        ));
    }

    #[test]
    fn a_draft_with_references_is_an_update() {
        let refs = vec![AlertId::new("a-0").unwrap(), AlertId::new("a-1").unwrap()];
        let a = issue(&draft(3), refs.clone()).unwrap();
        assert_eq!((a.msg_type, a.references.clone()), (MsgType::Update, refs));
        assert_eq!(issue(&draft(3), vec![]).unwrap().msg_type, MsgType::Alert);
    }
}
