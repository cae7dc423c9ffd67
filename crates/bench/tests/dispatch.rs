//! `canhbao bench dispatch` with a few receivers: the report is well-formed and every
//! receiver is counted. Timings are not asserted (speed is measured by the bench command,
//! never in a test). On an external broker it runs only when `CANHBAO_TEST_MQTT_URL` is
//! set; on the embedded broker it always runs.

use bench::dispatch::{DispatchBench, bench_dispatch};
use canhbao_server::config::Sources;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_dispatch_counts_every_receiver_and_reports_a_ratio() {
    let Some(broker) = testkit::service("CANHBAO_TEST_MQTT_URL") else {
        return;
    };
    counts_every_receiver(broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_dispatch_on_the_embedded_broker_counts_every_receiver() {
    let text = counts_every_receiver("embedded".into()).await;
    assert!(text.contains("broker embedded (the service's own)"), "{text}");
}

/// Runs one round with 20 receivers on `broker`; its report.
async fn counts_every_receiver(broker: String) -> String {
    let sources = Sources {
        config_dir: std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config")),
        ..Default::default()
    };
    let bench = DispatchBench {
        receivers: 20,
        broker,
        rounds: 1,
        program: testkit::canhbao_binary(),
    };
    let mut out = Vec::new();
    let report = bench_dispatch(&sources, &bench, &mut out)
        .await
        .expect("the bench ran");
    let text = String::from_utf8(out).expect("the report is UTF-8");

    assert_eq!(report.rounds.len(), 1);
    let r = &report.rounds[0];
    assert_eq!(
        (r.counted_received, r.counted_played, r.counted_raw),
        (20, 20, 20),
        "{text}"
    );
    assert_eq!(report.communes, 65, "{text}");
    assert!(report.envelope_bytes > 0);
    for label in [
        "baseline raw publish",
        "canhbao issue->received",
        "canhbao issue->played",
        "per receiver, received    p50",
        "ratio (time)",
    ] {
        assert!(text.contains(label), "{label} missing from:\n{text}");
    }
    let ratio = text
        .lines()
        .find(|l| l.contains("ratio (time)"))
        .and_then(|l| l.split_whitespace().find(|w| w.ends_with('x')))
        .and_then(|w| w.trim_end_matches('x').parse::<f64>().ok());
    assert!(ratio.is_some_and(|x| x.is_finite() && x > 0.0), "{text}");
    assert!(text.contains("received 20/20, played 20/20, raw 20/20"), "{text}");
    text
}
