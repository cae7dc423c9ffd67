//! The per-area, per-hazard state machine that turns successive assessments into
//! transitions: new, escalate (at once), de-escalate (only after the level has not held,
//! even with the hysteresis margin, for the hold time), and end. A bulletin's level
//! applies at once, up or down. Pure: the caller passes the time.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use domain::{CommuneCode, Hazard, RiskLevel};

use crate::eval::{Assessment, Diagnostic, LevelSource};

/// A change of level for one hazard in one commune.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    New { level: RiskLevel },
    Escalate { from: RiskLevel, to: RiskLevel },
    DeEscalate { from: RiskLevel, to: RiskLevel },
    End { from: RiskLevel },
}

impl Transition {
    pub fn name(self) -> &'static str {
        match self {
            Self::New { .. } => "new",
            Self::Escalate { .. } => "escalate",
            Self::DeEscalate { .. } => "de-escalate",
            Self::End { .. } => "end",
        }
    }

    /// The level after the transition (`None` after an end).
    pub fn level(self) -> Option<RiskLevel> {
        match self {
            Self::New { level } => Some(level),
            Self::Escalate { to, .. } | Self::DeEscalate { to, .. } => Some(to),
            Self::End { .. } => None,
        }
    }
}

/// One transition, with the assessment that caused it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub at: DateTime<Utc>,
    pub hazard: Hazard,
    pub commune: CommuneCode,
    pub transition: Transition,
    /// The assessment behind the new level (absent for an end).
    pub assessment: Option<Assessment>,
}

#[derive(Debug, Clone, PartialEq)]
struct AreaState {
    level: RiskLevel,
    /// Since when the level has not held (with the margin).
    below_since: Option<DateTime<Utc>>,
}

/// Tracks levels per hazard and commune.
#[derive(Debug, Clone)]
pub struct Tracker {
    hold: Duration,
    states: BTreeMap<(Hazard, CommuneCode), AreaState>,
}

impl Tracker {
    /// `hold`: how long a lower level must persist before the level comes down.
    pub fn new(hold: Duration) -> Self {
        Self {
            hold,
            states: BTreeMap::new(),
        }
    }

    /// Restores a level (from storage, after a restart) without announcing it again.
    pub fn restore(&mut self, hazard: Hazard, commune: CommuneCode, level: RiskLevel) {
        self.states.insert(
            (hazard, commune),
            AreaState {
                level,
                below_since: None,
            },
        );
    }

    /// Takes the levels as stored (`area_levels`), which another instance may have moved
    /// since this one last stepped: a level that matches keeps how long it has failed to
    /// hold; a different one is taken as it is, without announcing it again; one no longer
    /// stored is gone.
    pub fn sync(&mut self, stored: &[(Hazard, CommuneCode, RiskLevel)]) {
        let mut states = BTreeMap::new();
        for (h, c, level) in stored {
            let key = (*h, c.clone());
            let state = match self.states.remove(&key) {
                Some(s) if s.level == *level => s,
                _ => AreaState {
                    level: *level,
                    below_since: None,
                },
            };
            states.insert(key, state);
        }
        self.states = states;
    }

    /// Whether any area has a level (de-escalation then needs the held evaluation).
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// The current level of a hazard in a commune.
    pub fn level(&self, hazard: Hazard, commune: &CommuneCode) -> Option<RiskLevel> {
        self.states.get(&(hazard, commune.clone())).map(|s| s.level)
    }

    /// Hazards with a level at the same time in the same commune: the facts a duty officer
    /// needs to apply the compound escalation of Art. 4 (never applied automatically).
    pub fn coinciding(&self) -> BTreeMap<CommuneCode, Vec<(Hazard, RiskLevel)>> {
        let mut out: BTreeMap<CommuneCode, Vec<(Hazard, RiskLevel)>> = BTreeMap::new();
        for ((h, c), s) in &self.states {
            out.entry(c.clone()).or_default().push((*h, s.level));
        }
        out.retain(|_, v| v.len() >= 2);
        out
    }

    /// Advances to `now`. `current` is the evaluation at `now`; `held` is the evaluation
    /// with the hysteresis margins applied (see [`crate::eval::evaluate_held`]).
    pub fn step(&mut self, now: DateTime<Utc>, current: &[Assessment], held: &[Assessment]) -> Vec<Change> {
        let key = |a: &Assessment| (a.hazard, a.commune.clone());
        let cur: BTreeMap<_, &Assessment> = current
            .iter()
            .filter(|a| a.level.is_some())
            .map(|a| (key(a), a))
            .collect();
        let hold: BTreeMap<_, RiskLevel> = held.iter().filter_map(|a| a.level.map(|l| (key(a), l))).collect();
        // Where data is stale or missing, a level is kept, never ended for want of data.
        let blind: std::collections::BTreeSet<_> = current
            .iter()
            .filter(|a| {
                a.diagnostics
                    .iter()
                    .any(|d| matches!(d, Diagnostic::Stale { .. } | Diagnostic::Missing { .. }))
            })
            .map(key)
            .collect();
        let mut changes = Vec::new();
        let mut change = |k: &(Hazard, CommuneCode), t: Transition, a: Option<&Assessment>| {
            changes.push(Change {
                at: now,
                hazard: k.0,
                commune: k.1.clone(),
                transition: t,
                assessment: a.cloned(),
            });
        };
        // Escalations and new levels happen at once.
        for (k, a) in &cur {
            let Some(level) = a.level else { continue };
            // Only a bulletin whose channel vouched for it lowers a level at once.
            let bulletin = matches!(
                a.source,
                LevelSource::Bulletin {
                    authoritative: true,
                    ..
                }
            );
            match self.states.get_mut(k) {
                None => {
                    self.states.insert(
                        k.clone(),
                        AreaState {
                            level,
                            below_since: None,
                        },
                    );
                    change(k, Transition::New { level }, Some(a));
                }
                Some(s) if level > s.level => {
                    change(
                        k,
                        Transition::Escalate {
                            from: s.level,
                            to: level,
                        },
                        Some(a),
                    );
                    *s = AreaState {
                        level,
                        below_since: None,
                    };
                }
                Some(s) if level < s.level && bulletin => {
                    change(
                        k,
                        Transition::DeEscalate {
                            from: s.level,
                            to: level,
                        },
                        Some(a),
                    );
                    *s = AreaState {
                        level,
                        below_since: None,
                    };
                }
                Some(_) => {}
            }
        }
        // Coming down waits for the hold time, measured with the margin.
        let keys: Vec<_> = self.states.keys().cloned().collect();
        for k in keys {
            let Some(s) = self.states.get_mut(&k) else {
                continue;
            };
            let now_level = cur.get(&k).and_then(|a| a.level);
            if now_level.is_some_and(|l| l >= s.level) {
                s.below_since = None;
                continue;
            }
            let held_level = hold.get(&k).copied();
            if held_level.is_some_and(|l| l >= s.level) || (now_level.is_none() && blind.contains(&k)) {
                s.below_since = None;
                continue;
            }
            let since = *s.below_since.get_or_insert(now);
            if now - since < self.hold {
                continue;
            }
            let from = s.level;
            match now_level.max(held_level) {
                Some(to) => {
                    *s = AreaState {
                        level: to,
                        below_since: None,
                    };
                    change(&k, Transition::DeEscalate { from, to }, cur.get(&k).copied());
                }
                None => {
                    self.states.remove(&k);
                    change(&k, Transition::End { from }, None);
                }
            }
        }
        changes
    }
}
