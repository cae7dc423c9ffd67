//! Rules as data: the schema of `config/rules/*.toml`, and loading that validates every
//! file and reports every problem at once (file, rule id, field), then runs each rule's
//! embedded examples.

use std::collections::{BTreeMap, HashSet};

use domain::{Hazard, RiskLevel};
use serde::Deserialize;

use crate::series::Param;

/// A number, or a station's alarm level with an offset (`"bd3 + 0.3"`, `"historic"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Operand {
    Const(f64),
    Station { level: StationLevel, offset: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StationLevel {
    Bd1,
    Bd2,
    Bd3,
    Historic,
}

impl StationLevel {
    /// In the order the decisions define them: BĐ1 < BĐ2 < BĐ3 < historic.
    pub const ALL: [Self; 4] = [Self::Bd1, Self::Bd2, Self::Bd3, Self::Historic];

    /// The station's figure, if a source gives it.
    pub fn of(self, s: &domain::Station) -> Option<domain::Tagged<f64>> {
        match self {
            Self::Bd1 => s.bd1_m,
            Self::Bd2 => s.bd2_m,
            Self::Bd3 => s.bd3_m,
            Self::Historic => s.historic_m,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Bd1 => "bd1",
            Self::Bd2 => "bd2",
            Self::Bd3 => "bd3",
            Self::Historic => "historic",
        }
    }
}

/// Lower and upper bounds; each present bound must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bounds {
    pub ge: Option<Operand>,
    pub gt: Option<Operand>,
    pub lt: Option<Operand>,
    pub le: Option<Operand>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Observed: the window ending now.
    Past,
    /// Forecast: the window starting now.
    Next,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DailyStat {
    Min,
    Mean,
    Max,
    Sum,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Susceptibility {
    Low,
    Medium,
    High,
    VeryHigh,
}

impl Susceptibility {
    pub fn from_code(s: &str) -> Option<Self> {
        Some(match s {
            "low" => Self::Low,
            "medium" => Self::Medium,
            "high" => Self::High,
            "very_high" => Self::VeryHigh,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BasinScope {
    One,
    Several,
}

/// A condition of a rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    /// The latest reading (or, `direction = next`, the highest forecast within `hours`).
    Value {
        param: Param,
        bounds: Bounds,
        forecast_hours: Option<u32>,
    },
    /// Sum over a rolling window of `hours`.
    Accumulation {
        param: Param,
        hours: u32,
        direction: Direction,
        bounds: Bounds,
    },
    /// How long a forecast spell lasts: the number of consecutive windows of `hours`,
    /// from now on, each with a sum of at least `at_least` (rain "lasting 1-2 days").
    Spell {
        param: Param,
        hours: u32,
        at_least: f64,
        bounds: Bounds,
    },
    /// Rise of the value over the last `hours`.
    Rise {
        param: Param,
        hours: u32,
        bounds: Bounds,
    },
    /// A daily statistic within bounds on each of the last `days` complete local days.
    Persist {
        param: Param,
        stat: DailyStat,
        days: u32,
        bounds: Bounds,
    },
    /// Consecutive complete days, counting back from yesterday, with rain ≥ `rain_day_mm`
    /// (by default the tagged figure of `[settings.rain_day]`).
    AntecedentRainDays {
        rain_day_mm: Option<f64>,
        bounds: Bounds,
    },
    Susceptibility(Vec<Susceptibility>),
    ProvinceGroup(Vec<u8>),
    AreaClass(Vec<u8>),
    Exposure(Vec<String>),
    Basins(BasinScope),
}

impl Condition {
    /// Whether `f` holds for this condition or any condition within it.
    pub(crate) fn any(&self, f: &impl Fn(&Condition) -> bool) -> bool {
        f(self)
            || match self {
                Self::All(v) | Self::Any(v) => v.iter().any(|c| c.any(f)),
                Self::Not(c) => c.any(f),
                _ => false,
            }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provenance {
    Official { citation: String },
    Provisional { reason: String },
}

/// What a computed level does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Issued to the public at once.
    AutoIssue,
    /// Shown to a duty officer, who confirms or dismisses it.
    PreWarning,
}

/// One embedded example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub name: String,
    pub fire: bool,
    pub raw: ExampleRaw,
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: String,
    pub version: u32,
    pub hazard: Hazard,
    pub level: RiskLevel,
    pub provenance: Provenance,
    pub action: Action,
    pub inputs: Vec<Param>,
    pub when: Condition,
    pub examples: Vec<Example>,
    pub file: String,
    /// `id@version`, computed once.
    key: String,
    /// Whether `when` asks in how many basins the rest of the rule holds (computed once).
    basins: bool,
    /// Whether `when` reads the commune (susceptibility, exposure; computed once). A rule
    /// that does not gives the same answer for every commune of a station.
    by_commune: bool,
}

impl Rule {
    /// `id@version`, as carried by assessments and alerts.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn is_official(&self) -> bool {
        matches!(self.provenance, Provenance::Official { .. })
    }

    pub(crate) fn uses_basins(&self) -> bool {
        self.basins
    }

    pub(crate) fn reads_commune(&self) -> bool {
        self.by_commune
    }
}

/// Engine-wide limits, from the `[settings]` table of any rule file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// A reading older than this is stale and not used.
    pub max_age_minutes: BTreeMap<Param, i64>,
    /// Values outside these ranges are implausible and ignored.
    pub plausible: BTreeMap<Param, (f64, f64)>,
    /// Added to values when testing whether a level still holds, so that a level comes
    /// down only once the value is clearly below its threshold (negative where lower is
    /// worse, as for visibility).
    pub hysteresis: BTreeMap<Param, f64>,
    /// How long a level must fail to hold before it comes down.
    pub hold_minutes: Option<i64>,
    /// The least rain of a "rain day" (Art. 46's antecedent rain), with its provenance:
    /// a provisional tag makes every result that counts rain days provisional.
    pub rain_day: Option<Figure>,
}

/// A figure the rules share, with its provenance tag and where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub value: f64,
    pub tag: domain::Tag,
    pub source: String,
}

/// A validated set of rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub limits: Limits,
}

// ---- the file schema ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRaw {
    #[serde(default)]
    settings: Option<SettingsRaw>,
    #[serde(default)]
    rule: Vec<RuleRaw>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsRaw {
    #[serde(default)]
    max_age_minutes: BTreeMap<String, i64>,
    #[serde(default)]
    plausible: BTreeMap<String, [f64; 2]>,
    #[serde(default)]
    hysteresis: BTreeMap<String, f64>,
    #[serde(default)]
    hold_minutes: Option<i64>,
    #[serde(default)]
    rain_day: Option<FigureRaw>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FigureRaw {
    mm: f64,
    tag: String,
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleRaw {
    id: String,
    version: u32,
    hazard: String,
    level: u8,
    provenance: String,
    #[serde(default)]
    citation: String,
    #[serde(default)]
    reason: String,
    action: String,
    inputs: Vec<String>,
    when: toml::Value,
    #[serde(default)]
    example: Vec<ExampleRaw>,
}

/// An example as written: stations, communes and readings relative to `now`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExampleRaw {
    pub name: String,
    pub expect: String,
    #[serde(default = "default_group")]
    pub province_group: u8,
    #[serde(default)]
    pub stations: Vec<ExampleStation>,
    #[serde(default)]
    pub commune: ExampleCommune,
    #[serde(default)]
    pub readings: Vec<ExampleReading>,
}

fn default_group() -> u8 {
    2
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExampleStation {
    #[serde(default = "default_station_id")]
    pub id: String,
    #[serde(default = "default_basin")]
    pub basin: String,
    pub area_class: Option<u8>,
    pub bd1: Option<f64>,
    pub bd2: Option<f64>,
    pub bd3: Option<f64>,
    pub historic: Option<f64>,
}

fn default_station_id() -> String {
    "S1".into()
}

fn default_basin() -> String {
    "B1".into()
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExampleCommune {
    pub susceptibility: Option<String>,
    #[serde(default)]
    pub exposure: Vec<String>,
}

/// `count` readings of `value`, `step_h` hours apart, the newest `hours_ago` before now
/// (negative: a forecast for that many hours ahead).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExampleReading {
    #[serde(default)]
    pub station: Option<String>,
    pub parameter: String,
    #[serde(default)]
    pub hours_ago: f64,
    pub value: f64,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default = "one_f")]
    pub step_h: f64,
}

fn one() -> u32 {
    1
}

fn one_f() -> f64 {
    1.0
}

/// Every problem found while loading rules, each as "file: rule id: field: what".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleErrors(pub Vec<String>);

impl std::fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} rule problem(s):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RuleErrors {}

const ACCUMULATION_HOURS: [u32; 7] = [1, 3, 6, 12, 24, 48, 72];

fn parse_operand(v: &toml::Value) -> Result<Operand, String> {
    match v {
        toml::Value::Integer(i) => Ok(Operand::Const(*i as f64)),
        toml::Value::Float(f) if f.is_finite() => Ok(Operand::Const(*f)),
        toml::Value::String(s) => {
            let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
            let (name, offset) = match compact.find(['+', '-']) {
                Some(i) => {
                    let off: f64 = compact[i..]
                        .parse()
                        .map_err(|_| format!("offset in {s:?} is not a number"))?;
                    (&compact[..i], off)
                }
                None => (compact.as_str(), 0.0),
            };
            let level = match name {
                "bd1" => StationLevel::Bd1,
                "bd2" => StationLevel::Bd2,
                "bd3" => StationLevel::Bd3,
                "historic" => StationLevel::Historic,
                _ => {
                    return Err(format!(
                        "{s:?} is not a number, bd1, bd2, bd3 or historic (with + or - metres)"
                    ));
                }
            };
            Ok(Operand::Station { level, offset })
        }
        other => Err(format!("{other:?} is not a number or a station level")),
    }
}

fn take_bounds(t: &mut toml::Table, errs: &mut Vec<String>, at: &str) -> Bounds {
    let mut b = Bounds::default();
    for (key, slot) in [
        ("ge", &mut b.ge),
        ("gt", &mut b.gt),
        ("lt", &mut b.lt),
        ("le", &mut b.le),
    ] {
        if let Some(v) = t.remove(key) {
            match parse_operand(&v) {
                Ok(o) => *slot = Some(o),
                Err(e) => errs.push(format!("{at}.{key}: {e}")),
            }
        }
    }
    if b == Bounds::default() {
        errs.push(format!("{at}: needs at least one of ge, gt, lt, le"));
    }
    b
}

fn take_param(t: &mut toml::Table, errs: &mut Vec<String>, at: &str) -> Option<Param> {
    match t.remove("parameter") {
        Some(toml::Value::String(p)) => {
            let got = Param::from_code(&p);
            if got.is_none() {
                let all: Vec<&str> = Param::ALL.iter().map(|p| p.code()).collect();
                errs.push(format!("{at}.parameter: {p:?} is not one of {}", all.join(", ")));
            }
            got
        }
        _ => {
            errs.push(format!("{at}.parameter: required"));
            None
        }
    }
}

fn take_u32(t: &mut toml::Table, key: &str, errs: &mut Vec<String>, at: &str) -> Option<u32> {
    match t.remove(key) {
        Some(toml::Value::Integer(i)) if i > 0 && i <= 10_000 => Some(i as u32),
        Some(other) => {
            errs.push(format!("{at}.{key}: {other:?} must be a positive whole number"));
            None
        }
        None => {
            errs.push(format!("{at}.{key}: required"));
            None
        }
    }
}

fn leftovers(t: &toml::Table, errs: &mut Vec<String>, at: &str) {
    for k in t.keys() {
        errs.push(format!("{at}: unknown field {k:?}"));
    }
}

fn int_list(
    v: &toml::Value,
    errs: &mut Vec<String>,
    at: &str,
    range: std::ops::RangeInclusive<u8>,
) -> Vec<u8> {
    let items: Vec<toml::Value> = match v {
        toml::Value::Array(a) => a.clone(),
        single => vec![single.clone()],
    };
    let mut out = Vec::new();
    for i in items {
        match i
            .as_integer()
            .and_then(|n| u8::try_from(n).ok())
            .filter(|n| range.contains(n))
        {
            Some(n) => out.push(n),
            None => errs.push(format!("{at}: {i:?} must be a whole number in {range:?}")),
        }
    }
    out
}

fn str_list(v: &toml::Value, errs: &mut Vec<String>, at: &str) -> Vec<String> {
    let items: Vec<toml::Value> = match v {
        toml::Value::Array(a) => a.clone(),
        single => vec![single.clone()],
    };
    items
        .into_iter()
        .filter_map(|i| match i {
            toml::Value::String(s) => Some(s),
            other => {
                errs.push(format!("{at}: {other:?} must be a string"));
                None
            }
        })
        .collect()
}

/// Parses a condition table (`{ all = [...] }`, `{ value = {...} }`, ...).
fn parse_condition(v: &toml::Value, errs: &mut Vec<String>, at: &str) -> Condition {
    let fallback = Condition::All(vec![]);
    let Some(t) = v.as_table() else {
        errs.push(format!(
            "{at}: a condition must be a table such as {{ value = {{ ... }} }}"
        ));
        return fallback;
    };
    if t.len() != 1 {
        let keys: Vec<&String> = t.keys().collect();
        errs.push(format!("{at}: a condition has exactly one kind, found {keys:?}"));
        return fallback;
    }
    let Some((kind, body)) = t.iter().next() else {
        return fallback;
    };
    let at = format!("{at}.{kind}");
    let list = |errs: &mut Vec<String>| -> Vec<Condition> {
        match body.as_array() {
            Some(items) if !items.is_empty() => items
                .iter()
                .enumerate()
                .map(|(i, c)| parse_condition(c, errs, &format!("{at}[{i}]")))
                .collect(),
            _ => {
                errs.push(format!("{at}: must be a non-empty list of conditions"));
                vec![]
            }
        }
    };
    let table = |errs: &mut Vec<String>| -> toml::Table {
        body.as_table().cloned().unwrap_or_else(|| {
            errs.push(format!("{at}: must be a table"));
            toml::Table::new()
        })
    };
    match kind.as_str() {
        "all" => Condition::All(list(errs)),
        "any" => Condition::Any(list(errs)),
        "not" => Condition::Not(Box::new(parse_condition(body, errs, &at))),
        "value" => {
            let mut t = table(errs);
            let param = take_param(&mut t, errs, &at);
            let forecast_hours = t
                .contains_key("forecast_hours")
                .then(|| take_u32(&mut t, "forecast_hours", errs, &at))
                .flatten();
            let bounds = take_bounds(&mut t, errs, &at);
            leftovers(&t, errs, &at);
            param.map_or(fallback, |param| Condition::Value {
                param,
                bounds,
                forecast_hours,
            })
        }
        "accumulation" => {
            let mut t = table(errs);
            let param = take_param(&mut t, errs, &at);
            let hours = take_u32(&mut t, "hours", errs, &at);
            if let Some(h) = hours
                && !ACCUMULATION_HOURS.contains(&h)
            {
                errs.push(format!("{at}.hours: {h} must be one of 1, 3, 6, 12, 24, 48, 72"));
            }
            let direction = match t.remove("direction").as_ref().and_then(|d| d.as_str()) {
                Some("past") | None => Direction::Past,
                Some("next") => Direction::Next,
                Some(other) => {
                    errs.push(format!("{at}.direction: {other:?} must be \"past\" or \"next\""));
                    Direction::Past
                }
            };
            let bounds = take_bounds(&mut t, errs, &at);
            leftovers(&t, errs, &at);
            match (param, hours) {
                (Some(param), Some(hours)) => Condition::Accumulation {
                    param,
                    hours,
                    direction,
                    bounds,
                },
                _ => fallback,
            }
        }
        "spell" => {
            let mut t = table(errs);
            let param = take_param(&mut t, errs, &at);
            let hours = take_u32(&mut t, "hours", errs, &at);
            if let Some(h) = hours
                && !ACCUMULATION_HOURS.contains(&h)
            {
                errs.push(format!("{at}.hours: {h} must be one of 1, 3, 6, 12, 24, 48, 72"));
            }
            let at_least = match t.remove("at_least") {
                Some(v) => match v.as_float().or(v.as_integer().map(|i| i as f64)) {
                    Some(x) if x.is_finite() && x >= 0.0 => Some(x),
                    _ => {
                        errs.push(format!("{at}.at_least: must be a number, at least 0"));
                        None
                    }
                },
                None => {
                    errs.push(format!("{at}.at_least: required, the least sum of a window"));
                    None
                }
            };
            let bounds = take_bounds(&mut t, errs, &at);
            leftovers(&t, errs, &at);
            match (param, hours, at_least) {
                (Some(param), Some(hours), Some(at_least)) => Condition::Spell {
                    param,
                    hours,
                    at_least,
                    bounds,
                },
                _ => fallback,
            }
        }
        "rise" => {
            let mut t = table(errs);
            let param = take_param(&mut t, errs, &at);
            let hours = take_u32(&mut t, "hours", errs, &at);
            let bounds = take_bounds(&mut t, errs, &at);
            leftovers(&t, errs, &at);
            match (param, hours) {
                (Some(param), Some(hours)) => Condition::Rise { param, hours, bounds },
                _ => fallback,
            }
        }
        "persist" => {
            let mut t = table(errs);
            let param = take_param(&mut t, errs, &at);
            let days = take_u32(&mut t, "days", errs, &at);
            let stat = match t.remove("stat").as_ref().and_then(|s| s.as_str()) {
                Some("daily_min") => Some(DailyStat::Min),
                Some("daily_mean") => Some(DailyStat::Mean),
                Some("daily_max") => Some(DailyStat::Max),
                Some("daily_sum") => Some(DailyStat::Sum),
                other => {
                    errs.push(format!(
                        "{at}.stat: {other:?} must be daily_min, daily_mean, daily_max or daily_sum"
                    ));
                    None
                }
            };
            let bounds = take_bounds(&mut t, errs, &at);
            leftovers(&t, errs, &at);
            match (param, days, stat) {
                (Some(param), Some(days), Some(stat)) => Condition::Persist {
                    param,
                    stat,
                    days,
                    bounds,
                },
                _ => fallback,
            }
        }
        "antecedent_rain_days" => {
            let mut t = table(errs);
            let rain_day_mm = match t.remove("rain_day_mm") {
                None => None,
                Some(v) => match v.as_float().or(v.as_integer().map(|i| i as f64)) {
                    Some(x) if x > 0.0 => Some(x),
                    _ => {
                        errs.push(format!(
                            "{at}.rain_day_mm: a positive number of millimetres (or none, for [settings.rain_day])"
                        ));
                        None
                    }
                },
            };
            let bounds = take_bounds(&mut t, errs, &at);
            leftovers(&t, errs, &at);
            Condition::AntecedentRainDays { rain_day_mm, bounds }
        }
        "susceptibility" => {
            let mut out = Vec::new();
            for s in str_list(body, errs, &at) {
                match Susceptibility::from_code(&s) {
                    Some(x) => out.push(x),
                    None => errs.push(format!("{at}: {s:?} must be low, medium, high or very_high")),
                }
            }
            Condition::Susceptibility(out)
        }
        "province_group" => Condition::ProvinceGroup(int_list(body, errs, &at, 1..=4)),
        "area_class" => Condition::AreaClass(int_list(body, errs, &at, 1..=4)),
        "exposure" => Condition::Exposure(str_list(body, errs, &at)),
        "basins" => match body.as_str() {
            Some("one") => Condition::Basins(BasinScope::One),
            Some("several") => Condition::Basins(BasinScope::Several),
            _ => {
                errs.push(format!("{at}: must be \"one\" or \"several\""));
                fallback
            }
        },
        other => {
            errs.push(format!(
                "{at}: unknown condition {other:?}; expected all, any, not, value, accumulation, rise, persist, \
                 antecedent_rain_days, susceptibility, province_group, area_class, exposure or basins"
            ));
            fallback
        }
    }
}

fn params_used(c: &Condition, out: &mut HashSet<Param>) {
    match c {
        Condition::All(v) | Condition::Any(v) => v.iter().for_each(|c| params_used(c, out)),
        Condition::Not(c) => params_used(c, out),
        Condition::Value { param, .. }
        | Condition::Accumulation { param, .. }
        | Condition::Spell { param, .. }
        | Condition::Rise { param, .. }
        | Condition::Persist { param, .. } => {
            out.insert(*param);
        }
        Condition::AntecedentRainDays { .. } => {
            out.insert(Param::Rainfall);
        }
        _ => {}
    }
}

fn parse_rule(raw: RuleRaw, file: &str, errs: &mut Vec<String>) -> Option<Rule> {
    let at = format!("{file}: rule {:?}", raw.id);
    let before = errs.len();
    let id_ok = !raw.id.is_empty()
        && raw
            .id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'));
    if !id_ok {
        errs.push(format!(
            "{at}: id: must be lowercase letters, digits, '.', '-' or '_'"
        ));
    }
    if raw.version == 0 {
        errs.push(format!("{at}: version: must be at least 1"));
    }
    let hazard = Hazard::from_code(&raw.hazard);
    if hazard.is_none() {
        errs.push(format!("{at}: hazard: {:?} is not a known hazard", raw.hazard));
    }
    let level = RiskLevel::new(raw.level);
    if level.is_none() {
        errs.push(format!("{at}: level: {} must be 1 to 5", raw.level));
    }
    let provenance = match raw.provenance.as_str() {
        "official" if raw.citation.trim().is_empty() => {
            errs.push(format!(
                "{at}: citation: an official rule must cite its source, e.g. \"QĐ 18/2021 Art. 45 cl. 1(a)\""
            ));
            None
        }
        "official" => Some(Provenance::Official {
            citation: raw.citation,
        }),
        "provisional" if raw.reason.trim().is_empty() => {
            errs.push(format!("{at}: reason: a provisional rule must say why"));
            None
        }
        "provisional" => Some(Provenance::Provisional { reason: raw.reason }),
        other => {
            errs.push(format!(
                "{at}: provenance: {other:?} must be \"official\" or \"provisional\""
            ));
            None
        }
    };
    let action = match raw.action.as_str() {
        "auto-issue" => Some(Action::AutoIssue),
        "pre-warning" => Some(Action::PreWarning),
        other => {
            errs.push(format!(
                "{at}: action: {other:?} must be \"auto-issue\" or \"pre-warning\""
            ));
            None
        }
    };
    let mut inputs = Vec::new();
    for i in &raw.inputs {
        match Param::from_code(i) {
            Some(p) => inputs.push(p),
            None => errs.push(format!("{at}: inputs: {i:?} is not a known parameter")),
        }
    }
    let when = parse_condition(&raw.when, errs, &format!("{at}: when"));
    let mut used = HashSet::new();
    params_used(&when, &mut used);
    for p in &used {
        if !inputs.contains(p) {
            errs.push(format!(
                "{at}: inputs: the conditions read {:?}, which is not listed",
                p.code()
            ));
        }
    }
    let mut examples = Vec::new();
    for ex in raw.example {
        let fire = match ex.expect.as_str() {
            "fire" => true,
            "no-fire" => false,
            other => {
                errs.push(format!(
                    "{at}: example {:?}: expect: {other:?} must be \"fire\" or \"no-fire\"",
                    ex.name
                ));
                continue;
            }
        };
        examples.push(Example {
            name: ex.name.clone(),
            fire,
            raw: ex,
        });
    }
    if !examples.iter().any(|e| e.fire) || !examples.iter().any(|e| !e.fire) {
        errs.push(format!(
            "{at}: example: needs at least one example that fires and one that does not"
        ));
    }
    if errs.len() > before {
        return None;
    }
    Some(Rule {
        key: format!("{}@{}", raw.id, raw.version),
        basins: when.any(&|c| matches!(c, Condition::Basins(_))),
        by_commune: when.any(&|c| matches!(c, Condition::Susceptibility(_) | Condition::Exposure(_))),
        id: raw.id,
        version: raw.version,
        hazard: hazard?,
        level: level?,
        provenance: provenance?,
        action: action?,
        inputs,
        when,
        examples,
        file: file.to_owned(),
    })
}

/// Parses and validates rule files given as (name, contents), then runs every example.
/// Reports every problem of every file at once.
pub fn load(files: &[(String, String)]) -> Result<RuleSet, RuleErrors> {
    let mut errs = Vec::new();
    let mut set = RuleSet::default();
    let mut seen = HashSet::new();
    for (name, text) in files {
        let file: FileRaw = match toml::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                errs.push(format!("{name}: {}", e.to_string().trim()));
                continue;
            }
        };
        if let Some(s) = file.settings {
            for (k, v) in s.max_age_minutes {
                match Param::from_code(&k) {
                    Some(p) if v > 0 => {
                        set.limits.max_age_minutes.insert(p, v);
                    }
                    Some(_) => errs.push(format!("{name}: settings.max_age_minutes.{k}: must be positive")),
                    None => errs.push(format!(
                        "{name}: settings.max_age_minutes: {k:?} is not a known parameter"
                    )),
                }
            }
            for (k, m) in s.hysteresis {
                match Param::from_code(&k) {
                    Some(p) if m.is_finite() => {
                        set.limits.hysteresis.insert(p, m);
                    }
                    Some(_) => errs.push(format!("{name}: settings.hysteresis.{k}: must be a number")),
                    None => errs.push(format!(
                        "{name}: settings.hysteresis: {k:?} is not a known parameter"
                    )),
                }
            }
            match s.hold_minutes {
                Some(h) if h < 0 => errs.push(format!("{name}: settings.hold_minutes: must not be negative")),
                Some(h) => set.limits.hold_minutes = Some(h),
                None => {}
            }
            if let Some(f) = s.rain_day {
                match domain::Tag::parse(&f.tag) {
                    _ if !(f.mm.is_finite() && f.mm > 0.0) => {
                        errs.push(format!("{name}: settings.rain_day.mm: must be positive"))
                    }
                    Some(tag) if !f.source.trim().is_empty() => {
                        set.limits.rain_day = Some(Figure {
                            value: f.mm,
                            tag,
                            source: f.source,
                        });
                    }
                    Some(_) => errs.push(format!(
                        "{name}: settings.rain_day.source: say where the figure comes from"
                    )),
                    None => errs.push(format!(
                        "{name}: settings.rain_day.tag: {:?} is not V, D, S, M or NF",
                        f.tag
                    )),
                }
            }
            for (k, [lo, hi]) in s.plausible {
                match Param::from_code(&k) {
                    Some(p) if lo < hi => {
                        set.limits.plausible.insert(p, (lo, hi));
                    }
                    Some(_) => errs.push(format!(
                        "{name}: settings.plausible.{k}: the low bound must be below the high one"
                    )),
                    None => errs.push(format!(
                        "{name}: settings.plausible: {k:?} is not a known parameter"
                    )),
                }
            }
        }
        for raw in file.rule {
            if !seen.insert(raw.id.clone()) {
                errs.push(format!("{name}: rule {:?}: id: defined twice", raw.id));
                continue;
            }
            if let Some(rule) = parse_rule(raw, name, &mut errs) {
                set.rules.push(rule);
            }
        }
    }
    if set.limits.rain_day.is_none() {
        for rule in &set.rules {
            if rule.when.any(&|c| {
                matches!(
                    c,
                    Condition::AntecedentRainDays {
                        rain_day_mm: None,
                        ..
                    }
                )
            }) {
                errs.push(format!(
                    "{}: rule {:?}: when.antecedent_rain_days: no rain_day_mm, and no [settings.rain_day] to take it from",
                    rule.file, rule.id
                ));
            }
        }
    }
    if errs.is_empty() {
        for rule in &set.rules {
            for ex in &rule.examples {
                if let Err(e) = crate::eval::run_example(&set, rule, ex) {
                    errs.push(format!(
                        "{}: rule {:?}: example {:?}: {e}",
                        rule.file, rule.id, ex.name
                    ));
                }
            }
        }
    }
    if errs.is_empty() {
        Ok(set)
    } else {
        Err(RuleErrors(errs))
    }
}

/// Counts for `canhbao check-rules`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// hazard → (official rules, provisional rules, examples run)
    pub by_hazard: BTreeMap<&'static str, (usize, usize, usize)>,
}

pub fn summary(set: &RuleSet) -> Summary {
    let mut s = Summary::default();
    for r in &set.rules {
        let e = s.by_hazard.entry(r.hazard.code()).or_default();
        if r.is_official() {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
        e.2 += r.examples.len();
    }
    s
}
