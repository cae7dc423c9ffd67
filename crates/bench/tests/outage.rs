//! `canhbao bench outage --quick`: a Mosquitto of the bench's own dies mid-dispatch and
//! comes back; the report counts every receiver played, none twice, and times the return.
//! Timings are not asserted (the bench command measures them, never a test). Runs only
//! when `CANHBAO_TEST_MQTT_URL` is set (Mosquitto is installed) and the binary is there.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bench::outage::{MOSQUITTO, OutageBench, bench_outage};
use canhbao_server::config::Sources;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_outage_delivers_everything_once_after_the_broker_returns() {
    if testkit::service("CANHBAO_TEST_MQTT_URL").is_none()
        || testkit::skip_without("mosquitto", std::path::Path::new(MOSQUITTO).exists())
    {
        return;
    }
    let sources = Sources {
        config_dir: std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config")),
        ..Default::default()
    };
    let bench = OutageBench {
        receivers: 40,
        alerts: 2,
        outage: Duration::from_secs(2),
        resend_s: Some(vec![2, 5]),
        patience: Duration::from_secs(60),
    };
    let mut out = Vec::new();
    let report = bench_outage(&sources, &bench, &mut out).await;
    let text = String::from_utf8(out).unwrap();
    let report = report.unwrap_or_else(|e| panic!("{e:#}\n{text}"));
    assert!(report.plays_before > 0 && report.plays_before < 80, "{text}");
    assert!(
        report.return_to_played.is_some() && report.return_to_stored.is_some(),
        "{text}"
    );
    for line in [
        "lost                 0 receiver-alert pairs never played (goal 0); 80/80 played",
        "played twice         0 receiver-alert pairs (goal 0)",
        "store                80/80 receiver deliveries played",
        "return->all played",
        "resend [2, 5] s",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
}
