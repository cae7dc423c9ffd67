//! The observation-to-alert pipeline on a real SQLite file and, when
//! `CANHBAO_TEST_POSTGRES_URL` is set, on PostgreSQL: quality control, the station
//! follower, and the rules engine, with a simulated clock.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use desk::{AlertPolicy, Pipeline, Source};
use domain::{AlertStatus, CommuneCode, Observation, ProvinceCode, Station, StationId, Tag, Tagged};
use protocol::{Signer, Topics};
use store::Store;
use tokio::sync::Notify;

fn huu_lung() -> Station {
    Station {
        id: StationId::new("HUULUNG").unwrap(),
        name: "Hữu Lũng".into(),
        river: "Trung".into(),
        basin: "Thương".into(),
        area_class: None,
        bd1_m: Some(Tagged::new(17.0, Tag::D)),
        bd2_m: Some(Tagged::new(18.0, Tag::M)),
        bd3_m: Some(Tagged::new(19.0, Tag::D)),
        historic_m: Some(Tagged::new(22.54, Tag::V)),
        communes: vec![CommuneCode::new("06385").unwrap()],
        communes_provisional: Some("test".into()),
    }
}

fn policy() -> AlertPolicy {
    AlertPolicy::default()
}

fn pipeline_on(store: &Store) -> Pipeline {
    pipeline_with(store, policy())
}

fn pipeline_with(store: &Store, policy: AlertPolicy) -> Pipeline {
    Pipeline::new(
        store.clone(),
        vec![huu_lung()],
        Arc::new(Signer::from_seed(&[1; 32])),
        Topics::new("canhbao/v1", ProvinceCode::new("20").unwrap()).unwrap(),
        policy,
        Arc::new(Notify::new()),
    )
}

/// One database for one test: a SQLite file in a directory of its own, or a PostgreSQL
/// database of its own.
type Db = testkit::db::TestDb;

use testkit::on_both_backends;

async fn pipeline(db: &Db) -> (Store, Pipeline) {
    let store = Store::open(db.url()).await.unwrap();
    let p = pipeline_on(&store);
    (store, p)
}

fn now() -> DateTime<Utc> {
    "2026-10-09T01:00:00Z".parse().unwrap()
}

fn reading(station: &str, value: f64, at: DateTime<Utc>) -> Observation {
    Observation::new(
        StationId::new(station).unwrap(),
        "water_level",
        value,
        "m",
        at,
        now(),
    )
    .unwrap()
}

fn actual() -> Source {
    Source {
        name: "test".into(),
        alert_status: AlertStatus::Actual,
    }
}

async fn an_escalation_is_an_update_referencing_the_live_alert_and_a_repeat_raises_nothing(db: Db) {
    let (store, p) = pipeline(&db).await;
    let t = now();
    // The station's first reading waits for the next to confirm it.
    let first = p
        .accept(
            vec![
                reading("HUULUNG", 16.0, t - Duration::minutes(240)),
                reading("HUULUNG", 17.4, t - Duration::minutes(170)),
            ],
            &actual(),
            t,
        )
        .await
        .unwrap();
    assert_eq!(first.alerts.len(), 1, "{first:?}");
    let second = p
        .accept(
            vec![reading("HUULUNG", 19.3, t - Duration::minutes(110))],
            &actual(),
            t,
        )
        .await
        .unwrap();
    assert_eq!(second.alerts.len(), 1);
    let update = store.get_alert(second.alerts[0].as_str()).await.unwrap().unwrap();
    assert_eq!(update.msg_type, "Update");
    assert_eq!(update.references, vec![first.alerts[0].to_string()]);
    assert_eq!(update.class, "emergency");
    assert_eq!(update.follow.as_deref(), Some("escalate"));

    // Falling and rising again to BĐ3 while that alert is live raises nothing new.
    let again = p
        .accept(
            vec![
                reading("HUULUNG", 18.5, t - Duration::minutes(60)),
                reading("HUULUNG", 19.2, t),
            ],
            &actual(),
            t,
        )
        .await
        .unwrap();
    assert_eq!((again.stored, again.alerts.len()), (2, 0));
    let deliveries = store.deliveries_for_alert(update.id.as_str()).await.unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(
        deliveries[0].topic,
        format!("canhbao/v1/20/06385/alerts/{}", update.id)
    );
}

async fn an_exercise_never_stands_in_for_a_real_alert(db: Db) {
    let (_store, p) = pipeline(&db).await;
    let t = now();
    let demo = Source {
        name: "demo".into(),
        alert_status: AlertStatus::Exercise,
    };
    let ex = p
        .accept(
            vec![reading("HUULUNG", 19.5, t - Duration::minutes(10))],
            &demo,
            t,
        )
        .await
        .unwrap();
    assert_eq!(ex.alerts.len(), 1);
    let real = p
        .accept(
            vec![
                reading("HUULUNG", 19.4, t - Duration::minutes(10)),
                reading("HUULUNG", 19.6, t),
            ],
            &actual(),
            t,
        )
        .await
        .unwrap();
    assert_eq!(
        real.alerts.len(),
        1,
        "a real BĐ3 state must be alerted despite the live exercise"
    );
}

async fn a_stale_reading_raises_nothing_and_a_late_one_counts_in_observation_order(db: Db) {
    let (store, p) = pipeline(&db).await;
    let t = now();
    let stale = p
        .accept(
            vec![reading("HUULUNG", 19.5, t - Duration::hours(4))],
            &actual(),
            t,
        )
        .await
        .unwrap();
    assert_eq!((stale.stored, stale.alerts.len()), (1, 0));
    p.accept(vec![reading("HUULUNG", 16.0, t)], &actual(), t)
        .await
        .unwrap();
    // A late reading older than the newest one: what the newest says still counts.
    let late = p
        .accept(
            vec![reading("HUULUNG", 16.2, t - Duration::minutes(30))],
            &actual(),
            t,
        )
        .await
        .unwrap();
    assert_eq!((late.stored, late.alerts.len()), (1, 0), "{late:?}");
    assert_eq!(store.count_observations().await.unwrap(), 3);
}

async fn a_batch_with_an_unknown_station_stores_nothing(db: Db) {
    let (store, p) = pipeline(&db).await;
    let t = now();
    let err = p
        .accept(
            vec![reading("HUULUNG", 19.5, t), reading("NOWHERE", 1.0, t)],
            &actual(),
            t,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("\"NOWHERE\""), "{err}");
    assert_eq!(store.count_observations().await.unwrap(), 0);
    assert!(store.list_alerts(10).await.unwrap().is_empty());
}

async fn every_alert_is_signed_with_the_pipelines_key(db: Db) {
    let (store, p) = pipeline(&db).await;
    let t = now();
    let r = p
        .accept(
            vec![
                reading("HUULUNG", 19.4, t - Duration::minutes(10)),
                reading("HUULUNG", 19.5, t),
            ],
            &actual(),
            t,
        )
        .await
        .unwrap();
    let a = store.get_alert(r.alerts[0].as_str()).await.unwrap().unwrap();
    let signer = Signer::from_seed(&[1; 32]);
    let mut keys = protocol::TrustedKeys::default();
    keys.add(signer.public_key());
    let envelope = protocol::wire::envelope_bytes(&a.signed);
    let payload =
        protocol::wire::verify_envelope(&envelope, &keys, &a.id, &CommuneCode::new("06385").unwrap(), t)
            .unwrap();
    assert_eq!(payload.status, "Actual");
    assert!(payload.provisional);
}

// ---- the rules engine inside the pipeline ----

const ENGINE_RULES: &str = r#"
[[rule]]
id = "test.cloudburst"
version = 1
hazard = "heavy_rain"
level = 3
provenance = "provisional"
reason = "a test rule"
action = "auto-issue"
inputs = ["rainfall"]
when = { accumulation = { parameter = "rainfall", hours = 1, direction = "past", ge = 50 } }

[[rule.example]]
name = "60 mm in the last hour"
expect = "fire"
readings = [{ parameter = "rainfall", value = 60 }]

[[rule.example]]
name = "10 mm"
expect = "no-fire"
readings = [{ parameter = "rainfall", value = 10 }]

[[rule]]
id = "test.fog"
version = 1
hazard = "fog"
level = 2
provenance = "official"
citation = "test"
action = "pre-warning"
inputs = ["visibility"]
when = { value = { parameter = "visibility", lt = 50 } }

[[rule.example]]
name = "40 m"
expect = "fire"
readings = [{ parameter = "visibility", value = 40 }]

[[rule.example]]
name = "400 m"
expect = "no-fire"
readings = [{ parameter = "visibility", value = 400 }]
"#;

fn engine_inputs() -> rules::Inputs {
    rules::Inputs {
        province_group: Some(2),
        stations: vec![huu_lung()],
        communes: vec![rules::eval::CommuneInfo {
            code: CommuneCode::new("06385").unwrap(),
            susceptibility: None,
            exposure: vec![],
            provisional: vec![],
        }],
        readings: Default::default(),
        bulletins: vec![],
    }
}

fn obs(param: &str, unit: &str, value: f64, at: DateTime<Utc>) -> Observation {
    Observation::new(StationId::new("HUULUNG").unwrap(), param, value, unit, at, now()).unwrap()
}

async fn auto_issue_rules_raise_alerts_pre_warnings_do_not_and_levels_survive_a_restart(db: Db) {
    let (store, p) = pipeline(&db).await;
    let set = rules::load(&[("t.toml".into(), ENGINE_RULES.into())]).unwrap();
    let p = p.with_engine(set.clone(), engine_inputs());
    let t = now();

    let r = p
        .accept(vec![obs("rainfall", "mm", 60.0, t)], &actual(), t)
        .await
        .unwrap();
    assert_eq!((r.alerts.len(), r.transitions), (1, 1), "{r:?}");
    let alert = store.get_alert(r.alerts[0].as_str()).await.unwrap().unwrap();
    assert_eq!(
        (alert.hazard.as_str(), alert.risk_level, alert.class.as_str()),
        ("heavy_rain", Some(3), "emergency")
    );
    assert!(alert.headline.contains("cấp 3"), "{}", alert.headline);
    assert_eq!(store.deliveries_for_alert(&alert.id).await.unwrap().len(), 1);

    let r = p
        .accept(vec![obs("visibility", "m", 40.0, t)], &actual(), t)
        .await
        .unwrap();
    assert_eq!(
        (r.alerts.len(), r.transitions),
        (0, 1),
        "a pre-warning issues nothing: {r:?}"
    );
    let log = store.list_assessments(10).await.unwrap();
    let fog = log.iter().find(|a| a.hazard == "fog").unwrap();
    assert_eq!(
        (fog.transition.as_str(), fog.action.as_str(), fog.level),
        ("new", "pre-warning", Some(2))
    );
    assert!(fog.alert_id.is_none());
    let rain = log.iter().find(|a| a.hazard == "heavy_rain").unwrap();
    assert_eq!(rain.alert_id.as_deref(), Some(alert.id.as_str()));

    // The same levels again announce nothing, even after a restart.
    let again = pipeline_on(&store).with_engine(set, engine_inputs());
    assert_eq!(again.restore_levels().await.unwrap(), 2);
    let t2 = t + Duration::minutes(5);
    let r = again
        .accept(vec![obs("visibility", "m", 30.0, t2)], &actual(), t2)
        .await
        .unwrap();
    assert_eq!((r.alerts.len(), r.transitions), (0, 0), "{r:?}");
}

// ---- quality control and the station follower, in the worst hour ----

/// A water level at Hữu Lũng observed at `at`.
fn level(value: f64, at: DateTime<Utc>) -> Observation {
    Observation::new(
        StationId::new("HUULUNG").unwrap(),
        "water_level",
        value,
        "m",
        at,
        at,
    )
    .unwrap()
}

/// Every real alert, oldest first.
async fn real_alerts(store: &Store) -> Vec<store::AlertRecord> {
    let filter = store::AlertFilter {
        status: Some("Actual".into()),
        ..Default::default()
    };
    let mut v: Vec<store::AlertRecord> = store
        .find_alerts(&filter, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    v.sort_by_key(|a| a.sent);
    v
}

/// The messages live at `t`: sent, not expired, not a Cancel, and not yet replaced by a
/// message that references them.
fn live_at(alerts: &[store::AlertRecord], t: DateTime<Utc>) -> Vec<&store::AlertRecord> {
    alerts
        .iter()
        .filter(|a| a.msg_type != "Cancel" && a.sent <= t && t < a.expires)
        .filter(|a| !alerts.iter().any(|b| b.sent <= t && b.references.contains(&a.id)))
        .collect()
}

/// Feeds readings one at a time, each when it is observed, with the follower's minute
/// ticks between them (every 10 minutes here); returns the alerts each reading raised.
async fn feed(p: &Pipeline, readings: &[(DateTime<Utc>, f64)]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut last: Option<DateTime<Utc>> = None;
    for &(at, v) in readings {
        if let Some(prev) = last {
            let mut tick = prev + Duration::minutes(10);
            while tick < at {
                p.follow_all(tick).await.unwrap();
                tick += Duration::minutes(10);
            }
        }
        let r = p.accept(vec![level(v, at)], &actual(), at).await.unwrap();
        out.push(r.alerts.iter().map(ToString::to_string).collect());
        last = Some(at);
    }
    out
}

fn every_10_min(start: DateTime<Utc>, values: &[f64]) -> Vec<(DateTime<Utc>, f64)> {
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| (start + Duration::minutes(10 * i as i64), v))
        .collect()
}

async fn a_crossing_that_arrives_late_is_alerted_when_a_fresh_reading_confirms_the_state(db: Db) {
    let (store, p) = pipeline(&db).await;
    let t = now();
    let old = p
        .accept(vec![level(19.5, t - Duration::hours(4))], &actual(), t)
        .await
        .unwrap();
    assert_eq!(
        (old.stored, old.alerts.len()),
        (1, 0),
        "a reading 4 hours old says nothing of now"
    );
    let fresh = p.accept(vec![level(19.6, t)], &actual(), t).await.unwrap();
    assert_eq!(fresh.alerts.len(), 1, "{fresh:?}");
    let a = store.get_alert(fresh.alerts[0].as_str()).await.unwrap().unwrap();
    assert_eq!(
        (a.msg_type.as_str(), a.alarm_level, a.class.as_str()),
        ("Alert", Some(3), "emergency")
    );
}

async fn readings_back_filled_at_once_raise_one_alert_at_the_current_level_on_arrival(db: Db) {
    let (store, p) = pipeline(&db).await;
    let t = now();
    // Four hours of 10-minute readings, from below BĐ1 to above BĐ3, in one batch.
    let batch: Vec<Observation> = (0..=24)
        .map(|i| {
            level(
                16.0 + 3.8 * f64::from(i) / 24.0,
                t - Duration::minutes(240 - 10 * i64::from(i)),
            )
        })
        .collect();
    let r = p.accept(batch, &actual(), t).await.unwrap();
    assert_eq!((r.stored, r.alerts.len()), (25, 1), "{r:?}");
    let alerts = real_alerts(&store).await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        (alerts[0].alarm_level, alerts[0].msg_type.as_str()),
        (Some(3), "Alert")
    );

    // A station that comes back after 34 hours, its peak of 24.3 m a minute ago: 205
    // readings, the last 18 fresh.
    let db2 = db.another().await;
    let (store, p) = pipeline(&db2).await;
    let peak = t - Duration::minutes(1);
    let batch: Vec<Observation> = (0..205)
        .map(|i| {
            let x = f64::from(i) / 204.0;
            level(
                15.0 + 9.3 * x * x,
                peak - Duration::minutes(10 * (204 - i64::from(i))),
            )
        })
        .collect();
    let r = p.accept(batch, &actual(), t).await.unwrap();
    assert_eq!((r.stored, r.alerts.len()), (205, 1), "{r:?}");
    assert_eq!(real_alerts(&store).await[0].alarm_level, Some(3));
}

async fn a_sustained_fast_rise_alerts_by_the_second_consistent_reading_past_each_level(db: Db) {
    let (store, p) = pipeline(&db).await;
    let t = now();
    // A steady hour, then 4 m/h over six 10-minute readings, through BĐ1, BĐ2 and BĐ3.
    let mut values = vec![16.30, 16.32, 16.35, 16.37, 16.38, 16.40];
    values.extend((1..=6).map(|i| 16.40 + 4.0 * f64::from(i) / 6.0));
    let series = every_10_min(t, &values);
    let raised = feed(&p, &series).await;
    let alerts = real_alerts(&store).await;
    for (threshold, level) in [(17.0, 1), (18.0, 2), (19.0, 3)] {
        let first_past = series.iter().position(|(_, v)| *v >= threshold).unwrap();
        let alert = alerts
            .iter()
            .find(|a| a.alarm_level == Some(level))
            .unwrap_or_else(|| panic!("no alert at BĐ{level}: {alerts:#?}"));
        let raised_at = raised.iter().position(|r| r.contains(&alert.id)).unwrap();
        assert!(
            raised_at <= first_past + 1,
            "BĐ{level}: first reading past it #{first_past}, alerted on #{raised_at}"
        );
    }
    // Nothing of the rise was thrown away: every reading is stored and `ok` at the end.
    let flags = store.readings_by_quality().await.unwrap();
    assert_eq!(flags, vec![("ok".to_owned(), values.len() as i64)]);
}

async fn a_one_reading_spike_raises_nothing_and_duty_officers_see_it(db: Db) {
    let (store, p) = pipeline(&db).await;
    store.create_user("an", "officer", "x", now()).await.unwrap();
    let t = now();
    let series = every_10_min(t, &[16.00, 16.02, 16.01, 21.01, 16.03, 16.04]);
    let raised = feed(&p, &series).await;
    assert!(raised.iter().all(Vec::is_empty), "{raised:?}");
    assert!(real_alerts(&store).await.is_empty());
    let events = store.quality_events(None, 100).await.unwrap();
    let spike = events
        .iter()
        .find(|e| e.quality == "suspect-spike")
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!((spike.value, spike.observed_at), (21.01, series[3].0));
    assert!(
        spike.reason.as_deref().unwrap_or("").contains("spike"),
        "{spike:?}"
    );
    // It was shown as suspect when it came, before the next reading told what it was.
    assert!(
        events
            .iter()
            .any(|e| e.quality == "suspect-rate" && e.value == 21.01)
    );
    let notes = store.notifications("user:an", 10).await.unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.kind == "reading.flagged" && n.text.contains("suspect-spike")),
        "{notes:#?}"
    );
}

async fn a_first_reading_above_bd3_is_shown_at_once_and_auto_issues_only_where_the_station_says(db: Db) {
    let (store, p) = pipeline(&db).await;
    store.create_user("an", "officer", "x", now()).await.unwrap();
    let t = now();
    let r = p.accept(vec![level(19.5, t)], &actual(), t).await.unwrap();
    assert_eq!((r.stored, r.alerts.len(), r.flagged.len()), (1, 0, 1), "{r:?}");
    assert!(r.flagged[0].contains("suspect-first"), "{:?}", r.flagged);
    let notes = store.notifications("user:an", 10).await.unwrap();
    assert!(
        notes.iter().any(|n| n.text.contains("suspect-first")),
        "{notes:#?}"
    );
    // The next reading agrees: the state is BĐ3 and it is alerted.
    let t2 = t + Duration::minutes(10);
    let r = p.accept(vec![level(19.55, t2)], &actual(), t2).await.unwrap();
    assert_eq!(r.alerts.len(), 1, "{r:?}");

    // A station whose policy accepts first readings alerts on the first one.
    let db2 = db.another().await;
    let store2 = Store::open(db2.url()).await.unwrap();
    let mut accepting = policy();
    accepting.first_reading_at.insert(
        StationId::new("HUULUNG").unwrap(),
        rules::quality::FirstReading::Accept,
    );
    let p2 = pipeline_with(&store2, accepting);
    let r = p2.accept(vec![level(19.5, t)], &actual(), t).await.unwrap();
    assert_eq!((r.alerts.len(), r.flagged.len()), (1, 0), "{r:?}");
}

async fn a_stuck_sensor_is_flagged_and_never_ends_a_level(db: Db) {
    let (store, p) = pipeline(&db).await;
    let t = now();
    let mut values = vec![18.6, 18.8, 19.0, 19.2, 19.3, 19.35];
    // Then the sensor sticks below BĐ3 for ten hours.
    values.extend(std::iter::repeat_n(18.5, 60));
    let series = every_10_min(t, &values);
    feed(&p, &series).await;
    let alerts = real_alerts(&store).await;
    assert!(
        alerts
            .iter()
            .all(|a| !matches!(a.follow.as_deref(), Some("de-escalate" | "all-clear"))),
        "a stuck sensor lowered a level: {alerts:#?}"
    );
    let end = series.last().unwrap().0;
    let mut at = alerts[0].sent;
    while at <= end {
        assert_eq!(live_at(&alerts, at).len(), 1, "at {at}: {alerts:#?}");
        at += Duration::minutes(5);
    }
    let events = store.quality_events(None, 1000).await.unwrap();
    let stuck = events.iter().filter(|e| e.quality == "stuck").count();
    assert!(stuck >= 20, "{events:#?}");
    assert!(
        events
            .iter()
            .find(|e| e.quality == "stuck")
            .and_then(|e| e.reason.as_deref())
            .is_some_and(|r| r.contains("unchanged at 18.50")),
        "{events:#?}"
    );
}

async fn a_flood_held_above_bd3_for_48_hours_has_one_live_alert_at_every_moment(db: Db) {
    let (store, p) = pipeline(&db).await;
    let t = now();
    let mut values: Vec<f64> = (0..12).map(|i| 18.3 + 0.12 * f64::from(i)).collect();
    // 48 hours above BĐ3 (19.00 m), moving as a river does.
    values.extend((0..48 * 6).map(|i| {
        let h = f64::from(i) / 6.0;
        19.9 + 0.6 * (h / 12.0 * std::f64::consts::TAU).sin() + 0.02 * (f64::from(i) * 1.7).sin()
    }));
    let series = every_10_min(t, &values);
    feed(&p, &series).await;
    let alerts = real_alerts(&store).await;
    let first_bd3 = alerts
        .iter()
        .find(|a| a.alarm_level == Some(3))
        .map(|a| a.sent)
        .unwrap();
    let end = series.last().unwrap().0;
    let mut at = first_bd3;
    while at <= end {
        let live = live_at(&alerts, at);
        assert_eq!(live.len(), 1, "at {at}: {live:#?}");
        assert_eq!(live[0].alarm_level, Some(3), "at {at}");
        at += Duration::minutes(5);
    }
    // Restated every 2 hours while fresh readings hold BĐ3 (the cadence of emergency flood
    // bulletins), so never only renewed before expiry.
    let restated: Vec<_> = alerts
        .iter()
        .filter(|a| a.follow.as_deref() == Some("restate"))
        .map(|a| a.sent)
        .collect();
    assert!(
        (22..=24).contains(&restated.len()),
        "{} restatements in 48 hours",
        restated.len()
    );
    for w in restated.windows(2) {
        assert_eq!(w[1] - w[0], Duration::hours(2), "{restated:?}");
    }
    assert!(!alerts.iter().any(|a| a.follow.as_deref() == Some("renew")));
    // Each was replaced before it expired; the last one is still live at the end.
    for a in &alerts {
        let replaced = alerts
            .iter()
            .filter(|b| b.references.contains(&a.id))
            .map(|b| b.sent)
            .min();
        match replaced {
            Some(r) => assert!(r < a.expires, "{} expired at {} before {r}", a.id, a.expires),
            None => assert!(a.expires > end, "the last alert {} ended at {}", a.id, a.expires),
        }
    }
    // A restatement is announced again: its signed payload is not a silent renewal.
    let restatement = alerts
        .iter()
        .find(|a| a.follow.as_deref() == Some("restate"))
        .unwrap();
    let payload: serde_json::Value = serde_json::from_slice(&restatement.signed.payload).unwrap();
    assert_ne!(payload["renewal"], true);
    assert_eq!(payload["msg_type"], "Update");
}

async fn a_falling_river_comes_down_after_the_hold_and_ends_with_an_all_clear(db: Db) {
    let (store, p) = pipeline(&db).await;
    let t = now();
    let mut values: Vec<f64> = (0..30).map(|i| 16.0 + 0.12 * f64::from(i)).collect();
    values.extend((0..60).map(|i| 19.48 - 0.06 * f64::from(i)));
    values.extend((0..30).map(|i| 15.9 - 0.01 * f64::from(i)));
    feed(&p, &every_10_min(t, &values)).await;
    let alerts = real_alerts(&store).await;
    // Renewals and restatements keep the level while it holds (here BĐ3, restated
    // before the hold ran out).
    let same = |a: &store::AlertRecord| matches!(a.follow.as_deref(), Some("renew" | "restate"));
    for w in alerts.windows(2) {
        if same(&w[1]) {
            assert_eq!(w[1].alarm_level, w[0].alarm_level, "{alerts:#?}");
        }
    }
    let steps: Vec<(&str, Option<i64>)> = alerts
        .iter()
        .filter(|a| !same(a))
        .map(|a| (a.follow.as_deref().unwrap_or("-"), a.alarm_level))
        .collect();
    assert_eq!(
        steps,
        [
            ("issue", Some(1)),
            ("escalate", Some(2)),
            ("escalate", Some(3)),
            ("de-escalate", Some(2)),
            ("de-escalate", Some(1)),
            ("all-clear", None),
        ],
        "{alerts:#?}"
    );
    let clear = alerts.last().unwrap();
    assert_eq!(
        (clear.msg_type.as_str(), clear.class.as_str()),
        ("Update", "priority")
    );
    assert!(
        clear.headline.starts_with("Hết cảnh báo lũ"),
        "{}",
        clear.headline
    );
    // Every message of the incident is referenced by the all-clear.
    assert_eq!(clear.references.len(), alerts.len() - 1);
}

async fn after_a_restart_a_state_that_no_live_alert_covers_is_alerted_without_a_new_reading(db: Db) {
    // Without restatements, so that the alert expires while its readings are fresh.
    let store = Store::open(db.url()).await.unwrap();
    let quiet = AlertPolicy {
        restate_emergency: None,
        restate_priority: None,
        ..policy()
    };
    let p = pipeline_with(&store, quiet.clone());
    let t = now();
    let values: Vec<f64> = (0..30).map(|i| 19.2 + 0.01 * f64::from(i)).collect();
    let series = every_10_min(t, &values);
    feed(&p, &series).await;
    let before = real_alerts(&store).await;
    let head = before.last().unwrap().clone();
    // The service is down past the alert's expiry, while the last reading is still fresh
    // when it comes back (it had sent its renewal? No: it was down before it was due).
    let back = head.expires + Duration::minutes(5);
    let last = series.last().unwrap().0;
    assert!(
        back - last < Duration::hours(3),
        "the readings must still be fresh"
    );
    let restarted = pipeline_with(&store, quiet);
    let done = restarted.follow_all(back).await.unwrap();
    assert_eq!(done.len(), 1, "{done:?}");
    let after = real_alerts(&store).await;
    let new = after.last().unwrap();
    assert_eq!(
        (new.msg_type.as_str(), new.alarm_level, new.follow.as_deref()),
        ("Alert", Some(3), Some("issue"))
    );
    // And once is enough.
    assert!(
        restarted
            .follow_all(back + Duration::minutes(1))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn an_officers_cancel_is_not_undone_while_the_river_stays_where_it_was(db: Db) {
    let (store, p) = pipeline(&db).await;
    let t = now();
    let series = every_10_min(t, &[19.2, 19.3, 19.35]);
    feed(&p, &series).await;
    let alert = real_alerts(&store).await.pop().unwrap();
    let at = t + Duration::minutes(25);
    p.cancel(&alert.id, "cảm biến sai", "user:an", at).await.unwrap();
    let more = every_10_min(t + Duration::minutes(30), &[19.4, 19.38, 19.42]);
    let raised = feed(&p, &more).await;
    assert!(raised.iter().all(Vec::is_empty), "{raised:?}");
    // The river falls below BĐ1 and rises again: a new incident.
    let again = every_10_min(
        t + Duration::minutes(60),
        &[19.0, 18.6, 18.2, 17.8, 17.4, 17.0, 16.7, 16.9, 17.2, 17.4],
    );
    let raised = feed(&p, &again).await;
    let new: Vec<&String> = raised.iter().flatten().collect();
    assert_eq!(new.len(), 1, "{raised:?}");
    let a = store.get_alert(new[0]).await.unwrap().unwrap();
    assert_eq!((a.msg_type.as_str(), a.alarm_level), ("Alert", Some(1)));
}

// ---- a station's historic flood, raised from its own readings (issue 18, finding 4) ----

/// The shipped rule files (`config/rules`).
fn shipped_rules() -> rules::RuleSet {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/rules");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| (p.display().to_string(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    files.sort();
    rules::load(&files).unwrap()
}

/// Flood levels of Hữu Lũng's commune, as the engine recorded them, oldest first.
async fn flood_levels(store: &Store) -> Vec<(String, Option<i64>)> {
    let mut log = store.list_assessments(1000).await.unwrap();
    log.retain(|a| a.hazard == "flood" && a.commune == "06385");
    log.reverse();
    log.into_iter().map(|a| (a.transition, a.level)).collect()
}

async fn a_reading_above_the_historic_flood_is_told_and_once_confirmed_raises_it_for_the_rules(db: Db) {
    let store = Store::open(db.url()).await.unwrap();
    store.create_user("an", "officer", "x", now()).await.unwrap();
    // Hữu Lũng as area 4, historic 23.96 m [V] (9 October 2025): above it, level 5.
    let mut station = huu_lung();
    station.area_class = Some(4);
    station.historic_m = Some(Tagged::new(23.96, Tag::V));
    let mut inputs = engine_inputs();
    inputs.stations = vec![station.clone()];
    let p = Pipeline::new(
        store.clone(),
        vec![station],
        Arc::new(Signer::from_seed(&[1; 32])),
        Topics::new("canhbao/v1", ProvinceCode::new("20").unwrap()).unwrap(),
        policy(),
        Arc::new(Notify::new()),
    )
    .with_engine(shipped_rules(), inputs);
    let t = now();
    // Rising 0.1 m every 10 minutes from 23.5 m to 24.3 m.
    let rise: Vec<f64> = (0..=8).map(|i| 23.5 + 0.1 * f64::from(i)).collect();
    feed(&p, &every_10_min(t, &rise)).await;
    assert_eq!(
        flood_levels(&store).await.last().map(|(_, l)| *l),
        Some(Some(5)),
        "above the historic flood: {:?}",
        flood_levels(&store).await
    );
    // Officers are told once, not at each higher reading; the highest is kept.
    let notes: Vec<_> = store
        .notifications("user:an", 50)
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.kind == "station.historic-exceeded")
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].text.contains("23,96 m"), "{}", notes[0].text);
    let peak_at = t + Duration::minutes(80);
    let candidates = store.historic_candidates().await.unwrap();
    assert_eq!(candidates.len(), 1);
    assert!((candidates[0].value_m - 24.3).abs() < 1e-9 && candidates[0].observed_at == peak_at);

    // Confirmation needs a reason and a stored good reading above the level in force.
    let later = t + Duration::minutes(90);
    assert!(matches!(
        p.confirm_historic("HUULUNG", peak_at, " ", "admin", later).await,
        Err(desk::historic::HistoricError::NoReason)
    ));
    assert!(matches!(
        p.confirm_historic(
            "HUULUNG",
            peak_at + Duration::minutes(1),
            "kiểm tra",
            "admin",
            later
        )
        .await,
        Err(desk::historic::HistoricError::NoReading { .. })
    ));
    assert!(matches!(
        p.confirm_historic("HUULUNG", t, "kiểm tra", "admin", later).await,
        Err(desk::historic::HistoricError::NotAbove { .. })
    ));
    assert!(matches!(
        p.confirm_historic("NOWHERE", peak_at, "kiểm tra", "admin", later)
            .await,
        Err(desk::historic::HistoricError::UnknownStation(_))
    ));
    assert!(
        store.historic_levels().await.unwrap().is_empty(),
        "nothing half-written"
    );
    let h = p
        .confirm_historic(
            "HUULUNG",
            peak_at,
            "đối chiếu cọc thủy chí tại trạm",
            "admin",
            later,
        )
        .await
        .unwrap();
    assert!((h.value_m - 24.3).abs() < 1e-9);
    let audit = store.list_audit(10).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.action == "station.historic" && a.target == "HUULUNG" && a.actor == "admin"),
        "{audit:?}"
    );
    // The same reading cannot be confirmed twice: it no longer exceeds the level in force.
    assert!(matches!(
        p.confirm_historic("HUULUNG", peak_at, "lại", "admin", later)
            .await,
        Err(desk::historic::HistoricError::NotAbove { .. })
    ));

    // The rules use it at once: the river held at 24.0-24.1 m, above the old historic
    // flood but below the new one, comes down to level 4 after the hold.
    let held: Vec<f64> = (0..30)
        .map(|i| 24.05 + 0.05 * (f64::from(i) * 0.7).sin())
        .collect();
    feed(&p, &every_10_min(t + Duration::minutes(90), &held)).await;
    let levels = flood_levels(&store).await;
    assert_eq!(
        levels.last(),
        Some(&("de-escalate".to_owned(), Some(4))),
        "{levels:?}"
    );
    // And a reading above the new level is told again.
    feed(
        &p,
        &[
            (t + Duration::minutes(400), 24.2),
            (t + Duration::minutes(410), 24.4),
        ],
    )
    .await;
    let told = store
        .notifications("user:an", 50)
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.kind == "station.historic-exceeded")
        .count();
    assert_eq!(told, 2);
}

// ---- who confirms an Emergency (issue 18): one on an unverified figure waits ----

/// Hữu Lũng with its BĐ3 tagged M (as Lạng Sơn's is): a crossing of it is an Emergency
/// resting on a figure not verified.
fn unverified_bd3() -> Station {
    let mut s = huu_lung();
    s.bd3_m = Some(Tagged::new(19.0, Tag::M));
    s
}

fn pipeline_for(store: &Store, station: Station, policy: AlertPolicy) -> Pipeline {
    Pipeline::new(
        store.clone(),
        vec![station],
        Arc::new(Signer::from_seed(&[1; 32])),
        Topics::new("canhbao/v1", ProvinceCode::new("20").unwrap()).unwrap(),
        policy,
        Arc::new(Notify::new()),
    )
}

/// Crosses BĐ3 (readings every 10 minutes) and returns the BĐ3 alert and when it was sent.
async fn cross_bd3(store: &Store, p: &Pipeline) -> store::AlertRecord {
    feed(p, &every_10_min(now(), &[18.6, 18.8, 19.1, 19.3, 19.4])).await;
    real_alerts(store)
        .await
        .into_iter()
        .find(|a| a.alarm_level == Some(3))
        .expect("a BĐ3 alert")
}

async fn an_emergency_on_an_unverified_figure_waits_for_an_officer_then_goes_out_anyway(db: Db) {
    let store = Store::open(db.url()).await.unwrap();
    store.create_user("an", "officer", "x", now()).await.unwrap();
    let p = pipeline_for(&store, unverified_bd3(), policy());
    let a = cross_bd3(&store, &p).await;
    assert_eq!(a.class, "emergency");
    let until = a.sent + Duration::minutes(10);
    assert_eq!(a.held_until, Some(until), "{a:?}");
    // Officers are told at once why it waits and until when.
    let note = store
        .notifications("user:an", 50)
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.kind == "alert.held")
        .expect("officers are told");
    assert_eq!(note.alert_id.as_deref(), Some(a.id.as_str()));
    assert!(note.text.contains("chưa được xác minh"), "{}", note.text);
    // Nothing goes out while it waits, not even the SMS fallback to officials.
    let mine = |c: &[store::ClaimedDelivery]| c.iter().filter(|d| d.alert_id == a.id).count();
    let lease = Duration::seconds(30);
    assert_eq!(
        mine(
            &store
                .claim_due(a.sent + Duration::minutes(5), lease, 100)
                .await
                .unwrap()
        ),
        0
    );
    let fallback = store
        .fallback_candidates(a.sent + Duration::minutes(5), 100)
        .await
        .unwrap();
    assert!(fallback.iter().all(|c| c.alert_id != a.id), "{fallback:?}");
    // Without a confirmation, it goes out at its deadline, to every commune.
    assert_eq!(
        mine(&store.claim_due(until, lease, 100).await.unwrap()),
        a.communes.len()
    );
    let fallback = store.fallback_candidates(until, 100).await.unwrap();
    let c = fallback
        .iter()
        .find(|c| c.alert_id == a.id)
        .expect("a candidate once out");
    assert_eq!(c.sent, until, "the fallback's time counts from when it went out");
    // Too late to confirm now.
    assert!(
        !p.release(&a.id, "user:an", until + Duration::minutes(1))
            .await
            .unwrap()
    );
}

async fn an_officer_confirms_a_waiting_emergency_and_verified_figures_never_wait(db: Db) {
    let store = Store::open(db.url()).await.unwrap();
    let p = pipeline_for(&store, unverified_bd3(), policy());
    let a = cross_bd3(&store, &p).await;
    let at = a.sent + Duration::minutes(2);
    assert!(p.release(&a.id, "user:an", at).await.unwrap());
    assert!(!p.release(&a.id, "user:an", at).await.unwrap(), "once");
    let lease = Duration::seconds(30);
    let claimed = store.claim_due(at, lease, 100).await.unwrap();
    assert_eq!(
        claimed.iter().filter(|d| d.alert_id == a.id).count(),
        a.communes.len()
    );
    let audit = store.list_audit(10).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r.action == "alert.release" && r.target == a.id && r.actor == "user:an")
    );
    // Its restatement two hours on is not held again: the warning is already out.
    feed(&p, &every_10_min(now() + Duration::minutes(50), &[19.45; 14])).await;
    let restated: Vec<_> = real_alerts(&store)
        .await
        .into_iter()
        .filter(|x| x.follow.as_deref() == Some("restate"))
        .collect();
    assert!(!restated.is_empty());
    assert!(restated.iter().all(|x| x.held_until.is_none()), "{restated:?}");

    // A verified BĐ3 (Hữu Lũng's is D) goes out at once; so does any, with the policy off.
    for (station, policy) in [
        (huu_lung(), policy()),
        (
            unverified_bd3(),
            AlertPolicy {
                confirm_unverified_emergency: None,
                ..policy()
            },
        ),
    ] {
        let db2 = db.another().await;
        let store = Store::open(db2.url()).await.unwrap();
        let p = pipeline_for(&store, station, policy);
        let a = cross_bd3(&store, &p).await;
        assert_eq!(a.held_until, None);
        let claimed = store.claim_due(a.sent, lease, 100).await.unwrap();
        assert_eq!(
            claimed.iter().filter(|d| d.alert_id == a.id).count(),
            a.communes.len()
        );
    }
}

// ---- a risk level that lasts is restated, and only while it holds (issue 18, cadence) ----

async fn a_risk_level_that_holds_is_restated_at_its_cadence_and_stops_when_it_ends(db: Db) {
    let (store, p) = pipeline(&db).await;
    let set = rules::load(&[("t.toml".into(), ENGINE_RULES.into())]).unwrap();
    let p = p.with_engine(set, engine_inputs());
    let t = now();
    let r = p
        .accept(vec![obs("rainfall", "mm", 60.0, t)], &actual(), t)
        .await
        .unwrap();
    let first = store.get_alert(r.alerts[0].as_str()).await.unwrap().unwrap();
    assert_eq!((first.risk_level, first.class.as_str()), (Some(3), "emergency"));
    assert!(
        p.restate_risk_alerts(t + Duration::minutes(119))
            .await
            .unwrap()
            .is_empty()
    );
    // Two hours on, an Emergency is restated: an Update of the incident, same level.
    let again = p.restate_risk_alerts(t + Duration::hours(2)).await.unwrap();
    assert_eq!(again.len(), 1);
    let b = store.get_alert(again[0].as_str()).await.unwrap().unwrap();
    assert_eq!(
        (
            b.msg_type.as_str(),
            b.risk_level,
            b.class.as_str(),
            b.hazard.as_str()
        ),
        ("Update", Some(3), "emergency", "heavy_rain")
    );
    assert_eq!(b.references, vec![first.id.clone()]);
    assert_eq!(b.communes, first.communes);
    assert!(b.headline.contains("(tiếp theo)"), "{}", b.headline);
    assert!(
        b.description.contains("10 giờ 00 phút ngày 09/10/2026"),
        "the time of now: {}",
        b.description
    );
    assert!(
        p.restate_risk_alerts(t + Duration::minutes(121))
            .await
            .unwrap()
            .is_empty(),
        "once"
    );
    // The rain stops: once the level has ended, nothing more is restated.
    for i in 0..24 {
        let at = t + Duration::minutes(130 + 10 * i);
        let dry =
            Observation::new(StationId::new("HUULUNG").unwrap(), "rainfall", 0.0, "mm", at, at).unwrap();
        p.accept(vec![dry], &actual(), at).await.unwrap();
    }
    assert!(
        !store
            .area_levels("Actual")
            .await
            .unwrap()
            .iter()
            .any(|(h, _, _)| h == "heavy_rain"),
        "the level ended"
    );
    assert!(
        p.restate_risk_alerts(t + Duration::hours(6))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_bulletins_level_is_restated_citing_the_live_bulletin_and_not_after_it_ends(db: Db) {
    let (store, p) = pipeline(&db).await;
    let set = rules::load(&[("t.toml".into(), ENGINE_RULES.into())]).unwrap();
    let p = p.with_engine(set, engine_inputs());
    let t = now();
    let bulletin = |id: &str, at: DateTime<Utc>| rules::eval::Bulletin {
        id: id.into(),
        sender: "Đài KTTV khu vực Việt Bắc".into(),
        hazard: domain::Hazard::Flood,
        level: domain::RiskLevel::new(4),
        communes: vec![CommuneCode::new("06385").unwrap()],
        effective: at,
        expires: at + Duration::hours(12),
        authoritative: true,
        emergency: false,
        grade: None,
    };
    let change = |id: &str, replaces: Vec<String>, bulletins| desk::bulletin::BulletinChange {
        identifier: id.into(),
        status: AlertStatus::Actual,
        authoritative: true,
        bulletins,
        replaces,
    };
    let r = p
        .accept_bulletin(&change("LU-1", vec![], vec![bulletin("LU-1", t)]), t)
        .await
        .unwrap();
    assert_eq!(r.alerts.len(), 1, "{r:?}");
    let restated = p.restate_risk_alerts(t + Duration::hours(2)).await.unwrap();
    let b = store.get_alert(restated[0].as_str()).await.unwrap().unwrap();
    assert!(b.description.contains("LU-1"), "{}", b.description);
    assert_eq!(b.origin_kind, "bulletin");
    // The next bulletin states the same level: no new alert, and the next restatement
    // cites it.
    let t3 = t + Duration::hours(3);
    let r = p
        .accept_bulletin(
            &change("LU-2", vec!["LU-1".into()], vec![bulletin("LU-2", t3)]),
            t3,
        )
        .await
        .unwrap();
    assert!(r.alerts.is_empty(), "{r:?}");
    let restated = p.restate_risk_alerts(t + Duration::hours(4)).await.unwrap();
    let c = store.get_alert(restated[0].as_str()).await.unwrap().unwrap();
    assert!(c.description.contains("LU-2"), "{}", c.description);
    // The bulletin is cancelled: its level is not restated any more.
    let t5 = t + Duration::hours(5);
    p.accept_bulletin(&change("LU-3", vec!["LU-2".into()], vec![]), t5)
        .await
        .unwrap();
    assert!(
        p.restate_risk_alerts(t + Duration::hours(6))
            .await
            .unwrap()
            .is_empty()
    );
    // Once the level has failed to hold for the hold time, the rules' timer ends it
    // without any new data, and the end is announced to the communes that heard it.
    assert!(
        p.evaluate_rules(t5 + Duration::minutes(170))
            .await
            .unwrap()
            .alerts
            .is_empty()
    );
    let later = t5 + Duration::minutes(190);
    let r = p.evaluate_rules(later).await.unwrap();
    assert_eq!(r.alerts.len(), 1, "{r:?}");
    let end = store.get_alert(r.alerts[0].as_str()).await.unwrap().unwrap();
    assert_eq!(
        (end.msg_type.as_str(), end.follow.as_deref(), end.hazard.as_str()),
        ("Update", Some("all-clear"), "flood")
    );
    assert!(end.references.contains(&c.id), "{end:?}");
}

async fn a_bulletin_that_lowers_the_level_is_announced_as_an_update_at_the_lower_level(db: Db) {
    let (store, p) = pipeline(&db).await;
    let set = rules::load(&[("t.toml".into(), ENGINE_RULES.into())]).unwrap();
    let p = p.with_engine(set, engine_inputs());
    let t = now();
    let bulletin = |id: &str, level: u8| rules::eval::Bulletin {
        id: id.into(),
        sender: "Đài KTTV khu vực Việt Bắc".into(),
        hazard: domain::Hazard::Flood,
        level: domain::RiskLevel::new(level),
        communes: vec![CommuneCode::new("06385").unwrap()],
        effective: t,
        expires: t + Duration::hours(12),
        authoritative: true,
        emergency: false,
        grade: None,
    };
    let change = |id: &str, replaces: Vec<String>, level| desk::bulletin::BulletinChange {
        identifier: id.into(),
        status: AlertStatus::Actual,
        authoritative: true,
        bulletins: vec![bulletin(id, level)],
        replaces,
    };
    let first = p.accept_bulletin(&change("LU-1", vec![], 4), t).await.unwrap();
    let at = t + Duration::minutes(30);
    let r = p
        .accept_bulletin(&change("LU-2", vec!["LU-1".into()], 2), at)
        .await
        .unwrap();
    assert_eq!(r.alerts.len(), 1, "{r:?}");
    let down = store.get_alert(r.alerts[0].as_str()).await.unwrap().unwrap();
    assert_eq!(
        (down.msg_type.as_str(), down.risk_level, down.class.as_str()),
        ("Update", Some(2), "priority")
    );
    assert_eq!(down.references, vec![first.alerts[0].to_string()]);
    assert!(down.headline.contains("hạ xuống cấp 2"), "{}", down.headline);
    assert!(down.description.contains("LU-2"), "{}", down.description);
}

async fn two_instances_never_announce_the_same_level_twice(db: Db) {
    let store = Store::open(db.url()).await.unwrap();
    let set = rules::load(&[("t.toml".into(), ENGINE_RULES.into())]).unwrap();
    let a = pipeline_on(&store).with_engine(set.clone(), engine_inputs());
    let b = pipeline_on(&store).with_engine(set, engine_inputs());
    let t = now();
    let r = a
        .accept(vec![obs("rainfall", "mm", 60.0, t)], &actual(), t)
        .await
        .unwrap();
    assert_eq!(r.alerts.len(), 1);
    // The next batch goes to the other instance, which has not seen that level.
    let t2 = t + Duration::minutes(5);
    let wet = Observation::new(StationId::new("HUULUNG").unwrap(), "rainfall", 61.0, "mm", t2, t2).unwrap();
    let r = b.accept(vec![wet], &actual(), t2).await.unwrap();
    assert_eq!((r.alerts.len(), r.transitions), (0, 0), "{r:?}");
    // And its timer says nothing new either.
    assert_eq!(b.evaluate_rules(t2).await.unwrap().transitions, 0);
}

on_both_backends!(
    an_escalation_is_an_update_referencing_the_live_alert_and_a_repeat_raises_nothing,
    an_exercise_never_stands_in_for_a_real_alert,
    a_stale_reading_raises_nothing_and_a_late_one_counts_in_observation_order,
    a_batch_with_an_unknown_station_stores_nothing,
    every_alert_is_signed_with_the_pipelines_key,
    auto_issue_rules_raise_alerts_pre_warnings_do_not_and_levels_survive_a_restart,
    a_crossing_that_arrives_late_is_alerted_when_a_fresh_reading_confirms_the_state,
    readings_back_filled_at_once_raise_one_alert_at_the_current_level_on_arrival,
    a_sustained_fast_rise_alerts_by_the_second_consistent_reading_past_each_level,
    a_one_reading_spike_raises_nothing_and_duty_officers_see_it,
    a_first_reading_above_bd3_is_shown_at_once_and_auto_issues_only_where_the_station_says,
    a_stuck_sensor_is_flagged_and_never_ends_a_level,
    a_flood_held_above_bd3_for_48_hours_has_one_live_alert_at_every_moment,
    a_falling_river_comes_down_after_the_hold_and_ends_with_an_all_clear,
    after_a_restart_a_state_that_no_live_alert_covers_is_alerted_without_a_new_reading,
    an_officers_cancel_is_not_undone_while_the_river_stays_where_it_was,
    a_reading_above_the_historic_flood_is_told_and_once_confirmed_raises_it_for_the_rules,
    an_emergency_on_an_unverified_figure_waits_for_an_officer_then_goes_out_anyway,
    an_officer_confirms_a_waiting_emergency_and_verified_figures_never_wait,
    a_risk_level_that_holds_is_restated_at_its_cadence_and_stops_when_it_ends,
    a_bulletins_level_is_restated_citing_the_live_bulletin_and_not_after_it_ends,
    a_bulletin_that_lowers_the_level_is_announced_as_an_update_at_the_lower_level,
    two_instances_never_announce_the_same_level_twice,
);
