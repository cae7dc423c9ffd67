//! Receipts prove something: a receipt counts only for an alert that was sent to the
//! receiver it names, and messages from made-up receiver ids cannot grow the database.
//! Both are counted in `/metrics`. (Who may publish on a receiver's topics is the
//! broker's ACL: `docs/security.md`.)

use std::time::{Duration, Instant};

use canhbao_tests::{Broker, TestApp};
use dispatch::Topics;
use domain::{ProvinceCode, ReceiverId};

/// A counter's value in `/metrics`.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_for_alerts_never_sent_and_heartbeats_from_made_up_ids_write_nothing_but_counters() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    app.register_receiver("06385", "loa-hl-1").await.unwrap();
    let topics = Topics::new(&app.prefix, ProvinceCode::new("20").unwrap()).unwrap();
    let (raw, stop) = app.raw_client().await.unwrap();
    let receiver = ReceiverId::new("loa-hl-1").unwrap();
    let now = chrono::Utc::now().to_rfc3339();
    for i in 0..2000 {
        let receipt = serde_json::json!({
            "v": 1, "alert_id": format!("khong-co-that-{i}"), "receiver_id": "loa-hl-1",
            "commune": "06385", "status": "played", "at": now,
        });
        raw.publish(
            &topics.receipt(&receiver),
            receipt.to_string().into_bytes(),
            false,
        )
        .await
        .unwrap();
    }
    for i in 0..1100 {
        let id = ReceiverId::new(&format!("loa-gia-{i}")).unwrap();
        let heartbeat = serde_json::json!({
            "v": 1, "receiver_id": id.as_str(), "commune": "06385", "at": now,
            "uptime_s": 1, "last_played": null,
        });
        raw.publish(&topics.heartbeat(&id), heartbeat.to_string().into_bytes(), false)
            .await
            .unwrap();
    }
    // Everything was taken in: the counters say so.
    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let m = app.get_text("/metrics").await.unwrap();
        if counter(&m, "canhbao_unsent_receipts_total") >= 2000
            && counter(&m, "canhbao_unregistered_messages_total") >= 1100
        {
            break m;
        }
        assert!(Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(counter(&metrics, "canhbao_unsent_receipts_total"), 2000);
    let store = app.app.store();
    for i in [0, 999, 1999] {
        let alert = format!("khong-co-that-{i}");
        assert!(
            store.receipts_for_alert(&alert).await.unwrap().is_empty(),
            "{alert}"
        );
    }
    assert_eq!(
        store.unregistered_ids().await.unwrap(),
        store::MAX_UNREGISTERED,
        "made-up ids cannot grow the table past its cap"
    );
    // The registered receiver is not marked online by receipts for nothing.
    let (_, fleet) = app.get("/api/v1/receivers").await.unwrap();
    let r = fleet["receivers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["receiver_id"] == "loa-hl-1")
        .unwrap();
    assert_eq!(r["health"], "never_seen", "{r}");
    stop.cancel();
    app.app.stop().await;
}

/// Hữu Lũng above BĐ3: the id of the alert it raises for commune 06385.
async fn flood_at_huu_lung(app: &TestApp) -> String {
    app.prime("HUULUNG", 19.4).await.unwrap();
    let (_, _, body) = app
        .post_observations(&canhbao_tests::observation_now("HUULUNG", 19.4))
        .await
        .unwrap();
    body["alerts"][0].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_alert_whose_retained_copy_another_client_clears_is_published_again() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let alert_id = flood_at_huu_lung(&app).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !app.retained_alerts("06385").await.unwrap().contains(&alert_id) {
        assert!(Instant::now() < deadline, "the alert was never retained");
    }
    // Anyone on the broker clears it, as an attacker (or a careless tool) would.
    let (raw, stop) = app.raw_client().await.unwrap();
    let topics = Topics::new(&app.prefix, ProvinceCode::new("20").unwrap()).unwrap();
    let topic = topics.alert(
        &domain::CommuneCode::new("06385").unwrap(),
        &domain::AlertId::new(&alert_id).unwrap(),
    );
    raw.publish(&topic, Vec::new(), true).await.unwrap();
    // A receiver connecting later still finds it: the service published it again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if app.retained_alerts("06385").await.unwrap().contains(&alert_id) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cleared alert was not published again"
        );
    }
    let (_, rejections) = app.get("/api/v1/rejections").await.unwrap();
    assert!(
        rejections.to_string().contains("was cleared by another client"),
        "{rejections}"
    );
    stop.cancel();
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_embedded_broker_nobody_else_forges_a_receivers_receipt_touches_alert_topics_or_takes_the_services_id()
 {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let mut rx = app.start_receiver("06385", "loa-acl-1").await.unwrap();
    let alert_id = flood_at_huu_lung(&app).await;
    loop {
        match rx.next(Duration::from_secs(15)).await.unwrap() {
            canhbao_receiver::ReceiverEvent::Played(a) if a.id == alert_id => break,
            _ => {}
        }
    }
    // A registered receiver that is not running: an anonymous client on the machine
    // forges its `played` receipt (which would stop the resends and the SMS fallback).
    // Only that receiver's own login may write its topics: the broker drops it.
    app.register_receiver("06385", "loa-acl-2").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (anon, stop) = app.anonymous_client().await.unwrap();
    let topics = Topics::new(&app.prefix, ProvinceCode::new("20").unwrap()).unwrap();
    let forged_receipt = serde_json::json!({
        "v": 1, "alert_id": alert_id, "receiver_id": "loa-acl-2", "commune": "06385",
        "status": "played", "at": chrono::Utc::now().to_rfc3339(),
    });
    anon.publish(
        &topics.receipt(&ReceiverId::new("loa-acl-2").unwrap()),
        forged_receipt.to_string().into_bytes(),
        false,
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let receipts = app.app.store().receipts_for_alert(&alert_id).await.unwrap();
    assert!(
        receipts.iter().all(|r| r.receiver_id != "loa-acl-2"),
        "a forged receipt was taken: {receipts:?}"
    );
    assert!(
        receipts
            .iter()
            .any(|r| r.receiver_id == "loa-acl-1" && r.status == "played"),
        "the real receiver's own receipt counts: {receipts:?}"
    );

    // A receiver registered straight into the store, without a broker password (as no
    // command or API call does): nobody may speak for it, and nobody may log in as it.
    app.app
        .store()
        .register_receiver(&store::RegisteredReceiver {
            receiver_id: "loa-acl-3".into(),
            commune: "06385".into(),
            password_hash: None,
            trusted_keys: vec![],
            firmware: None,
            registered: chrono::Utc::now(),
            drills: false,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut forged_receipt = forged_receipt.clone();
    forged_receipt["receiver_id"] = "loa-acl-3".into();
    anon.publish(
        &topics.receipt(&ReceiverId::new("loa-acl-3").unwrap()),
        forged_receipt.to_string().into_bytes(),
        false,
    )
    .await
    .unwrap();
    let (impostor, impostor_driver, _rx) = mqtt::connect(mqtt::MqttSettings {
        broker: app.broker.clone(),
        client_id: "rx-loa-acl-3".into(),
        username: Some("loa-acl-3".into()),
        password: Some("anything at all".into()),
        keep_alive: Duration::from_secs(30),
        persistent_session: false,
        subscriptions: vec![],
        last_will: None,
        on_connect: None,
        tls: Default::default(),
    });
    let stop_impostor = tokio_util::sync::CancellationToken::new();
    tokio::spawn(impostor_driver.run(stop_impostor.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !impostor.is_connected(),
        "a login as a receiver without a broker password was taken"
    );
    stop_impostor.cancel();
    let receipts = app.app.store().receipts_for_alert(&alert_id).await.unwrap();
    assert!(
        receipts.iter().all(|r| r.receiver_id != "loa-acl-3"),
        "a forged receipt was taken: {receipts:?}"
    );

    // It clears the alert's retained copy and publishes a forged envelope: the broker
    // drops both.
    let commune = domain::CommuneCode::new("06385").unwrap();
    let topic = topics.alert(&commune, &domain::AlertId::new(&alert_id).unwrap());
    anon.publish(&topic, Vec::new(), true).await.unwrap();
    let forged = topics.alert(&commune, &domain::AlertId::new("gia-mao-1").unwrap());
    anon.publish(
        &forged,
        br#"{"v":1,"key_id":"x","payload":"e30=","signature":"AA=="}"#.to_vec(),
        true,
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let retained = app.retained_alerts("06385").await.unwrap();
    assert_eq!(
        retained,
        std::slice::from_ref(&alert_id),
        "the live alert stays, nothing forged is kept"
    );
    // The receiver never saw the forgery (nothing to reject).
    while let Ok(ev) = rx.next(Duration::from_millis(500)).await {
        assert!(
            !matches!(&ev, canhbao_receiver::ReceiverEvent::Rejected { alert_id, .. } if alert_id == "gia-mao-1"),
            "{ev:?}"
        );
    }
    stop.cancel();

    // A client that connects with the service's client id is refused; the service stays on.
    let service_id = app.app.broker_service.as_ref().unwrap().client_id.clone();
    let (thief, _driver, _rx) = mqtt::connect(mqtt::MqttSettings {
        broker: app.broker.clone(),
        client_id: service_id,
        username: None,
        password: None,
        keep_alive: Duration::from_secs(30),
        persistent_session: true,
        subscriptions: vec![],
        last_will: None,
        on_connect: None,
        tls: Default::default(),
    });
    let stop_thief = tokio_util::sync::CancellationToken::new();
    tokio::spawn(_driver.run(stop_thief.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !thief.is_connected(),
        "the broker let another client take the service's id"
    );
    stop_thief.cancel();
    let (_, ready) = app.get("/readyz").await.unwrap();
    assert_eq!(ready["broker"], "ok", "{ready}");
    app.app.stop().await;
}

/// Connects to the app's broker (as `login`, or anonymously), subscribes to `filters` and
/// collects what arrives within `window`.
async fn read_as(
    app: &TestApp,
    login: Option<&str>,
    filters: &[String],
    window: Duration,
) -> Vec<mqtt::InboundMessage> {
    let (_handle, driver, mut rx) = mqtt::connect(mqtt::MqttSettings {
        broker: app.broker.clone(),
        client_id: format!("reader-{}-{}", login.unwrap_or("anon"), filters.len()),
        username: login.map(str::to_owned),
        password: login.map(|id| app.receiver_password(id).unwrap().into()),
        keep_alive: Duration::from_secs(30),
        persistent_session: false,
        subscriptions: filters.to_vec(),
        last_will: None,
        on_connect: None,
        tls: Default::default(),
    });
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(driver.run(stop.clone()));
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        got.push(m);
    }
    stop.cancel();
    got
}

fn topics_of(messages: &[mqtt::InboundMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.topic.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_embedded_broker_a_receiver_reads_only_its_commune_and_nobody_reads_what_receivers_send() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let mut rx = app.start_receiver("06385", "loa-doc-1").await.unwrap();
    let alert_id = flood_at_huu_lung(&app).await;
    loop {
        match rx.next(Duration::from_secs(15)).await.unwrap() {
            canhbao_receiver::ReceiverEvent::Played(a) if a.id == alert_id => break,
            _ => {}
        }
    }
    app.register_receiver("05977", "loa-khac-1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let topics = Topics::new(&app.prefix, ProvinceCode::new("20").unwrap()).unwrap();
    let huu_lung = domain::CommuneCode::new("06385").unwrap();
    let window = Duration::from_millis(1500);

    // Hữu Lũng's own receiver reads its alert; another commune's receiver gets nothing,
    // neither on Hữu Lũng's topics nor through a wildcard over the province.
    let own = read_as(
        &app,
        Some("loa-doc-1"),
        &[topics.alerts_filter(&huu_lung)],
        window,
    )
    .await;
    assert!(
        own.iter().any(|m| m.topic.ends_with(&alert_id)),
        "{:?}",
        topics_of(&own)
    );
    let other = read_as(
        &app,
        Some("loa-khac-1"),
        &[
            topics.alerts_filter(&huu_lung),
            format!("{}/20/+/alerts/+", app.prefix),
        ],
        window,
    )
    .await;
    assert!(
        other.is_empty(),
        "another commune's receiver read {:?}",
        topics_of(&other)
    );
    // The key set is for every receiver.
    let keys = read_as(&app, Some("loa-khac-1"), &[topics.key_set()], window).await;
    assert_eq!(keys.len(), 1, "{:?}", topics_of(&keys));

    // Nobody but the service reads receipts, heartbeats or statuses (the running receiver
    // sends a heartbeat every second); an anonymous client still reads public warnings.
    let snooped = read_as(
        &app,
        None,
        &[
            format!("{}/heartbeat/+", app.prefix),
            format!("{}/status/+", app.prefix),
            format!("{}/receipts/+", app.prefix),
            "#".to_owned(),
        ],
        Duration::from_millis(2500),
    )
    .await;
    assert!(
        snooped.is_empty(),
        "an anonymous client read {:?}",
        topics_of(&snooped)
    );
    let snooped = read_as(
        &app,
        Some("loa-khac-1"),
        &[format!("{}/heartbeat/+", app.prefix)],
        window,
    )
    .await;
    assert!(snooped.is_empty(), "a receiver read {:?}", topics_of(&snooped));
    let public = read_as(&app, None, &[topics.alerts_filter(&huu_lung)], window).await;
    assert!(
        public.iter().any(|m| m.topic.ends_with(&alert_id)),
        "{:?}",
        topics_of(&public)
    );
    rx.stop().await;
    app.app.stop().await;
}
