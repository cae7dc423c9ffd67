//! Unit conversions for feeds that do not speak canhbao's units ([`crate::Parameter::unit`]).
//! Exact factors only; the one table (Beaufort) carries its provenance.

use crate::Tag;

/// International foot, in metres (exact).
pub const FOOT_M: f64 = 0.3048;
/// A cubic foot, in cubic metres (exact: 0.3048³).
pub const CUBIC_FOOT_M3: f64 = 0.028_316_846_592;
/// An inch, in millimetres (exact).
pub const INCH_MM: f64 = 25.4;

/// The lower bound of each Beaufort force 1 to 17, in m/s (force 0 is below 0.3 m/s).
/// Forces 0 to 12 are the WMO Beaufort scale; 13 to 17 are the extension that Vietnam's
/// bulletins use (Decision 18/2021 counts storm winds to force 17), from a secondary table.
pub const BEAUFORT_LOWER_M_S: [f64; 17] = [
    0.3, 1.6, 3.4, 5.5, 8.0, 10.8, 13.9, 17.2, 20.8, 24.5, 28.5, 32.7, 37.0, 41.5, 46.2, 51.0, 56.1,
];
/// Provenance of [`BEAUFORT_LOWER_M_S`]: forces 0 to 12 are the WMO scale (secondary
/// source, widely reproduced); the 13 to 17 extension is not checked against the decision.
pub const BEAUFORT_TAG: Tag = Tag::S;

/// The Beaufort force of a wind speed in m/s (values are first rounded to 0.1 m/s,
/// as the table is written); speeds past force 17's lower bound are force 17.
pub fn beaufort_from_m_s(speed: f64) -> f64 {
    let v = (speed * 10.0).round() / 10.0;
    BEAUFORT_LOWER_M_S.iter().filter(|b| **b <= v).count() as f64
}

/// A wind speed in m/s from a value in `unit` (`km/h`, `m/s`, `mph`, `kn`), or `None`.
pub fn wind_to_m_s(value: f64, unit: &str) -> Option<f64> {
    Some(match unit {
        "km/h" | "kmh" => value / 3.6,
        "m/s" | "ms" => value,
        "mph" | "mp/h" => value * 0.447_04,
        "kn" | "kt" | "knots" => value * 1852.0 / 3600.0,
        _ => return None,
    })
}

/// A temperature in °C from a value in `unit` (`°C`, `°F`), or `None`.
pub fn temperature_to_c(value: f64, unit: &str) -> Option<f64> {
    Some(match unit {
        "°C" | "C" | "degC" => value,
        "°F" | "F" | "degF" => (value - 32.0) * 5.0 / 9.0,
        _ => return None,
    })
}

/// A precipitation depth in mm from a value in `unit` (`mm`, `inch`), or `None`.
pub fn depth_to_mm(value: f64, unit: &str) -> Option<f64> {
    Some(match unit {
        "mm" => value,
        "inch" | "in" => value * INCH_MM,
        _ => return None,
    })
}

/// A length in m from a value in `unit` (`m`, `ft`), or `None`.
pub fn length_to_m(value: f64, unit: &str) -> Option<f64> {
    Some(match unit {
        "m" => value,
        "ft" => value * FOOT_M,
        _ => return None,
    })
}

/// A discharge in m³/s from a value in `unit` (`m³/s`, `ft³/s` in their spellings), or `None`.
pub fn discharge_to_m3_s(value: f64, unit: &str) -> Option<f64> {
    Some(match unit {
        "m³/s" | "m3/s" | "m^3/s" | "cms" => value,
        "ft³/s" | "ft3/s" | "ft^3/s" | "cfs" => value * CUBIC_FOOT_M3,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beaufort_forces_follow_the_table_edges() {
        assert_eq!(beaufort_from_m_s(0.0), 0.0);
        assert_eq!(beaufort_from_m_s(0.24), 0.0);
        assert_eq!(beaufort_from_m_s(0.25), 1.0);
        assert_eq!(beaufort_from_m_s(17.1), 7.0);
        assert_eq!(beaufort_from_m_s(17.2), 8.0);
        assert_eq!(beaufort_from_m_s(32.7), 12.0);
        assert_eq!(beaufort_from_m_s(56.1), 17.0);
        assert_eq!(beaufort_from_m_s(90.0), 17.0);
        // The constructed Open-Meteo event: gusts of 87 km/h (24.2 m/s) are force 9.
        assert_eq!(beaufort_from_m_s(wind_to_m_s(87.0, "km/h").unwrap()), 9.0);
    }

    #[test]
    fn us_customary_units_convert_exactly() {
        assert!((length_to_m(1.76, "ft").unwrap() - 0.536_448).abs() < 1e-12);
        assert!((discharge_to_m3_s(535.0, "ft^3/s").unwrap() - 15.149_512_926_72).abs() < 1e-9);
        assert!((temperature_to_c(212.0, "°F").unwrap() - 100.0).abs() < 1e-12);
        assert_eq!(depth_to_mm(1.0, "inch"), Some(25.4));
        assert_eq!(length_to_m(1.0, "yd"), None);
        assert_eq!(discharge_to_m3_s(1.0, "l/s"), None);
    }
}
