//! One measured value at a station, validated against its parameter's unit and
//! range and against the time it was received.

use chrono::{DateTime, Duration, Utc};

use crate::StationId;

/// What a station measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Parameter {
    /// River water level above the national datum, in metres.
    WaterLevel,
    /// Rain accumulated since the previous reading, in millimetres.
    Rainfall,
    /// Air temperature, in degrees Celsius.
    AirTemperature,
    /// Horizontal visibility, in metres.
    Visibility,
    /// Maximum sustained wind, Beaufort force.
    WindBeaufort,
    /// River discharge, in cubic metres per second.
    Discharge,
    /// Strongest gust, Beaufort force.
    WindGustBeaufort,
    /// The maximum sustained wind of a tropical depression or storm that affects the
    /// station's area, Beaufort force, as a storm bulletin or track states it (Art. 42
    /// grades storms by it); never the local wind.
    CycloneBeaufort,
}

impl Parameter {
    pub fn code(self) -> &'static str {
        match self {
            Self::WaterLevel => "water_level",
            Self::Rainfall => "rainfall",
            Self::AirTemperature => "air_temperature",
            Self::Visibility => "visibility",
            Self::WindBeaufort => "wind_beaufort",
            Self::Discharge => "discharge",
            Self::WindGustBeaufort => "wind_gust_beaufort",
            Self::CycloneBeaufort => "cyclone_beaufort",
        }
    }

    pub const ALL: [Parameter; 8] = [
        Self::WaterLevel,
        Self::Rainfall,
        Self::AirTemperature,
        Self::Visibility,
        Self::WindBeaufort,
        Self::Discharge,
        Self::WindGustBeaufort,
        Self::CycloneBeaufort,
    ];

    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.code() == code)
    }

    /// The one unit accepted for the parameter.
    pub fn unit(self) -> &'static str {
        match self {
            Self::WaterLevel => "m",
            Self::Rainfall => "mm",
            Self::AirTemperature => "°C",
            Self::Visibility => "m",
            Self::WindBeaufort | Self::WindGustBeaufort | Self::CycloneBeaufort => "Bf",
            Self::Discharge => "m3/s",
        }
    }

    /// The physically plausible range; a value outside it is a sensor or typing fault.
    fn plausible(self) -> std::ops::RangeInclusive<f64> {
        match self {
            // Lowest land in Vietnam is near sea level; Mẫu Sơn is about 1 500 m.
            Self::WaterLevel => -10.0..=3000.0,
            // The world record for one day is under 2 000 mm.
            Self::Rainfall => 0.0..=2000.0,
            // Vietnam's records are about -6 °C and 44 °C.
            Self::AirTemperature => -30.0..=55.0,
            Self::Visibility => 0.0..=100_000.0,
            Self::WindBeaufort | Self::WindGustBeaufort | Self::CycloneBeaufort => 0.0..=17.0,
            // The Amazon's largest floods are near 300 000 m³/s.
            Self::Discharge => 0.0..=500_000.0,
        }
    }
}

/// How far in the future an observation time may lie, to absorb clock skew.
pub const MAX_CLOCK_SKEW: Duration = Duration::minutes(10);

/// Why an observation was refused. Each variant names the field at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ObservationError {
    #[error(
        "parameter {0} is not one of water_level, rainfall, air_temperature, visibility, wind_beaufort, discharge, wind_gust_beaufort, cyclone_beaufort"
    )]
    UnknownParameter(String),
    #[error("unit {unit} is wrong for {parameter}: expected {expected:?}")]
    WrongUnit {
        parameter: &'static str,
        unit: String,
        expected: &'static str,
    },
    #[error("value {value} is outside the plausible range {min}..={max} for {parameter}")]
    Implausible {
        parameter: &'static str,
        value: f64,
        min: f64,
        max: f64,
    },
    #[error("value is not a finite number")]
    NotFinite,
    #[error(
        "observed_at {observed_at} is more than {max_skew_min} minutes after the time it was received ({now})"
    )]
    InFuture {
        observed_at: DateTime<Utc>,
        now: DateTime<Utc>,
        max_skew_min: i64,
    },
    #[error("valid_at {valid_at} is more than {max_days} days after the forecast was issued ({issued_at})")]
    BeyondHorizon {
        valid_at: DateTime<Utc>,
        issued_at: DateTime<Utc>,
        max_days: i64,
    },
}

impl ObservationError {
    /// The request field that carries the fault.
    pub fn field(&self) -> &'static str {
        match self {
            Self::UnknownParameter(_) => "parameter",
            Self::WrongUnit { .. } => "unit",
            Self::Implausible { .. } | Self::NotFinite => "value",
            Self::InFuture { .. } => "observed_at",
            Self::BeyondHorizon { .. } => "valid_at",
        }
    }
}

/// A validated observation.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    station: StationId,
    parameter: Parameter,
    value: f64,
    observed_at: DateTime<Utc>,
}

impl Observation {
    /// Validates one reading received at `now`.
    pub fn new(
        station: StationId,
        parameter: &str,
        value: f64,
        unit: &str,
        observed_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Self, ObservationError> {
        let parameter = check_value(parameter, value, unit)?;
        if observed_at > now + MAX_CLOCK_SKEW {
            return Err(ObservationError::InFuture {
                observed_at,
                now,
                max_skew_min: MAX_CLOCK_SKEW.num_minutes(),
            });
        }
        Ok(Self {
            station,
            parameter,
            value,
            observed_at,
        })
    }

    pub fn station(&self) -> &StationId {
        &self.station
    }
    pub fn parameter(&self) -> Parameter {
        self.parameter
    }
    /// The value in the parameter's unit ([`Parameter::unit`]).
    pub fn value(&self) -> f64 {
        self.value
    }
    pub fn observed_at(&self) -> DateTime<Utc> {
        self.observed_at
    }
}

/// Checks a parameter code, its unit and the value's plausibility.
fn check_value(parameter: &str, value: f64, unit: &str) -> Result<Parameter, ObservationError> {
    let parameter = Parameter::from_code(parameter)
        .ok_or_else(|| ObservationError::UnknownParameter(crate::quote(parameter)))?;
    if unit != parameter.unit() {
        return Err(ObservationError::WrongUnit {
            parameter: parameter.code(),
            unit: crate::quote(unit),
            expected: parameter.unit(),
        });
    }
    if !value.is_finite() {
        return Err(ObservationError::NotFinite);
    }
    let range = parameter.plausible();
    if !range.contains(&value) {
        return Err(ObservationError::Implausible {
            parameter: parameter.code(),
            value,
            min: *range.start(),
            max: *range.end(),
        });
    }
    Ok(parameter)
}

/// The furthest ahead a forecast may reach (Open-Meteo's longest is 16 days).
pub const FORECAST_HORIZON: Duration = Duration::days(16);

/// A validated forecast value: what a model says a parameter will be at `valid_at`,
/// as issued at `issued_at`. A newer issue replaces an older one for the same hour.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    station: StationId,
    parameter: Parameter,
    value: f64,
    valid_at: DateTime<Utc>,
    issued_at: DateTime<Utc>,
}

impl Forecast {
    /// Validates one forecast value; `valid_at` may lie before `issued_at` (a model run
    /// covers the whole day) but not past [`FORECAST_HORIZON`].
    pub fn new(
        station: StationId,
        parameter: &str,
        value: f64,
        unit: &str,
        valid_at: DateTime<Utc>,
        issued_at: DateTime<Utc>,
    ) -> Result<Self, ObservationError> {
        let parameter = check_value(parameter, value, unit)?;
        if valid_at > issued_at + FORECAST_HORIZON {
            return Err(ObservationError::BeyondHorizon {
                valid_at,
                issued_at,
                max_days: FORECAST_HORIZON.num_days(),
            });
        }
        Ok(Self {
            station,
            parameter,
            value,
            valid_at,
            issued_at,
        })
    }

    pub fn station(&self) -> &StationId {
        &self.station
    }
    pub fn parameter(&self) -> Parameter {
        self.parameter
    }
    pub fn value(&self) -> f64 {
        self.value
    }
    pub fn valid_at(&self) -> DateTime<Utc> {
        self.valid_at
    }
    pub fn issued_at(&self) -> DateTime<Utc> {
        self.issued_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn check(parameter: &str, value: f64, unit: &str, observed: &str, expected_field: Option<&str>) {
        let now = at("2026-10-09T01:00:00Z");
        let got = Observation::new(
            StationId::new("HUULUNG").unwrap(),
            parameter,
            value,
            unit,
            at(observed),
            now,
        );
        assert_eq!(
            got.as_ref().err().map(ObservationError::field),
            expected_field,
            "{parameter} {value} {unit} {observed}: {got:?}"
        );
    }

    #[test]
    fn observations_are_validated_field_by_field() {
        check("water_level", 19.4, "m", "2026-10-09T01:00:00Z", None);
        check("rainfall", 0.0, "mm", "2026-10-09T00:00:00Z", None);
        check("water_level", 19.4, "cm", "2026-10-09T01:00:00Z", Some("unit"));
        check("discharge", 19.4, "m", "2026-10-09T01:00:00Z", Some("unit"));
        check("flow", 19.4, "m3/s", "2026-10-09T01:00:00Z", Some("parameter"));
        check("discharge", 593.29, "m3/s", "2026-10-09T01:00:00Z", None);
        check(
            "water_level",
            f64::NAN,
            "m",
            "2026-10-09T01:00:00Z",
            Some("value"),
        );
        check("water_level", 1e9, "m", "2026-10-09T01:00:00Z", Some("value"));
        check("rainfall", -1.0, "mm", "2026-10-09T01:00:00Z", Some("value"));
        check("water_level", 19.4, "m", "2026-10-09T01:09:59Z", None);
        check(
            "water_level",
            19.4,
            "m",
            "2026-10-09T01:10:01Z",
            Some("observed_at"),
        );
    }
}

#[cfg(test)]
mod forecast_tests {
    use super::*;

    #[test]
    fn forecasts_may_lie_ahead_but_not_past_the_horizon() {
        let issued: DateTime<Utc> = "2026-10-09T00:00:00Z".parse().unwrap();
        let st = StationId::new("HUULUNG").unwrap();
        let ok = Forecast::new(
            st.clone(),
            "rainfall",
            41.7,
            "mm",
            issued + Duration::days(2),
            issued,
        );
        assert_eq!(ok.unwrap().valid_at(), issued + Duration::days(2));
        let far = Forecast::new(
            st.clone(),
            "rainfall",
            1.0,
            "mm",
            issued + Duration::days(17),
            issued,
        );
        assert_eq!(far.unwrap_err().field(), "valid_at");
        let neg = Forecast::new(st, "rainfall", -1.0, "mm", issued, issued);
        assert_eq!(neg.unwrap_err().field(), "value");
    }
}
