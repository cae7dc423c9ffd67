//! Evaluation: `evaluate(&RuleSet, &Inputs, now)` is pure and infallible. It gives, per
//! hazard and commune, the highest level that fired, the rules and input values behind
//! it, whether it is official, and diagnostics (stale, missing or implausible data). A
//! live official bulletin overrides the computed level, up or down.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use domain::{CommuneCode, Hazard, RiskLevel, Station, StationId};

use crate::engine::{
    Action, BasinScope, Bounds, Condition, DailyStat, Direction, Example, Operand, Rule, RuleSet,
    StationLevel, Susceptibility,
};
use crate::series::{Param, Reading, Readings, Series, daily_in, latest_in, local_day, window_in};

/// What the rules know of a commune beyond its code.
#[derive(Debug, Clone, PartialEq)]
pub struct CommuneInfo {
    pub code: CommuneCode,
    /// Flash-flood and landslide susceptibility class of the commune's zone, if mapped.
    pub susceptibility: Option<Susceptibility>,
    /// Exposures that some rules ask about, such as `expressway` or `mountain_pass` (fog).
    pub exposure: Vec<String>,
    /// Why this commune's susceptibility or exposures are provisional, if they are: a rule
    /// that reads them is provisional too.
    pub provisional: Vec<String>,
}

/// An official bulletin's stated level for a hazard and area.
#[derive(Debug, Clone, PartialEq)]
pub struct Bulletin {
    pub id: String,
    pub sender: String,
    pub hazard: Hazard,
    /// `None` when the bulletin states no level (a thunderstorm warning then means level 1).
    pub level: Option<RiskLevel>,
    pub communes: Vec<CommuneCode>,
    pub effective: DateTime<Utc>,
    pub expires: DateTime<Utc>,
    /// It came over a channel that vouches for its sender: its level overrides computed
    /// ones, up or down. Otherwise it only raises, as a pre-warning.
    pub authoritative: bool,
    /// Its sender marks it as an emergency ("khẩn cấp"): relayed as an Emergency.
    pub emergency: bool,
    /// How its sender graded it (CAP urgency, severity, certainty), kept when relayed.
    pub grade: Option<domain::CapGrade>,
}

/// Everything the rules read.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// The province's flash-flood group of Art. 46 (Lạng Sơn: 2).
    pub province_group: Option<u8>,
    pub stations: Vec<Station>,
    pub communes: Vec<CommuneInfo>,
    pub readings: Readings,
    pub bulletins: Vec<Bulletin>,
}

/// A non-fatal problem met while evaluating.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Diagnostic {
    Stale {
        station: StationId,
        param: Param,
        age_minutes: i64,
    },
    Missing {
        station: StationId,
        param: Param,
    },
    Implausible {
        station: StationId,
        param: Param,
        value: String,
    },
    MissingLevel {
        station: StationId,
        level: &'static str,
    },
    MissingAreaClass {
        station: StationId,
    },
    MissingSusceptibility {
        commune: CommuneCode,
    },
    MissingProvinceGroup,
    /// A figure that is not known could raise the level above the one given: `level` is
    /// possible, and the level given is the highest that the known figures prove.
    Unproven {
        level: RiskLevel,
        missing: String,
    },
    BulletinWithoutLevel {
        bulletin: String,
    },
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stale {
                station,
                param,
                age_minutes,
            } => {
                write!(
                    f,
                    "stale: the latest {} at {station} is {age_minutes} min old",
                    param.code()
                )
            }
            Self::Missing { station, param } => {
                write!(f, "missing: no {} at {station} for the window", param.code())
            }
            Self::Implausible {
                station,
                param,
                value,
            } => {
                write!(
                    f,
                    "implausible: {} {value} at {station} was ignored",
                    param.code()
                )
            }
            Self::MissingLevel { station, level } => write!(f, "missing: {level} of {station} is not known"),
            Self::MissingAreaClass { station } => {
                write!(f, "missing: the Art. 45 area class of {station} is not set")
            }
            Self::MissingSusceptibility { commune } => {
                write!(
                    f,
                    "missing: the susceptibility class of commune {commune} is not mapped"
                )
            }
            Self::MissingProvinceGroup => write!(f, "missing: the province's Art. 46 group is not set"),
            Self::Unproven { level, missing } => write!(
                f,
                "unproven: level {} is possible but cannot be shown without {missing}; the level given is the highest the known figures prove",
                level.get()
            ),
            Self::BulletinWithoutLevel { bulletin } => {
                write!(f, "bulletin {bulletin} states no risk level; it cannot set one")
            }
        }
    }
}

/// An input value a fired rule used.
#[derive(Debug, Clone, PartialEq)]
pub struct InputUsed {
    pub name: String,
    pub value: f64,
}

/// Where a level comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LevelSource {
    Computed,
    Bulletin {
        id: String,
        sender: String,
        /// Whether its channel vouched for its sender.
        authoritative: bool,
        /// Whether its sender marks it as an emergency.
        emergency: bool,
        /// How its sender graded it.
        grade: Option<domain::CapGrade>,
        /// When it took effect (its issue time, unless it says otherwise).
        issued: DateTime<Utc>,
    },
}

/// The result for one hazard in one commune.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub hazard: Hazard,
    pub commune: CommuneCode,
    /// `None` when nothing fired (the assessment then only carries diagnostics).
    pub level: Option<RiskLevel>,
    pub source: LevelSource,
    /// The level computed from observations, even when a bulletin overrode it.
    pub computed_level: Option<RiskLevel>,
    /// True for a bulletin's level, or when a rule that gives it is official and reads
    /// only official figures.
    pub official: bool,
    pub provisional_reasons: Vec<String>,
    /// `id@version` of each rule that fired at `level`.
    pub rules: Vec<String>,
    pub inputs: Vec<InputUsed>,
    pub diagnostics: Vec<Diagnostic>,
    pub action: Action,
}

impl Assessment {
    /// Whether its level comes from a bulletin its sender marks as an emergency.
    pub fn bulletin_emergency(&self) -> bool {
        matches!(self.source, LevelSource::Bulletin { emergency: true, .. })
    }
}

/// An input read during evaluation, named only when a rule fires (naming costs an allocation).
#[derive(Debug, Clone, Copy)]
enum Used {
    Latest(Param),
    ForecastPeak(Param, u32),
    Sum(Param, Direction, u32),
    Rise(Param, u32),
    Spell(Param, u32),
    Daily(Param, DailyStat),
    AntecedentDays,
    Level(StationLevel),
}

impl Used {
    fn name(self, station: &StationId) -> String {
        match self {
            Self::Latest(p) => format!("{}@{station}", p.code()),
            Self::ForecastPeak(p, h) => format!("{} max next {h} h@{station}", p.code()),
            Self::Sum(p, d, h) => {
                let dir = match d {
                    Direction::Past => "past",
                    Direction::Next => "next",
                };
                format!("{} {dir} {h} h@{station}", p.code())
            }
            Self::Rise(p, h) => format!("{} rise {h} h@{station}", p.code()),
            Self::Spell(p, h) => format!("{} spell of {h} h windows@{station}", p.code()),
            Self::Daily(p, stat) => format!("{} daily {stat:?} yesterday@{station}", p.code()),
            Self::AntecedentDays => format!("antecedent rain days@{station}"),
            Self::Level(l) => format!("{}@{station}", l.name()),
        }
    }
}

struct Ctx<'a> {
    station: &'a Station,
    commune: Option<&'a CommuneInfo>,
    group: Option<u8>,
    set: &'a RuleSet,
    now: DateTime<Utc>,
    basins: Option<usize>,
    /// Apply the hysteresis margins (testing whether a level still holds).
    held: bool,
    /// Let upper bounds on values pass: whether a station floods at least as much as the
    /// rule says, for counting the basins in flood.
    floor: bool,
    /// Note what a fired rule used and why it is provisional (only levels and diagnostics
    /// otherwise).
    full: bool,
    /// The station's series, looked up once.
    series: Option<&'a [Series; Param::COUNT]>,
    /// The latest reading of each series at `now`, found once.
    latest: [Option<Reading>; Param::COUNT],
    /// Values assumed for the station's missing levels (by [`StationLevel`] index), when
    /// trying the values a missing figure could take.
    assume: [Option<f64>; 4],
    /// Where a missing level was compared: the value it would have to equal for the
    /// comparison to change (the compared value less the offset).
    probes: Vec<(StationLevel, f64)>,
    /// Provisionally tagged station levels read, named only if the rule fires.
    provisional_levels: Vec<(StationLevel, f64, domain::Tag)>,
    used: Vec<(Used, f64)>,
    diags: Vec<Diagnostic>,
    provisional: Vec<String>,
}

impl<'a> Ctx<'a> {
    fn s(&self, param: Param) -> &'a [Reading] {
        self.series
            .map(|all| all[param as usize].as_slice())
            .unwrap_or(&[])
    }

    fn margin(&self, param: Param) -> f64 {
        if self.held {
            self.set.limits.hysteresis.get(&param).copied().unwrap_or(0.0)
        } else {
            0.0
        }
    }

    /// The operand's value, to compare `value` with. A missing station level is noted as
    /// missing, and either takes its assumed value or makes the comparison fail.
    fn resolve(&mut self, o: Operand, value: f64) -> Option<f64> {
        match o {
            Operand::Const(v) => Some(v),
            Operand::Station { level, offset } => {
                let Some(t) = level.of(self.station) else {
                    self.diags.push(Diagnostic::MissingLevel {
                        station: self.station.id.clone(),
                        level: level.name(),
                    });
                    let assumed = self.assume[level as usize];
                    if assumed.is_none() {
                        self.probes.push((level, value - offset));
                    }
                    return assumed.map(|v| v + offset);
                };
                if self.full {
                    if t.tag.is_provisional() {
                        self.provisional_levels.push((level, t.value, t.tag));
                    }
                    self.used.push((Used::Level(level), t.value));
                }
                Some(t.value + offset)
            }
        }
    }

    fn within(&mut self, value: f64, b: &Bounds) -> bool {
        type Check = (Option<Operand>, fn(f64, f64) -> bool);
        let checks: [Check; 4] = [
            (b.ge, |v, x| v >= x),
            (b.gt, |v, x| v > x),
            (b.lt, |v, x| v < x),
            (b.le, |v, x| v <= x),
        ];
        let checks = if self.floor { &checks[..2] } else { &checks[..] };
        for (op, ok) in checks {
            if let Some(op) = *op {
                match self.resolve(op, value) {
                    Some(x) if ok(value, x) => {}
                    _ => return false,
                }
            }
        }
        true
    }

    fn plausible(&mut self, param: Param, value: f64) -> bool {
        match self.set.limits.plausible.get(&param) {
            Some((lo, hi)) if !(value >= *lo && value <= *hi) => {
                self.diags.push(Diagnostic::Implausible {
                    station: self.station.id.clone(),
                    param,
                    value: format!("{value}"),
                });
                false
            }
            _ => value.is_finite(),
        }
    }

    fn latest(&mut self, param: Param) -> Option<f64> {
        let id = &self.station.id;
        let Some(r) = self.latest[param as usize] else {
            self.diags.push(Diagnostic::Missing {
                station: id.clone(),
                param,
            });
            return None;
        };
        let age = (self.now - r.at).num_minutes();
        if let Some(max) = self.set.limits.max_age_minutes.get(&param)
            && age > *max
        {
            self.diags.push(Diagnostic::Stale {
                station: id.clone(),
                param,
                age_minutes: age,
            });
            return None;
        }
        if !self.plausible(param, r.value) {
            return None;
        }
        Some(r.value + self.margin(param))
    }

    fn commune_provisional(&mut self) {
        if let Some(c) = self.commune
            && self.full
        {
            self.provisional.extend(c.provisional.iter().cloned());
        }
    }

    fn record(&mut self, what: Used, value: f64) {
        if self.full {
            self.used.push((what, value));
        }
    }

    fn used_inputs(&self) -> Vec<InputUsed> {
        self.used
            .iter()
            .map(|(u, v)| InputUsed {
                name: u.name(&self.station.id),
                value: *v,
            })
            .collect()
    }

    fn eval(&mut self, c: &Condition) -> bool {
        let station = self.station;
        let id = &station.id;
        match c {
            Condition::All(v) => v.iter().all(|c| self.eval(c)),
            Condition::Any(v) => v.iter().any(|c| self.eval(c)),
            Condition::Not(c) => !self.eval(c),
            Condition::Value {
                param,
                bounds,
                forecast_hours: None,
            } => match self.latest(*param) {
                Some(v) => {
                    self.record(Used::Latest(*param), v);
                    self.within(v, bounds)
                }
                None => false,
            },
            Condition::Value {
                param,
                bounds,
                forecast_hours: Some(h),
            } => {
                let w = window_in(
                    self.s(*param),
                    self.now,
                    self.now + Duration::hours(i64::from(*h)),
                );
                let mut peak: Option<f64> = None;
                for r in w {
                    if self.plausible(*param, r.value) {
                        peak = Some(peak.map_or(r.value, |p: f64| p.max(r.value)));
                    }
                }
                match peak.map(|p| p + self.margin(*param)) {
                    Some(v) => {
                        self.record(Used::ForecastPeak(*param, *h), v);
                        self.within(v, bounds)
                    }
                    None => {
                        self.diags.push(Diagnostic::Missing {
                            station: id.clone(),
                            param: *param,
                        });
                        false
                    }
                }
            }
            Condition::Accumulation {
                param,
                hours,
                direction,
                bounds,
            } => {
                let span = Duration::hours(i64::from(*hours));
                let (from, to) = match direction {
                    Direction::Past => (self.now - span, self.now),
                    Direction::Next => (self.now, self.now + span),
                };
                let w = window_in(self.s(*param), from, to);
                if w.is_empty() {
                    self.diags.push(Diagnostic::Missing {
                        station: id.clone(),
                        param: *param,
                    });
                    return false;
                }
                let mut sum = self.margin(*param);
                for r in w {
                    if self.plausible(*param, r.value) {
                        sum += r.value;
                    }
                }
                self.record(Used::Sum(*param, *direction, *hours), sum);
                self.within(sum, bounds)
            }
            Condition::Spell {
                param,
                hours,
                at_least,
                bounds,
            } => {
                let span = Duration::hours(i64::from(*hours));
                let mut n = 0u32;
                // At most 30 days of forecast are looked at.
                while n < 30 * 24 / (*hours).max(1) {
                    let from = self.now + span * n as i32;
                    let w = window_in(self.s(*param), from, from + span);
                    let mut sum = 0.0;
                    for r in w {
                        if self.plausible(*param, r.value) {
                            sum += r.value;
                        }
                    }
                    if w.is_empty() || sum + self.margin(*param) < *at_least {
                        break;
                    }
                    n += 1;
                }
                self.record(Used::Spell(*param, *hours), f64::from(n));
                self.within(f64::from(n), bounds)
            }
            Condition::Rise { param, hours, bounds } => {
                let Some(now_v) = self.latest(*param) else {
                    return false;
                };
                let then = latest_in(self.s(*param), self.now - Duration::hours(i64::from(*hours)));
                let Some(then) = then else {
                    self.diags.push(Diagnostic::Missing {
                        station: id.clone(),
                        param: *param,
                    });
                    return false;
                };
                // `now_v` already carries the margin.
                let rise = now_v - then.value;
                self.record(Used::Rise(*param, *hours), rise);
                self.within(rise, bounds)
            }
            Condition::Persist {
                param,
                stat,
                days,
                bounds,
            } => {
                let today = local_day(self.now);
                for d in 1..=i64::from(*days) {
                    let Some(s) = daily_in(self.s(*param), today - d) else {
                        self.diags.push(Diagnostic::Missing {
                            station: id.clone(),
                            param: *param,
                        });
                        return false;
                    };
                    let v = self.margin(*param)
                        + match stat {
                            DailyStat::Min => s.min,
                            DailyStat::Mean => s.mean,
                            DailyStat::Max => s.max,
                            DailyStat::Sum => s.sum,
                        };
                    if d == 1 {
                        self.record(Used::Daily(*param, *stat), v);
                    }
                    if !self.within(v, bounds) {
                        return false;
                    }
                }
                true
            }
            Condition::AntecedentRainDays { rain_day_mm, bounds } => {
                let rain_day_mm = match (rain_day_mm, &self.set.limits.rain_day) {
                    (Some(mm), _) => *mm,
                    (None, Some(f)) => {
                        if self.full && f.tag.is_provisional() {
                            let why = format!(
                                "a rain day is taken as >= {} mm [{}] ({}); the province confirms it in [settings.rain_day]",
                                f.value,
                                f.tag.as_str(),
                                f.source
                            );
                            if !self.provisional.contains(&why) {
                                self.provisional.push(why);
                            }
                        }
                        f.value
                    }
                    // Refused at load.
                    (None, None) => return false,
                };
                let today = local_day(self.now);
                let mut n = 0u32;
                while n < 60 {
                    match daily_in(self.s(Param::Rainfall), today - 1 - i64::from(n)) {
                        Some(s) if s.sum >= rain_day_mm => n += 1,
                        _ => break,
                    }
                }
                self.record(Used::AntecedentDays, f64::from(n));
                self.within(f64::from(n), bounds)
            }
            Condition::Susceptibility(set) => {
                match self.commune.map(|c| (c.code.clone(), c.susceptibility)) {
                    Some((_, Some(s))) => set.contains(&s),
                    Some((code, None)) => {
                        self.diags
                            .push(Diagnostic::MissingSusceptibility { commune: code });
                        false
                    }
                    None => false,
                }
            }
            Condition::ProvinceGroup(set) => match self.group {
                Some(g) => set.contains(&g),
                None => {
                    self.diags.push(Diagnostic::MissingProvinceGroup);
                    false
                }
            },
            Condition::AreaClass(set) => match self.station.area_class {
                Some(c) => set.contains(&c),
                None => {
                    self.diags
                        .push(Diagnostic::MissingAreaClass { station: id.clone() });
                    false
                }
            },
            Condition::Exposure(set) => {
                let hit = self
                    .commune
                    .is_some_and(|c| c.exposure.iter().any(|e| set.contains(e)));
                if hit {
                    self.commune_provisional();
                }
                hit
            }
            Condition::Basins(scope) => match (self.basins, scope) {
                (None, _) => true,
                // The single-basin rows are the floor for a flood on several basins too:
                // a second flooding basin never lowers a level.
                (Some(n), BasinScope::One) => n >= 1,
                (Some(n), BasinScope::Several) => n >= 2,
            },
        }
    }
}

#[derive(Default)]
struct Acc {
    level: Option<RiskLevel>,
    rules: Vec<String>,
    /// Some rule that fired at `level` is official, on official figures only: the level
    /// is proven officially, whatever else fired beside it.
    any_official: bool,
    auto: bool,
    inputs: Vec<InputUsed>,
    provisional: BTreeSet<String>,
    diags: BTreeSet<Diagnostic>,
}

struct Fired<'a> {
    hazard: Hazard,
    commune: &'a CommuneCode,
    used: Vec<InputUsed>,
    provisional: Vec<String>,
}

/// A station with what evaluation looks up for it, prepared once per `now`.
struct Prepared<'a> {
    station: &'a Station,
    series: Option<&'a [Series; Param::COUNT]>,
    /// The latest reading of each series at the evaluation's `now`.
    latest: [Option<Reading>; Param::COUNT],
    communes: Vec<(&'a CommuneCode, Option<&'a CommuneInfo>)>,
    /// Values tried for the station's missing levels (see [`assess`]).
    assume: [Option<f64>; 4],
}

/// Where each station's communes are described in [`Inputs::communes`], by position:
/// looked up once for a replay, whose stations and communes do not change.
pub(crate) struct CommuneIndex(Vec<Vec<Option<usize>>>);

impl CommuneIndex {
    pub(crate) fn new(inputs: &Inputs) -> Self {
        // The last entry of a commune counts, should one be listed twice.
        let infos: BTreeMap<&CommuneCode, usize> = inputs
            .communes
            .iter()
            .enumerate()
            .map(|(i, c)| (&c.code, i))
            .collect();
        Self(
            inputs
                .stations
                .iter()
                .map(|s| s.communes.iter().map(|c| infos.get(c).copied()).collect())
                .collect(),
        )
    }
}

fn prepare<'a>(inputs: &'a Inputs, index: &CommuneIndex, now: DateTime<Utc>) -> Vec<Prepared<'a>> {
    inputs
        .stations
        .iter()
        .zip(&index.0)
        .map(|(s, infos)| {
            let series = inputs.readings.station(&s.id);
            Prepared {
                station: s,
                series,
                latest: Param::ALL.map(|p| series.and_then(|all| latest_in(all[p as usize].as_slice(), now))),
                communes: s
                    .communes
                    .iter()
                    .zip(infos)
                    .map(|(c, i)| (c, i.map(|i| &inputs.communes[i])))
                    .collect(),
                assume: [None; 4],
            }
        })
        .collect()
}

fn mk<'a>(
    set: &'a RuleSet,
    inputs: &'a Inputs,
    now: DateTime<Utc>,
    p: &Prepared<'a>,
    commune: Option<&'a CommuneInfo>,
    basins: Option<usize>,
) -> Ctx<'a> {
    Ctx {
        station: p.station,
        commune,
        group: inputs.province_group,
        set,
        now,
        basins,
        held: false,
        floor: false,
        full: true,
        series: p.series,
        latest: p.latest,
        assume: p.assume,
        probes: Vec::new(),
        provisional_levels: Vec::new(),
        used: Vec::new(),
        diags: Vec::new(),
        provisional: Vec::new(),
    }
}

/// Per station (by position), where its missing levels were compared.
type Probes = BTreeMap<usize, Vec<(StationLevel, f64)>>;

/// What evaluating the rules noted besides what fired.
#[derive(Default)]
struct Notes<'a> {
    diags: BTreeMap<(Hazard, &'a CommuneCode), BTreeSet<Diagnostic>>,
    probes: Probes,
}

impl Notes<'_> {
    fn probe(&mut self, station: usize, probes: &mut Vec<(StationLevel, f64)>) {
        if !probes.is_empty() {
            self.probes.entry(station).or_default().append(probes);
        }
    }
}

/// Evaluates one rule everywhere; returns what fired and notes the diagnostics met.
#[allow(clippy::too_many_arguments)]
fn run_rule<'a>(
    set: &RuleSet,
    rule: &Rule,
    inputs: &Inputs,
    prepared: &[Prepared<'a>],
    now: DateTime<Utc>,
    held: bool,
    full: bool,
    notes: &mut Notes<'a>,
) -> Vec<Fired<'a>> {
    // A station that never measured any of the rule's inputs has nothing to say here
    // (a river gauge has no visibility sensor): it is skipped, without a diagnostic.
    // Where no station measured them, the rule says nothing at all.
    let measured = |p: &Prepared<'_>| {
        rule.inputs.is_empty()
            || rule
                .inputs
                .iter()
                .any(|param| p.series.is_some_and(|all| !all[*param as usize].is_empty()))
    };
    if !prepared.iter().any(measured) {
        return Vec::new();
    }
    // A rule that does not read the commune holds, or not, for every commune of a station
    // alike: it is evaluated once per station.
    let by_commune = rule.reads_commune();
    // For "one basin" / "several basins": on how many basins does the river stand at
    // least as high as the rest of the rule asks? (A basin in a higher band floods too: a
    // rise elsewhere never lowers a level here.)
    let basin_count = if rule.uses_basins() {
        let mut basins = HashSet::new();
        // Where a missing figure decides it, its comparisons are noted here too.
        let mut floods = |i: usize, info: Option<&CommuneInfo>, p: &Prepared<'_>| {
            let mut ctx = mk(set, inputs, now, p, info, None);
            ctx.held = held;
            ctx.floor = true;
            let holds = ctx.eval(&rule.when);
            notes.probe(i, &mut ctx.probes);
            holds
        };
        for (i, p) in prepared.iter().enumerate() {
            let holds = if by_commune {
                p.communes.iter().any(|(_, info)| floods(i, *info, p))
            } else {
                !p.communes.is_empty() && floods(i, None, p)
            };
            if holds {
                basins.insert(p.station.basin.as_str());
            }
        }
        Some(basins.len())
    } else {
        None
    };
    let mut fired = Vec::new();
    for (i, p) in prepared.iter().enumerate() {
        if !measured(p) {
            continue;
        }
        if by_commune {
            for &(c, info) in &p.communes {
                let mut ctx = mk(set, inputs, now, p, info, basin_count);
                ctx.held = held;
                ctx.full = full;
                let ok = ctx.eval(&rule.when);
                notes.probe(i, &mut ctx.probes);
                if !ctx.diags.is_empty() {
                    notes
                        .diags
                        .entry((rule.hazard, c))
                        .or_default()
                        .extend(ctx.diags.drain(..));
                }
                if ok {
                    let (used, provisional) = fired_facts(rule, p.station, &mut ctx);
                    fired.push(Fired {
                        hazard: rule.hazard,
                        commune: c,
                        used,
                        provisional,
                    });
                }
            }
        } else if !p.communes.is_empty() {
            let mut ctx = mk(set, inputs, now, p, None, basin_count);
            ctx.held = held;
            ctx.full = full;
            let ok = ctx.eval(&rule.when);
            notes.probe(i, &mut ctx.probes);
            if !ctx.diags.is_empty() {
                for &(c, _) in &p.communes {
                    notes
                        .diags
                        .entry((rule.hazard, c))
                        .or_default()
                        .extend(ctx.diags.iter().cloned());
                }
            }
            if ok {
                let (used, provisional) = fired_facts(rule, p.station, &mut ctx);
                for &(c, _) in &p.communes {
                    fired.push(Fired {
                        hazard: rule.hazard,
                        commune: c,
                        used: used.clone(),
                        provisional: provisional.clone(),
                    });
                }
            }
        }
    }
    fired
}

/// The inputs a rule that fired used, and why its result is provisional.
fn fired_facts(rule: &Rule, s: &Station, ctx: &mut Ctx<'_>) -> (Vec<InputUsed>, Vec<String>) {
    if !ctx.full {
        return (Vec::new(), Vec::new());
    }
    let mut provisional = std::mem::take(&mut ctx.provisional);
    for (level, value, tag) in &ctx.provisional_levels {
        let text = format!("{} {value:.2} m of {} is tagged {tag}", level.name(), s.id);
        if !provisional.contains(&text) {
            provisional.push(text);
        }
    }
    if let crate::engine::Provenance::Provisional { reason } = &rule.provenance {
        provisional.insert(0, format!("rule {}: {reason}", rule.key()));
    }
    if let Some(why) = &s.communes_provisional {
        provisional.push(format!(
            "the communes of {} are a provisional mapping: {why}",
            s.id
        ));
    }
    (ctx.used_inputs(), provisional)
}

fn evaluate_rules(
    set: &RuleSet,
    rules: &[Rule],
    inputs: &Inputs,
    prepared: &[Prepared<'_>],
    now: DateTime<Utc>,
    held: bool,
    full: bool,
) -> (Vec<Assessment>, Probes) {
    let mut acc: BTreeMap<(Hazard, &CommuneCode), Acc> = BTreeMap::new();
    let mut notes = Notes::default();
    for rule in rules {
        for f in run_rule(set, rule, inputs, prepared, now, held, full, &mut notes) {
            let a = acc.entry((f.hazard, f.commune)).or_default();
            let official = rule.is_official() && f.provisional.is_empty();
            if a.level < Some(rule.level) {
                *a = Acc {
                    level: Some(rule.level),
                    diags: std::mem::take(&mut a.diags),
                    ..Acc::default()
                };
            }
            if a.level == Some(rule.level) {
                if full && !a.rules.iter().any(|k| k == rule.key()) {
                    a.rules.push(rule.key().to_owned());
                }
                a.any_official |= official;
                a.auto |= rule.action == Action::AutoIssue;
                a.inputs.extend(f.used);
                a.provisional.extend(f.provisional);
            }
        }
    }
    for (key, d) in notes.diags {
        acc.entry(key).or_default().diags.extend(d);
    }
    let mut out: Vec<Assessment> = acc
        .into_iter()
        .filter(|(_, a)| a.level.is_some() || !a.diags.is_empty())
        .map(|((hazard, commune), a)| {
            let mut inputs = a.inputs;
            let mut named = HashSet::new();
            inputs.retain(|i| named.insert(i.name.clone()));
            let official = a.level.is_some() && a.any_official;
            Assessment {
                hazard,
                commune: commune.clone(),
                level: a.level,
                source: LevelSource::Computed,
                computed_level: a.level,
                official,
                provisional_reasons: if official {
                    Vec::new()
                } else {
                    a.provisional.into_iter().collect()
                },
                rules: a.rules,
                inputs,
                diagnostics: a.diags.into_iter().collect(),
                action: if a.auto {
                    Action::AutoIssue
                } else {
                    Action::PreWarning
                },
            }
        })
        .collect();
    apply_bulletins(&mut out, &inputs.bulletins, now);
    (out, notes.probes)
}

/// The most combinations of missing figures tried at one `now`; beyond it the level is
/// the one that holds with every comparison against a missing figure failing (a lower
/// bound too), and the assessment says so.
const MAX_COMPLETIONS: usize = 256;

/// Evaluates the rules, reasoning from bounds where a station's figure is missing.
///
/// A comparison against a missing figure (Văn Mịch's BĐ2, Lạng Sơn's historic flood)
/// does not simply fail: the level given is the highest that holds whatever the figure
/// is, within the order the decisions give the figures (BĐ1 < BĐ2 < BĐ3 < historic).
/// The outcome of a comparison changes only where the figure equals the compared value
/// less the offset; so it is enough to try each such point, and one value between and
/// beyond them, and take, per hazard and commune, the lowest level over the tries. Where
/// another try gives more, the assessment says which level is possible and what is
/// missing ([`Diagnostic::Unproven`]).
fn assess(
    set: &RuleSet,
    inputs: &Inputs,
    prepared: &mut [Prepared<'_>],
    now: DateTime<Utc>,
    held: bool,
    full: bool,
) -> Vec<Assessment> {
    let (base, probes) = evaluate_rules(set, &set.rules, inputs, prepared, now, held, full);
    if probes.is_empty() {
        return base;
    }
    // The values to try, per station with a missing figure that was compared.
    let mut tries: Vec<(usize, Vec<[Option<f64>; 4]>)> = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    for (&i, points) in &probes {
        let station = prepared[i].station;
        let mut options: Vec<[Option<f64>; 4]> = vec![[None; 4]];
        for level in StationLevel::ALL {
            let at: Vec<f64> = points
                .iter()
                .filter(|(l, _)| *l == level)
                .map(|(_, v)| *v)
                .collect();
            if at.is_empty() {
                continue;
            }
            missing.push(format!("{} of {}", level.name(), station.id));
            let values = candidates(station, level, at);
            options = options
                .iter()
                .flat_map(|o| {
                    values.iter().map(move |v| {
                        let mut o = *o;
                        o[level as usize] = Some(*v);
                        o
                    })
                })
                .collect();
        }
        tries.push((i, options));
    }
    let combinations = tries.iter().map(|(_, o)| o.len()).product::<usize>();
    let missing = missing.join(", ");
    if combinations > MAX_COMPLETIONS {
        let mut base = base;
        for a in &mut base {
            a.diagnostics.push(Diagnostic::Unproven {
                level: RiskLevel::HIGHEST,
                missing: missing.clone(),
            });
        }
        return base;
    }
    // Per hazard and commune: the try with the lowest level, and the highest level seen.
    let mut lowest: BTreeMap<(Hazard, CommuneCode), (Assessment, Option<RiskLevel>)> = BTreeMap::new();
    for n in 0..combinations {
        let mut k = n;
        for (i, options) in &tries {
            prepared[*i].assume = options[k % options.len()];
            k /= options.len();
        }
        let (out, _) = evaluate_rules(set, &set.rules, inputs, prepared, now, held, full);
        let mut seen: BTreeSet<(Hazard, CommuneCode)> = BTreeSet::new();
        for a in out {
            let key = (a.hazard, a.commune.clone());
            seen.insert(key.clone());
            match lowest.get_mut(&key) {
                None if n == 0 => {
                    let level = a.level;
                    lowest.insert(key, (a, level));
                }
                // Absent from an earlier try: nothing fired there, the lowest stays.
                None => {
                    let level = a.level;
                    let mut none = a;
                    none.level = None;
                    none.computed_level = None;
                    none.official = false;
                    none.rules.clear();
                    none.inputs.clear();
                    none.provisional_reasons.clear();
                    lowest.insert(key, (none, level));
                }
                Some((low, high)) => {
                    *high = (*high).max(a.level);
                    if a.level < low.level {
                        *low = a;
                    }
                }
            }
        }
        // Absent from this try: nothing fired here.
        for (key, (low, _)) in lowest.iter_mut() {
            if !seen.contains(key) && low.level.is_some() {
                low.level = None;
                low.computed_level = None;
                low.official = false;
                low.rules.clear();
                low.inputs.clear();
                low.provisional_reasons.clear();
            }
        }
    }
    for p in prepared.iter_mut() {
        p.assume = [None; 4];
    }
    // The assessments of the base evaluation carry the diagnostics of a hazard and
    // commune where nothing fired in any try.
    let mut out: Vec<Assessment> = Vec::new();
    let mut by_key: BTreeMap<(Hazard, CommuneCode), Assessment> = base
        .into_iter()
        .map(|a| ((a.hazard, a.commune.clone()), a))
        .collect();
    for (key, (mut a, high)) in lowest {
        let b = by_key.remove(&key);
        if let Some(b) = b {
            for d in b.diagnostics {
                if !a.diagnostics.contains(&d) {
                    a.diagnostics.push(d);
                }
            }
        }
        if let Some(high) = high
            && a.level < Some(high)
        {
            a.diagnostics.push(Diagnostic::Unproven {
                level: high,
                missing: missing.clone(),
            });
        }
        out.push(a);
    }
    out.extend(by_key.into_values());
    out.sort_by(|a, b| (a.hazard.code(), &a.commune).cmp(&(b.hazard.code(), &b.commune)));
    out
}

/// The values worth trying for `station`'s missing `level`, compared at `at`: each
/// point, and one value between and beyond them, within the figures the station has
/// (BĐ1 < BĐ2 < BĐ3 < historic).
fn candidates(station: &Station, level: StationLevel, mut at: Vec<f64>) -> Vec<f64> {
    let known = |l: StationLevel| l.of(station).map(|t| t.value);
    let pos = level as usize;
    let lo = StationLevel::ALL[..pos]
        .iter()
        .filter_map(|l| known(*l))
        .fold(f64::NEG_INFINITY, f64::max);
    let hi = StationLevel::ALL[pos + 1..]
        .iter()
        .filter_map(|l| known(*l))
        .fold(f64::INFINITY, f64::min);
    at.retain(|v| v.is_finite() && *v > lo && *v < hi);
    at.sort_by(f64::total_cmp);
    at.dedup();
    let between = |a: f64, b: f64| match (a.is_finite(), b.is_finite()) {
        (true, true) => (a + b) / 2.0,
        (true, false) => a + 1.0,
        (false, true) => b - 1.0,
        (false, false) => 0.0,
    };
    let mut out = Vec::with_capacity(at.len() * 2 + 1);
    let mut prev = lo;
    for v in at {
        out.push(between(prev, v));
        out.push(v);
        prev = v;
    }
    out.push(between(prev, hi));
    out
}

/// A live bulletin's level replaces the computed one for its hazard and communes.
fn apply_bulletins(out: &mut Vec<Assessment>, bulletins: &[Bulletin], now: DateTime<Utc>) {
    let mut live: Vec<&Bulletin> = bulletins
        .iter()
        .filter(|b| b.effective <= now && now < b.expires)
        .collect();
    // The latest bulletin wins where several cover the same place.
    live.sort_by_key(|b| b.effective);
    for b in live {
        let level = match (b.level, b.hazard) {
            (Some(l), _) => l,
            // Reference §1.4(h): a thunderstorm or hail warning means level 1.
            (None, Hazard::Thunderstorm) => RiskLevel::LOW,
            (None, _) => {
                for c in &b.communes {
                    if let Some(a) = out.iter_mut().find(|a| a.hazard == b.hazard && &a.commune == c) {
                        a.diagnostics.push(Diagnostic::BulletinWithoutLevel {
                            bulletin: b.id.clone(),
                        });
                    }
                }
                continue;
            }
        };
        for c in &b.communes {
            let pos = out.iter().position(|a| a.hazard == b.hazard && &a.commune == c);
            // A bulletin whose channel did not vouch for its sender never lowers a level,
            // nor replaces an authoritative one: it only raises, for an officer to confirm.
            if !b.authoritative && pos.is_some_and(|i| out[i].level.is_some_and(|l| l >= level)) {
                continue;
            }
            let a = match pos {
                Some(i) => &mut out[i],
                None => {
                    out.push(Assessment {
                        hazard: b.hazard,
                        commune: c.clone(),
                        level: None,
                        source: LevelSource::Computed,
                        computed_level: None,
                        official: false,
                        provisional_reasons: vec![],
                        rules: vec![],
                        inputs: vec![],
                        diagnostics: vec![],
                        action: Action::AutoIssue,
                    });
                    let last = out.len() - 1;
                    &mut out[last]
                }
            };
            a.level = Some(level);
            a.source = LevelSource::Bulletin {
                id: b.id.clone(),
                sender: b.sender.clone(),
                authoritative: b.authoritative,
                emergency: b.emergency,
                grade: b.grade.clone(),
                issued: b.effective,
            };
            a.rules = vec![format!("bulletin:{}", b.id)];
            if b.authoritative {
                a.official = true;
                a.provisional_reasons.clear();
                a.action = Action::AutoIssue;
            } else {
                a.official = false;
                a.provisional_reasons = vec![format!(
                    "bulletin {} of {} came over a channel that does not vouch for its sender: a pre-warning until an officer confirms it",
                    b.id, b.sender
                )];
                a.action = Action::PreWarning;
            }
        }
    }
    out.sort_by(|a, b| (a.hazard.code(), &a.commune).cmp(&(b.hazard.code(), &b.commune)));
}

/// Evaluates every rule of `set` over `inputs` at `now`.
pub fn evaluate(set: &RuleSet, inputs: &Inputs, now: DateTime<Utc>) -> Vec<Assessment> {
    evaluate_indexed(set, inputs, &CommuneIndex::new(inputs), now)
}

/// Evaluates with the hysteresis margins added to every value: the levels that still
/// hold, for the state machine's de-escalation.
pub fn evaluate_held(set: &RuleSet, inputs: &Inputs, now: DateTime<Utc>) -> Vec<Assessment> {
    let mut prepared = prepare(inputs, &CommuneIndex::new(inputs), now);
    assess(set, inputs, &mut prepared, now, true, true)
}

/// [`evaluate`], with the communes looked up beforehand.
pub(crate) fn evaluate_indexed(
    set: &RuleSet,
    inputs: &Inputs,
    index: &CommuneIndex,
    now: DateTime<Utc>,
) -> Vec<Assessment> {
    let mut prepared = prepare(inputs, index, now);
    assess(set, inputs, &mut prepared, now, false, true)
}

/// What [`evaluate`] and, if `with_held`, [`evaluate_held`] (else nothing) give at `now`,
/// cut to what the state machine reads: hazard, commune, level, source and diagnostics.
/// The rule keys, input names and provisional reasons are left empty, and `official`
/// is not to be read.
pub(crate) fn levels(
    set: &RuleSet,
    inputs: &Inputs,
    index: &CommuneIndex,
    now: DateTime<Utc>,
    with_held: bool,
) -> (Vec<Assessment>, Vec<Assessment>) {
    let mut prepared = prepare(inputs, index, now);
    let current = assess(set, inputs, &mut prepared, now, false, false);
    let held = if with_held {
        assess(set, inputs, &mut prepared, now, true, false)
    } else {
        Vec::new()
    };
    (current, held)
}

/// The fixed `now` of examples.
pub fn example_now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-10-09T01:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

/// The commune code every example evaluates for.
pub const EXAMPLE_COMMUNE: &str = "00001";

/// Builds the inputs an example describes.
pub fn example_inputs(ex: &crate::engine::ExampleRaw) -> Result<Inputs, String> {
    use domain::{Tag, Tagged};
    let commune = CommuneCode::new(EXAMPLE_COMMUNE).map_err(|e| e.to_string())?;
    let mut stations = Vec::new();
    let raw_stations = if ex.stations.is_empty() {
        vec![crate::engine::ExampleStation {
            id: "S1".into(),
            basin: "B1".into(),
            area_class: None,
            bd1: None,
            bd2: None,
            bd3: None,
            historic: None,
        }]
    } else {
        ex.stations.clone()
    };
    for s in &raw_stations {
        let v = |x: Option<f64>| x.map(|m| Tagged::new(m, Tag::V));
        stations.push(Station {
            id: StationId::new(&s.id).map_err(|e| e.to_string())?,
            name: s.id.clone(),
            river: String::new(),
            basin: s.basin.clone(),
            area_class: s.area_class,
            bd1_m: v(s.bd1),
            bd2_m: v(s.bd2),
            bd3_m: v(s.bd3),
            historic_m: v(s.historic),
            communes: vec![commune.clone()],
            communes_provisional: None,
        });
    }
    let susceptibility = match &ex.commune.susceptibility {
        Some(s) => {
            Some(Susceptibility::from_code(s).ok_or_else(|| format!("susceptibility {s:?} is not a class"))?)
        }
        None => None,
    };
    let mut readings = Readings::new();
    let now = example_now();
    for r in &ex.readings {
        let param = Param::from_code(&r.parameter)
            .ok_or_else(|| format!("parameter {:?} is unknown", r.parameter))?;
        let station = match &r.station {
            Some(id) => StationId::new(id).map_err(|e| e.to_string())?,
            None => stations[0].id.clone(),
        };
        for k in 0..r.count {
            let hours = r.hours_ago + f64::from(k) * r.step_h;
            let at = now - Duration::seconds((hours * 3600.0).round() as i64);
            readings.push(&station, param, at, r.value);
        }
    }
    Ok(Inputs {
        province_group: Some(ex.province_group),
        stations,
        communes: vec![CommuneInfo {
            code: commune,
            susceptibility,
            exposure: ex.commune.exposure.clone(),
            provisional: vec![],
        }],
        readings,
        bulletins: vec![],
    })
}

/// Runs one example of `rule`: Ok if the rule fires exactly when the example says so.
pub fn run_example(set: &RuleSet, rule: &Rule, ex: &Example) -> Result<(), String> {
    let inputs = example_inputs(&ex.raw)?;
    let (out, _) = evaluate_rules(
        set,
        std::slice::from_ref(rule),
        &inputs,
        &prepare(&inputs, &CommuneIndex::new(&inputs), example_now()),
        example_now(),
        false,
        true,
    );
    let fired = out.iter().any(|a| a.rules.iter().any(|k| k == rule.key()));
    if fired == ex.fire {
        return Ok(());
    }
    let diags: Vec<String> = out
        .iter()
        .flat_map(|a| a.diagnostics.iter().map(ToString::to_string))
        .collect();
    // What the rule read, fired or not.
    let mut used: Vec<String> = Vec::new();
    for p in prepare(&inputs, &CommuneIndex::new(&inputs), example_now()) {
        for &(_, info) in &p.communes {
            let mut ctx = mk(set, &inputs, example_now(), &p, info, None);
            ctx.eval(&rule.when);
            used.extend(
                ctx.used_inputs()
                    .iter()
                    .map(|i| format!("{}={}", i.name, i.value)),
            );
        }
    }
    used.dedup();
    Err(format!(
        "expected the rule {}, but it {} (inputs: {}; diagnostics: {})",
        if ex.fire { "to fire" } else { "not to fire" },
        if fired { "fired" } else { "did not" },
        if used.is_empty() {
            "none".into()
        } else {
            used.join(", ")
        },
        if diags.is_empty() {
            "none".into()
        } else {
            diags.join("; ")
        },
    ))
}
