#![allow(clippy::unwrap_used)]
//! The service killed with SIGKILL in the middle of sending a fallback SMS to 120 commune
//! officials through a real Kannel (rate-limited so that the run is long enough to be cut),
//! then restarted on the same data directory: no number gets a second copy, and every
//! message ends visibly (delivered, or unreported with its reason). Kannel retries the
//! delivery reports it could not hand over while the service was down (its smsbox
//! `http-request-retry`). Without Kannel on the machine the test says so and passes.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Service, bulletin, spawn_service, tail, wait_ready};
use serde_json::Value;
use testkit::kannel::{Kannel, free_port, installed};

const OFFICIALS: usize = 120;

fn start(data_dir: &std::path::Path, http: &str, kannel: &str, log: &std::path::Path) -> Service {
    let gateways = format!(
        r#"[{{ id = "kannel-a", kind = "kannel", url = "{kannel}", username = "tester", password_env = "CANHBAO_SECRET_KANNEL", dlr_secret_env = "CANHBAO_SECRET_DLR", per_second = 20, burst = 1, max_in_flight = 2, timeout_ms = 2000 }}]"#
    );
    spawn_service(
        log,
        &[
            ("CANHBAO__SERVICE__DATA_DIR", data_dir.display().to_string()),
            ("CANHBAO__HTTP__LISTEN", http.to_owned()),
            ("CANHBAO__MQTT__LISTEN", "127.0.0.1:0".into()),
            ("CANHBAO__SMS__PUBLIC_URL", format!("http://{http}")),
            ("CANHBAO__SMS__GATEWAYS", gateways),
            ("CANHBAO__SMS__SWEEP_MS", "200".into()),
            ("CANHBAO__SMS__LEASE_S", "3".into()),
            ("CANHBAO__SMS__REPORT_DEADLINE_S", "60".into()),
            ("CANHBAO_SECRET_KANNEL", "foobar".into()),
            ("CANHBAO_SECRET_DLR", "kill-test-dlr-secret-0123".into()),
        ],
    )
}

async fn sms_rows(http: &reqwest::Client, base: &str, token: &str, alert_id: &str) -> Vec<Value> {
    let detail: Value = http
        .get(format!("{base}/api/v1/alerts/{alert_id}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    detail["sms"].as_array().cloned().unwrap_or_default()
}

fn count(rows: &[Value], states: &[&str]) -> usize {
    rows.iter()
        .filter(|r| states.contains(&r["state"].as_str().unwrap_or_default()))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_killed_mid_sms_run_sends_no_second_copy_and_ends_every_message_visibly() {
    let Some((bearerbox, smsbox)) = installed() else {
        return;
    };
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (data_dir, log) = (tmp.path().join("data"), tmp.path().join("service.log"));
    let mut kannel = Kannel::configure(free_port());
    kannel.start_boxes(&bearerbox, &smsbox, &http).await;
    kannel.start_fakesmsc(&http).await;
    // The service's port is chosen once Kannel's are bound: a port just released could
    // otherwise be handed out twice, and /readyz answered by a Kannel box.
    let addr = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{addr}");

    let service = start(&data_dir, &addr, &kannel.sendsms_base(), &log);
    wait_ready(&http, &base, &log).await;
    let token = std::fs::read_to_string(data_dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let mut csv = String::from("name,phone,commune,role\n");
    for i in 0..OFFICIALS {
        csv.push_str(&format!("Trưởng thôn {i},0915{i:06},05983,village_head\n"));
    }
    let imported = http
        .post(format!("{base}/api/v1/contacts/import"))
        .bearer_auth(&token)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(imported.status().as_u16(), 200);
    let issued: Value = http
        .post(format!("{base}/api/v1/bulletins"))
        .bearer_auth(&token)
        .header("content-type", "application/cap+xml")
        .body(bulletin("LU-KILL-SMS", "flood", 3))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let alert_id = issued["alerts"][0].as_str().unwrap().to_owned();

    // Kill it once a quarter of the messages are out (20 a second: about 1.5 s in).
    let deadline = Instant::now() + Duration::from_secs(30);
    let at_kill = loop {
        let rows = sms_rows(&http, &base, &token, &alert_id).await;
        let out = count(&rows, &["submitted", "smsc_accepted", "buffered", "delivered"]);
        if out >= OFFICIALS / 4 {
            break rows;
        }
        assert!(Instant::now() < deadline, "no sms went out: {}", tail(&log));
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    service.kill();
    let states_at_kill: HashMap<String, usize> = at_kill.iter().fold(HashMap::new(), |mut m, r| {
        *m.entry(r["state"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
        m
    });
    let printed_at_kill = kannel.messages().len();

    let _service = start(&data_dir, &addr, &kannel.sendsms_base(), &log);
    wait_ready(&http, &base, &log).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let rows = loop {
        let rows = sms_rows(&http, &base, &token, &alert_id).await;
        if rows.len() == OFFICIALS && count(&rows, &["delivered", "unreported", "failed"]) == OFFICIALS {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "not every message ended: {:?}\n{}",
            rows.iter().map(|r| r["state"].clone()).collect::<Vec<_>>(),
            tail(&log)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Exactly one copy per number reached the SMSC, and every message says how it ended.
    let mut copies: HashMap<String, usize> = HashMap::new();
    for (to, _, _) in kannel.messages() {
        *copies.entry(to).or_default() += 1;
    }
    let twice: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "second copies: {twice:?}");
    // Every delivered message is at the SMSC. An unreported one may or may not be: the
    // kill can fall after its `sending` mark and before its request reached Kannel, and
    // then it is never resent blindly (it ends `unreported`, which says so).
    let delivered = count(&rows, &["delivered"]);
    let unreported = count(&rows, &["unreported"]);
    assert!(
        delivered <= copies.len() && copies.len() <= delivered + unreported,
        "{delivered} delivered and {unreported} unreported, {} numbers at the SMSC: {copies:?}",
        copies.len()
    );
    assert_eq!(count(&rows, &["failed"]), 0, "{rows:?}");
    for r in &rows {
        if r["state"] == "unreported" {
            assert!(
                r["last_error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("no delivery report"),
                "{r}"
            );
        }
    }
    eprintln!(
        "killed with states {states_at_kill:?} and {printed_at_kill} messages at the SMSC; after the restart: \
         {delivered} delivered, {unreported} unreported, {} numbers reached once",
        copies.len()
    );
}
