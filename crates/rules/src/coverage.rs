//! Which communes the rules can give a level to, hazard by hazard, from what is
//! configured, and what is missing where they cannot.
//!
//! Rules are evaluated for each station and each commune its floods or readings are
//! mapped to, so a commune that no station maps cannot get a computed level at all; and a
//! rule that asks for an area class, a susceptibility class or an exposure cannot fire
//! where that is not configured. This is read from configuration alone (the stations, their
//! communes and area classes, the communes' susceptibility and exposures, the province's
//! group); whether readings actually arrive is the service's to show. A commune not covered
//! for a hazard still gets that hazard's level from an official bulletin.

use std::collections::BTreeSet;

use domain::{CommuneCode, Hazard, Station};

use crate::engine::{Condition, Rule, RuleSet};
use crate::eval::{CommuneInfo, Inputs};

/// What is known of a commune and hazard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cover {
    pub commune: CommuneCode,
    pub hazard: Hazard,
    /// Rules that can fire there (`id@version`), through the stations mapped to it.
    pub rules: Vec<String>,
    /// Stations whose readings the rules read for it.
    pub stations: Vec<String>,
    /// Why no rule can fire, when none can: every missing piece, each once.
    pub missing: Vec<String>,
}

impl Cover {
    pub fn covered(&self) -> bool {
        !self.rules.is_empty()
    }
}

/// Whether a condition can hold given the configuration: the configured facts decide,
/// readings may do anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Can {
    Yes,
    No,
    Maybe,
}

struct Ctx<'a> {
    station: &'a Station,
    commune: Option<&'a CommuneInfo>,
    code: &'a CommuneCode,
    group: Option<u8>,
    missing: &'a mut BTreeSet<String>,
}

fn can(c: &Condition, x: &mut Ctx<'_>) -> Can {
    match c {
        Condition::All(v) => {
            let mut out = Can::Yes;
            for c in v {
                match can(c, x) {
                    Can::No => out = Can::No,
                    Can::Maybe if out == Can::Yes => out = Can::Maybe,
                    _ => {}
                }
            }
            out
        }
        Condition::Any(v) => {
            let mut out = Can::No;
            for c in v {
                match can(c, x) {
                    Can::Yes => out = Can::Yes,
                    Can::Maybe if out == Can::No => out = Can::Maybe,
                    _ => {}
                }
            }
            out
        }
        // A negation of a configured fact is decided by it; of a reading, anything goes.
        Condition::Not(c) => {
            let mut quiet = BTreeSet::new();
            let mut inner = Ctx {
                station: x.station,
                commune: x.commune,
                code: x.code,
                group: x.group,
                missing: &mut quiet,
            };
            match can(c, &mut inner) {
                Can::Yes => Can::No,
                Can::No => Can::Yes,
                Can::Maybe => Can::Maybe,
            }
        }
        Condition::Susceptibility(set) => match x.commune.and_then(|c| c.susceptibility) {
            Some(s) if set.contains(&s) => Can::Yes,
            Some(_) => Can::No,
            None => {
                x.missing
                    .insert("the commune's susceptibility class (national map)".into());
                Can::No
            }
        },
        Condition::ProvinceGroup(set) => match x.group {
            Some(g) if set.contains(&g) => Can::Yes,
            Some(_) => Can::No,
            None => {
                x.missing.insert("the province's flash-flood group".into());
                Can::No
            }
        },
        Condition::AreaClass(set) => match x.station.area_class {
            Some(a) if set.contains(&a) => Can::Yes,
            Some(_) => Can::No,
            None => {
                x.missing
                    .insert(format!("area class of station {}", x.station.id));
                Can::No
            }
        },
        Condition::Exposure(set) => {
            if x.commune
                .is_some_and(|c| c.exposure.iter().any(|e| set.contains(e)))
            {
                Can::Yes
            } else {
                Can::No
            }
        }
        Condition::Value { .. }
        | Condition::Accumulation { .. }
        | Condition::Spell { .. }
        | Condition::Rise { .. }
        | Condition::Persist { .. }
        | Condition::AntecedentRainDays { .. }
        | Condition::Basins(_) => Can::Maybe,
    }
}

/// Exposures a rule needs at least one of, for the gap report.
fn exposures(c: &Condition, out: &mut BTreeSet<String>) {
    match c {
        Condition::All(v) | Condition::Any(v) => v.iter().for_each(|c| exposures(c, out)),
        Condition::Exposure(set) => out.extend(set.iter().cloned()),
        _ => {}
    }
}

/// Coverage of every commune in `communes` for every hazard that `set` has rules for.
pub fn coverage(set: &RuleSet, inputs: &Inputs, communes: &[CommuneCode]) -> Vec<Cover> {
    let hazards: BTreeSet<Hazard> = set.rules.iter().map(|r| r.hazard).collect();
    let mut out = Vec::new();
    for code in communes {
        let info = inputs.communes.iter().rev().find(|c| &c.code == code);
        let stations: Vec<&Station> = inputs
            .stations
            .iter()
            .filter(|s| s.communes.contains(code))
            .collect();
        for &hazard in &hazards {
            let rules: Vec<&Rule> = set.rules.iter().filter(|r| r.hazard == hazard).collect();
            let mut fired = BTreeSet::new();
            let mut via = BTreeSet::new();
            let mut missing = BTreeSet::new();
            if stations.is_empty() {
                missing.insert("a station mapped to this commune (readings, forecasts)".to_owned());
            }
            for s in &stations {
                for r in &rules {
                    let mut x = Ctx {
                        station: s,
                        commune: info,
                        code,
                        group: inputs.province_group,
                        missing: &mut missing,
                    };
                    if can(&r.when, &mut x) != Can::No {
                        fired.insert(r.key().to_owned());
                        via.insert(s.id.to_string());
                    }
                }
            }
            if fired.is_empty() && !stations.is_empty() {
                let mut need = BTreeSet::new();
                rules.iter().for_each(|r| exposures(&r.when, &mut need));
                if !need.is_empty() {
                    let need: Vec<String> = need.into_iter().collect();
                    missing.insert(format!("an exposure the rules ask for ({})", need.join(", ")));
                }
            }
            out.push(Cover {
                commune: code.clone(),
                hazard,
                rules: fired.into_iter().collect(),
                stations: via.into_iter().collect(),
                missing: missing.into_iter().collect(),
            });
        }
    }
    // A covered cell says nothing is missing.
    for c in &mut out {
        if c.covered() {
            c.missing.clear();
        }
    }
    out
}

/// Per hazard: (communes covered, communes in all), in hazard order.
pub fn summary(covers: &[Cover]) -> Vec<(Hazard, usize, usize)> {
    let hazards: BTreeSet<Hazard> = covers.iter().map(|c| c.hazard).collect();
    hazards
        .into_iter()
        .map(|h| {
            let all: Vec<&Cover> = covers.iter().filter(|c| c.hazard == h).collect();
            (h, all.iter().filter(|c| c.covered()).count(), all.len())
        })
        .collect()
}
