//! The HTTP server as an attacker meets it: HTTPS from certificate files, a client that
//! dribbles its headers is cut off while others are served, and every answer carries the
//! security headers and a request id.

use std::time::{Duration, Instant};

use canhbao_tests::{Broker, TestApp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_https_from_its_certificate_files() {
    let dir = tempfile::tempdir().unwrap();
    crate::tls::certificates(dir.path());
    let cert = dir.path().join("server.pem").display().to_string();
    let key = dir.path().join("server.key").display().to_string();
    let app = TestApp::spawn_with(
        Broker::Embedded,
        &[
            ("CANHBAO__HTTP__TLS_CERT_FILE", cert.as_str()),
            ("CANHBAO__HTTP__TLS_KEY_FILE", key.as_str()),
        ],
    )
    .await
    .unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.path().join("ca.pem")).unwrap()).unwrap();
    let https = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let port = app.app.http_addr.port();
    let r = https
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // A login's password travels inside TLS only: plain HTTP to the port gets no answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    // A client that does not trust the CA is refused.
    let untrusting = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(untrusting.is_err());
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_dribbling_its_headers_is_cut_off_and_others_are_served() {
    let app = TestApp::spawn_with(Broker::Embedded, &[("CANHBAO__HTTP__HEADER_READ_TIMEOUT_S", "2")])
        .await
        .unwrap();
    let addr = app.app.http_addr;
    // 50 slow clients, one byte a second.
    let mut slow = Vec::new();
    for _ in 0..50 {
        slow.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let started = Instant::now();
    let request =
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut closed_at = vec![None; slow.len()];
    for byte in request.iter() {
        for (i, s) in slow.iter_mut().enumerate() {
            if closed_at[i].is_none() && s.write_all(std::slice::from_ref(byte)).await.is_err() {
                closed_at[i] = Some(started.elapsed());
            }
        }
        // Meanwhile an ordinary request is answered at once.
        let r = app
            .http
            .get(format!("{}/healthz", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        if closed_at.iter().all(Option::is_some) || started.elapsed() > Duration::from_secs(8) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The server closed them: a read sees the end (or the reset), well before the request
    // could have been sent whole.
    for s in &mut slow {
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        match n {
            Ok(Ok(n)) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
            }
            Ok(Err(_)) => {}
            Err(_) => panic!("a slow client was still held open after {:?}", started.elapsed()),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_security_headers_and_a_request_id() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    for path in ["/healthz", "/api/v1/alerts", "/no/such/page"] {
        let r = app.http.get(format!("{}{path}", app.base)).send().await.unwrap();
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(
            h.get("x-request-id").is_some_and(|v| v.len() >= 32),
            "{path}: {h:?}"
        );
    }
    // A request id the client sends comes back as it is.
    let r = app
        .http
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "desk-7-0001")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "desk-7-0001");
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_holds_at_most_eight_event_streams_and_the_api_still_answers() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let open = || {
        app.http
            .get(format!("{}/api/v1/events", app.base))
            .bearer_auth(&app.token)
            .header("accept", "text/event-stream")
            .send()
    };
    let mut streams = Vec::new();
    for _ in 0..api::events::MAX_STREAMS_PER_CALLER {
        let r = open().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        streams.push(r);
    }
    let refused = open().await.unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    assert!(refused.headers().get("retry-after").is_some());
    // The streams hold no request permit: ordinary requests are answered meanwhile.
    for _ in 0..20 {
        let (status, _) = app.get("/api/v1/alerts").await.unwrap();
        assert_eq!(status, 200);
    }
    // A closed stream gives its place back.
    drop(streams.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = open().await.unwrap();
        if r.status().as_u16() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed stream's place never came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.app.stop().await;
}

/// A counter's value in `/metrics`.
fn metric(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_scrapes_reads_the_database_once_and_counters_stay_current() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let mut scrapes = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let (http, url, token) = (
            app.http.clone(),
            format!("{}/metrics", app.base),
            app.token.clone(),
        );
        scrapes.spawn(async move {
            let r = http.get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        });
    }
    while let Some(text) = scrapes.join_next().await {
        let text = text.unwrap();
        assert!(text.contains("canhbao_receivers{health=\"online\"} 0"), "{text}");
    }
    let last = app.get_text("/metrics").await.unwrap();
    assert_eq!(
        metric(&last, "canhbao_metrics_snapshots_total"),
        Some(1.0),
        "201 scrapes, one read of the tables:\n{last}"
    );
    assert!(metric(&last, "canhbao_metrics_age_seconds").is_some_and(|age| age < 15.0));
    // What is counted in memory is current in every scrape: a body refused for its size
    // shows at once, though the snapshot is older.
    let before = metric(&last, "canhbao_too_large_total").unwrap();
    let (status, _) = app
        .post(
            "/api/v1/observations",
            "application/json",
            &vec![b' '; 3 * 1024 * 1024],
        )
        .await
        .unwrap();
    assert_eq!(status, 413);
    let after = app.get_text("/metrics").await.unwrap();
    assert_eq!(metric(&after, "canhbao_too_large_total"), Some(before + 1.0));
    assert_eq!(metric(&after, "canhbao_metrics_snapshots_total"), Some(1.0));
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_takes_a_body_no_larger_than_its_purpose_needs() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let big = |n: usize| format!("{{\"x\":\"{}\"}}", "a".repeat(n)).into_bytes();
    // A login is a name and a password: 8 KiB is refused before any password is checked.
    let (status, _) = app
        .post("/api/v1/login", "application/json", &big(8 * 1024))
        .await
        .unwrap();
    assert_eq!(status, 413);
    // A warning is a form: 300 KiB is refused, on the routes that send too.
    let (status, _) = app
        .post("/api/v1/warnings", "application/json", &big(300 * 1024))
        .await
        .unwrap();
    assert_eq!(status, 413);
    let (status, _) = app
        .call_as(
            &app.token,
            "POST",
            "/api/v1/alerts/khong-co/cancel",
            None,
            &serde_json::json!({"reason": "x".repeat(300 * 1024)}),
        )
        .await
        .map(|(s, v, _)| (s, v))
        .unwrap();
    assert_eq!(status, 413);
    // An observation batch may be larger: 300 KiB reaches its parser (and is refused there
    // for what it says, not for its size).
    let (status, _) = app
        .post("/api/v1/observations", "application/json", &big(300 * 1024))
        .await
        .unwrap();
    assert_eq!(status, 400);
    let (_, rejections) = app.get("/api/v1/rejections").await.unwrap();
    assert!(
        rejections
            .to_string()
            .contains("413: the body is over this route's limit"),
        "{rejections}"
    );
    app.app.stop().await;
}
