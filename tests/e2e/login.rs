//! Login under attack: a flood of wrong passwords from one address never keeps an officer
//! out from another address; every wrong guess is counted, concurrent ones included; a
//! name held off and an unknown name held off answer alike; every refusal says when to try
//! again. Clients come from distinct loopback addresses (127.0.0.x), as desks would.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use canhbao_tests::{Broker, TestApp};
use serde_json::Value;

fn client_from(last: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

/// (status, Retry-After seconds, body) of one login.
async fn login(http: &reqwest::Client, base: &str, user: &str, password: &str) -> (u16, Option<u64>, Value) {
    let r = http
        .post(format!("{base}/api/v1/login"))
        .header("content-type", "application/json")
        .body(serde_json::json!({"username": user, "password": password}).to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (status, retry, r.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_wrong_logins_from_one_address_never_keep_the_officer_out_from_another() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let store = app.app.store();
    let password = canhbao_server::users::add(store, &app.data_dir, "truc.ban", "officer", None)
        .await
        .unwrap();
    let attacker = client_from(2);
    let started = Instant::now();
    let mut counts = std::collections::BTreeMap::<u16, usize>::new();
    let mut without_retry_after = 0;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16 {
        let (http, base) = (attacker.clone(), app.base.clone());
        tasks.spawn(async move {
            let mut seen = Vec::new();
            for i in 0..625 {
                seen.push(login(&http, &base, "truc.ban", &format!("wrong-{worker}-{i}")).await);
            }
            seen
        });
    }
    while let Some(seen) = tasks.join_next().await {
        for (status, retry, _) in seen.unwrap() {
            *counts.entry(status).or_default() += 1;
            if status == 429 && retry.is_none_or(|s| s == 0) {
                without_retry_after += 1;
            }
        }
    }
    let flood = started.elapsed();
    assert_eq!(counts.values().sum::<usize>(), 10_000);
    assert!(!counts.contains_key(&200), "{counts:?}");
    // Only a few were checked at all (the address's burst of 30, and what its rate of 30 a
    // minute adds while the flood lasts): the rest were refused before any hashing.
    let checked = counts.get(&401).copied().unwrap_or(0);
    let allowed = 30 + 30 * (flood.as_secs() as usize / 60 + 1);
    assert!(checked <= allowed, "{counts:?} in {flood:?}");
    assert_eq!(without_retry_after, 0, "every 429 says when to try again");

    // The officer, at another desk, logs in at once.
    let desk = client_from(3);
    let t = Instant::now();
    let (status, _, body) = login(&desk, &app.base, "truc.ban", &password).await;
    assert_eq!(status, 200, "{body} (after a flood of {flood:?}: {counts:?})");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // From the attacker's address, even the right password waits, and is told how long.
    let (status, retry, held) = login(&attacker, &app.base, "truc.ban", &password).await;
    assert_eq!(status, 429);
    assert!(retry.is_some_and(|s| s >= 1), "{retry:?}");

    // A name that does not exist is held off exactly like one that does.
    let other = client_from(5);
    for i in 0..5 {
        assert_eq!(
            login(&other, &app.base, "khong.co", &format!("guess-{i}"))
                .await
                .0,
            401
        );
    }
    let (status, retry, unknown) = login(&other, &app.base, "khong.co", "guess-5").await;
    assert_eq!(status, 429);
    assert!(retry.is_some_and(|s| s >= 1), "{retry:?}");
    let third = client_from(7);
    for i in 0..5 {
        assert_eq!(
            login(&third, &app.base, "truc.ban", &format!("guess-{i}"))
                .await
                .0,
            401
        );
    }
    let (status, _, known) = login(&third, &app.base, "truc.ban", "guess-5").await;
    assert_eq!(status, 429);
    for field in ["type", "title", "detail"] {
        assert_eq!(unknown[field], known[field], "{unknown} / {known}");
    }
    // The attacker's own rate limit answers differently, but names nobody.
    assert!(!held.to_string().contains("truc.ban"), "{held}");
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_wrong_guesses_are_all_counted_and_the_fiftieth_holds_the_address_off() {
    // Limits wide enough that 50 guesses at once all reach the password check, and the
    // hold-off starts at the 50th failure: only if each is counted does it start.
    let app = TestApp::spawn_with(
        Broker::Embedded,
        &[
            ("CANHBAO__LOGIN__PER_ADDRESS_BURST", "100"),
            ("CANHBAO__LOGIN__PER_ACCOUNT_BURST", "200"),
            ("CANHBAO__LOGIN__FREE_FAILURES", "50"),
            ("CANHBAO__LOGIN__HASHING", "4"),
            ("CANHBAO__LOGIN__HASHING_WAIT_S", "300"),
        ],
    )
    .await
    .unwrap();
    let store = app.app.store();
    let password = canhbao_server::users::add(store, &app.data_dir, "phe.duyet", "approver", None)
        .await
        .unwrap();
    let http = client_from(4);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (http, base) = (http.clone(), app.base.clone());
        tasks.spawn(async move { login(&http, &base, "phe.duyet", &format!("guess-{i}")).await.0 });
    }
    let mut statuses = Vec::new();
    while let Some(s) = tasks.join_next().await {
        statuses.push(s.unwrap());
    }
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    let user = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .find(|u| u.username == "phe.duyet")
        .unwrap();
    assert_eq!(user.failed_logins, 50, "every wrong guess is counted");
    let (status, retry, body) = login(&http, &app.base, "phe.duyet", &password).await;
    assert_eq!(status, 429, "{body}");
    assert!(retry.is_some_and(|s| s >= 1), "{retry:?}");
    // Another desk is not held off, and a password reset lifts the hold-off.
    assert_eq!(
        login(&client_from(6), &app.base, "phe.duyet", &password).await.0,
        200
    );
    let new_password = canhbao_server::users::reset_password(store, "phe.duyet", None)
        .await
        .unwrap();
    assert_eq!(login(&http, &app.base, "phe.duyet", &new_password).await.0, 200);
    app.app.stop().await;
}
