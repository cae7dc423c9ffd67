//! Risk classification: from observations to an [`Assessment`] of one hazard at one
//! place, with the ids of the rules that fired and why.
//!
//! This crate is pure. It does no I/O, reads no clock and knows nothing of storage,
//! brokers or HTTP; callers pass the station table, the readings and the time.
//! Entry points: [`evaluate`] (risk levels from rules written as data), [`follow::decide`]
//! (the station follower: what a station's flood alarm levels of Decision 05/2020, BĐ1 to
//! BĐ3, call for now), [`quality::classify`] (quality control of readings) and
//! [`replay::replay`] (all of them over history).

pub mod coverage;
pub mod engine;
pub mod eval;
pub mod follow;
pub mod quality;
pub mod replay;
pub mod series;
pub mod state;

pub use engine::{Action, RuleErrors, RuleSet, load};
pub use eval::{Inputs, evaluate, evaluate_held};
pub use state::{Tracker, Transition};

use chrono::{DateTime, Utc};
use domain::{AlarmLevel, CommuneCode, Hazard, MessageClass, RiskLevel, Station, StationId, Tagged};

/// Id and version of the flood alarm-crossing rule; carried in every alert it raises.
pub const FLOOD_ALARM_CROSSING: &str = "flood.alarm-crossing@1";

/// The result of rules for one hazard at one station's communes.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub hazard: Hazard,
    pub rule_id: &'static str,
    pub station: StationId,
    pub alarm_level: AlarmLevel,
    /// `None` while the inputs that Decision 18 needs for a risk level are not known.
    pub risk_level: Option<RiskLevel>,
    pub class: MessageClass,
    pub value_m: f64,
    pub threshold_m: Tagged<f64>,
    pub observed_at: DateTime<Utc>,
    pub communes: Vec<CommuneCode>,
    /// Why the result is provisional; empty when every input is official.
    pub provisional: Vec<String>,
}

/// The highest alarm level whose threshold `value_m` reaches, if any.
///
/// Levels that no source gives (tag NF, so `None` in config) are skipped, never guessed.
pub fn alarm_band(station: &Station, value_m: f64) -> Option<(AlarmLevel, Tagged<f64>)> {
    AlarmLevel::ALL.into_iter().rev().find_map(|level| {
        station
            .alarm(level)
            .filter(|t| value_m >= t.value)
            .map(|t| (level, t))
    })
}

/// The assessment of `station` at alarm `level` for a reading of `value_m` at
/// `observed_at`: its class, the threshold and every reason it is provisional. `None` if
/// no source gives the level's threshold.
///
/// The risk level stays `None`: Art. 45 needs the station's area class, which no source
/// gives for Lạng Sơn. The message class follows the bulletin types of Decision 18:
/// BĐ3 calls for an emergency flood bulletin, so it plays as Emergency; BĐ1 and BĐ2 as
/// Priority. When to send it is the station follower's ([`follow::decide`]).
pub fn alarm_assessment(
    station: &Station,
    level: AlarmLevel,
    value_m: f64,
    observed_at: DateTime<Utc>,
) -> Option<Assessment> {
    let threshold = station.alarm(level)?;
    let mut provisional = Vec::new();
    if threshold.tag.is_provisional() {
        provisional.push(format!(
            "{} {:.2} m at {} is tagged {} (not verified in an official source)",
            level.short_vi(),
            threshold.value,
            station.id,
            threshold.tag
        ));
    }
    if let Some(why) = &station.communes_provisional {
        provisional.push(format!(
            "the communes of {} are a provisional mapping: {why}",
            station.id
        ));
    }
    provisional.push(format!(
        "risk level not assessed: the Decision 18 Art. 45 area class of {} is not known",
        station.id
    ));
    Some(Assessment {
        hazard: Hazard::Flood,
        rule_id: FLOOD_ALARM_CROSSING,
        station: station.id.clone(),
        alarm_level: level,
        risk_level: None,
        class: match level {
            AlarmLevel::Bd3 => MessageClass::Emergency,
            AlarmLevel::Bd1 | AlarmLevel::Bd2 => MessageClass::Priority,
        },
        value_m,
        threshold_m: threshold,
        observed_at,
        communes: station.communes.clone(),
        provisional,
    })
}

/// What the unit tests of this crate share.
#[cfg(test)]
pub(crate) mod testing {
    use domain::{CommuneCode, Station, StationId, Tag, Tagged};

    /// Hữu Lũng's station: BĐ1 17.00 [D], BĐ2 18.00 [M], BĐ3 19.00 [D].
    pub(crate) fn huu_lung() -> Station {
        Station {
            id: StationId::new("HUULUNG").unwrap(),
            name: "Hữu Lũng".into(),
            river: "Trung".into(),
            basin: "Thương".into(),
            area_class: None,
            bd1_m: Some(Tagged::new(17.0, Tag::D)),
            bd2_m: Some(Tagged::new(18.0, Tag::M)),
            bd3_m: Some(Tagged::new(19.0, Tag::D)),
            historic_m: Some(Tagged::new(22.54, Tag::V)),
            communes: vec![CommuneCode::new("06385").unwrap()],
            communes_provisional: Some("no source".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::huu_lung;

    #[test]
    fn a_missing_level_is_skipped_never_guessed() {
        let mut s = huu_lung();
        s.bd2_m = None;
        assert_eq!(alarm_band(&s, 18.5).map(|(l, _)| l), Some(AlarmLevel::Bd1));
        assert_eq!(alarm_band(&s, 19.5).map(|(l, _)| l), Some(AlarmLevel::Bd3));
    }

    #[test]
    fn provisional_inputs_are_named_and_bd3_plays_as_emergency() {
        let t: DateTime<Utc> = "2026-10-09T01:00:00Z".parse().unwrap();
        let a = alarm_assessment(&huu_lung(), AlarmLevel::Bd2, 18.2, t).unwrap();
        assert_eq!(a.class, MessageClass::Priority);
        assert!(
            a.provisional
                .iter()
                .any(|p| p.contains("BĐ2 18.00 m at HUULUNG is tagged M")),
            "{:?}",
            a.provisional
        );
        assert!(a.provisional.iter().any(|p| p.contains("provisional mapping")));
        let a = alarm_assessment(&huu_lung(), AlarmLevel::Bd3, 19.4, t).unwrap();
        assert_eq!(a.class, MessageClass::Emergency);
        assert!(
            !a.provisional.iter().any(|p| p.contains("BĐ3 19.00 m")),
            "BĐ3 is tagged D, not provisional"
        );
    }
}
