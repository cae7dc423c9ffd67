#![allow(clippy::unwrap_used)]
//! An upgrade by the book (`docs/operations.md`, "Upgrade"), on PostgreSQL with two
//! instances, from the previous release's schema and data, in the worst hour: the old
//! release is dispatching three province-wide alerts to 130 loudspeakers and holds a
//! warning waiting for approval when one instance is killed and the other stopped. The
//! database is dumped, the upgraded binary starts on one instance (it migrates), then on
//! the other. Every loudspeaker plays every alert exactly once, and the warning written
//! before the upgrade is approved after it and played. Runs when both
//! `CANHBAO_TEST_MQTT_URL` and `CANHBAO_TEST_POSTGRES_URL` are set.
//!
//! The previous release is the one issue 20's field trial ran (schema 17, as landed
//! before migrations 18 and 19). Its data is made by this build at work and the schema
//! then taken back to 17 by undoing 18 and 19, which touch no table the alerts, the
//! deliveries, the registry or the warnings live in; the test checks that what it undid
//! leaves exactly the tables, columns and indexes that migrations 1 to 17 make.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{Fleet, Pair, communes, issue_province_alerts, tail, wait_all_played, wait_ready};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, Row};
use store::Store;
use testkit::postgres::PgDatabase;
use testkit::unique;

const RECEIVERS: usize = 130;

/// The release this one upgrades from: its schema version.
const PREVIOUS_RELEASE_SCHEMA: i64 = 17;

/// What each migration after the previous release added, undone: the previous release's
/// schema again. A new migration must add its line here (or the previous release move
/// on), or the schema check below fails.
const UNDO: &[(i64, &str)] = &[
    (18, "DROP TABLE login_failures;"),
    (
        19,
        "ALTER TABLE idempotency_keys DROP COLUMN lease_ms; \
         ALTER TABLE idempotency_keys DROP COLUMN alert_id;",
    ),
];

/// Tables with their columns and types, and index names, of the public schema.
async fn schema_of(url: &str) -> BTreeMap<String, String> {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let mut shape = BTreeMap::new();
    for row in sqlx::query(
        "SELECT table_name::TEXT, column_name::TEXT, data_type::TEXT, is_nullable::TEXT
         FROM information_schema.columns WHERE table_schema = 'public'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    {
        let (t, c, ty, null): (String, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        shape.insert(format!("{t}.{c}"), format!("{ty} {null}"));
    }
    for row in
        sqlx::query("SELECT indexname::TEXT, indexdef::TEXT FROM pg_indexes WHERE schemaname = 'public'")
            .fetch_all(&mut conn)
            .await
            .unwrap()
    {
        shape.insert(format!("index {}", row.get::<String, _>(0)), row.get(1));
    }
    shape
}

async fn migrations(url: &str) -> Vec<i64> {
    let mut conn = PgConnection::connect(url).await.unwrap();
    sqlx::query("SELECT version FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Takes the database back to the previous release's schema, in one transaction.
async fn back_to_previous_release(url: &str) {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    for (_, sql) in UNDO.iter().rev() {
        sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version > $1")
        .bind(PREVIOUS_RELEASE_SCHEMA)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn login(http: &reqwest::Client, base: &str, user: &str, password: &str) -> String {
    let r: Value = http
        .post(format!("{base}/api/v1/login"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{user}: {r}"))
        .to_owned()
}

async fn call(http: &reqwest::Client, token: &str, method: &str, url: String, body: Value) -> (u16, Value) {
    let r = http
        .request(method.parse().unwrap(), url)
        .bearer_auth(token)
        .header("idempotency-key", unique("upgrade-request"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_by_the_book_from_the_previous_release_loses_no_alert() {
    let Some(broker) = testkit::service("CANHBAO_TEST_MQTT_URL") else {
        return;
    };
    let Some(pg) = PgDatabase::from_env().await else {
        return;
    };
    assert_eq!(
        UNDO.iter().map(|u| u.0).collect::<Vec<_>>(),
        ((PREVIOUS_RELEASE_SCHEMA + 1)..=Store::schema_version()).collect::<Vec<_>>(),
        "every migration since the previous release is undone here"
    );
    let tmp = tempfile::tempdir().unwrap();
    // The previous release at work: two instances sharing the province's key, people,
    // loudspeakers, a warning waiting for its second person, and a dispatch under way.
    let Pair {
        a,
        b,
        service_a: old_a,
        service_b: old_b,
        token,
        http,
        prefix,
    } = Pair::start(tmp.path(), &pg.url, &broker, "cbupgrade").await;
    let password = "mật-khẩu-đủ-dài-2026";
    a.admin(
        &["users", "add", "an.tran", "--role", "officer", "--password-stdin"],
        password,
    );
    let an = login(&http, &a.base, "an.tran", password).await;
    let commune = communes()[0].clone();
    let (status, w) = call(
        &http,
        &an,
        "POST",
        format!("{}/api/v1/warnings", a.base),
        json!({
            "hazard": "flood", "risk_level": 3, "communes": [commune],
            "headline": "Lũ lớn trên sông Kỳ Cùng", "description": "Mực nước lên nhanh.",
            "instruction": "Chuẩn bị sơ tán.", "valid_minutes": 180,
        }),
    )
    .await;
    assert_eq!(status, 201, "{w}");
    let warning = w["id"].as_str().unwrap().to_owned();
    let (status, w) = call(
        &http,
        &an,
        "POST",
        format!("{}/api/v1/warnings/{warning}/submit", a.base),
        json!({}),
    )
    .await;
    assert_eq!((status, &w["warning"]["state"]), (202, &json!("pending")), "{w}");

    let fleet = Fleet::through(&http, &a, &token, tmp.path(), &broker, &prefix, RECEIVERS).await;
    let alerts = issue_province_alerts(&http, &a.base, &token, "UPGRADE").await;
    fleet.wait_for_plays(30).await;
    // The worst hour: one instance dies, the operator stops the other as the guide says
    // ("stop every instance"), with the dispatch unfinished.
    old_a.kill();
    let stopped = rustix::process::kill_process(
        rustix::process::Pid::from_raw(old_b.0.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    );
    assert!(stopped.is_ok());
    let mut old_b = old_b;
    let exit = old_b.0.wait().unwrap();
    assert!(
        exit.success(),
        "a stopped instance exits cleanly: {exit:?}\n{}",
        tail(&b.log)
    );
    drop(old_b);
    let before = fleet.plays();
    let total = RECEIVERS * alerts.len();
    assert!(
        before < total,
        "the upgrade came after the whole dispatch ({before} plays)"
    );

    // The previous release's schema, exactly.
    back_to_previous_release(&pg.url).await;
    let reference = PgDatabase::from_env().await.unwrap();
    drop(
        Store::open_at_schema(&reference.url, PREVIOUS_RELEASE_SCHEMA)
            .await
            .unwrap(),
    );
    assert_eq!(schema_of(&pg.url).await, schema_of(&reference.url).await);
    assert_eq!(
        migrations(&pg.url).await,
        (1..=PREVIOUS_RELEASE_SCHEMA).collect::<Vec<_>>()
    );

    // The guide: take a dump, readable by its owner alone.
    let dump = tmp.path().join("canhbao-before-upgrade.dump");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 077; pg_dump -Fc -d '{}' > '{}'",
            pg.url,
            dump.display()
        ))
        .output()
        .expect("pg_dump is installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta = std::fs::metadata(&dump).unwrap();
    assert!(meta.len() > 10_000, "a dump of {} bytes", meta.len());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    // Upgrade and start one instance: it migrates. Then the other.
    let upgraded = Instant::now();
    let _new_a = a.start();
    wait_ready(&http, &a.base, &a.log).await;
    assert_eq!(
        migrations(&pg.url).await,
        (1..=Store::schema_version()).collect::<Vec<_>>()
    );
    let _new_b = b.start();
    wait_ready(&http, &b.base, &b.log).await;

    // Nothing lost: the unfinished dispatch is finished, each loudspeaker playing each
    // alert once, and the warning written before the upgrade is approved after it.
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
    let finished = upgraded.elapsed();
    b.admin(
        &["users", "add", "chi.le", "--role", "approver", "--password-stdin"],
        password,
    );
    let chi = login(&http, &b.base, "chi.le", password).await;
    let (status, w) = call(
        &http,
        &chi,
        "GET",
        format!("{}/api/v1/warnings/{warning}", b.base),
        Value::Null,
    )
    .await;
    assert_eq!((status, &w["state"]), (200, &json!("pending")), "{w}");
    let (status, ok) = call(
        &http,
        &chi,
        "POST",
        format!("{}/api/v1/warnings/{warning}/approve", b.base),
        json!({"version": w["version"], "note": "sau nâng cấp"}),
    )
    .await;
    assert_eq!(status, 201, "{ok}");
    let approved = ok["alert_id"].as_str().unwrap().to_owned();
    let in_commune = fleet
        .ids
        .iter()
        .filter(|id| id.starts_with(&format!("sim-{commune}-")))
        .count();
    assert_eq!(in_commune, RECEIVERS / communes().len());
    wait_all_played(
        &http,
        &a.base,
        &token,
        std::slice::from_ref(&approved),
        in_commune,
        Duration::from_secs(60),
        &[&a.log, &b.log],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let played = fleet.played.lock().unwrap().clone();
    assert_eq!(played.len(), RECEIVERS, "every loudspeaker played");
    for (rx, ids) in &played {
        let mut got = ids.clone();
        got.sort();
        let mut want = alerts.clone();
        if rx.starts_with(&format!("sim-{commune}-")) {
            want.push(approved.clone());
        }
        want.sort();
        assert_eq!(got, want, "{rx} plays each of its alerts exactly once");
    }
    eprintln!(
        "{before} of {total} plays before the upgrade; the upgraded instances finished the \
         rest {:.1} s after the first one started",
        finished.as_secs_f64()
    );
    let mut all = alerts.clone();
    all.push(approved);
    fleet.stop_and_clean(&all).await;
    drop(reference);
    drop(pg);
}
