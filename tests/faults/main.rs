//! Fault scenarios: the real wiring under failures of what it depends on. Each test brings
//! its own broker, so none depends on `CANHBAO_TEST_MQTT_URL`.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use bench::outage::{MOSQUITTO, Mosquitto};
use canhbao_receiver::ReceiverEvent;
use canhbao_tests::{Broker, TestApp, TestReceiver};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The bulletin for `hazard` at `level`, for the whole province (Lạng Sơn, 20).
fn province_bulletin(identifier: &str, hazard: &str, level: u8) -> Vec<u8> {
    let settings = canhbao_server::config::load(&canhbao_server::Sources {
        config_dir: canhbao_tests::repo_config_dir(),
        ..Default::default()
    })
    .unwrap();
    bench::dispatch::province_bulletin(
        identifier,
        "kttv-langson@example.vn",
        hazard,
        level,
        "Actual",
        &settings,
    )
    .into_bytes()
}

/// Ten communes and wards of the province (config/areas/lang-son.toml).
const COMMUNES: [&str; 10] = [
    "05977", "05983", "05986", "06187", "06001", "06004", "06019", "06037", "06040", "06046",
];
const PER_COMMUNE: usize = 4;
/// A commune with no receiver until the broker has come back: nothing resends to it.
const LATE_COMMUNE: &str = "06103";
/// Communes and wards of Lạng Sơn: a province-wide alert goes to all of them.
const COMMUNES_IN_PROVINCE: usize = 65;

/// What a receiver did while the test ran.
#[derive(Debug, Default)]
struct Seen {
    played: Vec<String>,
    others: Vec<String>,
}

/// Collects a receiver's events until `stop`, then hands the receiver back with them.
fn collect(mut rx: TestReceiver, stop: CancellationToken) -> tokio::task::JoinHandle<(TestReceiver, Seen)> {
    tokio::spawn(async move {
        let mut seen = Seen::default();
        let mut note = |ev: ReceiverEvent| match ev {
            ReceiverEvent::Played(a) => seen.played.push(a.id.clone()),
            other => seen.others.push(format!("{other:?}")),
        };
        loop {
            tokio::select! {
                ev = rx.next(Duration::from_secs(3600)) => match ev {
                    Ok(ev) => note(ev),
                    Err(_) => break,
                },
                _ = stop.cancelled() => break,
            }
        }
        // What was already queued when the test stopped looking still counts.
        while let Ok(ev) = rx.next(Duration::ZERO).await {
            note(ev);
        }
        (rx, seen)
    })
}

/// Each receiver's delivery state of an alert, by receiver id.
fn states(detail: &Value) -> BTreeMap<String, String> {
    detail["receiver_deliveries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["receiver_id"].as_str().unwrap_or_default().to_owned(),
                r["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// How far the dispatch of `alerts` is: receiver deliveries by state, and how many
/// commune topics are published.
async fn progress(app: &TestApp, alerts: &[String]) -> (BTreeMap<String, usize>, usize) {
    let mut at: BTreeMap<String, usize> = BTreeMap::new();
    let mut published = 0;
    for alert_id in alerts {
        let (_, d) = app.get(&format!("/api/v1/alerts/{alert_id}")).await.unwrap();
        for s in states(&d).into_values() {
            *at.entry(s).or_default() += 1;
        }
        published += d["deliveries"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["state"] == "published")
            .count();
    }
    (at, published)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_and_restarted_during_a_dispatch_loses_no_delivery_and_replays_nothing() {
    if testkit::skip_without(MOSQUITTO, Path::new(MOSQUITTO).exists()) {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = Mosquitto::start(dir.path(), port).unwrap();
    let app = TestApp::spawn_with(
        Broker::External(format!("mqtt://127.0.0.1:{port}")),
        &[("CANHBAO__OUTBOX__RESEND_S", "[1, 2]")],
    )
    .await
    .unwrap();

    // 40 registered receivers, 4 in each of 10 communes, all online before anything is sent.
    let stop_collecting = CancellationToken::new();
    let mut receivers = Vec::new();
    let mut ids = BTreeSet::new();
    for commune in COMMUNES {
        for n in 1..=PER_COMMUNE {
            let id = format!("loa-{commune}-{n}");
            let rx = app.start_receiver(commune, &id).await.unwrap();
            receivers.push((id.clone(), collect(rx, stop_collecting.clone())));
            ids.insert(id);
        }
    }
    let online = |f: &Value| {
        f["coverage"]
            .as_array()
            .map_or(0, |c| c.iter().filter_map(|c| c["online"].as_u64()).sum())
    };
    app.wait_for("/api/v1/receivers", Duration::from_secs(20), |f| {
        online(f) == ids.len() as u64
    })
    .await
    .unwrap();

    // Three province-wide bulletins, each raising an alert to all 65 communes.
    let first_post = Instant::now();
    let mut alerts = Vec::new();
    for (identifier, hazard, level) in [
        ("FAULT-LU-1", "flood", 3),
        ("FAULT-MUA-1", "heavy_rain", 2),
        ("FAULT-BAO-1", "storm", 3),
    ] {
        let (status, body) = app
            .post(
                "/api/v1/bulletins",
                "application/cap+xml",
                &province_bulletin(identifier, hazard, level),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{identifier}: {body}");
        let raised = body["alerts"].as_array().unwrap();
        assert_eq!(raised.len(), 1, "{identifier} raises one alert: {body}");
        alerts.push(raised[0].as_str().unwrap().to_owned());
    }

    // The broker dies in the middle of the dispatch, once its first commune topics are
    // published (a dispatch to 40 receivers can end within one look at its progress), and
    // comes back with nothing: no retained alerts, no sessions, no subscriptions.
    let progress_deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (at, published) = progress(&app, &alerts).await;
        if published > 0 || at.contains_key("received") || at.contains_key("played") {
            break;
        }
        assert!(
            Instant::now() < progress_deadline,
            "the dispatch did not start: {at:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker.kill();
    let killed = Instant::now();
    // Where the dispatch was when the broker died (the store does not need the broker).
    let (at_kill, published) = progress(&app, &alerts).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    broker.launch().unwrap();
    eprintln!(
        "broker killed {:?} after the first bulletin, with {published} of {} commune topics \
         published and receiver deliveries {at_kill:?}; back after {:?}",
        killed - first_post,
        alerts.len() * COMMUNES_IN_PROVINCE,
        killed.elapsed()
    );
    assert!(
        at_kill.get("played") != Some(&(alerts.len() * ids.len())),
        "the broker must die during the dispatch, not after it: {at_kill:?}"
    );

    // Every registered receiver plays every alert, within a bound.
    let deadline = Instant::now() + Duration::from_secs(60);
    for alert_id in &alerts {
        let path = format!("/api/v1/alerts/{alert_id}");
        let (_, detail) = app.get(&path).await.unwrap();
        let communes = detail["deliveries"].as_array().map_or(0, Vec::len);
        assert_eq!(
            communes, COMMUNES_IN_PROVINCE,
            "the alert goes to every commune: {detail:#}"
        );
        let within = deadline.saturating_duration_since(Instant::now());
        let waited = app
            .wait_for(&path, within, |d| {
                let s = states(d);
                s.keys().cloned().collect::<BTreeSet<_>>() == ids && s.values().all(|v| v == "played")
            })
            .await;
        if let Err(e) = waited {
            let (_, detail) = app.get(&path).await.unwrap();
            let stuck: Vec<_> = states(&detail)
                .into_iter()
                .filter(|(_, s)| s != "played")
                .collect();
            panic!(
                "{alert_id}: not every receiver played it: {stuck:?}\n{e:#}\nbroker log:\n{}",
                broker.tail()
            );
        }
    }
    eprintln!(
        "every delivery played {:?} after the broker was killed",
        killed.elapsed()
    );

    // A receiver that comes online only now, in a commune where nobody was registered, so
    // that no resend rebuilt its topic. The broker came back without its retained alerts;
    // the service, seeing its session gone, published the live alerts again, so the
    // newcomer still finds all three (checked with the others below).
    let late = app.start_receiver(LATE_COMMUNE, "loa-late").await.unwrap();
    receivers.push(("loa-late".to_owned(), collect(late, stop_collecting.clone())));
    app.wait_for("/api/v1/receivers", Duration::from_secs(20), |f| {
        online(f) == ids.len() as u64 + 1
    })
    .await
    .unwrap();

    // Resends of what is already acknowledged, or retained copies after a reconnect,
    // would show up now: give them time, then look at what each receiver played.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_collecting.cancel();
    let expected: BTreeSet<String> = alerts.iter().cloned().collect();
    let mut problems = Vec::new();
    let mut stopped = Vec::new();
    for (id, task) in receivers {
        let (mut rx, seen) = task.await.unwrap();
        // The broker came back empty: the key set is retained again only because the
        // service published it on reconnecting, and the receiver that first connected
        // afterwards has it.
        if id == "loa-late"
            && !matches!(
                rx.next_key_set(Duration::from_secs(5)).await,
                Ok(ReceiverEvent::KeySetApplied { .. })
            )
        {
            problems.push(format!("{id}: no key set from the restarted broker"));
        }
        stopped.push(rx);
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &seen.played {
            *counts.entry(p.as_str()).or_default() += 1;
        }
        let played: BTreeSet<String> = counts.keys().map(|s| s.to_string()).collect();
        if played != expected || counts.values().any(|&n| n != 1) || !seen.others.is_empty() {
            problems.push(format!("{id}: played {counts:?}, other events {:?}", seen.others));
        }
    }
    let stopping: Vec<_> = stopped.into_iter().map(|rx| tokio::spawn(rx.stop())).collect();
    for s in stopping {
        s.await.unwrap();
    }
    app.app.stop().await;
    drop(broker);
    assert!(
        problems.is_empty(),
        "each receiver must play each alert exactly once:\n{}",
        problems.join("\n")
    );
    eprintln!("done in {:?}", started.elapsed());
}

/// Another writer holds the SQLite file's write lock for a few seconds (a backup tool, an
/// operator's sqlite3 shell): `/readyz` says the database is locked, a write is refused
/// with a clear 503 and leaves nothing behind, and once the lock is gone the refused write
/// goes through on a retry, and the alert issued just before the lock is played and its
/// receipts stored (whatever of its dispatch the lock held up: a claim waits, a receipt
/// that could not be stored is acknowledged again on the resend).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_locked_by_another_writer_shows_in_readyz_refuses_writes_cleanly_and_loses_nothing() {
    use sqlx::{Connection, Executor};
    let app = TestApp::spawn_with(Broker::Embedded, &[("CANHBAO__OUTBOX__RESEND_S", "[2, 4]")])
        .await
        .unwrap();
    if !app.database_url.starts_with("sqlite:") {
        eprintln!(
            "this scenario locks the SQLite file: skipped on {}",
            app.database_url.split(':').next().unwrap_or("")
        );
        return;
    }
    let mut rx = app.start_receiver("06385", "loa-lock-1").await.unwrap();
    app.prime("HUULUNG", 19.4).await.unwrap();
    // Lạng Sơn's first reading too: the reading refused below is its second.
    app.prime("LANGSON", 256.5).await.unwrap();
    let (status, _, body) = app
        .post_observations(&canhbao_tests::observation_now("HUULUNG", 19.4))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let first = body["alerts"][0].as_str().expect("an alert").to_owned();

    // Another writer takes the lock at once, while the first alert is on its way.
    let mut writer = sqlx::SqliteConnection::connect(&app.database_url).await.unwrap();
    writer.execute("BEGIN IMMEDIATE").await.unwrap();
    let locked_at = Instant::now();
    let ready = app.http.get(format!("{}/readyz", app.base)).send().await.unwrap();
    let code = ready.status().as_u16();
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(
        (code, &ready["database"], &ready["broker"]),
        (503, &Value::from("locked"), &Value::from("ok")),
        "{ready}"
    );
    let observation = canhbao_tests::observation_now("LANGSON", 256.5);
    let (status, _, refused) = app.post_observations(&observation).await.unwrap();
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["type"], "/problems/database-unavailable", "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("nothing was written"),
        "{refused}"
    );
    writer.execute("ROLLBACK").await.unwrap();
    writer.close().await.unwrap();
    let held = locked_at.elapsed();

    let ready = app.http.get(format!("{}/readyz", app.base)).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    // The refused observation wrote nothing: its retry raises the alert now.
    let (status, _, body) = app.post_observations(&observation).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["alerts"].as_array().map(Vec::len), Some(1), "{body}");
    let (_, alerts) = app.get("/api/v1/alerts").await.unwrap();
    assert_eq!(
        alerts.as_array().map(Vec::len),
        Some(2),
        "no alert from the refused write: {alerts}"
    );

    // The first alert: played by the receiver, and the store knows it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match rx.next(Duration::from_secs(30)).await.unwrap() {
            ReceiverEvent::Played(a) if a.id == first => break,
            _ => assert!(Instant::now() < deadline, "the first alert was never played"),
        }
    }
    app.wait_for(&format!("/api/v1/alerts/{first}"), Duration::from_secs(30), |d| {
        d["receiver_deliveries"][0]["state"] == "played"
    })
    .await
    .unwrap();
    eprintln!(
        "write lock held {:.1} s; the first alert's receipt stored after it",
        held.as_secs_f64()
    );
    rx.stop().await;
}

/// What this test binary logged at WARN and above (every test's: each test reads only
/// what was written while its fault lasted).
static LOG: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends the service's log (WARN and above) to [`LOG`].
fn capture_log() {
    let _ = tracing_subscriber::fmt()
        .with_writer(|| LogWriter)
        .with_ansi(false)
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .try_init();
}

/// What `f` gives and how long it took.
async fn timed<T>(f: impl Future<Output = T>) -> (T, Duration) {
    let asked = Instant::now();
    let answer = f.await;
    (answer, asked.elapsed())
}

/// `/readyz`: its status and body.
async fn readiness(app: &TestApp) -> reqwest::Result<(u16, Value)> {
    let r = app.http.get(format!("{}/readyz", app.base)).send().await?;
    Ok((r.status().as_u16(), r.json().await?))
}

fn log_len() -> usize {
    LOG.lock().unwrap().len()
}

fn log_since(from: usize) -> String {
    String::from_utf8_lossy(&LOG.lock().unwrap()[from..]).into_owned()
}

/// PostgreSQL goes away for five seconds (a restart, a failover): every connection of the
/// app is closed and new ones are refused. Meanwhile `/readyz` says the database is
/// unreachable, a write is refused within seconds with a clear 503 and leaves nothing
/// behind, the log says why, and a receiver plays the alert published just before the cut
/// and sends receipts the app cannot store. Once PostgreSQL is back the app is ready again
/// within seconds, the refused write goes through on a retry, and the receipt is stored
/// (the app retries it, and a resend makes the receiver acknowledge again) while the alert
/// plays only once. The
/// app reaches the shared server through a proxy of its own, which is what the test cuts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_briefly_unreachable_shows_in_readyz_refuses_writes_cleanly_and_loses_nothing() {
    let Some(pg) = testkit::postgres::PgDatabase::from_env().await else {
        return;
    };
    capture_log();
    let started = Instant::now();
    let proxy = testkit::proxy::TcpProxy::start(&pg.server()).await.unwrap();
    let url = pg.url_via(proxy.addr());
    let app = TestApp::spawn_with(
        Broker::Embedded,
        &[
            ("CANHBAO__OUTBOX__RESEND_S", "[2, 4]"),
            ("CANHBAO__DATABASE__URL", &url),
        ],
    )
    .await
    .unwrap();
    app.register_receiver("06385", "loa-pg-1").await.unwrap();
    // Each station's first reading waits for the next (docs/rules.md, "Quality control").
    app.prime("HUULUNG", 19.4).await.unwrap();
    app.prime("LANGSON", 256.5).await.unwrap();
    let (status, _, body) = app
        .post_observations(&canhbao_tests::observation_now("HUULUNG", 19.4))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let first = body["alerts"][0].as_str().expect("an alert").to_owned();
    // Published (retained on the broker) but not yet received by anyone.
    app.wait_for(&format!("/api/v1/alerts/{first}"), Duration::from_secs(10), |d| {
        d["deliveries"]
            .as_array()
            .is_some_and(|ds| !ds.is_empty() && ds.iter().all(|d| d["state"] == "published"))
    })
    .await
    .unwrap();

    // PostgreSQL goes away; then the receiver comes online and plays the alert, and its
    // receipts reach an app that cannot store them.
    let log_from = log_len();
    let live = proxy.live();
    proxy.cut().await;
    let cut_at = Instant::now();
    let mut rx = app.start_unregistered_receiver("06385", "loa-pg-1").unwrap();
    // A probe and a write while it is away, side by side.
    let observation = canhbao_tests::observation_now("LANGSON", 256.5);
    let ((ready, readyz_took), (refused, write_took), (played, played_at)) = tokio::join!(
        timed(readiness(&app)),
        timed(app.post_observations(&observation)),
        timed(rx.next(Duration::from_secs(5)))
    );
    match played {
        Ok(ReceiverEvent::Played(a)) if a.id == first => {}
        other => panic!("the receiver did not play the alert while PostgreSQL was away: {other:?}"),
    }
    let (code, ready) = ready.unwrap_or_else(|e| panic!("/readyz while PostgreSQL was away: {e:?}"));
    assert_eq!(
        (code, &ready["database"], &ready["broker"]),
        (503, &Value::from("unreachable"), &Value::from("ok")),
        "{ready}"
    );
    let (refused_status, content_type, refused) =
        refused.unwrap_or_else(|e| panic!("a write while PostgreSQL was away: {e:?}"));
    assert_eq!(refused_status, 503, "{refused}");
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    assert_eq!(refused["type"], "/problems/database-unavailable", "{refused}");
    let detail = refused["detail"].as_str().unwrap_or_default().to_owned();
    assert!(detail.contains("nothing was written"), "{refused}");
    // A client (or a load balancer's probe) hears at once, not after a long hang.
    assert!(
        readyz_took < Duration::from_secs(3) && write_took < Duration::from_secs(6),
        "/readyz took {readyz_took:?} and the write {write_took:?} while PostgreSQL was away"
    );
    let stop_collecting = CancellationToken::new();
    let receiver = collect(rx, stop_collecting.clone());
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(cut_at.elapsed())).await;
    proxy.restore().await;
    let cut_for = cut_at.elapsed();
    let log = log_since(log_from);

    // Ready again within a bound.
    let restored = Instant::now();
    loop {
        let r = readiness(&app).await;
        if matches!(&r, Ok((200, _))) {
            break;
        }
        assert!(
            restored.elapsed() < Duration::from_secs(15),
            "not ready 15 s after PostgreSQL came back: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered = restored.elapsed();

    // The refused observation wrote nothing: its retry raises the alert now.
    let (status, _, body) = app.post_observations(&observation).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["alerts"].as_array().map(Vec::len), Some(1), "{body}");
    let (_, alerts) = app.get("/api/v1/alerts").await.unwrap();
    assert_eq!(
        alerts.as_array().map(Vec::len),
        Some(2),
        "no alert from the refused write: {alerts}"
    );

    // The first alert: played by the receiver, and the store knows it.
    app.wait_for(&format!("/api/v1/alerts/{first}"), Duration::from_secs(20), |d| {
        d["receiver_deliveries"][0]["state"] == "played"
    })
    .await
    .unwrap();
    let stored_after = restored.elapsed();
    // A resend (every 2 to 4 s) of what was already played would show up now.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop_collecting.cancel();
    let (rx, seen) = receiver.await.unwrap();
    rx.stop().await;
    app.app.stop().await;
    drop(proxy);

    assert!(
        seen.played.is_empty(),
        "the alert played during the cut must not play again: {seen:?}"
    );
    assert!(seen.others.is_empty(), "{seen:?}");
    // The log said what happened while it happened, in words an operator can act on.
    let said = |what: &[&str]| log.lines().any(|l| what.iter().all(|w| l.contains(w)));
    assert!(
        said(&["WARN", "readiness: database unreachable"])
            && said(&["ERROR", "request failed: database unavailable", "pool timed out"]),
        "the log while PostgreSQL was away:\n{log}"
    );
    eprintln!(
        "PostgreSQL cut for {:.1} s ({live} connections through the proxy when cut): /readyz \
         answered {ready} in {readyz_took:?}, the write {refused_status} in {write_took:?} ({detail:?}); \
         the receiver played the alert {played_at:?} into the cut; ready again {recovered:?} \
         after the restore, the receipt stored {stored_after:?} after it; done in {:?}\n\
         the log from the cut on:\n{}",
        cut_for.as_secs_f64(),
        started.elapsed(),
        log_since(log_from)
    );
}

/// An alert of 06385 from an officer, then its Update with an expiry `update_for` away;
/// returns (alert, update) once the receiver `rx` played both.
async fn alert_and_short_update(
    app: &TestApp,
    rx: &mut TestReceiver,
    update_for: Duration,
) -> (String, String) {
    let an = app.login_new_user("an.tran", "officer").await.unwrap();
    let draft = |headline: &str| {
        serde_json::json!({"hazard": "flood", "risk_level": 2, "communes": ["06385"],
            "headline": headline, "description": "Mực nước sông Thương lên.", "instruction": "",
            "valid_minutes": 120})
    };
    let alert = app
        .issue_warning(&an, &draft("Lũ trên sông Thương"))
        .await
        .unwrap();
    let mut update = draft("Cập nhật: lũ trên sông Thương, hết hiệu lực sớm");
    update["updates"] = Value::from(alert.clone());
    update["expires"] = Value::from(
        (chrono::Utc::now() + chrono::Duration::from_std(update_for).unwrap())
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    update.as_object_mut().unwrap().remove("valid_minutes");
    let update = app.issue_warning(&an, &update).await.unwrap();
    // Sent one after the other, the update may overtake the alert on a busy machine: the
    // receiver then plays the update and never the alert it replaced.
    let mut played = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !played.contains(&update) {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("the update never played; played {played:?}"));
        if let ReceiverEvent::Played(p) = rx.next(left).await.unwrap() {
            played.push(p.id.clone());
        }
    }
    assert!(
        played == [alert.clone(), update.clone()] || played == [update.clone()],
        "the alert then its update, or the update alone: {played:?}"
    );
    (alert, update)
}

/// After `restart`, nothing of `alert` (replaced by an Update that has since expired) is
/// broadcast: a receiver that connects for the first time plays nothing and finds no
/// retained copy, and the one that played it plays nothing more.
async fn nothing_replaced_comes_back(app: &TestApp, alert: &str, rx: &mut TestReceiver) {
    let mut late = app.start_receiver("06385", "loa-late").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match late.next(left).await {
            Ok(ReceiverEvent::Played(p)) => panic!("a receiver connecting late played {}", p.id),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    if let Ok(ReceiverEvent::Played(p)) = rx.next(Duration::from_millis(500)).await {
        panic!("the receiver that played it played {} again", p.id);
    }
    let retained = app.retained_alerts("06385").await.unwrap();
    assert!(
        !retained.iter().any(|id| id == alert),
        "the replaced alert {alert} is retained again: {retained:?}"
    );
    // And its topic was never published again.
    let (_, d) = app.get(&format!("/api/v1/alerts/{alert}")).await.unwrap();
    assert!(
        d["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["attempts"] == 1),
        "the replaced alert was published again: {d:#}"
    );
    late.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_alert_is_never_broadcast_again_after_its_short_update_expires_and_the_service_restarts() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let prefix = app.prefix.clone();
    let mut rx = app.start_receiver("06385", "loa-once").await.unwrap();
    let (alert, _update) = alert_and_short_update(&app, &mut rx, Duration::from_secs(4)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    rx.stop().await;
    // The embedded broker goes with the service: it comes back empty.
    let (dir, data_dir) = app.stop().await;
    let app = TestApp::spawn_in(&data_dir, &Broker::Embedded, &prefix)
        .await
        .unwrap();
    let mut rx = app.start_receiver("06385", "loa-once").await.unwrap();
    nothing_replaced_comes_back(&app, &alert, &mut rx).await;
    rx.stop().await;
    app.app.stop().await;
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_alert_is_never_broadcast_again_after_its_short_update_expires_and_the_broker_restarts_empty()
 {
    if testkit::skip_without(MOSQUITTO, Path::new(MOSQUITTO).exists()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = Mosquitto::start(dir.path(), port).unwrap();
    let app = TestApp::spawn(Broker::External(format!("mqtt://127.0.0.1:{port}")))
        .await
        .unwrap();
    let mut rx = app.start_receiver("06385", "loa-once").await.unwrap();
    let (alert, _update) = alert_and_short_update(&app, &mut rx, Duration::from_secs(4)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // The broker restarts without persistence: no retained message, no session.
    broker.kill();
    broker.launch().unwrap();
    // The service is back on it (and has rebuilt what it must) when its readiness says so.
    app.wait_for("/readyz", Duration::from_secs(20), |r| r["broker"] == "ok")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    nothing_replaced_comes_back(&app, &alert, &mut rx).await;
    rx.stop().await;
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_started_on_a_broker_that_lost_its_retained_messages_publishes_every_live_alert_again() {
    if testkit::skip_without(MOSQUITTO, Path::new(MOSQUITTO).exists()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = Mosquitto::start(dir.path(), port).unwrap();
    let url = Broker::External(format!("mqtt://127.0.0.1:{port}"));
    let app = TestApp::spawn(url.clone()).await.unwrap();
    let prefix = app.prefix.clone();
    let alert = app.issue_bulletin("LOST-1").await.unwrap();
    app.wait_for(&format!("/api/v1/alerts/{alert}"), Duration::from_secs(15), |d| {
        d["deliveries"]
            .as_array()
            .is_some_and(|v| !v.is_empty() && v.iter().all(|x| x["state"] == "published"))
    })
    .await
    .unwrap();
    assert_eq!(
        app.retained_alerts("06385").await.unwrap(),
        std::slice::from_ref(&alert)
    );
    // The service stops; the broker restarts without persistence while it is down.
    let (dir_app, data_dir) = app.stop().await;
    broker.kill();
    broker.launch().unwrap();
    let app = TestApp::spawn_in(&data_dir, &url, &prefix).await.unwrap();
    // Without waiting for anything else to happen, the live alert is retained again, and
    // a receiver that connects for the first time plays it.
    let mut retained = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while retained.is_empty() && Instant::now() < deadline {
        retained = app.retained_alerts("06385").await.unwrap();
    }
    assert_eq!(retained, std::slice::from_ref(&alert));
    let mut rx = app.start_receiver("06385", "loa-new").await.unwrap();
    match rx.next(Duration::from_secs(10)).await.unwrap() {
        ReceiverEvent::Played(p) => assert_eq!(p.id, alert),
        other => panic!("expected the live alert to play, got {other:?}"),
    }
    rx.stop().await;
    app.app.stop().await;
    drop(dir_app);
}
