//! Quality control of a station's readings, after WMO practice for automatic stations:
//! a range check (plausible values), a step check (the fastest plausible change between
//! two readings) and a persistence check (a value that does not change for too long),
//! plus a station's very first reading, which has nothing to be checked against.
//!
//! Every reading is kept with its flag and the reason; only `ok` readings decide a level.
//! A reading that fails the step check, or a station's first reading, waits for the next
//! one: if the next reading holds or continues the change, both are `ok` (a real fast
//! rise alerts, one reading late at most); if it comes back more than half way, the
//! reading was a spike. Pure: the caller passes the series.

use chrono::{DateTime, Duration, Utc};

/// A reading's quality flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Quality {
    Ok,
    /// A station's first reading: nothing to check it against yet; the next reading
    /// confirms it (unless the station's policy accepts first readings).
    SuspectFirst,
    /// Changed faster than the step check allows from the reading before; the next
    /// reading confirms it or shows it was a spike.
    SuspectRate,
    /// A fast change that the next reading undid: a one-reading spike.
    SuspectSpike,
    /// Outside the plausible range of the parameter.
    SuspectRange,
    /// Unchanged for longer than the persistence check allows: the sensor is stuck.
    Stuck,
}

impl Quality {
    pub const ALL: [Quality; 6] = [
        Self::Ok,
        Self::SuspectFirst,
        Self::SuspectRate,
        Self::SuspectSpike,
        Self::SuspectRange,
        Self::Stuck,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::SuspectFirst => "suspect-first",
            Self::SuspectRate => "suspect-rate",
            Self::SuspectSpike => "suspect-spike",
            Self::SuspectRange => "suspect-range",
            Self::Stuck => "stuck",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|q| q.code() == code)
    }

    /// Whether the next reading may still confirm it.
    pub fn is_pending(self) -> bool {
        matches!(self, Self::SuspectFirst | Self::SuspectRate)
    }
}

/// What a station does with the first reading it ever sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FirstReading {
    /// Waits for the next reading to confirm it (the default: a new station's first
    /// reading above an alarm level is more often a wrong datum than a flood).
    #[default]
    Confirm,
    /// Takes it as it is.
    Accept,
}

impl FirstReading {
    pub fn code(self) -> &'static str {
        match self {
            Self::Confirm => "confirm",
            Self::Accept => "accept",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        [Self::Confirm, Self::Accept]
            .into_iter()
            .find(|f| f.code() == code)
    }
}

/// The checks for one parameter at one station. A check set to `None` is off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QcSettings {
    /// Plausible values, inclusive.
    pub range: Option<(f64, f64)>,
    /// The fastest plausible change, per hour.
    pub max_rate_per_h: Option<f64>,
    /// A value unchanged for this long is stuck.
    pub stuck_after: Option<Duration>,
    pub first: FirstReading,
}

impl QcSettings {
    /// Only the range check: for series whose times are not real (exercises).
    pub fn range_only(&self) -> Self {
        Self {
            range: self.range,
            max_rate_per_h: None,
            stuck_after: None,
            first: FirstReading::Accept,
        }
    }
}

/// One reading of a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub at: DateTime<Utc>,
    pub value: f64,
}

/// A reading's flag and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Flag {
    pub quality: Quality,
    /// Why, in English, for operators; `None` for a plain `ok`.
    pub reason: Option<String>,
}

impl Flag {
    pub fn ok() -> Self {
        Self {
            quality: Quality::Ok,
            reason: None,
        }
    }

    fn new(quality: Quality, reason: String) -> Self {
        Self {
            quality,
            reason: Some(reason),
        }
    }
}

/// Two values this close are the same value (readings come with centimetres at best).
const SAME: f64 = 0.0005;

fn hhmm(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%MZ").to_string()
}

/// The last reading that counts for the step check, with the signed rate of the change
/// into it (per hour) when that change was itself checked.
#[derive(Debug, Clone, Copy)]
struct Good {
    point: Point,
    rate_in: Option<f64>,
    /// Since when the value has not changed.
    same_since: DateTime<Utc>,
}

fn rate(from: Point, to: Point) -> Option<f64> {
    let hours = (to.at - from.at).num_milliseconds() as f64 / 3_600_000.0;
    (hours > 0.0).then(|| (to.value - from.value) / hours)
}

/// Flags every reading of `series` (sorted by time, one reading per time). The first
/// `settled.len()` readings keep the flags given, except that a pending last one among
/// them is decided by the reading after it. `earlier`: the station sent readings before
/// the series starts (its first reading is then not the station's first).
pub fn classify(series: &[Point], settled: &[Flag], earlier: bool, s: &QcSettings) -> Vec<Flag> {
    let mut out: Vec<Flag> = Vec::with_capacity(series.len());
    let mut good: Option<Good> = None;
    // The reading awaiting the next one, by index into `out`.
    let mut pending: Option<usize> = None;
    // Whether any reading that counts came before (for the first-reading policy).
    let mut seen = earlier;
    for (i, &p) in series.iter().enumerate() {
        if let Some(flag) = settled.get(i) {
            match flag.quality {
                Quality::Ok | Quality::Stuck => {
                    good = Some(step_good(good, p));
                    pending = None;
                    seen = true;
                }
                q if q.is_pending() => {
                    pending = Some(i);
                    seen = true;
                }
                _ => {}
            }
            out.push(flag.clone());
            continue;
        }
        let flag = check(series, &mut out, i, p, &mut good, &mut pending, &mut seen, s);
        out.push(flag);
    }
    out
}

/// The state after `p` counts as good.
fn step_good(good: Option<Good>, p: Point) -> Good {
    match good {
        Some(g) => Good {
            point: p,
            rate_in: rate(g.point, p),
            same_since: if (p.value - g.point.value).abs() < SAME {
                g.same_since
            } else {
                p.at
            },
        },
        None => Good {
            point: p,
            rate_in: None,
            same_since: p.at,
        },
    }
}

#[allow(clippy::too_many_arguments)]
fn check(
    series: &[Point],
    out: &mut [Flag],
    i: usize,
    p: Point,
    good: &mut Option<Good>,
    pending: &mut Option<usize>,
    seen: &mut bool,
    s: &QcSettings,
) -> Flag {
    if let Some((low, high)) = s.range
        && !(low..=high).contains(&p.value)
    {
        return Flag::new(
            Quality::SuspectRange,
            format!("{} is outside the plausible range {low} to {high}", p.value),
        );
    }
    // The reading before decides nothing until this one says whether it held.
    if let Some(j) = pending.take() {
        let q = series[j];
        match (out[j].quality, *good) {
            (Quality::SuspectRate, Some(base)) => {
                let jump = q.value - base.point.value;
                if (p.value - base.point.value).abs() <= jump.abs() / 2.0 {
                    out[j] = Flag::new(
                        Quality::SuspectSpike,
                        format!(
                            "a one-reading spike: {:+.2} from {:.2} at {}, back to {:.2} at {}",
                            jump,
                            base.point.value,
                            hhmm(base.point.at),
                            p.value,
                            hhmm(p.at)
                        ),
                    );
                } else {
                    out[j] = Flag::new(
                        Quality::Ok,
                        format!(
                            "a fast change ({:+.2} per hour) confirmed by the next reading, {:.2} at {}",
                            rate(base.point, q).unwrap_or(0.0),
                            p.value,
                            hhmm(p.at)
                        ),
                    );
                    *good = Some(step_good(*good, q));
                }
            }
            (Quality::SuspectFirst, None) | (Quality::SuspectRate, None) => {
                let agrees = match (s.max_rate_per_h, rate(q, p)) {
                    (Some(max), Some(r)) => r.abs() <= max,
                    _ => true,
                };
                if agrees {
                    out[j] = Flag::new(
                        Quality::Ok,
                        format!(
                            "the station's first reading, confirmed by the next one, {:.2} at {}",
                            p.value,
                            hhmm(p.at)
                        ),
                    );
                    *good = Some(step_good(None, q));
                } else {
                    // Two readings that disagree: neither is trusted until a third agrees
                    // with this one.
                    *pending = Some(i);
                    return Flag::new(
                        Quality::SuspectFirst,
                        format!(
                            "disagrees with the reading before it ({:.2} at {}) and nothing earlier can tell which is right; waiting for the next reading",
                            q.value,
                            hhmm(q.at)
                        ),
                    );
                }
            }
            _ => {}
        }
    }
    let Some(g) = *good else {
        let first = !*seen;
        *seen = true;
        if first && s.first == FirstReading::Confirm {
            *pending = Some(i);
            return Flag::new(
                Quality::SuspectFirst,
                "the station's first reading: nothing to check it against; the next reading confirms it"
                    .into(),
            );
        }
        *good = Some(step_good(None, p));
        return Flag::ok();
    };
    *seen = true;
    if let (Some(max), Some(r)) = (s.max_rate_per_h, rate(g.point, p))
        && r.abs() > max
    {
        // A change as fast as a confirmed one before it, in the same direction, is the
        // same rise going on.
        let continuing = g
            .rate_in
            .is_some_and(|before| before.abs() > max && before.signum() == r.signum());
        if !continuing {
            *pending = Some(i);
            return Flag::new(
                Quality::SuspectRate,
                format!(
                    "changed {:+.2} in {} min since {:.2} at {} ({:+.2} per hour; the step check allows {max}): waiting for the next reading",
                    p.value - g.point.value,
                    (p.at - g.point.at).num_minutes(),
                    g.point.value,
                    hhmm(g.point.at),
                    r
                ),
            );
        }
        *good = Some(step_good(Some(g), p));
        return Flag::new(
            Quality::Ok,
            format!("continues a confirmed fast change ({r:+.2} per hour)"),
        );
    }
    let next = step_good(Some(g), p);
    *good = Some(next);
    if let Some(after) = s.stuck_after
        && p.at - next.same_since >= after
    {
        return Flag::new(
            Quality::Stuck,
            format!(
                "unchanged at {:.2} since {} ({} min; the persistence check allows {} min)",
                p.value,
                hhmm(next.same_since),
                (p.at - next.same_since).num_minutes(),
                after.num_minutes()
            ),
        );
    }
    Flag::ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(min: i64) -> DateTime<Utc> {
        "2026-10-09T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::minutes(min)
    }

    fn settings() -> QcSettings {
        QcSettings {
            range: Some((-10.0, 3000.0)),
            max_rate_per_h: Some(3.0),
            stuck_after: Some(Duration::minutes(360)),
            first: FirstReading::Confirm,
        }
    }

    /// Readings every `step` minutes from minute 0.
    fn series(step: i64, values: &[f64]) -> Vec<Point> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| Point {
                at: t(i as i64 * step),
                value: v,
            })
            .collect()
    }

    fn codes(flags: &[Flag]) -> Vec<&'static str> {
        flags.iter().map(|f| f.quality.code()).collect()
    }

    fn check(step: i64, values: &[f64], earlier: bool, expected: &[&str]) {
        let got = classify(&series(step, values), &[], earlier, &settings());
        assert_eq!(codes(&got), expected, "{values:?}: {got:#?}");
    }

    #[test]
    fn the_checks_flag_each_case_as_the_quality_policy_says() {
        // (minutes between readings, values, readings before the series?, flags)
        let cases: &[(i64, &[f64], bool, &[&str])] = &[
            // Steady readings.
            (10, &[16.0, 16.1, 16.2], true, &["ok", "ok", "ok"]),
            // A station's first reading waits for the next, which confirms it.
            (10, &[19.5, 19.6], false, &["ok", "ok"]),
            (10, &[19.5], false, &["suspect-first"]),
            // First and second disagree: neither counts until a third agrees.
            (10, &[25.0, 16.0, 16.1], false, &["suspect-first", "ok", "ok"]),
            // 4 m/h sustained: the first fast step waits one reading, then the rise is on.
            (
                10,
                &[16.0, 16.667, 17.333, 18.0, 18.667, 19.333, 20.0],
                true,
                &["ok", "ok", "ok", "ok", "ok", "ok", "ok"],
            ),
            // One reading 5 m above its neighbours, then back.
            (
                10,
                &[18.0, 23.0, 18.05, 18.1],
                true,
                &["ok", "suspect-spike", "ok", "ok"],
            ),
            // A fast step that holds is real.
            (10, &[18.0, 22.0, 22.05], true, &["ok", "ok", "ok"]),
            // Out of range.
            (10, &[18.0, 5000.0, 18.1], true, &["ok", "suspect-range", "ok"]),
            // A fast step still waiting for its next reading.
            (10, &[18.0, 22.0], true, &["ok", "suspect-rate"]),
        ];
        for (step, values, earlier, expected) in cases {
            check(*step, values, *earlier, expected);
        }
    }

    #[test]
    fn a_sustained_fast_rise_is_only_held_back_one_reading() {
        let flags = classify(&series(10, &[16.0, 16.667, 17.333]), &[], true, &settings());
        assert!(
            flags[1]
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("confirmed by the next reading")),
            "{flags:#?}"
        );
        // Judged one reading at a time, the second waits, the third decides both.
        let first = classify(&series(10, &[16.0, 16.667]), &[], true, &settings());
        assert_eq!(codes(&first), ["ok", "suspect-rate"]);
        let again = classify(&series(10, &[16.0, 16.667, 17.333]), &first, true, &settings());
        assert_eq!(codes(&again), ["ok", "ok", "ok"]);
    }

    #[test]
    fn a_stuck_sensor_is_flagged_after_the_persistence_window() {
        let values = vec![19.5; 40];
        let flags = classify(&series(10, &values), &[], true, &settings());
        let first_stuck = flags.iter().position(|f| f.quality == Quality::Stuck);
        assert_eq!(first_stuck, Some(36), "six hours of the same value");
        assert!(flags[36..].iter().all(|f| f.quality == Quality::Stuck));
        assert!(
            flags[36]
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("unchanged at 19.50")),
            "{:?}",
            flags[36]
        );
        // A change ends it.
        let mut v = values.clone();
        v.push(19.6);
        let flags = classify(&series(10, &v), &[], true, &settings());
        assert_eq!(flags.last().map(|f| f.quality), Some(Quality::Ok));
    }

    #[test]
    fn a_station_that_accepts_first_readings_takes_them_as_they_are() {
        let s = QcSettings {
            first: FirstReading::Accept,
            ..settings()
        };
        assert_eq!(codes(&classify(&series(10, &[19.5]), &[], false, &s)), ["ok"]);
    }

    #[test]
    fn exercises_are_only_range_checked() {
        let s = settings().range_only();
        let flags = classify(&series(1, &[16.0, 25.0, 16.0, -50.0]), &[], false, &s);
        assert_eq!(codes(&flags), ["ok", "ok", "ok", "suspect-range"]);
    }

    #[test]
    fn flags_do_not_depend_on_how_the_series_arrived() {
        // All at once, or reading by reading with the earlier flags settled.
        let values = [17.0, 17.1, 21.0, 17.2, 17.3, 21.5, 21.6, 21.6, 21.7];
        let all = classify(&series(10, &values), &[], true, &settings());
        let mut settled: Vec<Flag> = Vec::new();
        for n in 1..=values.len() {
            settled = classify(&series(10, &values[..n]), &settled, true, &settings());
        }
        assert_eq!(codes(&all), codes(&settled));
    }
}
