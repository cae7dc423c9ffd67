#![allow(clippy::unwrap_used)]
//! A login flood cannot take the service's memory: 120 logins at once, from 12 addresses
//! (each within its own rate), every one reaching the password check (argon2id, 19 MiB
//! each). Passwords are checked `[login] hashing` (2) at a time, so the service's peak
//! resident memory (VmHWM) stays under 160 MiB (unbounded, 120 checks at once would take
//! over 2 GiB), and it answers health checks throughout.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::{spawn_service, wait_ready};
use testkit::kannel::free_port;

/// The process's peak resident memory, in MiB.
fn peak_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_is_hashed_at_bounded_concurrency_and_memory_stays_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("service.log");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let service = spawn_service(
        &log,
        &[
            (
                "CANHBAO__SERVICE__DATA_DIR",
                tmp.path().join("data").display().to_string(),
            ),
            ("CANHBAO__HTTP__LISTEN", format!("127.0.0.1:{port}")),
            ("CANHBAO__MQTT__LISTEN", format!("127.0.0.1:{}", free_port())),
            // Long enough that no attempt of the flood is refused for waiting.
            ("CANHBAO__LOGIN__HASHING_WAIT_S", "600".into()),
        ],
    );
    let pid = service.0.id();
    let health = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    wait_ready(&health, &base, &log).await;
    let before = peak_mib(pid);

    let mut tasks = tokio::task::JoinSet::new();
    for address in 0..12u8 {
        let http = reqwest::Client::builder()
            .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 10 + address)))
            .timeout(Duration::from_secs(600))
            .build()
            .unwrap();
        for i in 0..10 {
            let (http, base) = (http.clone(), base.clone());
            tasks.spawn(async move {
                let body = serde_json::json!({"username": format!("ai.do-{address}-{i}"), "password": "not-a-password"});
                let r = http
                    .post(format!("{base}/api/v1/login"))
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap();
                r.status().as_u16()
            });
        }
    }
    // The service keeps answering while it works through the flood.
    let mut answered = 0;
    let mut every = tokio::time::interval(Duration::from_millis(100));
    while !tasks.is_empty() {
        tokio::select! {
            done = tasks.join_next() => {
                assert_eq!(done.unwrap().unwrap(), 401, "each wrong login is checked and refused");
            }
            _ = every.tick() => {
                let r = health.get(format!("{base}/healthz")).send().await.unwrap();
                assert!(r.status().is_success());
                answered += 1;
            }
        }
    }
    let peak = peak_mib(pid);
    assert!(
        peak < 160.0,
        "peak resident memory {peak:.1} MiB (before the flood {before:.1} MiB)"
    );
    assert!(answered > 0);
    eprintln!(
        "login flood: peak RSS {peak:.1} MiB, before {before:.1} MiB, {answered} health checks answered"
    );
}
