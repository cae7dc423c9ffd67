//! Backtesting: the rules run over a history of readings with a simulated clock, giving
//! the timeline of transitions per hazard and commune, that is what would have been sent
//! and when. Pure: the caller reads the files and prints the result.

use chrono::{DateTime, Duration, Utc};
use domain::StationId;

use crate::engine::{Action, RuleSet};
use crate::eval::{CommuneIndex, Inputs, evaluate_indexed, levels};
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

/// What the simulated clock does.
#[derive(Debug, Clone, Copy)]
pub struct ReplaySettings {
    /// The clock advances to each reading's time; with `step`, also at least this often.
    pub step: Option<Duration>,
    /// How long a lower level must persist before the level comes down.
    pub hold: Duration,
    /// Readings older than this are dropped from memory as the clock advances.
    pub keep: Duration,
}

impl ReplaySettings {
    pub fn for_rules(set: &RuleSet) -> Self {
        Self {
            step: None,
            hold: Duration::minutes(set.limits.hold_minutes.unwrap_or(180)),
            keep: Duration::days(15),
        }
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
) -> Vec<TimelineEntry> {
    history.sort_by_key(|r| r.at);
    let total = history.len();
    let mut inputs = base.clone();
    let index = CommuneIndex::new(&inputs);
    let mut tracker = Tracker::new(settings.hold);
    let mut out = Vec::new();
    let mut i = 0;
    let mut clock = match history.first() {
        Some(r) => r.at,
        None => return out,
    };
    let end = history.last().map(|r| r.at).unwrap_or(clock) + settings.hold + Duration::minutes(1);
    while clock <= end {
        while i < total && history[i].at <= clock {
            let r = &history[i];
            inputs.readings.push(&r.station, r.param, r.at, r.value);
            i += 1;
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
                out.push(TimelineEntry { change, action });
            }
        }
        progress(i, total);
        inputs.readings.prune(clock - settings.keep);
        // Next tick: the next reading, or the fixed step, whichever comes first; after the
        // last reading, keep stepping so that pending de-escalations come due.
        let next_reading = history.get(i).map(|r| r.at);
        let fallback = settings.step.unwrap_or(Duration::minutes(10));
        clock = match (next_reading, settings.step) {
            (Some(n), Some(s)) => n.min(clock + s),
            (Some(n), None) => n,
            (None, _) => clock + fallback,
        };
    }
    out
}
