//! The shipped rule files (`config/rules`), loaded and checked as a whole.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use rules::engine::{RuleSet, load};

fn shipped_files() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/rules");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            let name = format!("config/rules/{}", p.file_name().unwrap().to_string_lossy());
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

fn shipped() -> RuleSet {
    match load(&shipped_files()) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn the_shipped_rules_load_and_every_example_passes() {
    let set = shipped();
    assert!(set.rules.len() >= 30, "{} rules", set.rules.len());
    let examples: usize = set.rules.iter().map(|r| r.examples.len()).sum();
    assert!(examples >= 70, "{examples} examples");
}

#[test]
fn a_wrong_example_and_bad_fields_fail_the_load_with_file_rule_and_field() {
    let bad = r#"
[[rule]]
id = "flood.test"
version = 1
hazard = "flood"
level = 1
provenance = "official"
citation = "test"
action = "pre-warning"
inputs = ["water_level"]
when = { value = { parameter = "water_level", ge = "bd1" } }

[[rule.example]]
name = "claims a fire below BĐ1"
expect = "fire"
stations = [{ bd1 = 17.0 }]
readings = [{ parameter = "water_level", value = 16.0 }]

[[rule.example]]
name = "well below"
expect = "no-fire"
stations = [{ bd1 = 17.0 }]
readings = [{ parameter = "water_level", value = 1.0 }]
"#;
    let err = load(&[("bad.toml".into(), bad.into())]).unwrap_err().to_string();
    assert!(
        err.contains("bad.toml: rule \"flood.test\": example \"claims a fire below BĐ1\""),
        "{err}"
    );
    assert!(
        err.contains("water_level@S1=16"),
        "the failure shows the inputs: {err}"
    );

    let many = r#"
[[rule]]
id = "Bad Id"
version = 0
hazard = "volcano"
level = 7
provenance = "provisional"
action = "shout"
inputs = ["rainfall"]
when = { accumulation = { parameter = "rainfall", hours = 5, direction = "sideways" } }
"#;
    let err = load(&[("many.toml".into(), many.into())]).unwrap_err();
    let text = err.to_string();
    for needle in [
        "many.toml: rule \"Bad Id\": id:",
        "version: must be at least 1",
        "hazard: \"volcano\"",
        "level: 7 must be 1 to 5",
        "reason: a provisional rule must say why",
        "action: \"shout\"",
        "when.accumulation.hours: 5 must be one of 1, 3, 6, 12, 24, 48, 72",
        "when.accumulation.direction: \"sideways\"",
        "when.accumulation: needs at least one of ge, gt, lt, le",
        "needs at least one example that fires and one that does not",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

// ---- evaluation of the whole shipped set, row by row of the reference's tables ----

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use domain::{CommuneCode, Hazard, RiskLevel, Station, StationId, Tag, Tagged};
use rules::engine::Susceptibility;
use rules::eval::{Bulletin, CommuneInfo, Inputs, LevelSource, evaluate};
use rules::replay::{HistoricReading, ReplaySettings, replay};
use rules::series::{Param, Readings};
use rules::state::{Tracker, Transition};

fn now() -> DateTime<Utc> {
    "2026-10-09T01:00:00Z".parse().unwrap()
}

fn commune() -> CommuneCode {
    CommuneCode::new("06385").unwrap()
}

fn station(id: &str, basin: &str, area: Option<u8>) -> Station {
    Station {
        id: StationId::new(id).unwrap(),
        name: id.into(),
        river: String::new(),
        basin: basin.into(),
        area_class: area,
        bd1_m: Some(Tagged::new(17.0, Tag::D)),
        bd2_m: Some(Tagged::new(18.0, Tag::V)),
        bd3_m: Some(Tagged::new(19.0, Tag::D)),
        historic_m: Some(Tagged::new(22.54, Tag::V)),
        communes: vec![commune()],
        communes_provisional: None,
    }
}

fn inputs(stations: Vec<Station>, susceptibility: Option<Susceptibility>, exposure: &[&str]) -> Inputs {
    Inputs {
        province_group: Some(2),
        stations,
        communes: vec![CommuneInfo {
            code: commune(),
            susceptibility,
            exposure: exposure.iter().map(|s| s.to_string()).collect(),
            provisional: vec![],
        }],
        readings: Readings::new(),
        bulletins: vec![],
    }
}

fn level_of(set: &RuleSet, inputs: &Inputs, hazard: Hazard) -> Option<u8> {
    evaluate(set, inputs, now())
        .into_iter()
        .find(|a| a.hazard == hazard)
        .and_then(|a| a.level)
        .map(RiskLevel::get)
}

fn flood_level(set: &RuleSet, area: Option<u8>, h: f64) -> Option<u8> {
    let mut i = inputs(vec![station("S1", "B1", area)], None, &[]);
    i.readings
        .push(&StationId::new("S1").unwrap(), Param::WaterLevel, now(), h);
    level_of(set, &i, Hazard::Flood)
}

#[test]
fn flood_levels_follow_article_45_row_by_row() {
    let set = shipped();
    // (area class, H in m, level) with BĐ1 17.00, BĐ2 18.00, BĐ3 19.00, historic 22.54.
    let table: &[(u8, f64, Option<u8>)] = &[
        (1, 16.99, None),
        (1, 17.00, Some(1)), // cl. 1(a)
        (1, 18.50, Some(1)), // cl. 1(b)
        (1, 19.40, Some(2)), // cl. 2(c)
        (1, 20.00, Some(3)), // provisional: BĐ3 + 1.0 [S]
        (2, 17.40, Some(1)), // cl. 1(a)
        (2, 18.50, Some(2)), // cl. 2(b)
        (2, 19.99, Some(2)), // cl. 2(c)
        (2, 20.97, Some(3)), // provisional [S]
        (3, 17.40, Some(1)), // cl. 1(a)
        (3, 18.99, Some(2)), // cl. 2(b)
        (3, 19.00, Some(3)), // provisional: area 3 inferred [S]
        (4, 17.40, Some(2)), // cl. 2(a)
        (4, 18.00, Some(3)), // cl. 3(a)
        (4, 19.29, Some(3)), // cl. 3(a)
        (4, 19.30, Some(4)), // BĐ3 + 0.3 [V start]
        (4, 22.54, Some(4)), // up to the historic flood [S]
        (4, 23.96, Some(5)), // above the historic flood [S]
    ];
    for &(area, h, expected) in table {
        assert_eq!(flood_level(&set, Some(area), h), expected, "area {area}, H {h} m");
    }
    // Without an area class, Art. 45 cannot give a level, and says why.
    let mut i = inputs(vec![station("S1", "B1", None)], None, &[]);
    i.readings
        .push(&StationId::new("S1").unwrap(), Param::WaterLevel, now(), 19.4);
    let a = evaluate(&set, &i, now())
        .into_iter()
        .find(|a| a.hazard == Hazard::Flood)
        .unwrap();
    assert_eq!(a.level, None);
    assert!(
        a.diagnostics
            .iter()
            .any(|d| d.to_string().contains("area class of S1 is not set")),
        "{a:?}"
    );
}

#[test]
fn several_basins_between_bd1_and_bd2_at_area_2_stations_give_level_2() {
    let set = shipped();
    let mut i = inputs(
        vec![
            station("S1", "Kỳ Cùng", Some(2)),
            station("S2", "Thương", Some(2)),
        ],
        None,
        &[],
    );
    i.readings
        .push(&StationId::new("S1").unwrap(), Param::WaterLevel, now(), 17.4);
    i.readings
        .push(&StationId::new("S2").unwrap(), Param::WaterLevel, now(), 17.6);
    let a = evaluate(&set, &i, now())
        .into_iter()
        .find(|a| a.hazard == Hazard::Flood)
        .unwrap();
    assert_eq!(a.level.map(RiskLevel::get), Some(2));
    assert_eq!(a.rules, vec!["flood.art45.l2-d@1"]);
    assert!(
        a.official,
        "cl. 2(d) is verified and these levels are tagged D/V: {a:?}"
    );
}

#[test]
fn a_provisional_alarm_level_makes_the_result_provisional() {
    let set = shipped();
    let mut s = station("S1", "B1", Some(2));
    s.bd1_m = Some(Tagged::new(17.0, Tag::M));
    let mut i = inputs(vec![s], None, &[]);
    i.readings
        .push(&StationId::new("S1").unwrap(), Param::WaterLevel, now(), 17.4);
    let a = evaluate(&set, &i, now())
        .into_iter()
        .find(|a| a.hazard == Hazard::Flood)
        .unwrap();
    assert!(!a.official);
    assert!(
        a.provisional_reasons
            .iter()
            .any(|r| r.contains("bd1 17.00 m of S1 is tagged M")),
        "{a:?}"
    );
    assert!(
        a.inputs
            .iter()
            .any(|u| u.name == "water_level@S1" && u.value == 17.4),
        "{a:?}"
    );
}

fn rain_inputs(forecast_mm_per_h: f64, rain_days_before: u32, zone: Susceptibility) -> Inputs {
    let mut i = inputs(vec![station("S1", "B1", None)], Some(zone), &[]);
    let id = StationId::new("S1").unwrap();
    for h in 1..=24 {
        i.readings.push(
            &id,
            Param::Rainfall,
            now() + Duration::hours(h),
            forecast_mm_per_h,
        );
    }
    for d in 0..rain_days_before {
        i.readings.push(
            &id,
            Param::Rainfall,
            now() - Duration::hours(9 + 24 * i64::from(d)),
            10.0,
        );
    }
    i
}

#[test]
fn flash_flood_level_1_follows_article_46_for_group_2() {
    let set = shipped();
    use Susceptibility::*;
    // (mm/h over the next 24 h, rain days before, zone, level)
    let table: &[(f64, u32, Susceptibility, Option<u8>)] = &[
        (5.0, 2, Medium, Some(1)), // 120 mm, 1-2 days, medium: cl. 1
        (5.0, 1, Medium, Some(1)),
        (5.0, 0, Medium, None),  // no antecedent rain
        (3.0, 2, Medium, None),  // 72 mm
        (5.0, 2, Low, None),     // low zone needs more
        (10.0, 3, Low, Some(1)), // 240 mm, > 2 days, low: cl. 1
        (10.0, 2, Low, None),
        (5.0, 2, High, Some(1)), // higher level not found: the floor keeps level 1
    ];
    for &(mmh, days, zone, expected) in table {
        let i = rain_inputs(mmh, days, zone);
        assert_eq!(
            level_of(&set, &i, Hazard::FlashFlood),
            expected,
            "{mmh} mm/h, {days} days, {zone:?}"
        );
    }
    let i = rain_inputs(5.0, 2, Medium);
    let heavy = level_of(&set, &i, Hazard::HeavyRain);
    assert_eq!(heavy, Some(1), "120 mm in 24 h is heavy rain level 1 (Art. 44)");
}

#[test]
fn fog_and_storm_follow_their_tables() {
    let set = shipped();
    let id = StationId::new("S1").unwrap();
    for (exposure, vis, expected) in [
        ("mountain_pass", 30.0, Some(1)),
        ("mountain_pass", 80.0, None),
        ("expressway", 200.0, Some(1)),
        ("expressway", 40.0, Some(2)),
        ("expressway", 1500.0, None),
    ] {
        let mut i = inputs(vec![station("S1", "B1", None)], None, &[exposure]);
        i.readings.push(&id, Param::Visibility, now(), vis);
        assert_eq!(level_of(&set, &i, Hazard::Fog), expected, "{exposure} {vis} m");
    }
    // Storm levels grade the cyclone's intensity; fractional forces fall in a band.
    for (bf, expected) in [
        (5.0, None),
        (7.0, Some(3)),
        (11.0, Some(3)),
        (11.5, Some(3)),
        (12.0, Some(4)),
        (15.5, Some(4)),
        (16.0, Some(5)),
    ] {
        let mut i = inputs(vec![station("S1", "B1", None)], None, &[]);
        i.readings
            .push(&id, Param::CycloneBeaufort, now() + Duration::hours(24), bf);
        assert_eq!(level_of(&set, &i, Hazard::Storm), expected, "Beaufort {bf}");
    }
    // A local wind is not a storm, however strong the monsoon on Mẫu Sơn.
    for bf in [6.0, 8.0, 12.0] {
        let mut i = inputs(vec![station("S1", "B1", None)], None, &[]);
        i.readings
            .push(&id, Param::WindBeaufort, now() + Duration::hours(24), bf);
        assert_eq!(
            level_of(&set, &i, Hazard::Storm),
            None,
            "local wind Beaufort {bf}"
        );
    }
}

// ---- properties ----

/// A small deterministic generator, so that failures reproduce.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn a_higher_water_level_never_lowers_the_flood_level() {
    let set = shipped();
    let mut rng = Lcg(7);
    for area in 1..=4 {
        for _ in 0..300 {
            let a = 15.0 + rng.next() * 10.0;
            let b = a + rng.next() * 3.0;
            let (la, lb) = (flood_level(&set, Some(area), a), flood_level(&set, Some(area), b));
            assert!(
                lb >= la,
                "area {area}: {a:.3} m gives {la:?}, {b:.3} m gives {lb:?}"
            );
        }
    }
}

#[test]
fn more_rain_never_lowers_the_heavy_rain_or_flash_flood_level() {
    let set = shipped();
    let mut rng = Lcg(11);
    for _ in 0..150 {
        let a = rng.next() * 30.0;
        let b = a + rng.next() * 10.0;
        for zone in [Susceptibility::Low, Susceptibility::Medium, Susceptibility::High] {
            for days in 0..4 {
                let (ia, ib) = (rain_inputs(a, days, zone), rain_inputs(b, days, zone));
                for hazard in [Hazard::HeavyRain, Hazard::FlashFlood] {
                    let (la, lb) = (level_of(&set, &ia, hazard), level_of(&set, &ib, hazard));
                    assert!(
                        lb >= la,
                        "{hazard:?} {zone:?} {days} days: {a:.2} mm/h {la:?}, {b:.2} mm/h {lb:?}"
                    );
                }
            }
        }
    }
}

/// A flood station of area 4 at `h` m, and a live bulletin `id` that states `stated` for
/// its commune: the flood assessment before and with the bulletin.
fn flood_with_bulletin(
    h: f64,
    id: &str,
    stated: u8,
    authoritative: bool,
) -> (Option<RiskLevel>, rules::eval::Assessment) {
    let set = shipped();
    let mut i = inputs(vec![station("S1", "B1", Some(4))], None, &[]);
    i.readings
        .push(&StationId::new("S1").unwrap(), Param::WaterLevel, now(), h);
    let flood = |i: &Inputs| {
        evaluate(&set, i, now())
            .into_iter()
            .find(|a| a.hazard == Hazard::Flood)
    };
    let computed = flood(&i).and_then(|a| a.level);
    i.bulletins.push(Bulletin {
        id: id.into(),
        sender: "nchmf".into(),
        hazard: Hazard::Flood,
        level: RiskLevel::new(stated),
        communes: vec![commune()],
        effective: now() - Duration::hours(1),
        expires: now() + Duration::hours(6),
        authoritative,
        emergency: false,
        grade: None,
    });
    (computed, flood(&i).unwrap())
}

#[test]
fn a_bulletin_its_channel_does_not_vouch_for_only_raises_and_only_as_a_pre_warning() {
    let mut rng = Lcg(5);
    for _ in 0..100 {
        let h = 15.0 + rng.next() * 10.0;
        let stated = 1 + (rng.next() * 5.0) as u8;
        let (computed, a) = flood_with_bulletin(h, "UNVOUCHED", stated, false);
        // Never lower than computed; higher only when it states higher.
        assert_eq!(
            a.level,
            computed.max(RiskLevel::new(stated)),
            "H {h:.2} m, stated {stated}"
        );
        if RiskLevel::new(stated) > computed {
            assert!(!a.official);
            assert_eq!(a.action, rules::Action::PreWarning);
            assert!(matches!(
                a.source,
                LevelSource::Bulletin {
                    authoritative: false,
                    ..
                }
            ));
        }
    }
}

#[test]
fn an_official_bulletin_always_wins_up_and_down() {
    let set = shipped();
    let mut rng = Lcg(3);
    for _ in 0..100 {
        let h = 15.0 + rng.next() * 10.0;
        let stated = 1 + (rng.next() * 5.0) as u8;
        let (_, a) = flood_with_bulletin(h, "LU-1", stated, true);
        assert_eq!(a.level.map(RiskLevel::get), Some(stated), "H {h:.2} m");
        assert!(a.official);
        assert!(matches!(a.source, LevelSource::Bulletin { .. }));
        assert_eq!(
            a.computed_level,
            flood_level(&set, Some(4), h).and_then(RiskLevel::new)
        );
    }
    // An expired bulletin no longer counts; a thunderstorm warning without a level is level 1.
    let mut i = inputs(vec![station("S1", "B1", Some(4))], None, &[]);
    i.bulletins.push(Bulletin {
        id: "OLD".into(),
        sender: "nchmf".into(),
        hazard: Hazard::Flood,
        level: RiskLevel::new(5),
        communes: vec![commune()],
        effective: now() - Duration::hours(10),
        expires: now() - Duration::hours(1),
        authoritative: true,
        emergency: false,
        grade: None,
    });
    i.bulletins.push(Bulletin {
        id: "TS".into(),
        sender: "nchmf".into(),
        hazard: Hazard::Thunderstorm,
        level: None,
        communes: vec![commune()],
        effective: now(),
        expires: now() + Duration::hours(3),
        authoritative: true,
        emergency: false,
        grade: None,
    });
    assert_eq!(level_of(&set, &i, Hazard::Flood), None);
    assert_eq!(level_of(&set, &i, Hazard::Thunderstorm), Some(1));
}

#[test]
fn de_escalation_never_happens_before_the_hold_time() {
    let set = shipped();
    let hold = Duration::minutes(set.limits.hold_minutes.unwrap());
    let mut rng = Lcg(5);
    let id = StationId::new("S1").unwrap();
    for _ in 0..20 {
        let mut tracker = Tracker::new(hold);
        let mut i = inputs(vec![station("S1", "B1", Some(2))], None, &[]);
        let mut t = now();
        let mut last_escalation = t;
        for step in 0..72 {
            // A hydrograph that hovers around BĐ2 (18.00 m) with noise.
            let h = 18.0 + (f64::from(step) / 6.0).sin() * 0.3 + (rng.next() - 0.5) * 0.2;
            i.readings.push(&id, Param::WaterLevel, t, h);
            let cur = evaluate(&set, &i, t);
            let held = rules::evaluate_held(&set, &i, t);
            for c in tracker.step(t, &cur, &held) {
                match c.transition {
                    Transition::New { .. } | Transition::Escalate { .. } => last_escalation = t,
                    Transition::DeEscalate { .. } | Transition::End { .. } => {
                        assert!(
                            t - last_escalation >= hold,
                            "came down {} min after going up",
                            (t - last_escalation).num_minutes()
                        );
                    }
                }
            }
            t += Duration::minutes(10);
        }
    }
}

#[test]
fn replaying_a_flood_shaped_like_october_2025_at_huu_lung_gives_the_expected_transitions() {
    let set = shipped();
    // Hữu Lũng's levels, with area class 2 assumed for the test (no source gives it).
    let mut base = inputs(vec![station("HUULUNG", "Thương", Some(2))], None, &[]);
    base.readings = Readings::new();
    let id = StationId::new("HUULUNG").unwrap();
    // Rising from 16.40 m through BĐ1 17.00, BĐ2, BĐ3, past the 1986 peak of 22.54 m to
    // 23.96 m, then falling back below BĐ1; one reading every 30 minutes.
    let shape: &[(f64, u32)] = &[
        (16.4, 2),
        (16.9, 2),
        (17.37, 4),
        (17.8, 4),
        (18.3, 4),
        (19.1, 4),
        (19.65, 4),
        (20.97, 6),
        (22.0, 4),
        (23.2, 4),
        (23.96, 2),
        (23.0, 4),
        (21.5, 6),
        (20.2, 8),
        (19.2, 8),
        (18.4, 10),
        (17.5, 10),
        (16.5, 12),
    ];
    // Each step of the shape ramps to the next one, as a river moves (never flat for
    // hours: a level is never lowered on a flat line).
    let mut history = Vec::new();
    let mut t: DateTime<Utc> = "2026-10-08T00:00:00Z".parse().unwrap();
    for (k, &(level, repeats)) in shape.iter().enumerate() {
        let next = shape.get(k + 1).map_or(level - 0.3, |n| n.0);
        for j in 0..repeats {
            let value = level + (next - level) * f64::from(j) / f64::from(repeats);
            history.push(HistoricReading {
                station: id.clone(),
                param: Param::WaterLevel,
                at: t,
                value: (value * 100.0).round() / 100.0,
            });
            t += Duration::minutes(30);
        }
    }
    let replayed = replay(&set, &base, history, ReplaySettings::for_rules(&set), |_, _| {});
    let timeline = &replayed.timeline;
    let seq: Vec<(&str, Option<u8>)> = timeline
        .iter()
        .filter(|e| e.change.hazard == Hazard::Flood)
        .map(|e| {
            (
                e.change.transition.name(),
                e.change.transition.level().map(RiskLevel::get),
            )
        })
        .collect();
    assert_eq!(
        seq,
        vec![
            ("new", Some(1)),         // BĐ1 crossed at 17.37 m
            ("escalate", Some(2)),    // BĐ2 crossed
            ("escalate", Some(3)),    // BĐ3 + 1.0 m crossed at 20.97 m (provisional [S])
            ("de-escalate", Some(2)), // held below 20.0 - 0.1 m for the hold time
            ("de-escalate", Some(1)), // below BĐ2
            ("end", None),            // below BĐ1
        ],
        "{timeline:#?}"
    );
    // And the alarm-level alerts the service would send, through the same follower.
    let alerts: Vec<(&str, &str, Option<u8>)> = replayed
        .alerts
        .iter()
        .filter(|a| !matches!(a.decision.name(), "renew" | "restate"))
        .map(|a| {
            (
                a.msg_type,
                a.decision.name(),
                a.decision.level().map(|l| l.number()),
            )
        })
        .collect();
    assert_eq!(
        alerts,
        vec![
            ("Alert", "issue", Some(1)),
            ("Update", "escalate", Some(2)),
            ("Update", "escalate", Some(3)),
            ("Update", "de-escalate", Some(2)),
            ("Update", "de-escalate", Some(1)),
            ("Update", "all-clear", None),
        ],
        "{:#?}",
        replayed.alerts
    );
    assert!(replayed.flagged.is_empty(), "{:#?}", replayed.flagged);
}

// ---- domain fidelity (issue 18): levels where the flood spans basins or figures are missing ----

/// Lạng Sơn's three stations with the figures and tags of `shared/domain/stations.csv`
/// (Hữu Lũng's historic flood as updated to the 9 October 2025 record), each mapped to
/// its own commune, with the area class given.
fn real_station(id: &str, area: u8) -> Station {
    let t = |m: f64, tag: Tag| Some(Tagged::new(m, tag));
    let (basin, bd1, bd2, bd3, historic, commune) = match id {
        "LANGSON" => (
            "Kỳ Cùng",
            t(252.0, Tag::M),
            t(254.0, Tag::D),
            t(256.0, Tag::M),
            None,
            "05977",
        ),
        "HUULUNG" => (
            "Thương",
            t(17.0, Tag::D),
            t(18.0, Tag::M),
            t(19.0, Tag::D),
            t(23.96, Tag::V),
            "06385",
        ),
        "VANMICH" => ("Kỳ Cùng", t(187.0, Tag::D), None, t(190.0, Tag::D), None, "06040"),
        _ => panic!("no station {id}"),
    };
    Station {
        id: StationId::new(id).unwrap(),
        name: id.into(),
        river: String::new(),
        basin: basin.into(),
        area_class: Some(area),
        bd1_m: bd1,
        bd2_m: bd2,
        bd3_m: bd3,
        historic_m: historic,
        communes: vec![CommuneCode::new(commune).unwrap()],
        communes_provisional: None,
    }
}

/// Per commune, its flood level after each reading; and the timeline (commune,
/// transition, level).
type Levels = (
    BTreeMap<String, Vec<Option<u8>>>,
    Vec<(String, &'static str, Option<u8>)>,
);

/// Replays water levels, one every 30 minutes from a common start, each station's ramping
/// linearly through the given points (one point per hour); gives each commune's flood
/// level after every reading, and the timeline.
fn replay_levels(stations: Vec<Station>, series: &[(&str, &[f64])]) -> Levels {
    let set = shipped();
    let base = Inputs {
        province_group: Some(2),
        communes: vec![],
        stations: stations.clone(),
        readings: Readings::new(),
        bulletins: vec![],
    };
    let start: DateTime<Utc> = "2026-10-08T00:00:00Z".parse().unwrap();
    let mut history = Vec::new();
    for (id, points) in series {
        for (k, w) in points.windows(2).enumerate() {
            for j in 0..2 {
                history.push(HistoricReading {
                    station: StationId::new(id).unwrap(),
                    param: Param::WaterLevel,
                    at: start + Duration::minutes(60 * k as i64 + 30 * j),
                    value: w[0] + (w[1] - w[0]) * f64::from(j as u32) / 2.0,
                });
            }
        }
    }
    let replayed = replay(
        &set,
        &base,
        history.clone(),
        ReplaySettings::for_rules(&set),
        |_, _| {},
    );
    let timeline = replayed
        .timeline
        .iter()
        .filter(|e| e.change.hazard == Hazard::Flood)
        .map(|e| {
            (
                e.change.commune.to_string(),
                e.change.transition.name(),
                e.change.transition.level().map(RiskLevel::get),
            )
        })
        .collect();
    // The level each commune has after each step, evaluated as the service does.
    let mut levels: BTreeMap<String, Vec<Option<u8>>> = BTreeMap::new();
    let mut inputs = base.clone();
    let mut times: Vec<DateTime<Utc>> = history.iter().map(|r| r.at).collect();
    times.sort();
    times.dedup();
    for at in times {
        for r in history.iter().filter(|r| r.at == at) {
            inputs.readings.push(&r.station, r.param, r.at, r.value);
        }
        let out = evaluate(&set, &inputs, at);
        for s in &stations {
            for c in &s.communes {
                let level = out
                    .iter()
                    .find(|a| a.hazard == Hazard::Flood && &a.commune == c)
                    .and_then(|a| a.level)
                    .map(RiskLevel::get);
                levels.entry(c.to_string()).or_default().push(level);
            }
        }
    }
    (levels, timeline)
}

fn flood_assessment(
    stations: Vec<Station>,
    readings: &[(&str, f64)],
    commune: &str,
) -> rules::eval::Assessment {
    let set = shipped();
    let mut i = Inputs {
        province_group: Some(2),
        communes: vec![],
        stations,
        readings: Readings::new(),
        bulletins: vec![],
    };
    for (id, h) in readings {
        i.readings
            .push(&StationId::new(id).unwrap(), Param::WaterLevel, now(), *h);
    }
    evaluate(&set, &i, now())
        .into_iter()
        .find(|a| a.hazard == Hazard::Flood && a.commune.as_str() == commune)
        .unwrap_or_else(|| panic!("no flood assessment for {commune}"))
}

#[test]
fn a_flood_on_two_basins_keeps_the_level_each_basin_gives_and_can_raise_it() {
    // Lạng Sơn and Hữu Lũng as area 2, both rising to 0.5 m above BĐ3.
    let (levels, timeline) = replay_levels(
        vec![real_station("LANGSON", 2), real_station("HUULUNG", 2)],
        &[
            (
                "LANGSON",
                &[251.5, 252.5, 253.5, 254.5, 255.5, 256.5, 256.5, 256.5],
            ),
            ("HUULUNG", &[16.5, 17.5, 18.2, 18.6, 19.1, 19.5, 19.5, 19.5]),
        ],
    );
    for commune in ["05977", "06385"] {
        let l = &levels[commune];
        // Between BĐ1 and BĐ2 on both basins: cl. 2(d), level 2; and 0.5 m above BĐ3
        // on both: cl. 2(c) holds on each basin, level 2 (before: no level at all).
        assert_eq!(l.last(), Some(&Some(2)), "{commune}: {l:?}");
        assert!(l.iter().skip(4).all(|x| *x == Some(2)), "{commune}: {l:?}");
    }
    assert!(
        !timeline.iter().any(|(_, t, _)| *t == "end"),
        "the level never ends while both rivers are high: {timeline:?}"
    );
    // Two area-4 stations between BĐ1 and BĐ2: cl. 2(a) on each basin.
    let a = flood_assessment(
        vec![real_station("LANGSON", 4), real_station("HUULUNG", 4)],
        &[("LANGSON", 252.5), ("HUULUNG", 17.5)],
        "06385",
    );
    assert_eq!(a.level.map(RiskLevel::get), Some(2), "{a:?}");
}

#[test]
fn adding_a_second_flooding_basin_never_lowers_a_level() {
    let set = shipped();
    let mut rng = Lcg(23);
    for _ in 0..400 {
        let (a1, a2) = (1 + (rng.next() * 4.0) as u8, 1 + (rng.next() * 4.0) as u8);
        let h1 = 16.0 + rng.next() * 8.0;
        let h2 = 16.0 + rng.next() * 8.0;
        let mut s1 = station("S1", "B1", Some(a1));
        let mut s2 = station("S2", "B2", Some(a2));
        // S2 floods another commune: the level asked about is S1's commune's.
        s2.communes = vec![CommuneCode::new("06463").unwrap()];
        // Sometimes a figure is missing, as at Văn Mịch and Lạng Sơn.
        if rng.next() < 0.3 {
            s1.historic_m = None;
        }
        if rng.next() < 0.3 {
            s2.bd2_m = None;
        }
        let one = {
            let mut i = inputs(vec![s1.clone(), s2.clone()], None, &[]);
            i.readings
                .push(&StationId::new("S1").unwrap(), Param::WaterLevel, now(), h1);
            level_of(&set, &i, Hazard::Flood)
        };
        let both = |h2: f64| {
            let mut i = inputs(vec![s1.clone(), s2.clone()], None, &[]);
            i.readings
                .push(&StationId::new("S1").unwrap(), Param::WaterLevel, now(), h1);
            i.readings
                .push(&StationId::new("S2").unwrap(), Param::WaterLevel, now(), h2);
            level_of(&set, &i, Hazard::Flood)
        };
        let higher = h2 + rng.next() * 3.0;
        let (with, with_higher) = (both(h2), both(higher));
        assert!(
            with >= one,
            "area {a1} at {h1:.2} m gives {one:?}; adding area {a2} at {h2:.2} m on another basin gives {with:?}"
        );
        assert!(
            with_higher >= with,
            "area {a1} at {h1:.2} m with area {a2} at {h2:.2} m on another basin gives {with:?}; at {higher:.2} m there, {with_higher:?}"
        );
    }
}

#[test]
fn a_missing_historic_flood_never_ends_the_level_while_the_water_rises() {
    // Lạng Sơn as area 4 (its historic flood is not known), rising from below BĐ1 to 3 m
    // above BĐ3.
    let (levels, timeline) = replay_levels(
        vec![real_station("LANGSON", 4)],
        &[(
            "LANGSON",
            &[251.0, 252.5, 254.0, 255.0, 256.5, 257.0, 258.0, 259.0, 259.0],
        )],
    );
    let l = &levels["05977"];
    // Level 3 at 255.0 m (cl. 3(a)); from BĐ3 + 0.3 m, level 4 whatever the historic
    // flood is (before: no level at 257-259 m, and the level ended).
    let pairs: Vec<(f64, Option<u8>)> = [252.5, 254.0, 255.0, 256.5, 257.0, 258.0, 259.0]
        .iter()
        .zip(l.iter().skip(2).step_by(2))
        .map(|(h, x)| (*h, *x))
        .collect();
    assert_eq!(
        pairs,
        vec![
            (252.5, Some(2)),
            (254.0, Some(3)),
            (255.0, Some(3)),
            (256.5, Some(4)),
            (257.0, Some(4)),
            (258.0, Some(4)),
            (259.0, Some(4)),
        ],
        "{l:?}"
    );
    assert!(
        l.windows(2).all(|w| w[1] >= w[0]),
        "a rising river never gets a lower level: {l:?}"
    );
    assert!(!timeline.iter().any(|(_, t, _)| *t == "end"), "{timeline:?}");
    // The assessment says what is missing, and what it could mean.
    let a = flood_assessment(vec![real_station("LANGSON", 4)], &[("LANGSON", 258.0)], "05977");
    let said: Vec<String> = a.diagnostics.iter().map(ToString::to_string).collect();
    assert!(
        said.iter()
            .any(|d| d == "missing: historic of LANGSON is not known"),
        "{said:?}"
    );
    assert!(
        said.iter().any(|d| d
            .starts_with("unproven: level 5 is possible but cannot be shown without historic of LANGSON")),
        "{said:?}"
    );
    assert!(
        !a.inputs.iter().any(|i| i.name.starts_with("historic")),
        "no made-up figure is shown as an input: {:?}",
        a.inputs
    );
}

#[test]
fn a_level_that_holds_whatever_the_missing_figure_is_is_given() {
    // Văn Mịch (BĐ2 not found) as area 1, between BĐ1 and BĐ3: level 1 by cl. 1(a) if BĐ2
    // is above the water, by cl. 1(b) if below; so level 1 (before: no level).
    let (levels, timeline) = replay_levels(
        vec![real_station("VANMICH", 1)],
        &[("VANMICH", &[186.0, 187.0, 188.0, 189.0, 189.9, 189.9])],
    );
    let l = &levels["06040"];
    assert!(l.iter().skip(2).all(|x| *x == Some(1)), "{l:?}");
    assert_eq!(
        timeline,
        vec![("06040".to_string(), "new", Some(1))],
        "one level 1 that holds throughout"
    );
    let a = flood_assessment(vec![real_station("VANMICH", 1)], &[("VANMICH", 188.5)], "06040");
    assert!(
        !a.diagnostics
            .iter()
            .any(|d| d.to_string().starts_with("unproven")),
        "nothing the missing BĐ2 could change: {:?}",
        a.diagnostics
    );
    // As area 2 the missing BĐ2 matters: level 1 is proven, level 2 possible, and said.
    let a = flood_assessment(vec![real_station("VANMICH", 2)], &[("VANMICH", 188.5)], "06040");
    assert_eq!(a.level.map(RiskLevel::get), Some(1), "{a:?}");
    assert!(
        a.diagnostics.iter().any(|d| d
            .to_string()
            .starts_with("unproven: level 2 is possible but cannot be shown without bd2 of VANMICH")),
        "{:?}",
        a.diagnostics
    );
}

#[test]
fn with_a_missing_figure_a_higher_water_level_never_lowers_the_flood_level() {
    let set = shipped();
    let mut rng = Lcg(31);
    for area in 1..=4 {
        for missing in 0..3 {
            for _ in 0..150 {
                let a = 15.0 + rng.next() * 10.0;
                let b = a + rng.next() * 3.0;
                let level = |h: f64| {
                    let mut s = station("S1", "B1", Some(area));
                    match missing {
                        0 => s.bd2_m = None,
                        1 => s.historic_m = None,
                        _ => (s.bd2_m, s.historic_m) = (None, None),
                    }
                    let mut i = inputs(vec![s], None, &[]);
                    i.readings
                        .push(&StationId::new("S1").unwrap(), Param::WaterLevel, now(), h);
                    level_of(&set, &i, Hazard::Flood)
                };
                let (la, lb) = (level(a), level(b));
                assert!(
                    lb >= la,
                    "area {area}, missing {missing}: {a:.3} m gives {la:?}, {b:.3} m gives {lb:?}"
                );
            }
        }
    }
}

#[test]
fn a_landslide_bulletin_overrides_the_article_46_level_computed_from_rain() {
    let set = shipped();
    let mut i = rain_inputs(10.0, 3, Susceptibility::Low);
    assert_eq!(level_of(&set, &i, Hazard::FlashFlood), Some(1), "computed: cl. 1");
    // "Sạt lở đất" level 2 from the national service, hazard code of earlier versions.
    i.bulletins.push(Bulletin {
        id: "nchmf-satlo-1".into(),
        sender: "nchmf".into(),
        hazard: Hazard::from_code("landslide").unwrap(),
        level: RiskLevel::new(2),
        communes: vec![commune()],
        effective: now() - Duration::hours(1),
        expires: now() + Duration::hours(6),
        authoritative: true,
        emergency: false,
        grade: None,
    });
    let a = evaluate(&set, &i, now())
        .into_iter()
        .find(|a| a.hazard == Hazard::FlashFlood)
        .unwrap();
    assert_eq!(a.level.map(RiskLevel::get), Some(2), "{a:?}");
    assert_eq!(a.computed_level.map(RiskLevel::get), Some(1));
    assert!(matches!(a.source, LevelSource::Bulletin { .. }));
    assert!(
        !evaluate(&set, &i, now())
            .iter()
            .any(|a| a.hazard.code() == "landslide"),
        "no second Art. 46 hazard"
    );
}

#[test]
fn the_rain_day_figure_decides_whether_article_46_levels_are_official() {
    let i = rain_inputs(5.0, 2, Susceptibility::Medium);
    let flash = |set: &RuleSet| {
        evaluate(set, &i, now())
            .into_iter()
            .find(|a| a.hazard == Hazard::FlashFlood)
            .unwrap()
    };
    // Shipped: 1 mm, tagged M: the verified cell gives level 1, provisional for that figure.
    let a = flash(&shipped());
    assert_eq!(a.level.map(RiskLevel::get), Some(1));
    assert!(!a.official, "{a:?}");
    assert!(
        a.provisional_reasons
            .iter()
            .any(|r| r.starts_with("a rain day is taken as >= 1 mm [M]")),
        "{:?}",
        a.provisional_reasons
    );
    // The province confirms it, in one place: the same level is official.
    let confirmed: Vec<(String, String)> = shipped_files()
        .into_iter()
        .map(|(n, t)| {
            let t = if n.ends_with("settings.toml") {
                t.replace("tag = \"M\"", "tag = \"V\"")
            } else {
                t
            };
            (n, t)
        })
        .collect();
    let a = flash(&load(&confirmed).unwrap());
    assert_eq!(a.level.map(RiskLevel::get), Some(1));
    assert!(a.official, "{a:?}");
    assert!(a.provisional_reasons.is_empty(), "{:?}", a.provisional_reasons);
    // Without the figure, a rule that needs it does not load.
    let without: Vec<(String, String)> = shipped_files()
        .into_iter()
        .filter(|(n, _)| !n.ends_with("settings.toml"))
        .collect();
    let err = load(&without).unwrap_err().to_string();
    assert!(
        err.contains("when.antecedent_rain_days: no rain_day_mm, and no [settings.rain_day]"),
        "{err}"
    );
}

#[test]
fn heavy_rain_level_1_checks_its_duration_and_no_level_2_to_4_comes_from_one_point() {
    let set = shipped();
    let forecast = |mm_per_h: f64, hours: i64| {
        let mut i = inputs(vec![station("S1", "B1", None)], None, &[]);
        for h in 1..=hours {
            i.readings.push(
                &StationId::new("S1").unwrap(),
                Param::Rainfall,
                now() + Duration::hours(h),
                mm_per_h,
            );
        }
        evaluate(&set, &i, now())
            .into_iter()
            .find(|a| a.hazard == Hazard::HeavyRain)
            .map(|a| (a.level.map(RiskLevel::get), a.official))
    };
    // (mm/h, hours, (level, official) if assessed)
    type Row = (f64, i64, Option<(Option<u8>, bool)>);
    let table: &[Row] = &[
        (5.0, 24, Some((Some(1), true))),   // 120 mm in a day: cl. 1
        (5.0, 48, Some((Some(1), true))),   // lasting 2 days: cl. 1
        (5.0, 72, Some((Some(1), false))),  // 3 days: beyond level 1, higher level [NF]
        (6.25, 72, Some((Some(1), false))), // 450 mm over 3 days (the level-4 case of 2023)
        (20.0, 24, Some((Some(1), false))), // 480 mm in a day: was "level 3" from one total
        (5.0, 12, Some((Some(1), false))),  // 60 mm in 12 h, then dry: shorter than a day
        (2.0, 24, None),                    // 48 mm: not heavy rain of Art. 44
    ];
    for &(mmh, hours, expected) in table {
        assert_eq!(forecast(mmh, hours), expected, "{mmh} mm/h for {hours} h");
    }
    assert!(
        set.rules
            .iter()
            .all(|r| r.hazard != Hazard::HeavyRain || r.level == RiskLevel::LOW),
        "no heavy-rain level above 1 is computed from one forecast point"
    );
}

// ---- coverage (issue 18, finding 9): which communes the rules can reach, and what is missing ----

#[test]
fn coverage_says_which_communes_the_rules_can_reach_and_what_is_missing() {
    use rules::coverage::coverage;
    let set = shipped();
    let pass = CommuneCode::new("06541").unwrap();
    let unmapped = CommuneCode::new("06100").unwrap();
    let mut huu_lung = real_station("HUULUNG", 2);
    huu_lung.area_class = None;
    let mut inputs = Inputs {
        province_group: Some(2),
        stations: vec![huu_lung],
        communes: vec![],
        readings: Default::default(),
        bulletins: vec![],
    };
    let codes = [CommuneCode::new("06385").unwrap(), pass.clone(), unmapped.clone()];
    let cell = |covers: &[rules::coverage::Cover], c: &CommuneCode, h: Hazard| {
        covers
            .iter()
            .find(|x| &x.commune == c && x.hazard == h)
            .cloned()
            .unwrap()
    };
    let covers = coverage(&set, &inputs, &codes);
    // Without its area class, Art. 45 cannot give Hữu Lũng's commune a flood level.
    let flood = cell(&covers, &codes[0], Hazard::Flood);
    assert!(!flood.covered(), "{flood:?}");
    assert_eq!(flood.missing, vec!["area class of station HUULUNG".to_owned()]);
    // A commune no station maps cannot get any computed level.
    let none = cell(&covers, &unmapped, Hazard::HeavyRain);
    assert!(!none.covered());
    assert!(none.missing[0].starts_with("a station mapped"), "{none:?}");
    // The mountain-pass fog rule needs the exposure and a station that reads there.
    let fog = cell(&covers, &pass, Hazard::Fog);
    assert!(!fog.covered(), "{fog:?}");

    // Set the area class, map a station's readings to the pass and give it its exposure:
    // now both are reached, and by which rules is said.
    inputs.stations[0].area_class = Some(2);
    inputs.stations[0].communes.push(pass.clone());
    let covers = coverage(&set, &inputs, &codes);
    let fog = cell(&covers, &pass, Hazard::Fog);
    assert!(!fog.covered(), "the pass has no exposure yet: {fog:?}");
    assert!(fog.missing.iter().any(|m| m.contains("mountain_pass")), "{fog:?}");
    inputs.communes.push(CommuneInfo {
        code: pass.clone(),
        susceptibility: None,
        exposure: vec!["mountain_pass".into()],
        provisional: vec![],
    });
    let covers = coverage(&set, &inputs, &codes);
    let fog = cell(&covers, &pass, Hazard::Fog);
    assert!(fog.covered() && fog.missing.is_empty(), "{fog:?}");
    assert!(fog.rules.iter().any(|r| r.contains("pass")), "{fog:?}");
    let flood = cell(&covers, &codes[0], Hazard::Flood);
    assert!(flood.covered(), "{flood:?}");
    assert_eq!(flood.stations, vec!["HUULUNG".to_owned()]);
    // A rule that asks for a susceptibility class says so where none is mapped.
    let ff = cell(&covers, &codes[0], Hazard::FlashFlood);
    // Only the provisional group floor reaches it; no cell of the table does.
    assert_eq!(
        ff.rules,
        vec!["flash_flood.art46.l1-floor-g2@1".to_owned()],
        "{ff:?}"
    );
}
