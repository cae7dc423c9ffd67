#![allow(clippy::unwrap_used)]
//! The service killed with SIGKILL in the middle of a dispatch to 300 simulated receivers,
//! then restarted on the same data directory: every receiver ends with every alert, and no
//! receiver plays a version twice. The broker is the external Mosquitto at
//! `CANHBAO_TEST_MQTT_URL` (it outlives the service, as in production); without that
//! variable the test does nothing.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use canhbao_receiver::{Playback, ReceiverConfig, ReceiverEvent, state::PlayedLog};
use canhbao_server::bench_dispatch::unique;
use common::{Service, bulletin, repo, spawn_service, tail, wait_ready};
use dispatch::mqtt::BrokerUrl;
use dispatch::{Topics, TrustedKeys};
use domain::{CommuneCode, ProvinceCode, ReceiverId};
use serde_json::Value;
use testkit::kannel::free_port;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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

/// The province's commune codes, from the area file.
fn communes() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("config/areas/lang-son.toml")).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    doc["commune"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_killed_mid_dispatch_delivers_everything_once_after_a_restart() {
    let Ok(broker) = std::env::var("CANHBAO_TEST_MQTT_URL") else {
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
    let post = |path: &str, content_type: &str, body: String| {
        http.post(format!("{base}{path}"))
            .bearer_auth(&token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    // 300 registered receivers over the province's 65 communes, each with its state file.
    let communes = communes();
    let mut keys = TrustedKeys::default();
    canhbao_receiver::load_trusted_keys(&s.data_dir.join("signing-keys.pub.json"), &mut keys).unwrap();
    let topics = Topics::new(&s.prefix, ProvinceCode::new("20").unwrap()).unwrap();
    let played: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    let stop = CancellationToken::new();
    let (connected_tx, mut connected_rx) = mpsc::unbounded_channel::<()>();
    let mut tasks = Vec::new();
    for i in 0..RECEIVERS {
        let commune = &communes[i % communes.len()];
        let id = format!("sim-{commune}-{i}");
        let body = serde_json::json!({"receiver_id": id, "commune": commune}).to_string();
        let r = post("/api/v1/receivers", "application/json", body).await.unwrap();
        assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
        let (log, _) =
            PlayedLog::open(&tmp.path().join(format!("rx/{id}.state")), chrono::Utc::now()).unwrap();
        let cfg = ReceiverConfig {
            broker: BrokerUrl::parse(&broker).unwrap(),
            receiver_id: ReceiverId::new(&id).unwrap(),
            commune: CommuneCode::new(commune).unwrap(),
            topics: topics.clone(),
            keys: keys.clone(),
            username: None,
            password: None,
            heartbeat: Duration::from_secs(5),
            drills: true,
            tls: Default::default(),
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let playback = Playback {
            played: log,
            command: None,
        };
        tasks.push(tokio::spawn(canhbao_receiver::run_with(
            cfg,
            playback,
            tx,
            stop.clone(),
        )));
        let played = played.clone();
        let connected = connected_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut first = true;
            while let Some(ev) = rx.recv().await {
                match ev {
                    ReceiverEvent::Connected if first => {
                        first = false;
                        let _ = connected.send(());
                    }
                    ReceiverEvent::Played(a) => played
                        .lock()
                        .unwrap()
                        .entry(id.clone())
                        .or_default()
                        .push(a.id.clone()),
                    _ => {}
                }
            }
        }));
    }
    for _ in 0..RECEIVERS {
        tokio::time::timeout(Duration::from_secs(60), connected_rx.recv())
            .await
            .expect("every receiver connects");
    }

    // Three province-wide bulletins, each raising an alert to all 65 communes; the service
    // is killed while it publishes them.
    let mut alerts = Vec::new();
    for (n, hazard) in ["flood", "landslide", "heavy_rain"].iter().enumerate() {
        let r = post(
            "/api/v1/bulletins",
            "application/cap+xml",
            bulletin(&unique(&format!("KILL{n}-")), hazard, 2),
        )
        .await
        .unwrap();
        let body: Value = r.json().await.unwrap();
        let ids = body["alerts"].as_array().cloned().unwrap_or_default();
        assert_eq!(ids.len(), 1, "{hazard}: {body}");
        alerts.push(ids[0].as_str().unwrap().to_owned());
    }
    // Kill it once the first plays show that the dispatch is under way.
    let plays = || played.lock().unwrap().values().map(Vec::len).sum::<usize>();
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
    let deadline = Instant::now() + Duration::from_secs(180);
    for id in &alerts {
        loop {
            // A busy service may answer slowly: a failed poll is retried until the deadline.
            let d: Value = match http
                .get(format!("{base}/api/v1/alerts/{id}"))
                .bearer_auth(&token)
                .send()
                .await
            {
                Ok(r) => {
                    let status = r.status();
                    let v = r.json().await.unwrap_or(Value::Null);
                    if !status.is_success() {
                        eprintln!("GET alert {id}: {status} {v}");
                    }
                    v
                }
                Err(e) => {
                    eprintln!("GET alert {id}: {e}");
                    Value::Null
                }
            };
            let rows = d["receiver_deliveries"].as_array().cloned().unwrap_or_default();
            let done = rows.iter().filter(|r| r["state"] == "played").count();
            if rows.len() == RECEIVERS && done == RECEIVERS {
                break;
            }
            if Instant::now() >= deadline {
                panic!(
                    "alert {id}: {done} of {} receivers played; service log, newest first:\n{}",
                    rows.len(),
                    tail(&s.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    // Give a replay, if any, the time to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let played = played.lock().unwrap().clone();
    assert_eq!(played.len(), RECEIVERS, "every receiver played something");
    for (rx, ids) in &played {
        let mut sorted = ids.clone();
        sorted.sort();
        let mut want = alerts.clone();
        want.sort();
        assert_eq!(sorted, want, "{rx} must play each alert exactly once");
    }
    eprintln!(
        "{before} of {} plays happened before the kill; the rest after the restart",
        RECEIVERS * alerts.len()
    );
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    // Leave the shared broker as it was: clear the retained alerts and statuses.
    let (raw, driver, _rx) = dispatch::mqtt::connect(dispatch::mqtt::MqttSettings {
        broker: BrokerUrl::parse(&broker).unwrap(),
        client_id: unique("kill-clean"),
        username: None,
        password: None,
        keep_alive: Duration::from_secs(30),
        persistent_session: false,
        subscriptions: vec![],
        last_will: None,
        on_connect: None,
        tls: Default::default(),
    });
    let driver_stop = CancellationToken::new();
    let driver = tokio::spawn(driver.run(driver_stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !raw.is_connected() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in &alerts {
        for c in &communes {
            let topic = topics.alert(&CommuneCode::new(c).unwrap(), &domain::AlertId::new(id).unwrap());
            let _ = raw.publish(&topic, Vec::new(), true).await;
        }
    }
    for i in 0..RECEIVERS {
        let id = format!("sim-{}-{i}", communes[i % communes.len()]);
        let _ = raw
            .publish(&topics.status(&ReceiverId::new(&id).unwrap()), Vec::new(), true)
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    driver_stop.cancel();
    let _ = driver.await;
}
