#![allow(clippy::unwrap_used)]
//! The service killed with SIGKILL in the middle of a dispatch to 300 simulated receivers,
//! then restarted on the same data directory: every receiver ends with every alert, and no
//! receiver plays a version twice. The broker is the external Mosquitto at
//! `CANHBAO_TEST_MQTT_URL` (it outlives the service, as in production); without that
//! variable the test does nothing.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Fleet, Service, issue_province_alerts, spawn_service, wait_all_played, wait_ready};
use testkit::kannel::free_port;
use testkit::unique;

const RECEIVERS: usize = 300;

struct Setup {
    data_dir: PathBuf,
    http: String,
    broker: String,
    prefix: String,
    client_id: String,
    log: PathBuf,
}

fn start(s: &Setup) -> Service {
    spawn_service(
        &s.log,
        &[
            ("CANHBAO__SERVICE__DATA_DIR", s.data_dir.display().to_string()),
            ("CANHBAO__HTTP__LISTEN", s.http.clone()),
            ("CANHBAO__MQTT__MODE", "external".into()),
            ("CANHBAO__MQTT__URL", s.broker.clone()),
            ("CANHBAO__MQTT__TOPIC_PREFIX", s.prefix.clone()),
            ("CANHBAO__MQTT__CLIENT_ID", s.client_id.clone()),
            ("CANHBAO__OUTBOX__IDLE_POLL_MS", "200".into()),
            ("CANHBAO__OUTBOX__RESEND_S", "[2, 5]".into()),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_killed_mid_dispatch_delivers_everything_once_after_a_restart() {
    let Some(broker) = testkit::service("CANHBAO_TEST_MQTT_URL") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Setup {
        data_dir: tmp.path().join("data"),
        http: format!("127.0.0.1:{port}"),
        broker: broker.clone(),
        prefix: format!("{}/v1", unique("cbkill")),
        client_id: unique("canhbao-kill"),
        log: tmp.path().join("service.log"),
    };
    let base = format!("http://{}", s.http);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut service = start(&s);
    wait_ready(&http, &base, &s.log).await;
    let token = std::fs::read_to_string(s.data_dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    // 300 registered receivers over the province's 65 communes, each with its state file.
    let fleet = Fleet::start(
        &http,
        &base,
        &token,
        &s.data_dir.join("signing-keys.pub.json"),
        &tmp.path().join("rx"),
        &broker,
        &s.prefix,
        RECEIVERS,
    )
    .await;

    // Three province-wide bulletins, each raising an alert to all 65 communes; the service
    // is killed while it publishes them.
    let alerts = issue_province_alerts(&http, &base, &token, "KILL").await;
    // Kill it once the first plays show that the dispatch is under way.
    let plays = || fleet.plays();
    let deadline = Instant::now() + Duration::from_secs(30);
    while plays() < 30 {
        assert!(Instant::now() < deadline, "the dispatch never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    service.0.kill().unwrap();
    service.0.wait().unwrap();
    drop(service);
    let before = plays();
    let total = RECEIVERS * alerts.len();
    assert!(
        before < total,
        "the kill came after the whole dispatch ({before} plays)"
    );

    let _service = start(&s);
    wait_ready(&http, &base, &s.log).await;
    wait_all_played(
        &http,
        &base,
        &token,
        &alerts,
        RECEIVERS,
        Duration::from_secs(180),
        &[&s.log],
    )
    .await;
    // Give a replay, if any, the time to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    fleet.assert_each_played_once(&alerts);
    eprintln!(
        "{before} of {} plays happened before the kill; the rest after the restart",
        RECEIVERS * alerts.len()
    );
    fleet.stop_and_clean(&alerts).await;
}
