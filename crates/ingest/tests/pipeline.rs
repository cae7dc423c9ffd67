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

async fn pipeline() -> (tempfile::TempDir, Store, Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.path().join("t.db").display()))
        .await
        .unwrap();
    let policy = AlertPolicy {
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
    };
    let p = Pipeline::new(
        store.clone(),
        vec![huu_lung()],
        Arc::new(Signer::from_seed(&[1; 32])),
        Topics::new("canhbao/v1", ProvinceCode::new("20").unwrap()).unwrap(),
        policy,
        Arc::new(Notify::new()),
    );
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
            vec![reading("HUULUNG", 17.4, t - Duration::minutes(20))],
            &actual(),
            t,
        )
        .await
        .unwrap();
    assert_eq!(first.alerts.len(), 1);
    let second = p
        .accept(
            vec![reading("HUULUNG", 19.3, t - Duration::minutes(10))],
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
                reading("HUULUNG", 18.5, t - Duration::minutes(5)),
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
