//! `canhbao bench soak`, short: the real binary under readings, alerts and heartbeats for
//! a few seconds. Every accepted alert reaches each of its receivers exactly once, and the
//! service's memory is sampled. Memory growth is measured by the bench command, never
//! asserted in a test.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bench::soak::{SoakBench, bench_soak};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_loses_nothing_plays_nothing_twice_and_samples_memory() {
    let config = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config"));
    let settings = canhbao_server::config::load(&canhbao_server::Sources {
        config_dir: config.clone(),
        ..Default::default()
    })
    .unwrap();
    let bench = SoakBench {
        program: testkit::canhbao_binary(),
        duration: Duration::from_secs(8),
        receivers: 40,
        heartbeat: Duration::from_secs(2),
        obs_every: Duration::from_secs(2),
        alert_every: Duration::from_secs(2),
        alert_life: Duration::from_secs(3600),
        sample_every: Duration::from_secs(1),
    };
    let mut out = Vec::new();
    let report = bench_soak(&settings, &config, &bench, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(report.alerts_accepted >= 3, "{text}");
    assert!(report.observations_posted >= 3, "{text}");
    assert_eq!((report.lost, report.twice), (0, 0), "{text}");
    assert!(report.settled.is_some(), "{text}");
    assert!(
        report.samples.len() >= 5 && report.samples.iter().all(|s| s.rss_kib > 0),
        "{text}"
    );
    assert_eq!((report.request_errors, report.errors), (0, 0), "{text}");
    assert!(text.contains("baseline RSS once warm"), "{text}");
}
