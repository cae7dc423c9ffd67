//! Readings as the rules see them: time series per station and parameter, with the
//! window arithmetic that conditions need. Days are Vietnam local days (UTC+7).

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use domain::StationId;

/// What a rule can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Param {
    /// River water level, m.
    WaterLevel,
    /// Rain since the previous reading, mm. Readings after `now` are forecasts.
    Rainfall,
    /// Air temperature, °C.
    AirTemperature,
    /// Horizontal visibility, m.
    Visibility,
    /// Maximum sustained local wind, Beaufort force.
    WindBeaufort,
    /// River discharge, m³/s.
    Discharge,
    /// Strongest gust, Beaufort force.
    WindGustBeaufort,
    /// Maximum sustained wind of the tropical depression or storm affecting the area,
    /// Beaufort force, from a storm bulletin or track (forecast after now).
    CycloneBeaufort,
}

impl Param {
    pub const COUNT: usize = 8;
    pub const ALL: [Param; Self::COUNT] = [
        Self::WaterLevel,
        Self::Rainfall,
        Self::AirTemperature,
        Self::Visibility,
        Self::WindBeaufort,
        Self::Discharge,
        Self::WindGustBeaufort,
        Self::CycloneBeaufort,
    ];

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

    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.code() == code)
    }

    fn index(self) -> usize {
        self as usize
    }

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
}

/// One value at one time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub at: DateTime<Utc>,
    pub value: f64,
}

/// One series, sorted by time. Pruned readings stay in the buffer, before `start`, until
/// they are half of it: dropping the oldest reading at every tick of a replay would
/// otherwise shift the whole series each time.
#[derive(Debug, Clone, Default)]
pub struct Series {
    buf: Vec<Reading>,
    start: usize,
}

impl Series {
    /// The live readings, oldest first.
    pub fn as_slice(&self) -> &[Reading] {
        &self.buf[self.start..]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.buf.len()
    }

    fn insert(&mut self, at: DateTime<Utc>, value: f64) {
        let pos = self.start + self.as_slice().partition_point(|r| r.at <= at);
        self.buf.insert(pos, Reading { at, value });
    }

    fn prune(&mut self, before: DateTime<Utc>) {
        self.start += self.as_slice().partition_point(|r| r.at < before);
        if self.start > self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

/// Readings by station and parameter, each series sorted by time.
#[derive(Debug, Clone, Default)]
pub struct Readings {
    /// Per station, one series per parameter (indexed by `Param as usize`).
    series: HashMap<StationId, [Series; Param::COUNT]>,
}

const LOCAL_OFFSET_S: i64 = 7 * 3600;

/// The Vietnam local day number of a time (days since 1970-01-01, local).
pub fn local_day(t: DateTime<Utc>) -> i64 {
    (t.timestamp() + LOCAL_OFFSET_S).div_euclid(86_400)
}

impl Readings {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a reading; keeps each series sorted.
    pub fn push(&mut self, station: &StationId, param: Param, at: DateTime<Utc>, value: f64) {
        self.series.entry(station.clone()).or_default()[param.index()].insert(at, value);
    }

    /// Every series of one station, indexed by `Param as usize`.
    pub fn station(&self, station: &StationId) -> Option<&[Series; Param::COUNT]> {
        self.series.get(station)
    }

    pub fn series(&self, station: &StationId, param: Param) -> &[Reading] {
        self.series
            .get(station)
            .map(|all| all[param.index()].as_slice())
            .unwrap_or(&[])
    }

    /// Drops readings older than `before`, to bound memory in long replays.
    pub fn prune(&mut self, before: DateTime<Utc>) {
        for all in self.series.values_mut() {
            for s in all.iter_mut() {
                s.prune(before);
            }
        }
    }
}

/// The latest reading of a sorted series at or before `now`.
pub fn latest_in(s: &[Reading], now: DateTime<Utc>) -> Option<Reading> {
    let end = s.partition_point(|r| r.at <= now);
    end.checked_sub(1).map(|i| s[i])
}

/// The readings of a sorted series in `(from, to]`.
pub fn window_in(s: &[Reading], from: DateTime<Utc>, to: DateTime<Utc>) -> &[Reading] {
    let a = s.partition_point(|r| r.at <= from);
    let b = s.partition_point(|r| r.at <= to);
    &s[a..b.max(a)]
}

/// Daily statistics (min, mean, max, sum) of a sorted series for the local day `day`.
pub fn daily_in(s: &[Reading], day: i64) -> Option<DailyStats> {
    let start = DateTime::<Utc>::from_timestamp(day * 86_400 - LOCAL_OFFSET_S, 0)?;
    let w = window_in(
        s,
        start - Duration::nanoseconds(1),
        start + Duration::days(1) - Duration::nanoseconds(1),
    );
    if w.is_empty() {
        return None;
    }
    let sum: f64 = w.iter().map(|r| r.value).sum();
    Some(DailyStats {
        min: w.iter().map(|r| r.value).fold(f64::INFINITY, f64::min),
        max: w.iter().map(|r| r.value).fold(f64::NEG_INFINITY, f64::max),
        mean: sum / w.len() as f64,
        sum,
    })
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DailyStats {
    pub min: f64,
    pub mean: f64,
    pub max: f64,
    pub sum: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn windows_are_half_open_and_days_are_local() {
        let s = StationId::new("S").unwrap();
        let mut r = Readings::new();
        for h in 0..48 {
            r.push(
                &s,
                Param::Rainfall,
                t("2026-10-08T00:00:00Z") + Duration::hours(h),
                1.0,
            );
        }
        let now = t("2026-10-09T00:00:00Z");
        let rain = r.series(&s, Param::Rainfall);
        let sum = |w: &[Reading]| (!w.is_empty()).then(|| w.iter().map(|x| x.value).sum::<f64>());
        assert_eq!(sum(window_in(rain, now - Duration::hours(24), now)), Some(24.0));
        assert_eq!(sum(window_in(rain, now, now + Duration::hours(6))), Some(6.0));
        assert_eq!(latest_in(rain, now).map(|x| x.at), Some(now));
        // 2026-10-08 local runs from 2026-10-07T17:00Z: 17 hourly readings fall in it.
        let day = local_day(t("2026-10-08T12:00:00Z"));
        assert_eq!(daily_in(rain, day).map(|d| d.sum), Some(17.0));
        assert_eq!(
            local_day(t("2026-10-08T16:59:59Z")) + 1,
            local_day(t("2026-10-08T17:00:00Z"))
        );
    }
}
