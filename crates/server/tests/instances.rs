#![allow(clippy::unwrap_used)]
//! Two `canhbao serve` processes on one PostgreSQL database and one Mosquitto, as in
//! production: they share the dispatch, one of them polls each source, and when one is
//! killed (SIGKILL) mid-dispatch the other finishes its work. Every receiver still plays
//! every alert exactly once. Runs when both `CANHBAO_TEST_MQTT_URL` and
//! `CANHBAO_TEST_POSTGRES_URL` are set.

mod common;

use std::time::{Duration, Instant};

use common::{Fleet, Pair, issue_province_alerts, tail, wait_all_played};
use testkit::postgres::PgDatabase;

const RECEIVERS: usize = 200;

const POLLING: &str = "polling this source";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_one_database_and_the_survivor_of_a_kill_finishes_the_dispatch() {
    let Some(broker) = testkit::service("CANHBAO_TEST_MQTT_URL") else {
        return;
    };
    let Some(pg) = PgDatabase::from_env().await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let Pair {
        a,
        b,
        mut service_a,
        service_b,
        token,
        http,
        prefix,
    } = Pair::start(tmp.path(), &pg.url, &broker, "cbpair").await;
    assert!(
        !b.data_dir.join("admin.token").exists(),
        "the second instance found the first one's admin key in the shared database"
    );

    // One poller for the source, on the instance that came first.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(a.log_text().contains(POLLING) && b.log_text().contains("another poller holds this source")) {
        assert!(
            Instant::now() < deadline,
            "a polls, b waits:\na:\n{}\nb:\n{}",
            tail(&a.log),
            tail(&b.log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!b.log_text().contains(POLLING), "b polls too:\n{}", tail(&b.log));

    let fleet = Fleet::through(&http, &a, &token, tmp.path(), &broker, &prefix, RECEIVERS).await;
    // Receivers registered through a are known to b: the registry is in the database.
    let fleet_b: serde_json::Value = http
        .get(format!("{}/api/v1/receivers", b.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        fleet_b["receivers"].as_array().map(Vec::len),
        Some(RECEIVERS),
        "{fleet_b}"
    );

    // Three province-wide alerts through a; a is killed mid-dispatch.
    let alerts = issue_province_alerts(&http, &a.base, &token, "PAIR").await;
    fleet.wait_for_plays(30).await;
    service_a.0.kill().unwrap();
    service_a.0.wait().unwrap();
    let killed = Instant::now();
    drop(service_a);
    let before = fleet.plays();
    assert!(
        before < RECEIVERS * alerts.len(),
        "the kill came after the whole dispatch ({before} plays)"
    );

    // b finishes everything: a's claims run out after their lease, and b takes them.
    wait_all_played(
        &http,
        &b.base,
        &token,
        &alerts,
        RECEIVERS,
        Duration::from_secs(180),
        &[&a.log, &b.log],
    )
    .await;
    let finished = killed.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    fleet.assert_each_played_once(&alerts);

    // b took the source over: a's lock went with its connection.
    let deadline = killed + Duration::from_secs(30);
    while !b.log_text().contains(POLLING) {
        assert!(
            Instant::now() < deadline,
            "b never took the source over:\n{}",
            tail(&b.log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{before} of {} plays before a was killed; b finished the rest {:.1} s after the kill",
        RECEIVERS * alerts.len(),
        finished.as_secs_f64()
    );
    fleet.stop_and_clean(&alerts).await;
    drop(service_b);
    drop(pg);
}
