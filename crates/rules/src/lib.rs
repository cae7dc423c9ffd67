//! Risk classification: from observations to an [`Assessment`] of one hazard at one
//! place, with the ids of the rules that fired and why.
//!
//! This crate is pure. It does no I/O, reads no clock and knows nothing of storage,
//! brokers or HTTP; callers pass the station table, the readings and the time.
//! Entry point: [`flood_alarm_crossing`], the first flood rule (Decision 05/2020 alarm
//! levels BĐ1/BĐ2/BĐ3, crossed upward at a station).

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
use domain::{
    AlarmLevel, CommuneCode, Hazard, MessageClass, Observation, Parameter, RiskLevel, Station, StationId,
    Tagged,
};

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

/// Fires when a water-level reading puts the station in a higher alarm band than the
/// previous reading did (no previous reading counts as below BĐ1).
///
/// The risk level stays `None`: Art. 45 needs the station's area class, which no source
/// gives for Lạng Sơn. The message class follows the bulletin types of Decision 18:
/// BĐ3 calls for an emergency flood bulletin, so it plays as Emergency; BĐ1 and BĐ2 as
/// Priority.
pub fn flood_alarm_crossing(
    station: &Station,
    previous_m: Option<f64>,
    observation: &Observation,
) -> Option<Assessment> {
    if observation.parameter() != Parameter::WaterLevel || observation.station() != &station.id {
        return None;
    }
    let (level, _) = alarm_band(station, observation.value())?;
    let before = previous_m.and_then(|v| alarm_band(station, v)).map(|(l, _)| l);
    if before.is_some_and(|b| b >= level) {
        return None;
    }
    alarm_assessment(station, level, observation.value(), observation.observed_at())
}

/// The assessment of `station` at alarm `level` for a reading of `value_m` at
/// `observed_at`: its class, the threshold and every reason it is provisional. `None` if
/// no source gives the level's threshold.
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

#[cfg(test)]
mod tests {
    use super::*;
    use domain::Tag;

    fn huu_lung() -> Station {
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

    fn reading(station: &str, parameter: &str, value: f64) -> Observation {
        let t: DateTime<Utc> = "2026-10-09T01:00:00Z".parse().unwrap();
        let unit = if parameter == "water_level" { "m" } else { "mm" };
        Observation::new(StationId::new(station).unwrap(), parameter, value, unit, t, t).unwrap()
    }

    fn check(previous: Option<f64>, now: f64, expected: Option<AlarmLevel>) {
        let got = flood_alarm_crossing(&huu_lung(), previous, &reading("HUULUNG", "water_level", now));
        assert_eq!(
            got.as_ref().map(|a| a.alarm_level),
            expected,
            "{previous:?} -> {now}"
        );
    }

    #[test]
    fn fires_only_on_an_upward_crossing() {
        check(None, 16.99, None);
        check(None, 17.0, Some(AlarmLevel::Bd1));
        check(Some(16.0), 19.4, Some(AlarmLevel::Bd3));
        check(Some(18.5), 19.0, Some(AlarmLevel::Bd3));
        check(Some(19.1), 19.4, None);
        check(Some(19.4), 18.5, None);
        check(Some(20.0), 23.96, None);
        check(Some(17.2), 17.9, None);
    }

    #[test]
    fn a_missing_level_is_skipped_never_guessed() {
        let mut s = huu_lung();
        s.bd2_m = None;
        assert_eq!(alarm_band(&s, 18.5).map(|(l, _)| l), Some(AlarmLevel::Bd1));
        assert_eq!(alarm_band(&s, 19.5).map(|(l, _)| l), Some(AlarmLevel::Bd3));
    }

    #[test]
    fn provisional_inputs_are_named_and_bd3_plays_as_emergency() {
        let a =
            flood_alarm_crossing(&huu_lung(), Some(17.5), &reading("HUULUNG", "water_level", 18.2)).unwrap();
        assert_eq!(a.class, MessageClass::Priority);
        assert!(
            a.provisional
                .iter()
                .any(|p| p.contains("BĐ2 18.00 m at HUULUNG is tagged M")),
            "{:?}",
            a.provisional
        );
        assert!(a.provisional.iter().any(|p| p.contains("provisional mapping")));
        let a = flood_alarm_crossing(&huu_lung(), None, &reading("HUULUNG", "water_level", 19.4)).unwrap();
        assert_eq!(a.class, MessageClass::Emergency);
        assert!(
            !a.provisional.iter().any(|p| p.contains("BĐ3 19.00 m")),
            "BĐ3 is tagged D, not provisional"
        );
    }

    #[test]
    fn other_parameters_and_stations_do_not_fire() {
        assert_eq!(
            flood_alarm_crossing(&huu_lung(), None, &reading("HUULUNG", "rainfall", 300.0)),
            None
        );
        assert_eq!(
            flood_alarm_crossing(&huu_lung(), None, &reading("LANGSON", "water_level", 300.0)),
            None
        );
    }
}
