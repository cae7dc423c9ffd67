//! `canhbao bench receipts` with a few receivers: every delivery ends `played` through the
//! inbound path, and the report names its baseline and ratio. On SQLite always, and on
//! PostgreSQL when `CANHBAO_TEST_POSTGRES_URL` is set. Timings are not asserted (speed is
//! measured by the bench command, never in a test).

#![allow(clippy::unwrap_used)]

use bench::receipts::{ReceiptsBench, bench_receipts};
use domain::CommuneCode;

fn communes() -> Vec<CommuneCode> {
    ["06385", "06388", "06391"]
        .iter()
        .map(|c| CommuneCode::new(c).unwrap())
        .collect()
}

async fn run(postgres: Option<String>) {
    let bench = ReceiptsBench {
        receivers: 30,
        postgres,
        rounds: 1,
    };
    let mut out = Vec::new();
    let report = bench_receipts(&communes(), &bench, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(report.rounds[0].played, 30, "{text}");
    for label in [
        "60 receipts (received + played from 30 receivers",
        "baseline raw inserts",
        "canhbao inbound path",
        "ratio (rate)",
        "played (fewest in a round): 30/30",
    ] {
        assert!(text.contains(label), "{label} missing from:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_receipts_on_sqlite_moves_every_delivery_to_played() {
    run(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_receipts_on_postgres_moves_every_delivery_to_played() {
    let Some(url) = testkit::service("CANHBAO_TEST_POSTGRES_URL") else {
        return;
    };
    run(Some(url)).await;
}
