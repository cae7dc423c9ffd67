//! The observation-to-alert pipeline on a real SQLite file.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use dispatch::{Signer, Topics};
use domain::{AlertStatus, CommuneCode, Observation, ProvinceCode, Repeat, Station, StationId, Tag, Tagged};
use ingest::{AlertPolicy, Pipeline, Source};
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
    AlertPolicy {
        ttl: Duration::hours(6),
        max_reading_age: Duration::hours(3),
        repeat_emergency: Repeat {
            times: 3,
            interval_s: 300,
        },
        repeat_priority: Repeat {
            times: 2,
            interval_s: 600,
        },
        repeat_normal: Repeat {
            times: 1,
            interval_s: 0,
        },
        max_water_level_rate_m_per_h: Some(3.0),
    }
}

fn pipeline_on(store: &Store) -> Pipeline {
    Pipeline::new(
        store.clone(),
        vec![huu_lung()],
        Arc::new(Signer::from_seed(&[1; 32])),
        Topics::new("canhbao/v1", ProvinceCode::new("20").unwrap()).unwrap(),
        policy(),
        Arc::new(Notify::new()),
    )
}

async fn pipeline() -> (tempfile::TempDir, Store, Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.path().join("t.db").display()))
        .await
        .unwrap();
    let p = pipeline_on(&store);
    (dir, store, p)
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

#[tokio::test]
async fn an_escalation_is_an_update_referencing_the_live_alert_and_a_repeat_raises_nothing() {
    let (_d, store, p) = pipeline().await;
    let t = now();
    let first = p
        .accept(
            vec![reading("HUULUNG", 17.4, t - Duration::minutes(170))],
            &actual(),
            t,
        )
        .await
        .unwrap();
    assert_eq!(first.alerts.len(), 1);
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

#[tokio::test]
async fn an_exercise_never_stands_in_for_a_real_alert() {
    let (_d, _store, p) = pipeline().await;
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
        .accept(vec![reading("HUULUNG", 19.6, t)], &actual(), t)
        .await
        .unwrap();
    assert_eq!(
        real.alerts.len(),
        1,
        "a real BĐ3 crossing must be raised despite the live exercise"
    );
}

#[tokio::test]
async fn stale_and_out_of_order_readings_are_stored_but_raise_nothing() {
    let (_d, store, p) = pipeline().await;
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
    let late = p
        .accept(
            vec![reading("HUULUNG", 19.5, t - Duration::minutes(30))],
            &actual(),
            t,
        )
        .await
        .unwrap();
    assert_eq!(
        (late.stored, late.alerts.len()),
        (1, 0),
        "a newer reading exists: no alert from an old one"
    );
    assert_eq!(store.count_observations().await.unwrap(), 3);
}

#[tokio::test]
async fn a_batch_with_an_unknown_station_stores_nothing() {
    let (_d, store, p) = pipeline().await;
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

#[tokio::test]
async fn every_alert_is_signed_with_the_pipelines_key() {
    let (_d, store, p) = pipeline().await;
    let t = now();
    let r = p
        .accept(vec![reading("HUULUNG", 19.5, t)], &actual(), t)
        .await
        .unwrap();
    let a = store.get_alert(r.alerts[0].as_str()).await.unwrap().unwrap();
    let signer = Signer::from_seed(&[1; 32]);
    let mut keys = dispatch::TrustedKeys::default();
    keys.add(signer.public_key());
    let envelope = dispatch::wire::envelope_bytes(&a.signed);
    let payload =
        dispatch::wire::verify_envelope(&envelope, &keys, &a.id, &CommuneCode::new("06385").unwrap(), t)
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

#[tokio::test]
async fn auto_issue_rules_raise_alerts_pre_warnings_do_not_and_levels_survive_a_restart() {
    let (dir, store, p) = pipeline().await;
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
    drop(dir);
}

#[tokio::test]
async fn an_implausible_jump_is_flagged_and_not_stored() {
    let (_d, store, p) = pipeline().await;
    let t = now();
    p.accept(
        vec![reading("HUULUNG", 16.0, t - Duration::minutes(10))],
        &actual(),
        t,
    )
    .await
    .unwrap();
    // +5 m in 10 minutes is 30 m/h: a sensor fault, not a flood.
    let r = p
        .accept(vec![reading("HUULUNG", 21.0, t)], &actual(), t)
        .await
        .unwrap();
    assert_eq!((r.stored, r.alerts.len(), r.flagged.len()), (0, 0, 1), "{r:?}");
    assert!(r.flagged[0].contains("per hour"), "{:?}", r.flagged);
    assert_eq!(store.count_observations().await.unwrap(), 1);
    // A rise of 0.4 m in 10 minutes is plausible.
    let r = p
        .accept(
            vec![reading("HUULUNG", 16.4, t + Duration::minutes(10))],
            &actual(),
            t + Duration::minutes(10),
        )
        .await
        .unwrap();
    assert_eq!((r.stored, r.flagged.len()), (1, 0));
}
