//! `canhbao bench api` on a small store: every request of every endpoint succeeds, the
//! delivery matrix holds every receiver, and the report names its baseline and ratios.
//! Timings are not asserted (speed is measured by the bench command, never in a test).

#![allow(clippy::unwrap_used)]

use bench::api::{ApiBench, bench_api};
use canhbao_server::config::Sources;
use domain::CommuneCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_api_loads_the_list_and_the_matrix_against_a_trivial_handler() {
    let sources = Sources {
        config_dir: std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config")),
        ..Default::default()
    };
    let communes: Vec<CommuneCode> = ["06385", "06388"]
        .iter()
        .map(|c| CommuneCode::new(c).unwrap())
        .collect();
    let bench = ApiBench {
        alerts: 5,
        receivers: 20,
        requests: 40,
        concurrency: 4,
        rounds: 1,
    };
    let mut out = Vec::new();
    let report = bench_api(&sources, &communes, &bench, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(report.rounds[0].iter().all(|l| l.failed == 0), "{text}");
    for label in [
        "delivery matrix of 20 receivers",
        "baseline trivial handler",
        "GET /api/v1/alerts",
        "/deliveries",
        "ratio",
    ] {
        assert!(text.contains(label), "{label} missing from:\n{text}");
    }
}
