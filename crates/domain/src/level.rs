//! Closed sets: hazards, Decision 18/2021 risk levels, Decision 05/2020 flood alarm
//! levels and Circular 39/2020 loudspeaker message classes.

use std::fmt;

/// A hazard type of Decision 18/2021 Art. 3 that matters to Lạng Sơn, one per article
/// of risk levels: flash floods, landslides and land subsidence due to rain or flow share
/// Art. 46's levels and are one hazard, [`Hazard::FlashFlood`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hazard {
    Flood,
    HeavyRain,
    FlashFlood,
    Storm,
    Cold,
    Heat,
    Fog,
    Thunderstorm,
    Drought,
    Earthquake,
}

impl Hazard {
    pub const ALL: [Hazard; 10] = [
        Self::Flood,
        Self::HeavyRain,
        Self::FlashFlood,
        Self::Storm,
        Self::Cold,
        Self::Heat,
        Self::Fog,
        Self::Thunderstorm,
        Self::Drought,
        Self::Earthquake,
    ];

    /// The wire and storage code (`flood`, `heavy_rain`, ...).
    pub fn code(self) -> &'static str {
        match self {
            Self::Flood => "flood",
            Self::HeavyRain => "heavy_rain",
            Self::FlashFlood => "flash_flood",
            Self::Storm => "storm",
            Self::Cold => "cold",
            Self::Heat => "heat",
            Self::Fog => "fog",
            Self::Thunderstorm => "thunderstorm",
            Self::Drought => "drought",
            Self::Earthquake => "earthquake",
        }
    }

    /// The hazard of a code; `landslide`, a code of earlier versions, is Art. 46's hazard.
    pub fn from_code(code: &str) -> Option<Self> {
        if code == "landslide" {
            return Some(Self::FlashFlood);
        }
        Self::ALL.into_iter().find(|h| h.code() == code)
    }

    /// The Vietnamese name used in messages: the wording of Decision 18/2021.
    pub fn name_vi(self) -> &'static str {
        match self {
            Self::Flood => "lũ",
            Self::HeavyRain => "mưa lớn",
            Self::FlashFlood => "lũ quét, sạt lở đất, sụt lún đất",
            Self::Storm => "áp thấp nhiệt đới, bão",
            Self::Cold => "rét hại, sương muối",
            Self::Heat => "nắng nóng",
            Self::Fog => "sương mù",
            Self::Thunderstorm => "lốc, sét, mưa đá",
            Self::Drought => "hạn hán",
            Self::Earthquake => "động đất",
        }
    }

    /// The English name, for the optional English block of a CAP document.
    pub fn name_en(self) -> &'static str {
        match self {
            Self::Flood => "Flood",
            Self::HeavyRain => "Heavy rain",
            Self::FlashFlood => "Flash flood, landslide or land subsidence",
            Self::Storm => "Tropical depression or storm",
            Self::Cold => "Severe cold and frost",
            Self::Heat => "Heat wave",
            Self::Fog => "Fog",
            Self::Thunderstorm => "Whirlwind, lightning and hail",
            Self::Drought => "Drought",
            Self::Earthquake => "Earthquake",
        }
    }
}

impl fmt::Display for Hazard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A disaster risk level of Decision 18/2021 Art. 4: 1 (low) to 5 (catastrophic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RiskLevel(u8);

impl RiskLevel {
    /// Level 1, low risk.
    pub const LOW: RiskLevel = RiskLevel(1);
    /// Level 5, catastrophic.
    pub const HIGHEST: RiskLevel = RiskLevel(5);

    pub fn new(level: u8) -> Option<Self> {
        (1..=5).contains(&level).then_some(Self(level))
    }

    pub fn get(self) -> u8 {
        self.0
    }

    /// The compound escalation of Decision 18 Art. 4: when hazards coincide, a level may
    /// be raised by 1, or by 2 where serious loss is threatened, never above 5. `None`
    /// for any other number of steps.
    pub fn escalated(self, steps: u8) -> Option<Self> {
        (1..=2).contains(&steps).then(|| Self((self.0 + steps).min(5)))
    }

    /// The map colour that Appendix XII names for the level.
    pub fn colour_vi(self) -> &'static str {
        match self.0 {
            1 => "xanh dương nhạt",
            2 => "vàng nhạt",
            3 => "da cam",
            4 => "đỏ",
            _ => "tím",
        }
    }
}

/// A flood alarm level at a hydrological station (Decision 05/2020): BĐ1 lowest, BĐ3 highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlarmLevel {
    Bd1,
    Bd2,
    Bd3,
}

impl AlarmLevel {
    pub const ALL: [AlarmLevel; 3] = [Self::Bd1, Self::Bd2, Self::Bd3];

    pub fn number(self) -> u8 {
        match self {
            Self::Bd1 => 1,
            Self::Bd2 => 2,
            Self::Bd3 => 3,
        }
    }

    pub fn from_number(n: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.number() == n)
    }

    /// `BĐ1`, `BĐ2`, `BĐ3`.
    pub fn short_vi(self) -> &'static str {
        match self {
            Self::Bd1 => "BĐ1",
            Self::Bd2 => "BĐ2",
            Self::Bd3 => "BĐ3",
        }
    }
}

/// A loudspeaker message class of Circular 39/2020.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MessageClass {
    /// The commune operator schedules it.
    Normal,
    /// Played with priority inside the programme.
    Priority,
    /// Played immediately, pre-empting the programme.
    Emergency,
}

impl MessageClass {
    pub fn code(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Priority => "priority",
            Self::Emergency => "emergency",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        [Self::Normal, Self::Priority, Self::Emergency]
            .into_iter()
            .find(|c| c.code() == code)
    }

    /// Outbox priority (MQTT and SMS): emergencies are claimed first.
    pub fn priority(self) -> i64 {
        match self {
            Self::Emergency => 2,
            Self::Priority => 1,
            Self::Normal => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn risk_levels_are_one_to_five_and_ordered() {
        assert_eq!(RiskLevel::new(0), None);
        assert_eq!(RiskLevel::new(6), None);
        assert!(RiskLevel::new(2) < RiskLevel::new(3));
        assert_eq!(RiskLevel::new(5).map(RiskLevel::colour_vi), Some("tím"));
    }

    #[test]
    fn codes_round_trip() {
        for h in Hazard::ALL {
            assert_eq!(Hazard::from_code(h.code()), Some(h));
        }
        // Art. 46 is one hazard: a landslide is a flash-flood-class hazard.
        assert_eq!(Hazard::from_code("landslide"), Some(Hazard::FlashFlood));
        for l in AlarmLevel::ALL {
            assert_eq!(AlarmLevel::from_number(l.number()), Some(l));
        }
        assert!(AlarmLevel::Bd1 < AlarmLevel::Bd3);
        assert_eq!(
            MessageClass::from_code("emergency"),
            Some(MessageClass::Emergency)
        );
    }
}

#[cfg(test)]
mod escalation_tests {
    use super::RiskLevel;

    #[test]
    fn escalation_adds_one_or_two_and_stops_at_five() {
        let l = |n| RiskLevel::new(n).unwrap();
        assert_eq!(l(2).escalated(1), Some(l(3)));
        assert_eq!(l(2).escalated(2), Some(l(4)));
        assert_eq!(l(4).escalated(2), Some(l(5)));
        assert_eq!(l(5).escalated(1), Some(l(5)));
        assert_eq!(l(3).escalated(0), None);
        assert_eq!(l(3).escalated(3), None);
    }
}
