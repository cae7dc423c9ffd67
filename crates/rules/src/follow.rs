//! Alerts that follow a river's state, not its edges. For one station, from its `ok`
//! readings and the station's current alert (if any), at a time `now`, [`decide`] says
//! what to send: a new alert, an escalation, a renewal of the live alert before it
//! expires, a de-escalation or an all-clear, or nothing.
//!
//! - The state is the alarm band of the newest reading, if it is fresh. A reading that
//!   arrives late or in a batch counts in observation order: what matters is what the
//!   newest fresh reading says, whenever it came.
//! - Whenever the state is at or above BĐ1 and no live alert covers it (never issued,
//!   lost, expired, a restart), one is issued; when it rises, the alert escalates at once.
//! - While the state holds, the live alert is renewed before it expires.
//! - A level comes down only once it has not held, even with the hysteresis margin, for
//!   the hold time, and never on a flat line (readings that did not change through the
//!   hold window, as a stuck sensor sends). Then it de-escalates, or ends with an
//!   all-clear.
//! - Without fresh readings (a station gone quiet, a stuck sensor) nothing is raised or
//!   lowered; the live alert is renewed on the last known state for a limited time.
//! - An officer's message in the incident is the officer's: it is escalated when the river
//!   rises above every level the incident announced, never renewed or ended here. An
//!   officer's Cancel holds the follower back until the river rises above the cancelled
//!   level or falls below BĐ1 and rises again.
//!
//! The service ([`crate`]'s callers in the pipeline) and `canhbao replay` both use this
//! one function. Pure: the caller passes the readings, the alert and the time.

use chrono::{DateTime, Duration, Utc};
use domain::{AlarmLevel, Station};

use crate::quality::Point;

/// How the follower behaves; operational choices of canhbao, not figures of a regulation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FollowSettings {
    /// A reading older than this does not say what the river does now.
    pub fresh: Duration,
    /// How long a level must fail to hold before it comes down.
    pub hold: Duration,
    /// The hysteresis margin (m): a level holds while readings stay above its threshold
    /// minus this.
    pub margin_m: f64,
    /// A live alert is renewed when it would expire within this.
    pub renew_before: Duration,
    /// Without fresh readings, the live alert is renewed on the last known state until
    /// the newest reading is this old.
    pub blind_renew: Duration,
    /// While fresh readings hold a level, the live alert is restated (renewed with the
    /// newest reading) once it is this old: an Emergency (BĐ3) every `restate_emergency`,
    /// a Priority (BĐ1, BĐ2) every `restate_priority`; `None` renews only before expiry.
    /// The reference's verified analogue: emergency flood bulletins are re-broadcast
    /// every 2 hours, others every 3 hours, restating the time (Decision 03/2020 Art. 28).
    pub restate_emergency: Option<Duration>,
    pub restate_priority: Option<Duration>,
}

impl FollowSettings {
    /// How often a live alert at `level` is restated while the level holds.
    pub fn restate_every(&self, level: AlarmLevel) -> Option<Duration> {
        if level == AlarmLevel::Bd3 {
            self.restate_emergency
        } else {
            self.restate_priority
        }
    }
}

/// The newest message of a station's incident, as the follower needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum Head {
    /// No incident, or its last message expired.
    None,
    /// A live message.
    Live(Live),
    /// An officer cancelled the incident at `at`, when it had reached `level`.
    Cancelled {
        at: DateTime<Utc>,
        level: Option<AlarmLevel>,
    },
}

/// A live message of the incident.
#[derive(Debug, Clone, PartialEq)]
pub struct Live {
    /// Its alarm level; `None` for an all-clear, or an officer's message that states none.
    pub level: Option<AlarmLevel>,
    /// The highest alarm level any message of the incident announced.
    pub incident_max: Option<AlarmLevel>,
    pub expires: DateTime<Utc>,
    /// When it was sent.
    pub sent: DateTime<Utc>,
    /// Issued by a duty officer (an Update of the computed alert, say).
    pub officer: bool,
}

/// What to send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    Nothing,
    /// A new alert (or, after a live all-clear, an Update of its incident).
    Issue {
        level: AlarmLevel,
        reading: Point,
    },
    Escalate {
        from: Option<AlarmLevel>,
        to: AlarmLevel,
        reading: Point,
    },
    /// The same level, with a later expiry. `reading` is the newest `ok` one, which may
    /// be older than fresh (`blind`). `restate`: due at the class's cadence, not only
    /// before expiry, and so announced again.
    Renew {
        level: AlarmLevel,
        reading: Point,
        blind: bool,
        restate: bool,
    },
    DeEscalate {
        from: AlarmLevel,
        to: AlarmLevel,
        reading: Point,
    },
    AllClear {
        from: AlarmLevel,
        reading: Point,
    },
}

impl Decision {
    pub fn name(self) -> &'static str {
        match self {
            Self::Nothing => "nothing",
            Self::Issue { .. } => "issue",
            Self::Escalate { .. } => "escalate",
            Self::Renew { restate: true, .. } => "restate",
            Self::Renew { .. } => "renew",
            Self::DeEscalate { .. } => "de-escalate",
            Self::AllClear { .. } => "all-clear",
        }
    }

    /// The alarm level after the decision (`None` after an all-clear, or for nothing).
    pub fn level(self) -> Option<AlarmLevel> {
        match self {
            Self::Nothing | Self::AllClear { .. } => None,
            Self::Issue { level, .. } | Self::Renew { level, .. } => Some(level),
            Self::Escalate { to, .. } | Self::DeEscalate { to, .. } => Some(to),
        }
    }
}

/// The highest alarm band that `value` reaches.
pub fn band(station: &Station, value: f64) -> Option<AlarmLevel> {
    crate::alarm_band(station, value).map(|(l, _)| l)
}

/// Whether `value` holds `level`: at or above its threshold minus the margin.
fn holds(station: &Station, level: AlarmLevel, value: f64, margin: f64) -> bool {
    station.alarm(level).is_some_and(|t| value >= t.value - margin)
}

/// The highest level that `value` holds with the margin.
fn held_band(station: &Station, value: f64, margin: f64) -> Option<AlarmLevel> {
    AlarmLevel::ALL
        .into_iter()
        .rev()
        .find(|l| holds(station, *l, value, margin))
}

/// Decides what the station's incident needs at `now`. `ok` holds the station's readings
/// that passed quality control, sorted by time, at least those of the last
/// `max(hold, fresh)` and, after an officer's Cancel, those since it.
pub fn decide(
    station: &Station,
    ok: &[Point],
    head: &Head,
    now: DateTime<Utc>,
    s: &FollowSettings,
) -> Decision {
    let ok: Vec<Point> = ok.iter().copied().filter(|p| p.at <= now).collect();
    let Some(&latest) = ok.last() else {
        return Decision::Nothing;
    };
    let fresh = now - latest.at <= s.fresh;
    let state = if fresh { band(station, latest.value) } else { None };
    match head {
        Head::None => match state {
            Some(level) => Decision::Issue {
                level,
                reading: latest,
            },
            None => Decision::Nothing,
        },
        Head::Cancelled { at, level } => {
            let Some(now_level) = state else {
                return Decision::Nothing;
            };
            let rose_above = level.is_none_or(|l| now_level > l);
            let fell_since = ok
                .iter()
                .filter(|p| p.at > *at)
                .any(|p| held_band(station, p.value, s.margin_m).is_none());
            if rose_above || fell_since {
                Decision::Issue {
                    level: now_level,
                    reading: latest,
                }
            } else {
                Decision::Nothing
            }
        }
        Head::Live(live) if live.expires <= now => decide(station, &ok, &Head::None, now, s),
        Head::Live(live) if live.officer => {
            // The officer's message stands; only a rise above everything the incident
            // announced is escalated.
            match (state, live.incident_max.or(live.level)) {
                (Some(to), max) if max.is_none_or(|m| to > m) => Decision::Escalate {
                    from: live.level,
                    to,
                    reading: latest,
                },
                _ => Decision::Nothing,
            }
        }
        Head::Live(Live { level: None, .. }) => match state {
            // A live all-clear: the river rose again.
            Some(level) => Decision::Issue {
                level,
                reading: latest,
            },
            None => Decision::Nothing,
        },
        Head::Live(
            live @ Live {
                level: Some(level), ..
            },
        ) => {
            let level = *level;
            let renew_due = live.expires - now <= s.renew_before;
            // Fresh readings at the level are restated at the cadence of its class; a
            // blind renewal (no fresh reading) waits for the expiry.
            let restate_due = renew_due
                || s.restate_every(level)
                    .is_some_and(|every| now - live.sent >= every);
            if !fresh {
                return if renew_due && now - latest.at <= s.blind_renew {
                    Decision::Renew {
                        level,
                        reading: latest,
                        blind: true,
                        restate: false,
                    }
                } else {
                    Decision::Nothing
                };
            }
            if let Some(to) = state.filter(|to| *to > level) {
                return Decision::Escalate {
                    from: Some(level),
                    to,
                    reading: latest,
                };
            }
            let window: Vec<Point> = ok.iter().copied().filter(|p| p.at > now - s.hold).collect();
            let held =
                state == Some(level) || window.iter().any(|p| holds(station, level, p.value, s.margin_m));
            // A level is never lowered on a flat line: the river must be seen moving.
            let moving = window.iter().any(|p| (p.value - latest.value).abs() > 0.0005);
            // And the hold must be covered: the last reading at the level is older than it.
            let covered = ok
                .iter()
                .rev()
                .find(|p| holds(station, level, p.value, s.margin_m))
                .is_none_or(|p| now - p.at >= s.hold);
            if held || !moving || !covered {
                return if restate_due {
                    Decision::Renew {
                        level,
                        reading: latest,
                        blind: false,
                        restate: !renew_due,
                    }
                } else {
                    Decision::Nothing
                };
            }
            let to = window
                .iter()
                .filter_map(|p| held_band(station, p.value, s.margin_m))
                .max()
                .max(state);
            match to {
                Some(to) => Decision::DeEscalate {
                    from: level,
                    to,
                    reading: latest,
                },
                None => Decision::AllClear {
                    from: level,
                    reading: latest,
                },
            }
        }
    }
}

/// A simulated incident for one station: what the service's store would hold after
/// each decision, for `canhbao replay` and tests that step a clock.
#[derive(Debug, Clone, PartialEq)]
pub struct Simulated {
    pub head: Head,
}

impl Default for Simulated {
    fn default() -> Self {
        Self { head: Head::None }
    }
}

impl Simulated {
    /// Applies a decision made at `now`, with alerts lasting `ttl` and all-clears
    /// `all_clear_ttl`.
    pub fn apply(&mut self, d: Decision, now: DateTime<Utc>, ttl: Duration, all_clear_ttl: Duration) {
        let max = match &self.head {
            Head::Live(l) => l.incident_max,
            _ => None,
        };
        let live = |level: Option<AlarmLevel>, expires| {
            Head::Live(Live {
                level,
                incident_max: max.max(level),
                expires,
                sent: now,
                officer: false,
            })
        };
        self.head = match d {
            Decision::Nothing => return,
            Decision::Issue { level, .. } => Head::Live(Live {
                level: Some(level),
                incident_max: Some(level),
                expires: now + ttl,
                sent: now,
                officer: false,
            }),
            Decision::Escalate { to, .. } => live(Some(to), now + ttl),
            Decision::Renew { level, .. } => live(Some(level), now + ttl),
            Decision::DeEscalate { to, .. } => live(Some(to), now + ttl),
            Decision::AllClear { .. } => live(None, now + all_clear_ttl),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::huu_lung;

    fn t(min: i64) -> DateTime<Utc> {
        "2026-10-09T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::minutes(min)
    }

    fn settings() -> FollowSettings {
        FollowSettings {
            fresh: Duration::minutes(180),
            hold: Duration::minutes(180),
            margin_m: 0.1,
            renew_before: Duration::minutes(60),
            blind_renew: Duration::hours(24),
            restate_emergency: None,
            restate_priority: None,
        }
    }

    const TTL: Duration = Duration::hours(6);

    /// Steps a simulated clock over readings every `step` minutes, deciding after each;
    /// returns (minute, decision name, level) of every decision that is not nothing.
    fn run(step: i64, values: &[f64], tail_minutes: i64) -> Vec<(i64, &'static str, Option<u8>)> {
        run_with(&settings(), step, values, tail_minutes)
    }

    fn run_with(
        settings: &FollowSettings,
        step: i64,
        values: &[f64],
        tail_minutes: i64,
    ) -> Vec<(i64, &'static str, Option<u8>)> {
        let s = huu_lung();
        let mut sim = Simulated::default();
        let mut out = Vec::new();
        let points: Vec<Point> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| Point {
                at: t(i as i64 * step),
                value: v,
            })
            .collect();
        let end = (values.len() as i64 - 1) * step + tail_minutes;
        let mut m = 0;
        while m <= end {
            let now = t(m);
            let seen: Vec<Point> = points.iter().copied().filter(|p| p.at <= now).collect();
            let d = decide(&s, &seen, &sim.head, now, settings);
            if d != Decision::Nothing {
                out.push((m, d.name(), d.level().map(|l| l.number())));
            }
            sim.apply(d, now, TTL, Duration::hours(2));
            m += step.min(10);
        }
        out
    }

    #[test]
    fn a_late_reading_above_a_level_is_alerted_when_it_is_fresh() {
        let s = huu_lung();
        let stale = [Point {
            at: t(0),
            value: 19.5,
        }];
        assert_eq!(
            decide(&s, &stale, &Head::None, t(240), &settings()),
            Decision::Nothing
        );
        let both = [
            stale[0],
            Point {
                at: t(240),
                value: 19.6,
            },
        ];
        assert!(matches!(
            decide(&s, &both, &Head::None, t(240), &settings()),
            Decision::Issue {
                level: AlarmLevel::Bd3,
                ..
            }
        ));
    }

    #[test]
    fn a_held_flood_is_restated_every_2_hours_at_bd3_and_every_3_hours_below() {
        let cadence = FollowSettings {
            restate_emergency: Some(Duration::hours(2)),
            restate_priority: Some(Duration::hours(3)),
            ..settings()
        };
        // Above BĐ3 for 9 hours, readings every 10 minutes: restated at 2, 4, 6 and 8 h
        // (not only before expiry, every 5 h).
        let got = run_with(&cadence, 10, &vec![19.5; 9 * 6 + 1], 0);
        let times: Vec<(i64, &str)> = got.iter().map(|g| (g.0, g.1)).collect();
        assert_eq!(
            times,
            vec![
                (0, "issue"),
                (120, "restate"),
                (240, "restate"),
                (360, "restate"),
                (480, "restate")
            ],
            "{got:?}"
        );
        // Above BĐ2 (a Priority): every 3 hours.
        let got = run_with(&cadence, 10, &vec![18.5; 9 * 6 + 1], 0);
        let times: Vec<i64> = got.iter().map(|g| g.0).collect();
        assert_eq!(times, vec![0, 180, 360, 540], "{got:?}");
        // A station gone quiet: restated while its newest reading is fresh (at 2 h, the
        // reading 2 h old), then, blind, only before the alert expires (at 7 h, the
        // restated alert expiring at 8 h), never every 2 hours on an old reading.
        let got = run_with(&cadence, 10, &[19.5], 9 * 60);
        let times: Vec<i64> = got.iter().map(|g| g.0).collect();
        assert_eq!(times, vec![0, 120, 420], "{got:?}");
    }

    #[test]
    fn a_flood_held_for_two_days_is_renewed_and_never_lapses() {
        let values = vec![19.5; 48 * 6 + 1];
        let got = run(10, &values, 0);
        assert_eq!(got[0], (0, "issue", Some(3)));
        assert!(
            got[1..]
                .iter()
                .all(|(_, name, l)| *name == "renew" && *l == Some(3)),
            "{got:?}"
        );
        // Renewed at most `renew_before` before expiry: every 5 hours.
        let times: Vec<i64> = got.iter().map(|g| g.0).collect();
        assert!(times.windows(2).all(|w| w[1] - w[0] == 300), "{times:?}");
    }

    #[test]
    fn a_falling_river_comes_down_after_the_hold_and_ends_with_an_all_clear() {
        // Up to BĐ3, then down through BĐ2 and below BĐ1, a reading every 10 minutes.
        let mut v: Vec<f64> = (0..30).map(|i| 16.0 + 0.12 * f64::from(i)).collect(); // to 19.48
        v.extend((0..40).map(|i| 19.48 - 0.08 * f64::from(i))); // to 16.36
        v.extend(std::iter::repeat_n(16.3, 3).chain([16.25, 16.2, 16.15, 16.1, 16.05, 16.0]));
        v.extend((0..30).map(|i| 16.0 - 0.01 * f64::from(i)));
        let got = run(10, &v, 0);
        let names: Vec<&str> = got.iter().map(|g| g.1).collect();
        assert_eq!(
            names,
            [
                "issue",
                "escalate",
                "escalate",
                "de-escalate",
                "de-escalate",
                "all-clear"
            ],
            "{got:?}"
        );
        let levels: Vec<Option<u8>> = got.iter().map(|g| g.2).collect();
        assert_eq!(levels, [Some(1), Some(2), Some(3), Some(2), Some(1), None]);
    }

    #[test]
    fn a_flat_line_never_lowers_a_level() {
        // BĐ3, then a sensor stuck below it.
        let mut v = vec![19.5; 6];
        v.extend(vec![18.5; 60]);
        let got = run(10, &v, 0);
        assert!(
            got.iter()
                .all(|(_, n, _)| *n != "de-escalate" && *n != "all-clear"),
            "{got:?}"
        );
    }

    #[test]
    fn without_fresh_readings_nothing_changes_and_the_alert_is_renewed_for_a_while() {
        let s = huu_lung();
        let ok = [Point {
            at: t(0),
            value: 19.5,
        }];
        let head = Head::Live(Live {
            level: Some(AlarmLevel::Bd3),
            incident_max: Some(AlarmLevel::Bd3),
            expires: t(6 * 60),
            sent: t(0),
            officer: false,
        });
        assert_eq!(decide(&s, &ok, &head, t(4 * 60), &settings()), Decision::Nothing);
        assert!(matches!(
            decide(&s, &ok, &head, t(5 * 60 + 1), &settings()),
            Decision::Renew { blind: true, .. }
        ));
        let head = Head::Live(Live {
            expires: t(30 * 60),
            ..match head {
                Head::Live(l) => l,
                _ => unreachable!(),
            }
        });
        assert_eq!(
            decide(&s, &ok, &head, t(29 * 60 + 30), &settings()),
            Decision::Nothing
        );
    }

    #[test]
    fn an_officers_cancel_holds_the_follower_back_until_the_river_changes() {
        let s = huu_lung();
        let cancelled = Head::Cancelled {
            at: t(0),
            level: Some(AlarmLevel::Bd3),
        };
        let high = [Point {
            at: t(10),
            value: 19.5,
        }];
        assert_eq!(
            decide(&s, &high, &cancelled, t(10), &settings()),
            Decision::Nothing
        );
        let down_up = [
            Point {
                at: t(10),
                value: 16.5,
            },
            Point {
                at: t(20),
                value: 17.5,
            },
        ];
        assert!(matches!(
            decide(&s, &down_up, &cancelled, t(20), &settings()),
            Decision::Issue {
                level: AlarmLevel::Bd1,
                ..
            }
        ));
        let lower = Head::Cancelled {
            at: t(0),
            level: Some(AlarmLevel::Bd2),
        };
        assert!(matches!(
            decide(&s, &high, &lower, t(10), &settings()),
            Decision::Issue {
                level: AlarmLevel::Bd3,
                ..
            }
        ));
    }

    #[test]
    fn an_officers_message_is_only_escalated_above_the_incidents_highest_level() {
        let s = huu_lung();
        let officer = Head::Live(Live {
            level: None,
            incident_max: Some(AlarmLevel::Bd2),
            expires: t(60),
            sent: t(0),
            officer: true,
        });
        let at_bd2 = [Point {
            at: t(10),
            value: 18.5,
        }];
        assert_eq!(
            decide(&s, &at_bd2, &officer, t(50), &settings()),
            Decision::Nothing
        );
        let at_bd3 = [Point {
            at: t(10),
            value: 19.2,
        }];
        assert!(matches!(
            decide(&s, &at_bd3, &officer, t(10), &settings()),
            Decision::Escalate {
                to: AlarmLevel::Bd3,
                ..
            }
        ));
        // Once it expires, the follower covers the state again.
        assert!(matches!(
            decide(&s, &at_bd2, &officer, t(61), &settings()),
            Decision::Issue {
                level: AlarmLevel::Bd2,
                ..
            }
        ));
    }
}
