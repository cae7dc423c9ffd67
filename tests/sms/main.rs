//! The SMS channel end to end, against real Kannels (bearerbox, smsbox and fakesmsc, from
//! Debian's `kannel` and `kannel-extras`, which `.ci/run` installs): the fallback to a
//! commune's officials when its loudspeakers cannot or do not play, delivery reports
//! through the API, the cancel that follows everyone who had the alert by SMS, and
//! failover when a gateway dies mid-run, with no number getting a second copy.
//!
//! Without Kannel on the machine these tests say so and pass at once.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use canhbao_tests::kannel::{Kannel, free_port, installed};
use canhbao_tests::{Broker, TestApp, TestReceiver, live_bulletin};
use serde_json::Value;
use testkit::http::url_encode;

mod providers;

const WAIT: Duration = Duration::from_secs(20);
const DLR_SECRET: &str = "dlr-secret-0123456789-Lạng Sơn";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

/// A running Kannel with its fake SMSC up.
async fn kannel(http: &reqwest::Client, app_port: u16) -> Option<Kannel> {
    let (bearerbox, smsbox) = installed()?;
    let mut k = Kannel::configure(app_port);
    k.start_boxes(&bearerbox, &smsbox, http).await;
    k.start_fakesmsc(http).await;
    Some(k)
}

/// An app whose SMS goes through `gateways` (id, smsbox URL, messages a second) in that
/// order, with short deadlines: loudspeakers have 4 s to play, gateways 3 s to report.
async fn sms_app(port: u16, gateways: &[(&str, String, u32)]) -> TestApp {
    let list: Vec<String> = gateways
        .iter()
        .map(|(id, url, rate)| {
            format!(
                r#"{{ id = "{id}", kind = "kannel", url = "{url}", username = "tester", password_env = "CANHBAO_SECRET_KANNEL_PASSWORD", dlr_secret_env = "CANHBAO_SECRET_DLR", per_second = {rate}, burst = 1, max_in_flight = 2, timeout_ms = 2000, connect_timeout_ms = 500 }}"#
            )
        })
        .collect();
    let listen = format!("127.0.0.1:{port}");
    let public = format!("http://127.0.0.1:{port}");
    let gateways = format!("[{}]", list.join(", "));
    TestApp::spawn_with(
        Broker::Embedded,
        &[
            ("CANHBAO__HTTP__LISTEN", &listen),
            ("CANHBAO__SMS__PUBLIC_URL", &public),
            ("CANHBAO__SMS__GATEWAYS", &gateways),
            ("CANHBAO__SMS__SWEEP_MS", "200"),
            ("CANHBAO__SMS__REPORT_DEADLINE_S", "3"),
            ("CANHBAO__SMS__LEASE_S", "2"),
            (
                "CANHBAO__SMS__FALLBACK_AFTER_S",
                "{ emergency = 4, priority = 4, normal = 4 }",
            ),
            ("CANHBAO_SECRET_KANNEL_PASSWORD", "foobar"),
            ("CANHBAO_SECRET_DLR", DLR_SECRET),
        ],
    )
    .await
    .unwrap()
}

async fn import_contacts(app: &TestApp, csv: &str) {
    let (status, body) = app
        .post("/api/v1/contacts/import", "text/csv", csv.as_bytes())
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
}

/// The bulletin of `live_bulletin`, for `communes`.
fn bulletin(identifier: &str, communes: &[&str]) -> Vec<u8> {
    let text = String::from_utf8(live_bulletin(identifier, "kttv-langson@example.vn", 3)).unwrap();
    let geocodes: Vec<String> = communes
        .iter()
        .map(|c| format!("<geocode><valueName>commune</valueName><value>{c}</value></geocode>"))
        .collect();
    let one =
        "<geocode>\n        <valueName>commune</valueName>\n        <value>06385</value>\n      </geocode>";
    assert!(text.contains(one), "the fixture's area changed");
    text.replace(one, &geocodes.concat()).into_bytes()
}

/// Posts a bulletin and returns its alert ids.
async fn issue(app: &TestApp, identifier: &str, communes: &[&str]) -> Vec<String> {
    let (status, body) = app
        .post(
            "/api/v1/bulletins",
            "application/cap+xml",
            &bulletin(identifier, communes),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

/// What the SMSC got, by recipient: (parts, text) of each whole message.
fn received(k: &Kannel) -> HashMap<String, Vec<(usize, String)>> {
    let mut by_number: HashMap<String, Vec<(usize, String)>> = HashMap::new();
    for (to, parts, text) in k.messages() {
        by_number.entry(to).or_default().push((parts, text));
    }
    by_number
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The alert's SMS rows, once every one of them is in a state `done` accepts.
async fn sms_rows(app: &TestApp, alert_id: &str, count: usize, done: &[&str]) -> Vec<Value> {
    let path = format!("/api/v1/alerts/{alert_id}");
    let body = app
        .wait_for(&path, WAIT, |b| {
            b["sms"].as_array().is_some_and(|rows| {
                rows.len() == count
                    && rows
                        .iter()
                        .all(|r| done.contains(&r["state"].as_str().unwrap_or_default()))
            })
        })
        .await
        .unwrap();
    body["sms"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn officials_get_the_alert_by_sms_when_loudspeakers_cannot_or_do_not_play_and_the_cancel_follows() {
    let http = http();
    let port = free_port();
    let Some(k) = kannel(&http, port).await else {
        return;
    };
    let app = sms_app(port, &[("kannel-a", k.sendsms_base(), 50)]).await;
    import_contacts(
        &app,
        "name,phone,commune,role,language,opt_out\n\
         Chủ tịch Hữu Lũng,0912000001,06385,commune_chair,vi,no\n\
         Trưởng thôn Hữu Lũng,0912000002,06385,village_head,vi,no\n\
         Người dân Hữu Lũng,0912000003,06385,resident,vi,no\n\
         Trưởng thôn nghỉ,0912000004,06385,village_head,vi,yes\n\
         Chủ tịch 05977,0912000005,05977,commune_chair,vi,no\n\
         Chủ tịch 05983,0912000006,05983,commune_chair,vi,no\n",
    )
    .await;
    // 06385: a loudspeaker online that takes a minute to play. 05977: one that plays at
    // once. 05983: none at all.
    let slow: TestReceiver = app
        .start_receiver_playing_with("06385", "loa-slow", "sleep 60")
        .await
        .unwrap();
    let mut quick = app.start_receiver("05977", "loa-quick").await.unwrap();
    app.wait_for("/api/v1/receivers", WAIT, |b| {
        b["receivers"]
            .as_array()
            .is_some_and(|r| r.iter().filter(|r| r["health"] == "online").count() == 2)
    })
    .await
    .unwrap();

    let issued = Instant::now();
    let alerts = issue(&app, "LU-SMS-1", &["06385", "05977", "05983"]).await;
    assert_eq!(
        alerts.len(),
        1,
        "one alert for the bulletin's communes: {alerts:?}"
    );
    let alert_id = alerts[0].clone();
    quick.next(WAIT).await.unwrap();

    // 05983 has no receiver: its chair gets the SMS at once, before the 4 s deadline.
    wait_until("the SMS to 05983's chair", || {
        received(&k).contains_key("+84912000006")
    })
    .await;
    let first = issued.elapsed();
    assert!(first < Duration::from_secs(4), "took {first:?}");
    // 06385's loudspeaker did not play within 4 s: its chair and village head get it.
    wait_until("the SMS to 06385's officials", || {
        let got = received(&k);
        got.contains_key("+84912000001") && got.contains_key("+84912000002")
    })
    .await;
    assert!(issued.elapsed() >= Duration::from_secs(4));
    let rows = sms_rows(&app, &alert_id, 3, &["delivered"]).await;
    let detail = app.get(&format!("/api/v1/alerts/{alert_id}")).await.unwrap().1;
    let reasons: HashMap<&str, &str> = detail["sms_fallbacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["commune"].as_str().unwrap(), f["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reasons,
        HashMap::from([
            ("05983", "the commune has no registered loudspeaker receiver"),
            ("06385", "0 of 1 loudspeaker receivers reported played within 4 s"),
        ]),
        "05977's loudspeaker played: no fallback there"
    );
    for r in &rows {
        assert_eq!(
            (r["gateway"].as_str(), r["cause"].as_str(), r["attempts"].as_i64()),
            (Some("kannel-a"), Some("fallback"), Some(1)),
            "{r}"
        );
    }

    // What the SMSC got: the official wording with diacritics, once per number; nothing
    // for a resident (not an official), an opted-out head, or 05977.
    let got = received(&k);
    let mut numbers: Vec<&str> = got.keys().map(String::as_str).collect();
    numbers.sort();
    assert_eq!(numbers, ["+84912000001", "+84912000002", "+84912000006"]);
    // The policy is auto with at most 3 UCS-2 parts: this wording needs 4 in UCS-2, so it
    // goes in GSM-7 without diacritics, in the 2 parts the API announced.
    for texts in got.values() {
        assert_eq!(texts.len(), 1, "{texts:?}");
        let (parts, text) = &texts[0];
        assert!(text.starts_with("[PCTT Lang Son] CANH BAO LU cap 3. "), "{text}");
        assert!(text.is_ascii(), "{text}");
        assert_eq!(*parts, 2, "{text}");
    }
    for r in &rows {
        assert_eq!(
            (r["encoding"].as_str(), r["segments"].as_i64()),
            (Some("GSM-7"), Some(2)),
            "{r}"
        );
    }

    let metrics = app.get_text("/metrics").await.unwrap();
    assert!(
        metrics.contains("canhbao_sms{state=\"delivered\"} 3"),
        "{metrics}"
    );

    // A forged or stray delivery report changes nothing and is recorded.
    let message_ref = rows[0]["message_ref"].as_str().unwrap();
    let dlr = |secret: &str, reference: &str| {
        format!(
            "{}/api/v1/sms/dlr/kannel-a?ref={reference}&secret={secret}&status=2",
            app.base
        )
    };
    let forged = http
        .get(dlr("guessed-secret-000000", message_ref))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401);
    let secret: String = url_encode(DLR_SECRET);
    let stray = http.get(dlr(&secret, "s-not-ours")).send().await.unwrap();
    assert_eq!(stray.status().as_u16(), 404);
    let unknown = http
        .get(format!("{}/api/v1/sms/dlr/nobody?secret=x", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
    let (_, rejections) = app.get("/api/v1/rejections").await.unwrap();
    let sources: Vec<&str> = rejections
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["source"].as_str())
        .filter(|s| s.starts_with("sms-dlr:"))
        .collect();
    // Each is counted; rows are one a second at most (a flood must not write a flood).
    assert!((1..=3).contains(&sources.len()), "{rejections}");
    let metrics = app.get_text("/metrics").await.unwrap();
    assert!(metrics.contains("canhbao_sms_dlr_refused_total 3"), "{metrics}");
    // A late "failed" from the right gateway after "delivered" changes nothing either.
    let late = http.get(dlr(&secret, message_ref)).send().await.unwrap();
    assert_eq!(late.status().as_u16(), 200);
    sms_rows(&app, &alert_id, 3, &["delivered"]).await;

    // The cancel goes by SMS to exactly those who had the alert by SMS.
    let (status, body) = app
        .post(
            &format!("/api/v1/alerts/{alert_id}/cancel"),
            "application/json",
            r#"{"reason":"nước đã rút"}"#.as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let cancel_id = body["cancel_id"].as_str().unwrap().to_owned();
    let rows = sms_rows(&app, &cancel_id, 3, &["delivered"]).await;
    assert!(rows.iter().all(|r| r["cause"] == "follow_up"), "{rows:?}");
    let got = received(&k);
    assert_eq!(got.len(), 3, "nobody new: {got:?}");
    // The cancel is short enough for 3 UCS-2 parts: it keeps its diacritics.
    for texts in got.values() {
        assert_eq!(texts.len(), 2, "{texts:?}");
        let (parts, text) = &texts[1];
        assert!(text.starts_with("[PCTT Lạng Sơn] HỦY BỎ LŨ: "), "{text}");
        assert!(*parts <= 3, "{parts}");
    }
    assert!(rows.iter().all(|r| r["encoding"] == "UCS-2"), "{rows:?}");
    slow.stop().await;
    quick.stop().await;
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_run_fails_over_and_no_number_gets_two_copies() {
    let http = http();
    let port = free_port();
    let Some(mut a) = kannel(&http, port).await else {
        return;
    };
    let b = kannel(&http, port).await.unwrap();
    // Gateway a is the primary, slowed to 2 messages a second so that the run is long
    // enough to kill it in the middle.
    let app = sms_app(
        port,
        &[
            ("kannel-a", a.sendsms_base(), 2),
            ("kannel-b", b.sendsms_base(), 50),
        ],
    )
    .await;
    let mut csv = String::from("name,phone,commune,role\n");
    for i in 0..4 {
        csv.push_str(&format!("Một {i},09130000{i:02},05983,village_head\n"));
    }
    for i in 0..12 {
        csv.push_str(&format!("Hai {i},09140000{i:02},05986,village_head\n"));
    }
    import_contacts(&app, &csv).await;

    // Run 1, both gateways healthy: a delivers and reports, so nothing moves to b even
    // though the report deadline is short.
    let first = issue(&app, "LU-SMS-A", &["05983"]).await;
    let rows = sms_rows(&app, &first[0], 4, &["delivered"]).await;
    assert!(rows.iter().all(|r| r["gateway"] == "kannel-a"), "{rows:?}");

    // Run 2: a's SMSC link goes down first (a takes messages but cannot pass them on), then,
    // mid-run, a itself is killed.
    a.kill("fakesmsc");
    let second = issue(&app, "LU-SMS-B", &["05986"]).await;
    let path = format!("/api/v1/alerts/{}", second[0]);
    app.wait_for(&path, WAIT, |b| {
        b["sms"].as_array().is_some_and(|rows| {
            rows.iter()
                .filter(|r| r["gateway"] == "kannel-a" && r["state"] == "submitted")
                .count()
                >= 2
        })
    })
    .await
    .unwrap();
    a.kill("smsbox");
    a.kill("bearerbox");
    let rows = sms_rows(&app, &second[0], 12, &["delivered"]).await;
    let mut moved_after_deadline = 0;
    for r in &rows {
        assert_eq!(r["gateway"], "kannel-b", "{r}");
        assert_eq!(r["tried"], serde_json::json!(["kannel-a"]), "{r}");
        let reason = r["last_error"].as_str().unwrap_or_default();
        moved_after_deadline += usize::from(reason.starts_with("no delivery report from kannel-a"));
    }
    assert!(
        moved_after_deadline >= 2,
        "the messages a took but never reported moved on after the deadline: {rows:#?}"
    );

    // Every number got exactly one copy: run 1 through a, run 2 through b.
    let via_a = received(&a);
    let via_b = received(&b);
    for i in 0..4 {
        let n = format!("+849130000{i:02}");
        assert_eq!(via_a.get(&n).map(Vec::len), Some(1), "{n}");
        assert!(!via_b.contains_key(&n), "{n} got a second copy through b");
    }
    for i in 0..12 {
        let n = format!("+849140000{i:02}");
        assert_eq!(via_b.get(&n).map(Vec::len), Some(1), "{n}: {via_b:?}");
        assert!(!via_a.contains_key(&n), "{n} went out through a");
    }
    eprintln!(
        "failover: {} of 12 moved after a's report deadline, the rest when a refused or died",
        moved_after_deadline
    );
    app.app.stop().await;
}

/// `canhbao bench sms` with a few recipients: every message is counted delivered and the
/// report carries both baselines and a ratio. Timings are not asserted (speed is measured
/// by the bench command, never in a test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_sms_delivers_to_every_recipient_and_reports_a_ratio() {
    let http = http();
    let Some(k) = kannel(&http, free_port()).await else {
        return;
    };
    let bench = bench::sms::SmsBench {
        recipients: 100,
        kannel: k.sendsms_base(),
        username: "tester".into(),
        password: "foobar".into(),
        in_flight: 4,
        rounds: 1,
    };
    let sources = canhbao_server::Sources {
        config_dir: canhbao_tests::repo_config_dir(),
        ..Default::default()
    };
    let mut out = Vec::new();
    let report = bench::sms::bench_sms(&sources, &bench, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(report.rounds[0].counted_delivered, 100, "{text}");
    assert_eq!(report.communes, 65, "{text}");
    for label in [
        "baseline sendsms loop",
        "baseline with reports",
        "canhbao issue->submitted",
        "canhbao issue->delivered",
        "ratio (time)",
    ] {
        assert!(text.contains(label), "{label} missing from:\n{text}");
    }
    // The SMSC got the canhbao run and both baselines: three messages per number (the
    // baselines' last ones may still be on their way when the bench returns).
    wait_until("three messages for each number at the SMSC", || {
        let got = received(&k);
        got.len() == 100 && got.values().all(|m| m.len() == 3)
    })
    .await;
    eprintln!("{text}");
}

/// Anyone on the machine forges the `played` receipt of a commune's only loudspeaker,
/// which is online but has not played: had it counted, the officials' SMS would never go.
/// The broker drops it (only the receiver's own login writes its receipts, even a second
/// after the receiver was registered), and the fallback goes out at its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_played_receipt_does_not_hold_back_the_officials_sms() {
    let http = http();
    let port = free_port();
    let Some(k) = kannel(&http, port).await else {
        return;
    };
    let app = sms_app(port, &[("kannel-a", k.sendsms_base(), 50)]).await;
    import_contacts(
        &app,
        "name,phone,commune,role,language,opt_out\nChủ tịch Hữu Lũng,0912000011,06385,commune_chair,vi,no\n",
    )
    .await;
    let _slow: TestReceiver = app
        .start_receiver_playing_with("06385", "loa-cham", "sleep 60")
        .await
        .unwrap();
    app.wait_for("/api/v1/receivers", WAIT, |b| {
        b["receivers"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["health"] == "online"))
    })
    .await
    .unwrap();
    let issued = Instant::now();
    let alert_id = issue(&app, "LU-FORGE-1", &["06385"]).await.remove(0);
    let (anon, stop) = app.anonymous_client().await.unwrap();
    let topics = dispatch::Topics::new(&app.prefix, domain::ProvinceCode::new("20").unwrap()).unwrap();
    let forged = serde_json::json!({
        "v": 1, "alert_id": alert_id, "receiver_id": "loa-cham", "commune": "06385",
        "status": "played", "at": chrono::Utc::now().to_rfc3339(),
    });
    anon.publish(
        &topics.receipt(&domain::ReceiverId::new("loa-cham").unwrap()),
        forged.to_string().into_bytes(),
        false,
    )
    .await
    .unwrap();
    wait_until("the SMS to 06385's chair despite the forged receipt", || {
        received(&k).contains_key("+84912000011")
    })
    .await;
    assert!(
        issued.elapsed() >= Duration::from_secs(4),
        "it waited for the loudspeaker's deadline"
    );
    let detail = app.get(&format!("/api/v1/alerts/{alert_id}")).await.unwrap().1;
    let rx = &detail["receiver_deliveries"][0];
    assert!(
        rx["state"] != "played" && rx["played"].is_null(),
        "the forged receipt counted: {detail}"
    );
    assert!(
        detail["sms_fallbacks"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("0 of 1 loudspeaker receivers reported played")),
        "{detail}"
    );
    stop.cancel();
    app.app.stop().await;
}
