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
