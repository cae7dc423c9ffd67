#![allow(clippy::unwrap_used)]
//! The service killed with SIGKILL while receivers and an operator are connected, then
//! restarted the way the systemd unit restarts it (`Restart=always`, `RestartSec=2`): it
//! serves again on the same HTTP and embedded-broker ports within 5 s of the restart,
//! although the killed process left its connections in TIME_WAIT. Nothing outside the
//! repository is needed: the broker is the embedded one.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Service, spawn_service, tail, wait_ready};
use mqtt::{BrokerUrl, MqttSettings};
use tokio_util::sync::CancellationToken;

/// `deploy/systemd/canhbao.service`'s `RestartSec`.
const RESTART_SEC: Duration = Duration::from_secs(2);

fn start(data: &Path, log: &Path, http: u16, mqtt: u16) -> Service {
    spawn_service(
        log,
        &[
            ("CANHBAO__SERVICE__DATA_DIR", data.display().to_string()),
            ("CANHBAO__HTTP__LISTEN", format!("127.0.0.1:{http}")),
            ("CANHBAO__MQTT__LISTEN", format!("127.0.0.1:{mqtt}")),
        ],
    )
}

/// MQTT clients connected to the embedded broker, as receivers would be.
async fn clients(port: u16, n: usize) -> (Vec<mqtt::MqttHandle>, CancellationToken) {
    let stop = CancellationToken::new();
    let mut handles = Vec::new();
    for i in 0..n {
        let (handle, driver, _rx) = mqtt::connect(MqttSettings {
            broker: BrokerUrl {
                host: "127.0.0.1".into(),
                port,
                tls: false,
            },
            client_id: format!("restart-test-{i}"),
            username: None,
            password: None,
            keep_alive: Duration::from_secs(30),
            persistent_session: false,
            subscriptions: vec!["canhbao/v1/20/06385/alerts/+".into()],
            last_will: None,
            on_connect: None,
            tls: Default::default(),
        });
        tokio::spawn(driver.run(stop.clone()));
        handles.push(handle);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !handles.iter().all(|h| h.is_connected()) {
        assert!(Instant::now() < deadline, "clients did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (handles, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_killed_with_sigkill_serves_again_on_its_ports_within_5_s_of_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("service.log");
    let [http_port, mqtt_port] = testkit::kannel::free_ports::<2>();
    let base = format!("http://127.0.0.1:{http_port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let service = start(&data, &log, http_port, mqtt_port);
    wait_ready(&http, &base, &log).await;
    // Connections the killed process leaves behind, on both listeners.
    let (_clients, stop) = clients(mqtt_port, 20).await;
    for _ in 0..5 {
        http.get(format!("{base}/healthz")).send().await.unwrap();
    }
    service.kill();
    stop.cancel();
    // systemd waits RestartSec, starts it again, and again after each failed start.
    tokio::time::sleep(RESTART_SEC).await;
    let restarted = Instant::now();
    let mut service = start(&data, &log, http_port, mqtt_port);
    let served = loop {
        if let Ok(Some(status)) = service.0.try_wait() {
            panic!(
                "the restarted service exited ({status}) instead of serving; log, newest first:\n{}",
                tail(&log)
            );
        }
        let ready = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success());
        let broker = tokio::net::TcpStream::connect(("127.0.0.1", mqtt_port))
            .await
            .is_ok();
        if ready.is_some() && broker {
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(30),
            "not serving 30 s after the restart; log, newest first:\n{}",
            tail(&log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        served <= Duration::from_secs(5),
        "served again {served:?} after the restart; log, newest first:\n{}",
        tail(&log)
    );
    // And a receiver can connect to the broker on its old port.
    let (_again, stop) = clients(mqtt_port, 1).await;
    stop.cancel();
    eprintln!("serving again {served:?} after the restart");
}
