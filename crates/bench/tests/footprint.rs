//! `canhbao bench footprint` with a few receivers: the real binary starts on an empty and
//! on a loaded store, becomes ready, and its memory is read. Timings and sizes are not
//! asserted beyond being there (they are measured by the bench command, never in a test).

#![allow(clippy::unwrap_used)]

use bench::footprint::{FootprintBench, bench_footprint};
use domain::CommuneCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_footprint_starts_the_service_on_both_stores_and_reads_its_memory() {
    let bench = FootprintBench {
        program: testkit::canhbao_binary(),
        receivers: 50,
        idle: std::time::Duration::ZERO,
        rounds: 1,
    };
    let config = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config"));
    let communes = vec![CommuneCode::new("06385").unwrap()];
    let mut out = Vec::new();
    let report = bench_footprint(&config, &communes, &bench, &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let (empty, loaded) = report.rounds[0];
    assert!(empty.rss_kib > 0 && loaded.rss_kib > 0, "{text}");
    assert!(empty.peak_kib >= empty.rss_kib, "{text}");
    for label in [
        "baseline empty store",
        "50 receivers tracked",
        "ratio (loaded / empty)",
    ] {
        assert!(text.contains(label), "{label} missing from:\n{text}");
    }
}
