//! `canhbao bench kill --quick` against a real broker: the service is SIGKILLed and
//! restarted while it issues alerts, and the report counts nothing lost and nothing played
//! twice. Timings are not asserted (the bench command measures them, never a test). Runs
//! only when `CANHBAO_TEST_MQTT_URL` is set.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bench::kill::{KillBench, bench_kill};
use canhbao_server::config::Sources;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_kill_restarts_the_service_and_loses_nothing_and_plays_nothing_twice() {
    let Some(broker) = testkit::service("CANHBAO_TEST_MQTT_URL") else {
        return;
    };
    let sources = Sources {
        config_dir: std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config")),
        ..Default::default()
    };
    let bench = KillBench {
        program: testkit::canhbao_binary(),
        receivers: 30,
        alerts: 6,
        pace: Duration::from_millis(300),
        kills: 2,
        broker,
        seed: 9,
        env: vec![
            ("CANHBAO__OUTBOX__LEASE_S".into(), "3".into()),
            ("CANHBAO__OUTBOX__RESEND_S".into(), "[2, 5]".into()),
            ("CANHBAO__OUTBOX__IDLE_POLL_MS".into(), "200".into()),
        ],
        patience: Duration::from_secs(60),
    };
    let mut out = Vec::new();
    let report = bench_kill(&sources, &bench, &mut out).await;
    let text = String::from_utf8(out).unwrap();
    let report = report.unwrap_or_else(|e| panic!("{e:#}\n{text}"));
    assert_eq!(report.kills.len(), 2, "{text}");
    assert_eq!((report.bulletins, report.accepted), (6, 6), "{text}");
    assert_eq!(report.tally.expected, 6 * 30, "{text}");
    for line in [
        "lost                 0 alerts (0 receiver-alert pairs",
        "played twice         0 receiver-alert pairs, 0 receiver-bulletin pairs",
        "store                180/180 receiver deliveries played",
        "seed 9",
        "kill 1 ",
        "kill 2 ",
        "last restart->played",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
}
