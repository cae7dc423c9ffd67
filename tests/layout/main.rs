//! The crate graph, enforced: which workspace crate may depend on which (normal
//! dependencies; tests and benches may use anything), and what the loudspeaker agent must
//! never carry. `ARCHITECTURE.md` draws the same graph; change both together.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Each workspace crate and the workspace crates it may depend on.
const ALLOWED: &[(&str, &[&str])] = &[
    ("domain", &[]),
    ("testkit", &[]),
    ("rules", &["domain"]),
    ("protocol", &["domain"]),
    ("store", &["domain"]),
    ("mqtt", &["protocol"]),
    ("receiver", &["domain", "protocol", "mqtt"]),
    ("desk", &["domain", "rules", "store", "protocol"]),
    ("ingest", &["domain", "rules", "store", "protocol", "desk"]),
    ("dispatch", &["domain", "store", "protocol", "mqtt"]),
    ("sms", &["domain", "store", "protocol"]),
    (
        "api",
        &[
            "domain", "rules", "store", "protocol", "desk", "ingest", "dispatch", "sms",
        ],
    ),
    (
        "server",
        &[
            "domain", "rules", "store", "protocol", "mqtt", "desk", "ingest", "dispatch", "sms", "api",
        ],
    ),
    (
        "bench",
        &[
            "domain", "rules", "store", "protocol", "mqtt", "desk", "ingest", "dispatch", "sms", "api",
            "server", "receiver", "testkit",
        ],
    ),
    (
        "canhbao-tests",
        &[
            "domain", "rules", "store", "protocol", "mqtt", "desk", "ingest", "dispatch", "sms", "api",
            "server", "receiver", "testkit", "bench",
        ],
    ),
];

/// Crates the loudspeaker agent must not have anywhere in its tree: the server's
/// database drivers, HTTP stacks, the embedded broker and the server's own crates.
const NOT_IN_RECEIVER: &[&str] = &[
    "sqlx", "reqwest", "axum", "hyper", "rmqtt", "store", "desk", "ingest", "dispatch", "sms", "api",
    "server", "rules",
];

/// Pure crates: no async runtime, no network, no database anywhere in their tree.
const PURE: &[&str] = &["domain", "rules", "protocol"];
const IMPURE: &[&str] = &[
    "tokio", "sqlx", "reqwest", "hyper", "axum", "rumqttc", "rmqtt", "mqtt", "store",
];

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    c
}

#[test]
fn every_workspace_crate_depends_only_on_the_crates_its_room_allows() {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let ours: BTreeSet<&str> = packages.iter().map(|p| p["name"].as_str().unwrap()).collect();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for p in packages {
        let name = p["name"].as_str().unwrap();
        let Some(may) = allowed.get(name) else {
            wrong.push(format!(
                "{name}: a new crate; give it its room in ALLOWED and ARCHITECTURE.md"
            ));
            continue;
        };
        for d in p["dependencies"].as_array().unwrap() {
            let dep = d["name"].as_str().unwrap();
            if d["kind"].is_null() && ours.contains(dep) && !may.contains(&dep) {
                wrong.push(format!("{name} depends on {dep}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the crate graph is broken:\n{}",
        wrong.join("\n")
    );
}

/// The names of every crate in `package`'s tree of normal dependencies.
fn tree_of(package: &str) -> BTreeSet<String> {
    let out = cargo()
        .args([
            "tree",
            "-p",
            package,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let names: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    assert!(names.contains(package), "cargo tree listed {names:?}");
    names
}

#[test]
fn the_loudspeaker_agent_carries_nothing_of_the_server() {
    let names = tree_of("receiver");
    let carried: Vec<&&str> = NOT_IN_RECEIVER.iter().filter(|c| names.contains(**c)).collect();
    assert!(carried.is_empty(), "the receiver's tree has {carried:?}");
}

#[test]
fn domain_rules_and_protocol_stay_pure() {
    for package in PURE {
        let names = tree_of(package);
        let impure: Vec<&&str> = IMPURE.iter().filter(|c| names.contains(**c)).collect();
        assert!(impure.is_empty(), "{package} depends on {impure:?}");
    }
}
