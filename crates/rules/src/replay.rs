//! Backtesting: the service's decisions over a history of readings with a simulated
//! clock. Water levels go through the same quality control and the same station follower
//! as in the service ([`crate::quality`], [`crate::follow`]), giving every alarm-level
//! alert the service would send; and the rules give the timeline of risk-level
//! transitions per hazard and commune. Pure: the caller reads the files and prints the
//! result.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use domain::{Station, StationId};

use crate::engine::{Action, RuleSet};
use crate::eval::{CommuneIndex, Inputs, evaluate_indexed, levels};
use crate::follow::{Decision, FollowSettings, Head, Simulated, decide};
use crate::quality::{FirstReading, Flag, Point, QcSettings, Quality, classify};
use crate::series::Param;
use crate::state::{Change, Tracker};

/// One historical reading.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoricReading {
    pub station: StationId,
    pub param: Param,
    pub at: DateTime<Utc>,
    pub value: f64,
}

/// How quality control and the station follower run in a replay: the service's
/// settings (`[alerts]`, `[ingest]`, and the rules' limits).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FollowReplay {
    pub follow: FollowSettings,
    /// The checks of water levels (history is taken as real readings).
    pub qc: QcSettings,
    /// Lifetime of an alert, and of an all-clear.
    pub ttl: Duration,
    pub all_clear_ttl: Duration,
}

impl FollowReplay {
    /// The shipped settings (`config/default.toml`) over `set`'s limits.
    pub fn shipped(set: &RuleSet) -> Self {
        Self {
            follow: FollowSettings {
                fresh: Duration::minutes(180),
                hold: Duration::minutes(set.limits.hold_minutes.unwrap_or(180)),
                margin_m: set
                    .limits
                    .hysteresis
                    .get(&Param::WaterLevel)
                    .copied()
                    .unwrap_or(0.0),
                renew_before: Duration::minutes(60),
                blind_renew: Duration::minutes(1440),
                restate_emergency: Some(Duration::minutes(120)),
                restate_priority: Some(Duration::minutes(180)),
            },
            qc: QcSettings {
                range: set.limits.plausible.get(&Param::WaterLevel).copied(),
                max_rate_per_h: Some(3.0),
                stuck_after: Some(Duration::minutes(360)),
                first: FirstReading::Confirm,
            },
            ttl: Duration::minutes(360),
            all_clear_ttl: Duration::minutes(120),
        }
    }
}

/// What the simulated clock does.
#[derive(Debug, Clone, Copy)]
pub struct ReplaySettings {
    /// The clock advances to each reading's time; with `step`, also at least this often.
    pub step: Option<Duration>,
    /// How long a lower level must persist before the level comes down.
    pub hold: Duration,
    /// Readings older than this are dropped from memory as the clock advances.
    pub keep: Duration,
    pub follow: FollowReplay,
}

impl ReplaySettings {
    pub fn for_rules(set: &RuleSet) -> Self {
        Self {
            step: None,
            hold: Duration::minutes(set.limits.hold_minutes.unwrap_or(180)),
            keep: Duration::days(15),
            follow: FollowReplay::shipped(set),
        }
    }
}

/// An alarm-level alert the station follower would have sent.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEntry {
    pub at: DateTime<Utc>,
    pub station: StationId,
    pub decision: Decision,
    /// `Alert` (a new incident) or `Update` (of the live one).
    pub msg_type: &'static str,
    pub expires: DateTime<Utc>,
}

/// A reading that quality control flagged, with its final flag.
#[derive(Debug, Clone, PartialEq)]
pub struct FlaggedEntry {
    pub station: StationId,
    pub at: DateTime<Utc>,
    pub value: f64,
    pub flag: Flag,
}

/// Everything a replay gives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replayed {
    /// Risk-level transitions.
    pub timeline: Vec<TimelineEntry>,
    /// Alarm-level alerts, as the service would send them.
    pub alerts: Vec<AlertEntry>,
    /// Water levels that quality control flagged.
    pub flagged: Vec<FlaggedEntry>,
}

/// One station's water levels under quality control, and its simulated incident.
#[derive(Debug, Default)]
struct Followed {
    points: Vec<Point>,
    flags: Vec<Flag>,
    /// `ok` readings, for the follower.
    ok: Vec<Point>,
    incident: Simulated,
    /// Flags that were not `ok` when dropped from the window.
    flagged: Vec<FlaggedEntry>,
    /// Whether readings were dropped from the window (the station's first is gone).
    pruned: bool,
}

impl Followed {
    /// Adds a reading and checks it; returns the readings that became `ok`.
    fn push(&mut self, p: Point, qc: &QcSettings) -> Vec<Point> {
        // Only the window the checks need is re-classified; older flags are settled.
        let keep = qc.stuck_after.unwrap_or(Duration::zero()) + Duration::hours(2);
        let start = self.points.partition_point(|x| x.at < p.at - keep);
        let earlier = start > 0 || self.pruned;
        let before: Vec<Quality> = self.flags[start..].iter().map(|f| f.quality).collect();
        self.points.push(p);
        let flags = classify(&self.points[start..], &self.flags[start..], earlier, qc);
        let mut became_ok = Vec::new();
        for (i, f) in flags.iter().enumerate() {
            let was = before.get(i).copied();
            if f.quality == Quality::Ok && was != Some(Quality::Ok) {
                became_ok.push(self.points[start + i]);
            }
        }
        self.flags.truncate(start);
        self.flags.extend(flags);
        became_ok
    }

    /// Drops what is older than `before`, keeping what was flagged.
    fn prune(&mut self, station: &StationId, before: DateTime<Utc>) {
        let n = self.points.partition_point(|x| x.at < before);
        self.pruned |= n > 0;
        for (p, f) in self.points.drain(..n).zip(self.flags.drain(..n)) {
            if f.quality != Quality::Ok {
                self.flagged.push(FlaggedEntry {
                    station: station.clone(),
                    at: p.at,
                    value: p.value,
                    flag: f,
                });
            }
        }
        let n = self.ok.partition_point(|x| x.at < before);
        self.ok.drain(..n);
    }
}

/// One transition of the timeline, with what it would have caused.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEntry {
    pub change: Change,
    /// Issued automatically, or a pre-warning for the duty officer.
    pub action: Option<Action>,
}

/// Replays `history` (in any order) over `base` (stations, communes, bulletins), calling
/// `progress(done, total)` as it goes.
pub fn replay(
    set: &RuleSet,
    base: &Inputs,
    mut history: Vec<HistoricReading>,
    settings: ReplaySettings,
    mut progress: impl FnMut(usize, usize),
) -> Replayed {
    history.sort_by_key(|r| r.at);
    let total = history.len();
    let mut inputs = base.clone();
    let index = CommuneIndex::new(&inputs);
    let mut tracker = Tracker::new(settings.hold);
    let mut out = Replayed::default();
    let f = settings.follow;
    let stations: BTreeMap<&StationId, &Station> = base.stations.iter().map(|s| (&s.id, s)).collect();
    let mut followed: BTreeMap<StationId, Followed> = BTreeMap::new();
    let follow_keep = f.follow.fresh.max(f.follow.hold).max(f.follow.blind_renew) + Duration::hours(1);
    let mut i = 0;
    let mut clock = match history.first() {
        Some(r) => r.at,
        None => return out,
    };
    let last_reading = history.last().map(|r| r.at).unwrap_or(clock);
    let end = last_reading + settings.hold + Duration::minutes(1);
    while clock <= end {
        while i < total && history[i].at <= clock {
            let r = &history[i];
            i += 1;
            if r.param != Param::WaterLevel || !stations.contains_key(&r.station) {
                inputs.readings.push(&r.station, r.param, r.at, r.value);
                continue;
            }
            // Water levels decide only once quality control passes them, as in the service.
            let fs = followed.entry(r.station.clone()).or_default();
            for p in fs.push(
                Point {
                    at: r.at,
                    value: r.value,
                },
                &f.qc,
            ) {
                inputs.readings.push(&r.station, r.param, p.at, p.value);
                let pos = fs.ok.partition_point(|x| x.at <= p.at);
                fs.ok.insert(pos, p);
            }
        }
        // The station follower, as the service runs it on each reading and every minute,
        // while there are readings to follow.
        if clock <= last_reading {
            for (id, fs) in followed.iter_mut() {
                let Some(station) = stations.get(id) else { continue };
                let d = decide(station, &fs.ok, &fs.incident.head, clock, &f.follow);
                if d == Decision::Nothing {
                    continue;
                }
                let msg_type = match (&fs.incident.head, d) {
                    (Head::Live(l), _) if l.expires > clock => "Update",
                    _ => "Alert",
                };
                fs.incident.apply(d, clock, f.ttl, f.all_clear_ttl);
                let expires = match &fs.incident.head {
                    Head::Live(l) => l.expires,
                    _ => clock,
                };
                out.alerts.push(AlertEntry {
                    at: clock,
                    station: id.clone(),
                    decision: d,
                    msg_type,
                    expires,
                });
            }
        }
        // The state machine reads only levels, sources and diagnostics: the full
        // assessments, with their rules, inputs and reasons, are built only at a tick that
        // changes something, for the changes to carry.
        let (current, held) = levels(set, &inputs, &index, clock, !tracker.is_empty());
        let changes = tracker.step(clock, &current, &held);
        if !changes.is_empty() {
            let full = evaluate_indexed(set, &inputs, &index, clock);
            for mut change in changes {
                if let Some(cut) = &change.assessment {
                    let a = full
                        .iter()
                        .find(|a| a.hazard == change.hazard && a.commune == change.commune);
                    debug_assert!(a.is_some_and(|a| a.level == cut.level && a.source == cut.source));
                    change.assessment = a.cloned();
                }
                let action = change.assessment.as_ref().map(|a| a.action);
                out.timeline.push(TimelineEntry { change, action });
            }
        }
        progress(i, total);
        inputs.readings.prune(clock - settings.keep);
        for (id, fs) in followed.iter_mut() {
            fs.prune(id, clock - follow_keep);
        }
        // Next tick: the next reading, or the fixed step, whichever comes first; while a
        // station's incident is live, at least every 10 minutes (the service's follower
        // looks every minute); after the last reading, keep stepping so that pending
        // de-escalations of risk levels come due.
        let next_reading = history.get(i).map(|r| r.at);
        let fallback = settings.step.unwrap_or(Duration::minutes(10));
        let live = followed
            .values()
            .any(|fs| matches!(&fs.incident.head, Head::Live(l) if l.expires > clock));
        let step = match (settings.step, live) {
            (Some(s), _) => Some(s),
            (None, true) => Some(Duration::minutes(10)),
            (None, false) => None,
        };
        clock = match (next_reading, step) {
            (Some(n), Some(s)) => n.min(clock + s),
            (Some(n), None) => n,
            (None, _) => clock + fallback,
        };
    }
    for (id, mut fs) in followed {
        fs.prune(&id, DateTime::<Utc>::MAX_UTC);
        out.flagged.append(&mut fs.flagged);
    }
    out.flagged
        .sort_by(|a, b| (a.at, &a.station).cmp(&(b.at, &b.station)));
    out
}
