//! End-to-end scenarios through the real wiring: HTTP in, rules, outbox, broker,
//! receiver, receipts back, and the operator's view.

#![allow(clippy::unwrap_used)]

mod authz;
mod console;
mod hostile;
mod http;
mod keys;
mod login;
mod receipts;
mod tls;
mod warnings;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use canhbao_receiver::ReceiverEvent;
use canhbao_tests::{Broker, TestApp, external_broker, live_bulletin, observation_now};
use dispatch::Signer;
use dispatch::wire::{Envelope, envelope_bytes};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

fn receipts_of<'a>(detail: &'a Value, receiver: &str) -> Vec<&'a Value> {
    detail["receivers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["receiver_id"] == receiver)
        .flat_map(|r| r["receipts"].as_array().into_iter().flatten())
        .collect()
}

fn has_receipt(detail: &Value, receiver: &str, status: &str) -> bool {
    receipts_of(detail, receiver)
        .iter()
        .any(|r| r["status"] == status)
}

/// Posts a reading above BĐ3 at Hữu Lũng and follows the alert to a receiver of Xã Hữu
/// Lũng (06385) and its receipts back to the API. Returns the alert id.
async fn alert_reaches_receiver_and_is_receipted(app: &TestApp) -> String {
    let mut rx = app.start_receiver("06385", "loa-06385-01").await.unwrap();
    app.prime("HUULUNG", 19.4).await.unwrap();
    let (status, _, body) = app
        .post_observations(&observation_now("HUULUNG", 19.4))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let alert_id = body["alerts"][0].as_str().expect("one alert raised").to_owned();

    match rx.next(WAIT).await.unwrap() {
        ReceiverEvent::Played(alert) => {
            assert_eq!(alert.id, alert_id);
            assert_eq!(alert.class, "emergency", "BĐ3 plays as an emergency");
            assert_eq!(alert.alarm_level, Some(3));
            assert_eq!(alert.status, "Actual");
            assert!(alert.headline.contains("Hữu Lũng"), "{}", alert.headline);
            assert!(alert.description.contains("19,40 m"), "{}", alert.description);
        }
        other => panic!("expected the alert to play, got {other:?}"),
    }

    let detail = app
        .wait_for(&format!("/api/v1/alerts/{alert_id}"), WAIT, |d| {
            has_receipt(d, "loa-06385-01", "played")
        })
        .await
        .unwrap();
    assert!(has_receipt(&detail, "loa-06385-01", "received"));
    assert_eq!(detail["alert"]["communes"], serde_json::json!(["06385"]));
    let deliveries = detail["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0]["state"], "published");
    assert_eq!(deliveries[0]["commune"], "06385");
    rx.stop().await;
    alert_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observation_above_bd3_reaches_a_receiver_verified_and_receipted_on_the_embedded_broker() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    alert_reaches_receiver_and_is_receipted(&app).await;
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observation_above_bd3_reaches_a_receiver_verified_and_receipted_on_mosquitto() {
    let Some(broker) = external_broker() else {
        return;
    };
    let app = TestApp::spawn(broker).await.unwrap();
    alert_reaches_receiver_and_is_receipted(&app).await;
    app.app.stop().await;
}

/// Re-publishes the genuine envelope of `alert_id` with `mutate` applied, not retained.
async fn publish_forgery(app: &TestApp, alert_id: &str, mutate: impl FnOnce(Envelope) -> Envelope) {
    let (_, detail) = app.get(&format!("/api/v1/alerts/{alert_id}")).await.unwrap();
    let topic = detail["deliveries"][0]["topic"].as_str().unwrap().to_owned();
    let (raw, stop) = app.raw_client().await.unwrap();
    // The genuine envelope, as a subscriber receives it.
    let genuine = genuine_envelope(app, &topic).await;
    let forged = mutate(genuine);
    raw.publish(&topic, serde_json::to_vec(&forged).unwrap(), false)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
}

async fn genuine_envelope(app: &TestApp, topic: &str) -> Envelope {
    let (_, driver, mut rx) = mqtt::connect(mqtt::MqttSettings {
        broker: app.broker.clone(),
        client_id: format!("peek-{}", std::process::id()),
        username: None,
        password: None,
        keep_alive: Duration::from_secs(30),
        persistent_session: false,
        subscriptions: vec![topic.to_owned()],
        last_will: None,
        on_connect: None,
        tls: Default::default(),
    });
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(driver.run(stop.clone()));
    let msg = tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap();
    stop.cancel();
    assert!(msg.retain, "a live alert is retained on its topic");
    serde_json::from_slice(&msg.payload).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_envelopes_are_rejected_by_the_receiver_and_the_rejections_show_in_the_receipts() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let alert_id = alert_reaches_receiver_and_is_receipted(&app).await;

    // A second receiver of the same commune gets the genuine alert first (retained).
    let mut rx = app.start_receiver("06385", "loa-06385-02").await.unwrap();
    assert!(matches!(rx.next(WAIT).await.unwrap(), ReceiverEvent::Played(_)));

    // Altered payload, original signature: the text now claims a lower level.
    publish_forgery(&app, &alert_id, |mut env| {
        let payload = String::from_utf8(B64.decode(&env.payload).unwrap()).unwrap();
        env.payload = B64.encode(payload.replace("19,40", "9,40"));
        env
    })
    .await;
    match rx.next(WAIT).await.unwrap() {
        ReceiverEvent::Rejected { alert_id: id, reason } => {
            assert_eq!(id, alert_id);
            assert_eq!(reason.code(), "bad_signature");
        }
        other => panic!("a tampered envelope must be rejected, got {other:?}"),
    }

    // Signed by a key the receiver does not trust.
    publish_forgery(&app, &alert_id, |env| {
        let payload = B64.decode(&env.payload).unwrap();
        let rogue = Signer::from_seed(&[7u8; 32]);
        serde_json::from_slice(&envelope_bytes(&rogue.sign(payload))).unwrap()
    })
    .await;
    match rx.next(WAIT).await.unwrap() {
        ReceiverEvent::Rejected { reason, .. } => assert_eq!(reason.code(), "unknown_key"),
        other => panic!("an unknown key must be rejected, got {other:?}"),
    }

    // Signed with the service's own key (as a stolen key or a replay could be): an expired
    // copy, and another version under an id already played.
    let seed = B64
        .decode(
            std::fs::read_to_string(app.data_dir.join("signing.key"))
                .unwrap()
                .trim(),
        )
        .unwrap();
    let service = Signer::from_seed(&seed.try_into().unwrap());
    let resign = |env: Envelope, change: &dyn Fn(&mut Value)| {
        let mut payload: Value = serde_json::from_slice(&B64.decode(&env.payload).unwrap()).unwrap();
        change(&mut payload);
        let bytes = serde_json::to_vec(&payload).unwrap();
        serde_json::from_slice::<Envelope>(&envelope_bytes(&service.sign(bytes))).unwrap()
    };
    publish_forgery(&app, &alert_id, |env| {
        resign(env, &|p| p["expires"] = "2020-01-01T00:00:00Z".into())
    })
    .await;
    match rx.next(WAIT).await.unwrap() {
        ReceiverEvent::Rejected { reason, .. } => assert_eq!(reason.code(), "expired"),
        other => panic!("an expired copy must be rejected, got {other:?}"),
    }
    publish_forgery(&app, &alert_id, |env| {
        resign(env, &|p| p["headline"] = "Nước đã rút".into())
    })
    .await;
    match rx.next(WAIT).await.unwrap() {
        ReceiverEvent::Rejected { reason, .. } => assert_eq!(reason.code(), "replayed"),
        other => panic!("another version of a played id must be rejected, got {other:?}"),
    }

    // Each kind of refusal is visible for this receiver in the API; none played.
    let codes = |d: &Value| {
        let mut c: Vec<String> = receipts_of(d, "loa-06385-02")
            .into_iter()
            .filter(|r| r["status"] == "rejected")
            .map(|r| {
                r["reason"]
                    .as_str()
                    .unwrap()
                    .split(':')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        c.sort();
        c
    };
    let detail = app
        .wait_for(&format!("/api/v1/alerts/{alert_id}"), WAIT, |d| {
            codes(d).len() == 4
        })
        .await
        .unwrap();
    assert_eq!(
        codes(&detail),
        ["bad_signature", "expired", "replayed", "unknown_key"],
        "{detail:#}"
    );
    let played: Vec<&Value> = receipts_of(&detail, "loa-06385-02")
        .into_iter()
        .filter(|r| r["status"] == "played")
        .collect();
    assert_eq!(played.len(), 1, "only the genuine alert played: {detail:#}");
    assert!(
        has_receipt(&detail, "loa-06385-02", "played"),
        "the genuine alert still played"
    );
    rx.stop().await;
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_precisely_and_store_nothing() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();

    // Malformed: 400, problem+json naming the field.
    let bad = observation_now("HUULUNG", 19.4).replace("19.4", "\"19.4\"");
    let (status, ctype, body) = app.post_observations(&bad).await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(ctype.as_deref(), Some("application/problem+json"));
    assert_eq!(body["field"], "value", "{body}");
    assert_eq!(body["status"], 400);

    // One bad item in a batch: the good one is not stored either.
    let batch = format!(
        "[{},{}]",
        observation_now("HUULUNG", 19.4),
        observation_now("HUULUNG", 19.5).replace("\"m\"", "\"cm\"")
    );
    let (status, _, body) = app.post_observations(&batch).await.unwrap();
    assert_eq!(status, 400);
    assert_eq!(body["field"], "[1].unit", "{body}");

    // Every bad row is listed, not just the first.
    let batch = format!(
        "[{},{},{}]",
        observation_now("HUULUNG", 1e9),
        observation_now("HUULUNG", 19.4),
        observation_now("huu lung", 19.5)
    );
    let (status, _, body) = app.post_observations(&batch).await.unwrap();
    assert_eq!(status, 400);
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["[0].value", "[2].station"], "{body}");

    // A station token writes only for its own stations, and the whole batch is refused.
    let station_token = app
        .create_token("station", "Hữu Lũng gauge", &["HUULUNG"])
        .await
        .unwrap();
    let batch = format!(
        "[{},{}]",
        observation_now("HUULUNG", 16.0),
        observation_now("LANGSON", 250.0)
    );
    let (status, _, body) = app
        .post_observations_as(Some(&station_token), &batch)
        .await
        .unwrap();
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["errors"][0]["field"], "[1].station", "{body}");

    // Unknown station: 422, every unknown row listed.
    let (status, ctype, body) = app
        .post_observations(&observation_now("NOWHERE", 19.4))
        .await
        .unwrap();
    assert_eq!(status, 422, "{body}");
    assert_eq!(ctype.as_deref(), Some("application/problem+json"));
    assert_eq!(body["field"], "station");

    // No token, or a wrong one: 401.
    let (status, _, _) = app
        .post_observations_as(None, &observation_now("HUULUNG", 19.4))
        .await
        .unwrap();
    assert_eq!(status, 401);
    let (status, _, _) = app
        .post_observations_as(Some("cbk_not-a-real-token"), &observation_now("HUULUNG", 19.4))
        .await
        .unwrap();
    assert_eq!(status, 401);
    let resp = app
        .http
        .get(format!("{}/api/v1/alerts", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "reads need a token too");

    // Nothing was stored or raised, and the operator can see what was refused.
    let (_, alerts) = app.get("/api/v1/alerts").await.unwrap();
    assert_eq!(alerts, serde_json::json!([]));
    let (_, rejections) = app.get("/api/v1/rejections").await.unwrap();
    let reasons: Vec<&str> = rejections
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.iter().any(|r| r.contains("[1].unit")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("NOWHERE")), "{reasons:?}");

    // A valid reading still works afterwards, and a repeat of it is a duplicate.
    let good = observation_now("HUULUNG", 16.0);
    let (status, _, body) = app.post_observations(&good).await.unwrap();
    assert_eq!((status, body["stored"].as_u64()), (200, Some(1)), "{body}");
    let (_, _, body) = app.post_observations(&good).await.unwrap();
    assert_eq!(body["duplicates"], 1, "{body}");
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_alert_survives_a_restart_of_the_embedded_broker_for_a_receiver_that_was_offline() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let prefix = app.prefix.clone();
    app.prime("HUULUNG", 19.6).await.unwrap();
    let (_, _, body) = app
        .post_observations(&observation_now("HUULUNG", 19.6))
        .await
        .unwrap();
    let alert_id = body["alerts"][0].as_str().unwrap().to_owned();
    app.wait_for(&format!("/api/v1/alerts/{alert_id}"), WAIT, |d| {
        d["deliveries"][0]["state"] == "published"
    })
    .await
    .unwrap();
    let (dir, data_dir) = app.stop().await;

    // The embedded broker's retained messages died with it; the restart rebuilds them.
    let app = TestApp::spawn_in(&data_dir, &Broker::Embedded, &prefix)
        .await
        .unwrap();
    let mut rx = app.start_receiver("06385", "loa-late").await.unwrap();
    match rx.next(WAIT).await.unwrap() {
        ReceiverEvent::Played(alert) => assert_eq!(alert.id, alert_id),
        other => panic!("expected the live alert after restart, got {other:?}"),
    }
    rx.stop().await;
    app.app.stop().await;
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_public_keys_answer_without_a_token() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let get = |p: &str| app.http.get(format!("{}{p}", app.base)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    let ready: Value = get("/readyz").await.unwrap().json().await.unwrap();
    assert_eq!(ready, serde_json::json!({"database": "ok", "broker": "ok"}));
    let keys: Value = get("/api/v1/keys").await.unwrap().json().await.unwrap();
    assert_eq!(keys[0]["key_id"], app.app.key_id.as_str());
    assert_eq!(keys[0]["public_key"], app.app.public_key_b64.as_str());
    let resp = get("/api/v1/nothing-here").await.unwrap();
    assert_eq!(resp.status(), 404);
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn computed_risk_levels_become_visible_pre_warnings_not_broadcasts() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    // 40 m visibility at Hữu Lũng: Xã Hữu Lũng (06385) is mapped, provisionally, on the
    // expressway, where Art. 51 gives fog level 2.
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let body = format!(
        r#"{{"station":"HUULUNG","parameter":"visibility","value":40,"unit":"m","observed_at":"{at}"}}"#
    );
    let (status, _, report) = app.post_observations(&body).await.unwrap();
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["alerts"],
        serde_json::json!([]),
        "a pre-warning is not broadcast"
    );

    let (_, view) = app.get("/api/v1/assessments").await.unwrap();
    let t = &view["transitions"][0];
    assert_eq!(t["hazard"], "fog");
    assert_eq!(t["commune"], "06385");
    assert_eq!(t["transition"], "new");
    assert_eq!(t["level"], 2);
    assert_eq!(t["action"], "pre-warning");
    assert_eq!(
        t["official"], false,
        "the expressway mapping is provisional: {t:#}"
    );
    assert_eq!(t["rules"], serde_json::json!(["fog.art51.l2@1"]));
    let reasons = t["detail"]["provisional_reasons"].to_string();
    assert!(
        reasons.contains("expressway exposure of 06385 is provisional"),
        "{reasons}"
    );
    assert_eq!(
        view["levels"],
        serde_json::json!([{"hazard": "fog", "commune": "06385", "level": 2}])
    );

    // An observed BĐ3 crossing still alerts at once, while Art. 45 gives no risk level
    // without the station's area class, and says so.
    app.prime("HUULUNG", 19.4).await.unwrap();
    let (_, _, report) = app
        .post_observations(&observation_now("HUULUNG", 19.4))
        .await
        .unwrap();
    assert_eq!(report["alerts"].as_array().unwrap().len(), 1, "{report}");
    let (_, view) = app.get("/api/v1/assessments").await.unwrap();
    assert_eq!(
        view["coinciding"],
        serde_json::json!([]),
        "only fog has a risk level: {view:#}"
    );
    app.app.stop().await;
}

/// POSTs a CAP bulletin with `token`; the status and the JSON answer.
async fn post_bulletin(app: &TestApp, token: String, body: Vec<u8>) -> (u16, Value) {
    let r = app
        .http
        .post(format!("{}/api/v1/bulletins", app.base))
        .bearer_auth(token)
        .header("content-type", "application/cap+xml")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json::<Value>().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulletin_is_trusted_by_its_channel_and_an_unvouched_one_only_raises_as_a_pre_warning() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let sender = "kttv-langson@example.vn";
    let post = |token: String, body: Vec<u8>| post_bulletin(&app, token, body);
    // A key with the bulletins scope vouches for the sender: level 3 is issued.
    let key = app
        .create_key("admin", "kttv feed", &[], &["bulletins", "read"])
        .await
        .unwrap();
    let (status, body) = post(key, live_bulletin("CH-1", sender, 3)).await;
    assert_eq!(status, 200, "{body}");
    let alert = body["alerts"][0]
        .as_str()
        .expect("an authoritative bulletin is issued")
        .to_owned();

    // A person's login cannot vouch that the service sent it: a Cancel does not end the
    // authoritative bulletin, and a lower level does not lower it.
    let admin = app.login_new_user("tuan.admin", "admin").await.unwrap();
    let cancel = String::from_utf8(live_bulletin("CH-2", sender, 3))
        .unwrap()
        .replace("<msgType>Alert</msgType>", "<msgType>Cancel</msgType>")
        .replace(
            "<scope>Public</scope>",
            &format!(
                "<scope>Public</scope>\n  <references>{sender},CH-1,2026-10-09T09:00:00+07:00</references>"
            ),
        );
    let (status, body) = post(admin.clone(), cancel.into_bytes()).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(admin.clone(), live_bulletin("CH-3", sender, 1)).await;
    assert_eq!(
        (status, body["alerts"].clone()),
        (200, serde_json::json!([])),
        "{body}"
    );
    // The bootstrap token retired with the first admin: read as the admin.
    let get = |path: String| {
        let (app, admin) = (&app, admin.clone());
        async move {
            app.call_as(&admin, "GET", &path, None, &Value::Null)
                .await
                .unwrap()
                .1
        }
    };
    let view = get("/api/v1/assessments".into()).await;
    assert!(view["transitions"].is_array(), "{view:#}");
    let transitions = view["transitions"].as_array().cloned().unwrap_or_default();
    assert!(
        transitions
            .iter()
            .all(|t| t["transition"] == "new" || t["transition"] == "escalate"),
        "nothing came down: {view:#}"
    );
    let a = get(format!("/api/v1/alerts/{alert}")).await;
    assert_eq!(a["alert"]["state"], "live", "{a:#}");
    {
        use sqlx::{Connection, Row};
        sqlx::any::install_default_drivers();
        let mut db = sqlx::AnyConnection::connect(&app.database_url).await.unwrap();
        let replaced: Option<i64> =
            sqlx::query("SELECT replaced_ms FROM bulletins WHERE identifier = 'CH-1'")
                .fetch_one(&mut db)
                .await
                .unwrap()
                .try_get("replaced_ms")
                .unwrap();
        assert_eq!(
            replaced, None,
            "an unvouched Cancel replaced the authoritative bulletin"
        );
        db.close().await.unwrap();
    }

    // A higher level from the person raises it, as a pre-warning only.
    let (status, body) = post(admin.clone(), live_bulletin("CH-4", sender, 4)).await;
    assert_eq!(
        (status, body["alerts"].clone()),
        (200, serde_json::json!([])),
        "{body}"
    );
    let prewarnings = get("/api/v1/prewarnings".into()).await;
    let p = prewarnings
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["level"] == 4)
        .unwrap_or_else(|| panic!("{prewarnings:#}"));
    assert_eq!(
        (p["source"].as_str(), p["official"].as_bool()),
        (Some("bulletin-unvouched:CH-4"), Some(false)),
        "{p:#}"
    );
    app.app.stop().await;
}

/// Signs `bulletin` with xmlsec1 (an independent XML-DSig implementation): RSA-SHA256,
/// Exclusive C14N, the certificate in `<KeyInfo>`; the key and certificate are in `dir`.
fn xmlsec1_sign(xmlsec1: &std::path::Path, dir: &std::path::Path, name: &str, bulletin: &[u8]) -> Vec<u8> {
    let template = String::from_utf8(bulletin.to_vec()).unwrap().replace(
        "</alert>",
        "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:SignedInfo>\
         <ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>\
         <ds:SignatureMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256\"/>\
         <ds:Reference URI=\"\"><ds:Transforms>\
         <ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/>\
         </ds:Transforms><ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/>\
         <ds:DigestValue/></ds:Reference></ds:SignedInfo><ds:SignatureValue/>\
         <ds:KeyInfo><ds:X509Data/></ds:KeyInfo></ds:Signature></alert>",
    );
    let (tmpl, out) = (dir.join(format!("{name}.tmpl")), dir.join(format!("{name}.xml")));
    std::fs::write(&tmpl, template).unwrap();
    let run = std::process::Command::new(xmlsec1)
        .args(["--sign", "--privkey-pem", "key.pem,cert.pem", "--output"])
        .arg(&out)
        .arg(&tmpl)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "xmlsec1: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::read(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_that_signs_is_authoritative_only_with_its_signature_and_a_forged_one_only_raises() {
    let xmlsec1 = testkit::kannel::find_program("xmlsec1");
    let openssl = testkit::kannel::find_program("openssl");
    if testkit::skip_without("xmlsec1 (apt-get install xmlsec1)", xmlsec1.is_some())
        || testkit::skip_without("openssl", openssl.is_some())
    {
        return;
    }
    let (xmlsec1, openssl) = (xmlsec1.unwrap(), openssl.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let made = std::process::Command::new(openssl)
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "cert.pem",
        ])
        .args(["-days", "2", "-subj", "/O=canhbao e2e/CN=kttv-langson signing"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let sender = "kttv-langson@example.vn";
    let pins = format!(
        "{{ \"{sender}\" = [\"{}\"] }}",
        dir.path().join("cert.pem").display()
    );
    let app = TestApp::spawn_with(Broker::Embedded, &[("CANHBAO__BULLETINS__SIGNING_CERTS", &pins)])
        .await
        .unwrap();
    let key = app
        .create_key("admin", "kttv feed", &[], &["bulletins", "read"])
        .await
        .unwrap();
    let post = |body: Vec<u8>| post_bulletin(&app, key.clone(), body);

    // Signed by the configured certificate, over a bulletins key: authoritative.
    let signed = xmlsec1_sign(&xmlsec1, dir.path(), "sg-1", &live_bulletin("SG-1", sender, 3));
    let (status, body) = post(signed).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["untrusted"].is_null(), "{body}");
    let alert = body["alerts"][0]
        .as_str()
        .unwrap_or_else(|| panic!("a signed bulletin is issued: {body}"))
        .to_owned();

    // Signed, then changed on the way (level 3 made 4): not authoritative, a pre-warning
    // only, and the operator sees why.
    let forged = String::from_utf8(xmlsec1_sign(
        &xmlsec1,
        dir.path(),
        "sg-2",
        &live_bulletin("SG-2", sender, 3),
    ))
    .unwrap()
    .replace("<value>3</value>", "<value>4</value>");
    let (status, body) = post(forged.into_bytes()).await;
    assert_eq!(
        (status, body["alerts"].clone()),
        (200, serde_json::json!([])),
        "{body}"
    );
    let why = body["untrusted"].as_str().unwrap_or_default();
    assert!(why.contains("changed after it was signed"), "{body}");
    let (_, prewarnings) = app.get("/api/v1/prewarnings").await.unwrap();
    assert!(
        prewarnings
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["source"] == "bulletin-unvouched:SG-2" && p["level"] == 4),
        "{prewarnings:#}"
    );
    let (_, rejections) = app.get("/api/v1/rejections").await.unwrap();
    assert!(
        rejections.as_array().unwrap().iter().any(|r| r["reason"]
            .as_str()
            .is_some_and(|t| t.contains("bulletin SG-2 taken only as a pre-warning"))),
        "{rejections:#}"
    );

    // Unsigned, from a sender that signs: it cannot lower the level.
    let (status, body) = post(live_bulletin("SG-3", sender, 1)).await;
    assert_eq!(
        (status, body["alerts"].clone()),
        (200, serde_json::json!([])),
        "{body}"
    );
    assert!(
        body["untrusted"]
            .as_str()
            .unwrap_or_default()
            .contains("not signed"),
        "{body}"
    );
    let (_, a) = app.get(&format!("/api/v1/alerts/{alert}")).await.unwrap();
    assert_eq!(a["alert"]["state"], "live", "{a:#}");
    let (_, view) = app.get("/api/v1/assessments").await.unwrap();
    assert!(
        view["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["transition"] == "new" || t["transition"] == "escalate"),
        "nothing came down: {view:#}"
    );
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authoritative_cap_bulletin_sets_the_level_and_reaches_receivers() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let mut rx = app.start_receiver("06385", "loa-06385-01").await.unwrap();

    let (status, body) = app
        .post(
            "/api/v1/bulletins",
            "application/cap+xml",
            &live_bulletin("LU-1", "kttv-langson@example.vn", 3),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let alert_id = body["alerts"][0]
        .as_str()
        .expect("the bulletin's level is issued")
        .to_owned();
    match rx.next(WAIT).await.unwrap() {
        ReceiverEvent::Played(a) => {
            assert_eq!(a.id, alert_id);
            assert_eq!(
                (a.hazard.as_str(), a.risk_level, a.class.as_str()),
                ("flood", Some(3), "emergency")
            );
            assert!(!a.provisional, "a bulletin's level is official");
        }
        other => panic!("expected the bulletin's alert to play, got {other:?}"),
    }
    let (_, view) = app.get("/api/v1/assessments").await.unwrap();
    let t = &view["transitions"][0];
    assert_eq!(
        (t["source"].as_str(), t["official"].as_bool()),
        (Some("bulletin:LU-1"), Some(true)),
        "{t:#}"
    );

    // The same bulletin again is a duplicate and announces nothing.
    let (_, body) = app
        .post(
            "/api/v1/bulletins",
            "application/cap+xml",
            &live_bulletin("LU-1", "kttv-langson@example.vn", 3),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            body["duplicates"].as_u64(),
            body["alerts"].as_array().map(Vec::len)
        ),
        (Some(1), Some(0))
    );

    // Anyone else's bulletin, hostile XML and the wrong media type are refused and recorded.
    let (status, body) = app
        .post(
            "/api/v1/bulletins",
            "application/cap+xml",
            &live_bulletin("LU-2", "someone@example.com", 5),
        )
        .await
        .unwrap();
    assert_eq!((status, body["field"].as_str()), (422, Some("sender")), "{body}");
    let xxe = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crates/ingest/fixtures/cap/xxe-external-entities-negative.xml"
    ))
    .unwrap();
    let (status, body) = app
        .post("/api/v1/bulletins", "application/xml", &xxe)
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("DTD"), "{body}");
    let (status, _) = app
        .post("/api/v1/bulletins", "text/plain", b"hello")
        .await
        .unwrap();
    assert_eq!(status, 415);
    let update = String::from_utf8(live_bulletin("LU-3", "kttv-langson@example.vn", 2))
        .unwrap()
        .replace("<msgType>Alert</msgType>", "<msgType>Update</msgType>");
    let (status, body) = app
        .post("/api/v1/bulletins", "application/cap+xml", update.as_bytes())
        .await
        .unwrap();
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("cap.update-without-references")),
        "{body}"
    );
    let (_, rejections) = app.get("/api/v1/rejections").await.unwrap();
    let reasons = rejections.to_string();
    assert!(
        reasons.contains("someone@example.com") && reasons.contains("DTD"),
        "{reasons}"
    );
    rx.stop().await;
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn station_telemetry_over_mqtt_feeds_the_same_pipeline_and_refusals_are_recorded() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let (raw, stop) = app.raw_client().await.unwrap();
    let topic = app
        .topics()
        .telemetry(&domain::StationId::new("HUULUNG").unwrap());
    app.prime("HUULUNG", 19.4).await.unwrap();
    raw.publish(&topic, observation_now("HUULUNG", 19.4).into_bytes(), false)
        .await
        .unwrap();
    let alerts = app
        .wait_for("/api/v1/alerts", WAIT, |a| {
            a.as_array().is_some_and(|v| !v.is_empty())
        })
        .await
        .unwrap();
    assert_eq!(alerts[0]["station"], "HUULUNG");
    assert_eq!(alerts[0]["alarm_level"], 3);

    // A reading for another station on this station's topic, and garbage, are refused.
    raw.publish(&topic, observation_now("LANGSON", 250.0).into_bytes(), false)
        .await
        .unwrap();
    raw.publish(&topic, b"{not json".to_vec(), false).await.unwrap();
    let rejections = app
        .wait_for("/api/v1/rejections", WAIT, |r| {
            r.as_array().is_some_and(|v| v.len() >= 2)
        })
        .await
        .unwrap();
    let text = rejections.to_string();
    assert!(text.contains("is not the topic's station"), "{text}");
    assert!(text.contains("not valid JSON"), "{text}");
    stop.cancel();
    app.app.stop().await;
}

/// An app on the embedded broker that polls `sources` (a TOML array), with no host pause.
async fn polling(sources: &str) -> TestApp {
    TestApp::spawn_with(
        Broker::Embedded,
        &[
            ("CANHBAO__INGEST__SOURCES", sources),
            ("CANHBAO__INGEST__HOST_PAUSE_MS", "0"),
        ],
    )
    .await
    .unwrap()
}

/// The entry of a list (sources, ...) with this `id`.
fn by_id(list: &Value, id: &str) -> Value {
    list.as_array()
        .and_then(|v| v.iter().find(|s| s["id"] == id))
        .cloned()
        .unwrap_or(Value::Null)
}

/// A local feed server: serves fixtures with ETag behaviour, an error, and an oversized body.
async fn feed_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use axum::http::{HeaderMap, StatusCode, header};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let conditional_hits = Arc::new(AtomicUsize::new(0));
    let hits = conditional_hits.clone();
    // Two readings: a station's first reading waits for the next to confirm it.
    let now = chrono::Utc::now();
    let csv = format!(
        "station,parameter,value,unit,observed_at\nHUULUNG,water_level,19.45,m,{}\nHUULUNG,water_level,19.5,m,{}\n",
        (now - chrono::Duration::minutes(10)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let app = axum::Router::new()
        .route(
            "/station.csv",
            axum::routing::get(move |headers: HeaderMap| {
                let csv = csv.clone();
                let hits = hits.clone();
                async move {
                    if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v == "\"v1\"") {
                        hits.fetch_add(1, Ordering::SeqCst);
                        return (
                            StatusCode::NOT_MODIFIED,
                            [(header::ETAG, "\"v1\"")],
                            String::new(),
                        );
                    }
                    (StatusCode::OK, [(header::ETAG, "\"v1\"")], csv)
                }
            }),
        )
        .route(
            "/broken",
            axum::routing::get(|| async { StatusCode::SERVICE_UNAVAILABLE }),
        )
        .route("/big", axum::routing::get(|| async { "x".repeat(5000) }))
        .route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "too late"
            }),
        )
        .route(
            "/xxe.xml",
            axum::routing::get(|| async {
                std::fs::read(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../crates/ingest/fixtures/cap/xxe-external-entities-negative.xml"
                ))
                .unwrap()
            }),
        )
        .route(
            "/latin1.csv",
            // "Lạng Sơn" as Windows-1258 would send it: not UTF-8.
            axum::routing::get(|| async {
                b"station,parameter,value,unit,observed_at\nL\xe1ng,rainfall,1,mm,2026-10-09T00:00:00Z\n"
                    .to_vec()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let atom = format!(
        r#"<feed xmlns="http://www.w3.org/2005/Atom"><title>KTTV Lạng Sơn</title><entry><id>LU-FEED</id><title>Tin lũ</title><link rel="related" type="application/cap+xml" href="http://{addr}/lu.xml"/></entry></feed>"#
    );
    let app = app
        .route(
            "/lu.xml",
            axum::routing::get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/cap+xml")],
                    live_bulletin("LU-FEED", "kttv-langson@example.vn", 4),
                )
            }),
        )
        .route(
            "/feed.atom",
            axum::routing::get(move || {
                let atom = atom.clone();
                async move { ([(header::CONTENT_TYPE, "application/atom+xml")], atom) }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), conditional_hits)
}

/// A server that promises 1 000 bytes, sends 100 and hangs up: a truncated body.
async fn truncating_server() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(&[b' '; 100]).await;
            let _ = socket.shutdown().await;
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polled_feeds_use_conditional_get_and_their_health_names_each_failure() {
    let (base, conditional_hits) = feed_server().await;
    let cut = truncating_server().await;
    let sources = format!(
        r#"[{{ id = "gauge", url = "{base}/station.csv", format = "station-csv", interval_s = 2, timeout_s = 1 }},
            {{ id = "down", url = "{base}/broken", format = "cap", interval_s = 2, timeout_s = 1 }},
            {{ id = "huge", url = "{base}/big", format = "station-json", interval_s = 2, timeout_s = 1, max_body_bytes = 1000 }},
            {{ id = "kttv-feed", url = "{base}/feed.atom", format = "atom", interval_s = 2, timeout_s = 1 }},
            {{ id = "slow", url = "{base}/slow", format = "cap", interval_s = 2, timeout_s = 1 }},
            {{ id = "xxe", url = "{base}/xxe.xml", format = "cap", interval_s = 2, timeout_s = 1 }},
            {{ id = "latin1", url = "{base}/latin1.csv", format = "station-csv", interval_s = 2, timeout_s = 1 }},
            {{ id = "cut", url = "{cut}/items", format = "station-json", interval_s = 2, timeout_s = 1 }}]"#
    );
    let app = polling(&sources).await;
    // The gauge's reading above BĐ3 flows into an alert (the feed's bulletin may come first).
    let alerts = app
        .wait_for("/api/v1/alerts", WAIT, |a| {
            a.as_array()
                .is_some_and(|v| v.iter().any(|x| x["station"] == "HUULUNG"))
        })
        .await
        .unwrap();
    let gauge = alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["station"] == "HUULUNG")
        .unwrap();
    assert_eq!(gauge["alarm_level"], 3);
    // The next poll is conditional and answered 304; failures carry their cause.
    let sources = app
        .wait_for("/api/v1/sources", WAIT, |s| {
            s.as_array().is_some_and(|v| {
                let down = v
                    .iter()
                    .any(|x| x["id"] == "down" && x["consecutive_failures"].as_i64() >= Some(2));
                let gauge = v.iter().any(|x| x["id"] == "gauge" && x["accepted"] == 2);
                let failed = ["huge", "slow", "xxe", "latin1", "cut"]
                    .iter()
                    .all(|id| v.iter().any(|x| x["id"] == *id && x["last_error"].is_string()));
                down && gauge && failed
            })
        })
        .await
        .unwrap();
    let by_id = |id: &str| by_id(&sources, id);
    assert_eq!(by_id("gauge")["accepted"], 2, "{sources:#}");
    assert!(by_id("gauge")["last_success"].is_string());
    assert_eq!(by_id("down")["last_error"], "HTTP 503");
    assert_eq!(by_id("huge")["last_error"], "body over 1000 bytes");
    // Slowness, hostile XML, a wrong encoding and a cut-off body each name their cause, and
    // none of them held up the gauge (accepted above within the first polls).
    assert_eq!(by_id("slow")["last_error"], "timeout after 1 s");
    let error = |id: &str| by_id(id)["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(error("xxe").contains("DTD"), "{}", error("xxe"));
    assert!(error("latin1").contains("not UTF-8"), "{}", error("latin1"));
    assert!(error("cut").starts_with("body truncated"), "{}", error("cut"));
    // The Atom feed's linked CAP bulletin was fetched. It came over plain HTTP, which
    // cannot vouch for its sender: its level 4 is a pre-warning for an officer, not an
    // alert (docs/rules.md, "Official bulletins").
    let prewarnings = app
        .wait_for("/api/v1/prewarnings", WAIT, |p| {
            p.as_array()
                .is_some_and(|v| v.iter().any(|x| x["level"] == 4 && x["hazard"] == "flood"))
        })
        .await
        .unwrap();
    let p = prewarnings
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["level"] == 4)
        .unwrap();
    assert!(
        p["source"]
            .as_str()
            .unwrap_or("")
            .starts_with("bulletin-unvouched:"),
        "{p:#}"
    );
    assert_eq!(p["official"], false, "{p:#}");
    let (_, alerts) = app.get("/api/v1/alerts").await.unwrap();
    assert!(
        !alerts.as_array().unwrap().iter().any(|x| x["risk_level"] == 4),
        "a bulletin over plain HTTP issued an alert: {alerts:#}"
    );
    assert!(by_id("down")["next_poll"].is_string());
    // The gauge's next poll sends If-None-Match and is answered 304.
    let deadline = std::time::Instant::now() + WAIT;
    while conditional_hits.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no conditional GET within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.app.stop().await;
}

/// A local hydro-met server: the Open-Meteo fixture re-timed to start in the next hour,
/// a USGS OGC reading from now, and a CAP bulletin that announces its next issue.
async fn hydromet_server(next_issue: chrono::DateTime<chrono::Utc>) -> String {
    use axum::http::header;
    let now = chrono::Utc::now();
    let fixture = |name: &str| {
        std::fs::read_to_string(format!(
            "{}/../crates/ingest/fixtures/feeds/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    let mut forecast: Value =
        serde_json::from_str(&fixture("open-meteo-forecast-hourly-CONSTRUCTED.json")).unwrap();
    let first = now.timestamp() / 3600 * 3600 + 3600;
    let times: Vec<Value> = (0..48)
        .map(|h| {
            let t = chrono::DateTime::from_timestamp(first + h * 3600, 0).unwrap();
            Value::from(t.format("%Y-%m-%dT%H:%M").to_string())
        })
        .collect();
    forecast["hourly"]["time"] = Value::Array(times);
    forecast["utc_offset_seconds"] = 0.into();
    let forecast = forecast.to_string();
    let mut usgs: Value = serde_json::from_str(&fixture("usgs-ogc-latest-continuous.json")).unwrap();
    for f in usgs["features"].as_array_mut().unwrap() {
        f["properties"]["time"] = now.to_rfc3339().into();
    }
    let usgs = usgs.to_string();
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let cap = String::from_utf8(live_bulletin("NEXT-ISSUE-1", "kttv-langson@example.vn", 2))
        .unwrap()
        .replacen(
            "<parameter>",
            &format!(
                "<parameter><valueName>nextIssue</valueName><value>{}</value></parameter><parameter>",
                fmt(next_issue)
            ),
            1,
        );
    let app = axum::Router::new()
        .route(
            "/v1/forecast",
            axum::routing::get(move || {
                let body = forecast.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], body) }
            }),
        )
        .route(
            "/v1/forecast-bad",
            axum::routing::get(|| async {
                (
                    axum::http::StatusCode::BAD_REQUEST,
                    r#"{"reason":"Cannot initialize WeatherVariable from invalid String value tempeture_2m for key hourly","error":true}"#,
                )
            }),
        )
        .route(
            "/ogcapi/v0/collections/latest-continuous/items",
            axum::routing::get(move || {
                let body = usgs.clone();
                async move { ([(header::CONTENT_TYPE, "application/geo+json")], body) }
            }),
        )
        .route(
            "/cap/next.xml",
            axum::routing::get(move || {
                let body = cap.clone();
                async move { ([(header::CONTENT_TYPE, "application/cap+xml")], body) }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forecasts_and_a_second_water_level_provider_reach_the_rules_and_bulletins_set_the_next_poll() {
    let next_issue = chrono::Utc::now() + chrono::Duration::minutes(10);
    let base = hydromet_server(next_issue).await;
    // Hữu Lũng's gauge datum is put 19 m above the national datum, so the feed's 1.59 ft
    // (0.48 m) reads 19.48 m there: above BĐ3 (19 m).
    let sources = format!(
        r#"[{{ id = "om", url = "{base}/v1/forecast", format = "open-meteo", interval_s = 3600, timeout_s = 5, points = [{{ point = "0", station = "HUULUNG" }}] }},
            {{ id = "om-bad", url = "{base}/v1/forecast-bad", format = "open-meteo", interval_s = 3600, timeout_s = 5, points = [{{ point = "0", station = "HUULUNG" }}] }},
            {{ id = "usgs", url = "{base}/ogcapi/v0/collections/latest-continuous/items", format = "usgs-ogc", interval_s = 3600, timeout_s = 5, points = [{{ point = "USGS-06904500", station = "HUULUNG", water_level_offset_m = 19.0 }}] }},
            {{ id = "kttv", url = "{base}/cap/next.xml", format = "cap", interval_s = 3600, timeout_s = 5 }}]"#
    );
    let app = polling(&sources).await;
    // The forecast's 48 hours (2 null past the horizon) are stored per station and hour.
    let forecasts = app
        .wait_for("/api/v1/forecasts?station=HUULUNG", WAIT, |f| {
            f.as_array().is_some_and(|v| v.len() >= 4 * 46)
        })
        .await
        .unwrap();
    let rain: Vec<f64> = forecasts
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["parameter"] == "rainfall")
        .map(|f| f["value"].as_f64().unwrap())
        .collect();
    assert_eq!(rain.len(), 46);
    assert_eq!(rain.iter().copied().fold(0.0, f64::max), 41.7);
    // The rules read them as the hours ahead: 177 mm over the next 24 h is heavy rain.
    let view = app
        .wait_for("/api/v1/assessments", WAIT, |v| {
            v["transitions"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["hazard"] == "heavy_rain"))
        })
        .await
        .unwrap();
    let rain = view["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["hazard"] == "heavy_rain")
        .unwrap();
    assert_eq!(rain["commune"], "06385", "{rain:#}");
    assert!(rain["level"].as_i64() >= Some(1), "{rain:#}");
    assert!(
        rain["rules"][0].as_str().unwrap().starts_with("heavy_rain.art44"),
        "{rain:#}"
    );
    // USGS's gauge height, on the station's datum, crosses BĐ3 and raises the flood alert.
    let alerts = app
        .wait_for("/api/v1/alerts", WAIT, |a| {
            a.as_array().is_some_and(|v| {
                v.iter()
                    .any(|x| x["station"] == "HUULUNG" && x["alarm_level"] == 3)
            })
        })
        .await
        .unwrap();
    assert!(!alerts.as_array().unwrap().is_empty());
    // Health: the API's own error reason, the values taken, and the next poll brought
    // forward to 30 s after the bulletin's announced next issue (not the hour's interval).
    let sources = app
        .wait_for("/api/v1/sources", WAIT, |s| {
            s.as_array().is_some_and(|v| {
                v.iter().any(|x| x["id"] == "kttv" && x["accepted"] == 1)
                    && v.iter()
                        .any(|x| x["id"] == "om-bad" && x["last_error"].is_string())
                    && v.iter().any(|x| x["id"] == "usgs" && x["accepted"] == 2)
                    // The forecast's 184 values are written after its poll returns.
                    && v.iter().any(|x| x["id"] == "om" && x["last_success"].is_string())
            })
        })
        .await
        .unwrap();
    let by_id = |id: &str| by_id(&sources, id);
    let bad = by_id("om-bad")["last_error"].as_str().unwrap().to_owned();
    assert!(
        bad.starts_with("HTTP 400") && bad.contains("tempeture_2m"),
        "{bad}"
    );
    let next: chrono::DateTime<chrono::Utc> = by_id("kttv")["next_poll"].as_str().unwrap().parse().unwrap();
    let expected = next_issue + chrono::Duration::seconds(30);
    assert!(
        (next - expected).num_seconds().abs() <= 2,
        "next poll {next} should be 30 s after the announced issue {next_issue}"
    );
    assert_eq!(by_id("om")["accepted"].as_i64(), Some(4 * 46), "{sources:#}");
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_drive_resends_and_only_registered_receivers_count() {
    let app = TestApp::spawn_with(Broker::Embedded, &[("CANHBAO__OUTBOX__RESEND_S", "[1]")])
        .await
        .unwrap();
    // Two registered receivers of Xã Hữu Lũng; the second is not running yet.
    let mut first = app.start_receiver("06385", "loa-hl-1").await.unwrap();
    app.register_receiver("06385", "loa-hl-2").await.unwrap();
    // A receiver the registry does not know: it hears the alert, but its receipts count
    // for nothing.
    let mut rogue = app.start_unregistered_receiver("06385", "loa-rogue").unwrap();
    app.prime("HUULUNG", 19.4).await.unwrap();
    let (_, _, body) = app
        .post_observations(&observation_now("HUULUNG", 19.4))
        .await
        .unwrap();
    let alert_id = body["alerts"][0].as_str().unwrap().to_owned();
    assert!(matches!(
        first.next(WAIT).await.unwrap(),
        ReceiverEvent::Played(_)
    ));
    assert!(matches!(
        rogue.next(WAIT).await.unwrap(),
        ReceiverEvent::Played(_)
    ));
    let path = format!("/api/v1/alerts/{alert_id}");
    let state_of = |d: &Value, id: &str| {
        d["receiver_deliveries"]
            .as_array()
            .and_then(|v| v.iter().find(|r| r["receiver_id"] == id))
            .map(|r| r["state"].as_str().unwrap_or_default().to_owned())
    };
    let detail = app
        .wait_for(&path, WAIT, |d| {
            state_of(d, "loa-hl-1").as_deref() == Some("played")
        })
        .await
        .unwrap();
    assert_eq!(
        state_of(&detail, "loa-hl-2").as_deref(),
        Some("sent"),
        "{detail:#}"
    );
    assert_eq!(state_of(&detail, "loa-rogue"), None);
    assert!(
        receipts_of(&detail, "loa-rogue").is_empty(),
        "an unregistered receipt is ignored"
    );

    // The broker loses the retained alert (as an embedded broker restart would) before the
    // second receiver connects: only canhbao's resend can reach it, and does, because the
    // second receiver has not acknowledged.
    let (raw, raw_stop) = app.raw_client().await.unwrap();
    let topic = detail["deliveries"][0]["topic"].as_str().unwrap().to_owned();
    raw.publish(&topic, Vec::new(), true).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut second = app.start_unregistered_receiver("06385", "loa-hl-2").unwrap();
    match second.next(WAIT).await.unwrap() {
        ReceiverEvent::Played(a) => assert_eq!(a.id, alert_id),
        ReceiverEvent::Connected => match second.next(WAIT).await.unwrap() {
            ReceiverEvent::Played(a) => assert_eq!(a.id, alert_id),
            other => panic!("expected the resent alert, got {other:?}"),
        },
        other => panic!("expected the resent alert, got {other:?}"),
    }
    let detail = app
        .wait_for(&path, WAIT, |d| {
            state_of(d, "loa-hl-2").as_deref() == Some("played")
        })
        .await
        .unwrap();
    let d = &detail["deliveries"][0];
    assert!(d["attempts"].as_i64() >= Some(2), "resent: {d:#}");
    // The fleet: both registered receivers online, the rogue counted and not listed.
    let fleet = app
        .wait_for("/api/v1/receivers", WAIT, |f| {
            f["coverage"][0]["online"] == 2 && f["unregistered_messages"].as_i64() >= Some(1)
        })
        .await
        .unwrap();
    assert_eq!(fleet["coverage"][0]["commune"], "06385");
    assert_eq!(fleet["coverage"][0]["registered"], 2);
    assert!(
        fleet["receivers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["receiver_id"] != "loa-rogue")
    );
    let metrics = app.get_text("/metrics").await.unwrap();
    assert!(
        metrics.contains("canhbao_commune_receivers_online{commune=\"06385\"} 2"),
        "{metrics}"
    );
    raw_stop.cancel();
    for r in [first, second, rogue] {
        r.stop().await;
    }
    app.app.stop().await;
}

/// The next alert a receiver plays, as (id, msg_type); other events are skipped.
async fn next_played(rx: &mut canhbao_tests::TestReceiver) -> (String, String) {
    loop {
        if let ReceiverEvent::Played(p) = rx.next(WAIT).await.unwrap() {
            return (p.id.clone(), p.msg_type.clone());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_every_receiver_including_one_that_was_offline_and_nothing_replays() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let mut a = app.start_receiver("06385", "loa-c-a").await.unwrap();
    let mut b = app.start_receiver("06385", "loa-c-b").await.unwrap();
    app.prime("HUULUNG", 19.4).await.unwrap();
    let (_, _, body) = app
        .post_observations(&observation_now("HUULUNG", 19.4))
        .await
        .unwrap();
    let alert_id = body["alerts"][0].as_str().unwrap().to_owned();
    assert_eq!(next_played(&mut a).await.0, alert_id);
    assert_eq!(next_played(&mut b).await.0, alert_id);
    b.stop().await;

    // A viewer may not cancel; an admin may, once.
    let viewer = app.create_token("viewer", "operator", &[]).await.unwrap();
    let denied = app
        .http
        .post(format!("{}/api/v1/alerts/{alert_id}/cancel", app.base))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status().as_u16(), 403);
    let path = format!("/api/v1/alerts/{alert_id}/cancel");
    let (status, answer) = app
        .post(&path, "application/json", br#"{"reason":"tram do hong"}"#)
        .await
        .unwrap();
    assert_eq!(status, 201, "{answer}");
    let cancel_id = answer["cancel_id"].as_str().unwrap().to_owned();
    let (status, blank) = app.post(&path, "application/json", b"").await.unwrap();
    assert_eq!(status, 422, "a cancel must say why: {blank}");
    let (status, again) = app
        .post(&path, "application/json", br#"{"reason":"lan hai"}"#)
        .await
        .unwrap();
    assert_eq!(status, 409, "{again}");
    let (status, _) = app
        .post(
            &format!("/api/v1/alerts/{cancel_id}/cancel"),
            "application/json",
            br#"{"reason":"x"}"#,
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "a Cancel is not cancelled");

    assert_eq!(
        next_played(&mut a).await,
        (cancel_id.clone(), "Cancel".to_owned())
    );
    // The receiver that was away comes back: it hears the Cancel, and does not play the
    // original again although it is still retained.
    let mut b = app.start_receiver("06385", "loa-c-b").await.unwrap();
    assert_eq!(
        next_played(&mut b).await,
        (cancel_id.clone(), "Cancel".to_owned())
    );
    let detail = app
        .wait_for(&format!("/api/v1/alerts/{cancel_id}"), WAIT, |d| {
            d["receiver_deliveries"]
                .as_array()
                .is_some_and(|v| v.len() == 2 && v.iter().all(|r| r["state"] == "played"))
        })
        .await
        .unwrap();
    assert_eq!(detail["alert"]["msg_type"], "Cancel");
    assert_eq!(detail["alert"]["references"], serde_json::json!([alert_id]));
    // Nothing else plays: not the original, not the Cancel a second time.
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), next_played(&mut b))
            .await
            .is_err(),
        "a version was played twice"
    );
    for r in [a, b] {
        r.stop().await;
    }
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_preview_gives_the_encoding_the_text_and_the_parts() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let text = "Cảnh báo lũ cấp 3 tại xã Hữu Lũng. Đề nghị di dời ngay khỏi vùng trũng thấp ven sông Trung.";
    let preview = |policy: &str| {
        let body = serde_json::json!({"text": text, "policy": policy}).to_string();
        let app = &app;
        async move {
            app.post("/api/v1/sms/preview", "application/json", body.as_bytes())
                .await
                .unwrap()
        }
    };
    let (status, ucs2) = preview("ucs2").await;
    assert_eq!(status, 200, "{ucs2}");
    assert_eq!(ucs2["encoding"], "UCS-2");
    assert_eq!(ucs2["text"], text);
    assert_eq!(ucs2["segments"], 2, "{} characters", text.chars().count());
    let (_, gsm7) = preview("gsm7").await;
    assert_eq!(gsm7["encoding"], "GSM-7");
    assert_eq!(gsm7["segments"], 1);
    assert!(
        gsm7["text"]
            .as_str()
            .unwrap()
            .starts_with("Canh bao lu cap 3 tai xa Huu Lung. De nghi"),
        "{gsm7}"
    );
    let (_, auto) = preview("auto").await;
    assert_eq!(auto["encoding"], "UCS-2", "two parts are within auto's default");
    let (status, bad) = preview("morse").await;
    assert_eq!(status, 400, "{bad}");
    assert!(bad["detail"].as_str().unwrap().contains("morse"), "{bad}");
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_directory_imports_whole_or_not_at_all_for_admins_only() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let good = "name,phone,commune,role,language,opt_out\n\
                \"Nguyễn Văn An, chủ tịch\",0912 345 678,06385,commune_chair,vi,no\n\
                Hoàng Thị Mai,+84388123456,05977,resident,,yes\n";
    let (status, body) = app
        .post("/api/v1/contacts/import", "text/csv", good.as_bytes())
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["added"].as_u64(), body["updated"].as_u64()),
        (Some(2), Some(0))
    );
    // A file with one bad row is refused whole, and every bad row is named.
    let bad = "name,phone,commune,role\n\
               Lò Văn Sinh,0987654321,06385,village_head\n\
               Bad,0205 3812345,06385,resident\n\
               Worse,0912000111,99999,resident\n";
    let (status, problem) = app
        .post("/api/v1/contacts/import", "text/csv", bad.as_bytes())
        .await
        .unwrap();
    assert_eq!(status, 422, "{problem}");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["line 3.phone", "line 4.commune"], "{problem}");
    let (_, list) = app.get("/api/v1/contacts").await.unwrap();
    let phones: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["phone"].as_str().unwrap())
        .collect();
    assert_eq!(phones.len(), 2, "nothing of the bad file was kept: {list}");
    assert!(phones.contains(&"+84912345678") && phones.contains(&"+84388123456"));
    let viewer = app.create_token("viewer", "operator", &[]).await.unwrap();
    let denied = app
        .http
        .get(format!("{}/api/v1/contacts", app.base))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status().as_u16(), 403, "contacts are personal data");
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_preview_shows_every_channel_and_sends_nothing() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let mut rx = app.start_receiver("06385", "loa-preview").await.unwrap();
    app.wait_for("/api/v1/receivers", WAIT, |b| {
        b["receivers"][0]["health"] == "online"
    })
    .await
    .unwrap();
    let csv = "name,phone,commune,role,language,opt_out\n\
               Chủ tịch,0912000101,05983,commune_chair,vi,no\n\
               Trưởng thôn,0912000102,05983,village_head,vi,no\n\
               Người dân,0912000103,05983,resident,vi,no\n\
               Trưởng thôn nghỉ,0912000104,05983,village_head,vi,yes\n";
    let (status, _) = app
        .post("/api/v1/contacts/import", "text/csv", csv.as_bytes())
        .await
        .unwrap();
    assert_eq!(status, 200);
    let draft = serde_json::json!({
        "hazard": "flash_flood",
        "risk_level": 3,
        "communes": ["06385", "05983"],
        "headline": "Nguy cơ lũ quét tại Hữu Lũng",
        "description": "Mưa lớn trên 150 mm trong 6 giờ qua.",
        "instruction": "Không đi qua ngầm tràn.",
        "valid_minutes": 120
    });
    let (status, p) = app
        .post(
            "/api/v1/alerts/preview",
            "application/json",
            draft.to_string().as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        (
            p["payload"]["class"].as_str(),
            p["payload"]["risk_level"].as_u64(),
            p["payload"]["origin"].as_str()
        ),
        (Some("emergency"), Some(3), Some("officer")),
        "level 3 pre-empts the programme: {p}"
    );
    assert_eq!(
        (
            p["loudspeakers"]["times"].as_u64(),
            p["loudspeakers"]["interval_s"].as_u64()
        ),
        (Some(3), Some(300)),
        "[alerts] repeat_emergency"
    );
    assert_eq!(p["loudspeakers"]["topics"].as_array().unwrap().len(), 2);
    let text = p["sms"]["text"].as_str().unwrap();
    assert!(
        text.starts_with(
            "[PCTT Lạng Sơn] CẢNH BÁO LŨ QUÉT, SẠT LỞ ĐẤT, SỤT LÚN ĐẤT cấp 3: Nguy cơ lũ quét tại Hữu Lũng. Không đi qua ngầm tràn."
        ),
        "{text}"
    );
    // The same text through the SMS preview gives the same encoding and parts.
    let (_, same) = app
        .post(
            "/api/v1/sms/preview",
            "application/json",
            serde_json::json!({"text": text, "policy": "auto", "max_ucs2_segments": 3})
                .to_string()
                .as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(
        (&p["sms"]["encoding"], &p["sms"]["segments"]),
        (&same["encoding"], &same["segments"]),
        "{same}"
    );
    let by_commune: std::collections::HashMap<&str, &Value> = p["sms"]["communes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["commune"].as_str().unwrap(), c))
        .collect();
    let hl = by_commune["06385"];
    assert_eq!(
        (
            hl["receivers_online"].as_u64(),
            hl["fallback"].as_str(),
            hl["officials"].as_u64()
        ),
        (Some(1), Some("after_deadline"), Some(0)),
        "{hl}"
    );
    let none = by_commune["05983"];
    assert_eq!(
        (
            none["fallback"].as_str(),
            none["reason"].as_str(),
            none["officials"].as_u64()
        ),
        (
            Some("at_once"),
            Some("the commune has no registered loudspeaker receiver"),
            Some(2)
        ),
        "a resident and an opted-out head are not officials who get it: {none}"
    );
    assert_eq!(
        p["sms"]["gateways"],
        serde_json::json!([]),
        "the channel is off in this app"
    );
    // Kept to the loudspeakers, the same draft never goes by SMS, whatever the commune.
    let mut loud_only = draft.clone();
    loud_only["channels"] = serde_json::json!(["loudspeaker"]);
    let (status, p) = app
        .post(
            "/api/v1/alerts/preview",
            "application/json",
            loud_only.to_string().as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{p}");
    assert!(
        p["sms"]["communes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["fallback"] == "never"),
        "{p}"
    );
    for (channels, field) in [
        (serde_json::json!(["sms"]), "channels"),
        (serde_json::json!(["loudspeaker", "fax"]), "channels"),
    ] {
        let mut bad = draft.clone();
        bad["channels"] = channels;
        let (status, e) = app
            .post(
                "/api/v1/alerts/preview",
                "application/json",
                bad.to_string().as_bytes(),
            )
            .await
            .unwrap();
        assert_eq!((status, e["field"].as_str()), (422, Some(field)), "{e}");
    }
    let mut polygon = draft.clone();
    polygon["polygon"] = serde_json::json!("21.5,106.2 21.6,106.3 21.5,106.4 21.5,106.2");
    let (status, e) = app
        .post(
            "/api/v1/alerts/preview",
            "application/json",
            polygon.to_string().as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{e}");
    assert!(
        e["detail"].as_str().unwrap().contains("commune boundaries"),
        "{e}"
    );

    // Nothing was issued, and no receiver heard anything.
    let (_, alerts) = app.get("/api/v1/alerts").await.unwrap();
    assert_eq!(alerts.as_array().unwrap().len(), 0, "{alerts}");
    assert!(rx.next(Duration::from_millis(500)).await.is_err());

    // A bad draft names every faulty field; a viewer may not preview.
    let bad = serde_json::json!({"hazard": "meteor", "risk_level": 9, "communes": ["06385", "99999"]});
    let (status, problem) = app
        .post(
            "/api/v1/alerts/preview",
            "application/json",
            bad.to_string().as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{problem}");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["hazard", "risk_level", "communes[1]", "headline", "description"],
        "{problem}"
    );
    let viewer = app.create_token("viewer", "operator", &[]).await.unwrap();
    let denied = app
        .http
        .post(format!("{}/api/v1/alerts/preview", app.base))
        .bearer_auth(&viewer)
        .header("content-type", "application/json")
        .body(draft.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status().as_u16(), 403);
    rx.stop().await;
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_log_in_with_roles_are_held_off_after_failures_and_the_bootstrap_token_retires() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let store = app.app.store();
    let login = |user: &str, password: &str| {
        let body = serde_json::json!({"username": user, "password": password}).to_string();
        let (http, base) = (app.http.clone(), app.base.clone());
        async move {
            let r = http
                .post(format!("{base}/api/v1/login"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or_default())
        }
    };
    let get = |token: String, path: &'static str| {
        let (http, base) = (app.http.clone(), app.base.clone());
        async move {
            http.get(format!("{base}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let officer_pw = "mat-khau-truc-ban-1".to_owned();
    canhbao_server::users::add(
        store,
        &app.data_dir,
        "truc.ban",
        "officer",
        Some(officer_pw.clone()),
    )
    .await
    .unwrap();
    assert!(
        canhbao_server::users::add(
            store,
            &app.data_dir,
            "truc.ban",
            "viewer",
            Some(officer_pw.clone())
        )
        .await
        .is_err(),
        "names are unique"
    );
    // Until an admin user exists, the bootstrap token keeps working.
    assert_eq!(get(app.token.clone(), "/api/v1/alerts").await, 200);

    let (status, body) = login("truc.ban", &officer_pw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["role"], "officer");
    let officer = body["token"].as_str().unwrap().to_owned();
    assert_eq!(get(officer.clone(), "/api/v1/alerts").await, 200);
    let denied = app
        .http
        .post(format!("{}/api/v1/receivers", app.base))
        .bearer_auth(&officer)
        .header("content-type", "application/json")
        .body(r#"{"receiver_id":"loa-x","commune":"06385"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        denied.status().as_u16(),
        403,
        "registering receivers is an admin's"
    );
    // Its token ends with the shift: expired tokens are not found.
    let hash = api::token_hash(&officer);
    let later = chrono::Utc::now() + chrono::Duration::hours(13);
    assert!(store.find_token(&hash, later).await.unwrap().is_none());

    // A wrong name and a wrong password get the same answer; five wrong passwords hold
    // the name off from this address, even against the right one (tests/e2e/login.rs:
    // not from another address).
    let (unknown, a) = login("nobody", "whatever-password").await;
    let (wrong, b) = login("truc.ban", "not-the-password").await;
    assert_eq!((unknown, wrong), (401, 401));
    assert_eq!(a["detail"], b["detail"]);
    for _ in 0..4 {
        assert_eq!(login("truc.ban", "not-the-password").await.0, 401);
    }
    let (locked, body) = login("truc.ban", &officer_pw).await;
    assert_eq!(locked, 429, "{body}");
    // A reset lifts the hold-off and revokes the old token.
    let new_pw = canhbao_server::users::reset_password(store, "truc.ban", None)
        .await
        .unwrap();
    assert_eq!(get(officer.clone(), "/api/v1/alerts").await, 401);
    let (status, body) = login("truc.ban", &new_pw).await;
    assert_eq!(status, 200, "{body}");
    let officer = body["token"].as_str().unwrap().to_owned();
    // Logging out ends the token.
    let out = app
        .http
        .post(format!("{}/api/v1/logout", app.base))
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status().as_u16(), 204);
    assert_eq!(get(officer, "/api/v1/alerts").await, 401);

    // The first admin user retires the bootstrap token and its file.
    let admin_pw = canhbao_server::users::add(store, &app.data_dir, "quan.tri", "admin", None)
        .await
        .unwrap();
    assert_eq!(get(app.token.clone(), "/api/v1/alerts").await, 401);
    assert!(!app.data_dir.join("admin.token").exists());
    let (status, body) = login("quan.tri", &admin_pw).await;
    assert_eq!((status, body["role"].as_str()), (200, Some("admin")), "{body}");
    // A disabled user's tokens stop working and they cannot log in.
    let admin = body["token"].as_str().unwrap().to_owned();
    canhbao_server::users::disable(store, "quan.tri").await.unwrap();
    assert_eq!(get(admin, "/api/v1/alerts").await, 401);
    assert_eq!(login("quan.tri", &admin_pw).await.0, 401);
    app.app.stop().await;
}

/// `xmllint`, when the machine has it (`.ci/run` installs `libxml2-utils`).
fn xmllint() -> Option<std::path::PathBuf> {
    ["/usr/bin/xmllint", "/usr/local/bin/xmllint"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_and_its_cancel_are_valid_cap_documents_that_read_back() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let alert_id = app.issue_bulletin("LU-CAP-OUT").await.unwrap();
    let cancel_id = app.cancel(&alert_id, "thử nghiệm kết thúc").await.unwrap();
    // An officer's warning with an English text as well.
    let draft = serde_json::json!({"hazard": "flood", "risk_level": 2, "communes": ["06385"],
        "headline": "Lũ trên sông Thương", "description": "Mực nước lên.",
        "headline_en": "Flood on the Thuong river", "description_en": "The water is rising.",
        "instruction_en": "Stay away from the river banks."});
    let (status, w) = app
        .post(
            "/api/v1/warnings",
            "application/json",
            draft.to_string().as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{w}");
    let (status, issued) = app
        .post(
            &format!("/api/v1/warnings/{}/submit", w["id"].as_str().unwrap()),
            "application/json",
            b"{}",
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{issued}");
    let english_id = issued["alert_id"].as_str().unwrap().to_owned();

    let dir = tempfile::tempdir().unwrap();
    for (id, kind) in [
        (&alert_id, "Alert"),
        (&cancel_id, "Cancel"),
        (&english_id, "English"),
    ] {
        let r = app
            .http
            .get(format!("{}/api/v1/alerts/{id}.cap", app.base))
            .bearer_auth(&app.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/cap+xml; charset=utf-8"
        );
        let xml = r.text().await.unwrap();
        // canhbao reads its own CAP back: same identifier, type, level and commune.
        let cap = ingest::cap::parse_cap(xml.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{xml}"));
        assert_eq!(cap.identifier, *id, "{xml}");
        assert_eq!(cap.msg_type, if kind == "English" { "Alert" } else { kind });
        // Vietnamese first, then English only where an officer gave it.
        let blocks = xml.matches("<info>").count();
        assert_eq!(blocks, if kind == "English" { 2 } else { 1 }, "{xml}");
        if kind == "English" {
            let en = &xml[xml.rfind("<info>").unwrap()..];
            for part in [
                "<language>en-US</language>",
                "<event>Flood</event>",
                "<headline>Flood on the Thuong river</headline>",
                "<instruction>Stay away from the river banks.</instruction>",
                "<value>06385</value>",
            ] {
                assert!(en.contains(part), "{part} not in the English block:\n{xml}");
            }
            assert!(xml[..xml.rfind("<info>").unwrap()].contains("<language>vi-VN</language>"));
        }
        assert!(xml.contains("<value>06385</value>"), "{xml}");
        if kind == "Alert" {
            assert!(
                xml.contains("<valueName>riskLevel</valueName>\n      <value>3</value>"),
                "{xml}"
            );
            assert!(
                xml.contains("<severity>Severe</severity>") && xml.contains("<urgency>Immediate</urgency>")
            );
        } else if kind == "Cancel" {
            assert!(
                xml.contains(&format!("<references>canhbao.province-20,{alert_id},")),
                "{xml}"
            );
        }
        let Some(xmllint) = xmllint() else {
            eprintln!("xmllint is missing (apt-get install libxml2-utils): schema not checked");
            continue;
        };
        let path = dir.path().join(format!("{kind}.xml"));
        std::fs::write(&path, &xml).unwrap();
        let out = std::process::Command::new(xmllint)
            .args(["--noout", "--schema"])
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../crates/ingest/fixtures/cap/CAP-v1.2.xsd"
            ))
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}\n{xml}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let missing = app
        .http
        .get(format!("{}/api/v1/alerts/no-such.cap", app.base))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_atom_feed_lists_live_actual_alerts_with_their_cap_and_an_etag() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let feed = |etag: Option<String>| {
        let (http, base) = (app.http.clone(), app.base.clone());
        async move {
            let mut r = http.get(format!("{base}/feeds/alerts.atom"));
            if let Some(e) = etag {
                r = r.header("if-none-match", e);
            }
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            let etag = r.headers().get("etag").map(|v| v.to_str().unwrap().to_owned());
            (status, etag, r.text().await.unwrap())
        }
    };
    let links = |body: &str| -> Vec<String> {
        ingest::feed::parse_feed(body.as_bytes())
            .unwrap_or_else(|e| panic!("{e}\n{body}"))
            .into_iter()
            .map(|e| match e.cap {
                ingest::feed::EntryCap::Linked(url) => url,
                other => panic!("not a link: {other:?}"),
            })
            .collect()
    };
    let (status, empty_tag, body) = feed(None).await;
    assert_eq!(status, 200);
    assert!(links(&body).is_empty(), "{body}");

    let alert_id = app.issue_bulletin("LU-FEED").await.unwrap();
    let exercise = String::from_utf8(live_bulletin("LU-FEED-DRILL", "kttv-langson@example.vn", 2))
        .unwrap()
        .replace("<status>Actual</status>", "<status>Exercise</status>");
    let (status, drill) = app
        .post("/api/v1/bulletins", "application/cap+xml", exercise.as_bytes())
        .await
        .unwrap();
    assert_eq!(status, 200, "{drill}");
    let drill_id = drill["alerts"][0].as_str().unwrap().to_owned();

    let (_, tag, body) = feed(None).await;
    assert_ne!(tag, empty_tag);
    assert_eq!(
        links(&body),
        [format!("cap/{alert_id}.cap")],
        "the drill is not public: {body}"
    );
    let (status, _, _) = feed(tag.clone()).await;
    assert_eq!(status, 304, "an unchanged feed is not sent again");

    // The CAP document behind the link needs no token; a drill's is not public.
    let cap = app
        .http
        .get(format!("{}/feeds/cap/{alert_id}.cap", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(cap.status().as_u16(), 200);
    let doc = ingest::cap::parse_cap(&cap.bytes().await.unwrap()).unwrap();
    assert_eq!(doc.identifier, alert_id);
    let hidden = app
        .http
        .get(format!("{}/feeds/cap/{drill_id}.cap", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(hidden.status().as_u16(), 404);

    // Once cancelled, the feed carries the Cancel instead of the alert.
    let cancel_id = app.cancel(&alert_id, "thử nghiệm kết thúc").await.unwrap();
    let (status, _, body) = feed(tag).await;
    assert_eq!(status, 200);
    assert_eq!(links(&body), [format!("cap/{cancel_id}.cap")], "{body}");
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_lands_in_a_verifiable_audit_chain() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    app.register_receiver("06385", "loa-audit").await.unwrap();
    let alert_id = app.issue_bulletin("LU-AUDIT").await.unwrap();
    app.cancel(&alert_id, "đo sai").await.unwrap();
    canhbao_server::users::add(app.app.store(), &app.data_dir, "truc.ban", "officer", None)
        .await
        .unwrap();

    let (status, log) = app.get("/api/v1/audit").await.unwrap();
    assert_eq!(status, 200, "{log}");
    let actions: Vec<(&str, &str, &str)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["actor"].as_str().unwrap(),
                r["action"].as_str().unwrap(),
                r["target"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("cli", "user.add", "truc.ban"),
            ("bootstrap-admin", "alert.cancel", alert_id.as_str()),
            ("bootstrap-admin", "receiver.register", "loa-audit"),
        ],
        "newest first: {log}"
    );
    assert_eq!(log[1]["detail"]["reason"], "đo sai");
    let (_, verdict) = app.get("/api/v1/audit/verify").await.unwrap();
    assert_eq!(
        (verdict["rows"].as_i64(), verdict["intact"].as_bool()),
        (Some(3), Some(true)),
        "{verdict}"
    );
    // The head is an anchor to copy out; given back, it is checked.
    let head = verdict["head"].as_str().unwrap().to_owned();
    assert!(head.starts_with("3:"), "{head}");
    let (_, checked) = app
        .get(&format!("/api/v1/audit/verify?anchor={head}"))
        .await
        .unwrap();
    assert_eq!(
        (checked["anchor"].as_str(), checked["intact"].as_bool()),
        (Some("holds"), Some(true))
    );
    let (status, _) = app.get("/api/v1/audit/verify?anchor=3:not-a-hash").await.unwrap();
    assert_eq!(status, 400);
    app.app.stop().await;
}

/// The receiver contract, unchanged, on NATS's MQTT gateway (JetStream behind it): an
/// alert reaches a receiver verified and receipted, a receiver that connects later gets
/// the live alert retained, and a Cancel reaches both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_contract_holds_on_the_nats_mqtt_gateway() {
    if !testkit::nats::wanted() {
        return;
    }
    let nats = testkit::nats::Nats::start();
    let app = TestApp::spawn(Broker::External(nats.mqtt_url.clone()))
        .await
        .unwrap();
    let alert_id = alert_reaches_receiver_and_is_receipted(&app).await;
    let mut late = app.start_receiver("06385", "loa-nats-late").await.unwrap();
    let played = next_played(&mut late).await;
    assert_eq!(
        played.0, alert_id,
        "the live alert is retained for a late receiver"
    );
    let cancel_id = app.cancel(&alert_id, "thử nghiệm trên NATS").await.unwrap();
    assert_eq!(next_played(&mut late).await, (cancel_id, "Cancel".to_owned()));
    late.stop().await;
    app.app.stop().await;
    drop(nats);
}

/// With its broker down, the service uses the fallback broker of `[mqtt] fallback_url`:
/// an alert still reaches a receiver there, verified and receipted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_broker_down_the_service_uses_the_fallback_broker() {
    let Some(Broker::External(mosquitto)) = external_broker() else {
        return;
    };
    // A port nobody listens on stands for the primary broker, down.
    let dead = format!("mqtt://127.0.0.1:{}", testkit::kannel::free_port());
    let mut app = TestApp::spawn_with(
        Broker::External(dead),
        &[("CANHBAO__MQTT__FALLBACK_URL", mosquitto.as_str())],
    )
    .await
    .unwrap();
    // Receivers are on the broker that is up.
    app.broker = mqtt::BrokerUrl::parse(&mosquitto).unwrap();
    app.wait_for("/readyz", WAIT, |r| r["broker"] == "ok")
        .await
        .unwrap();
    alert_reaches_receiver_and_is_receipted(&app).await;
    app.app.stop().await;
}

// ---- the worst hour: what a receiver that comes back must never play ----

/// Every alert a receiver plays within `window`.
async fn plays_within(rx: &mut canhbao_tests::TestReceiver, window: Duration) -> Vec<(String, String)> {
    let deadline = std::time::Instant::now() + window;
    let mut out = Vec::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.next(left).await {
            Ok(ReceiverEvent::Played(p)) => out.push((p.id.clone(), p.msg_type.clone())),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    out
}

async fn a_receiver_back_on_its_session_plays_the_cancel_and_never_the_alert_it_cancels(broker: Broker) {
    let app = TestApp::spawn(broker).await.unwrap();
    // Online once: the broker keeps its session, and queues for it while it is away.
    let rx = app.start_receiver("06385", "loa-away").await.unwrap();
    app.wait_for("/api/v1/receivers", WAIT, |f| {
        f["receivers"].as_array().is_some_and(|v| {
            v.iter()
                .any(|r| r["receiver_id"] == "loa-away" && r["health"] == "online")
        })
    })
    .await
    .unwrap();
    rx.stop().await;
    // While it is away: an emergency, and its Cancel.
    let alert = app.issue_bulletin("AWAY-1").await.unwrap();
    let cancel = app.cancel(&alert, "cảm biến sai").await.unwrap();
    app.wait_for(&format!("/api/v1/alerts/{cancel}"), WAIT, |d| {
        d["deliveries"]
            .as_array()
            .is_some_and(|v| !v.is_empty() && v.iter().all(|x| x["state"] == "published"))
    })
    .await
    .unwrap();
    // Back: the session's queue gives the alert and the Cancel, then the retained ones.
    let mut rx = app.start_receiver("06385", "loa-away").await.unwrap();
    let played = plays_within(&mut rx, Duration::from_secs(3)).await;
    assert_eq!(played, [(cancel.clone(), "Cancel".to_owned())], "alert {alert}");
    // The matrix says what it did: the Cancel played, the alert never did.
    let mine = |d: &Value| {
        d["receiver_deliveries"]
            .as_array()
            .and_then(|v| v.iter().find(|r| r["receiver_id"] == "loa-away"))
            .map(|r| r["state"].as_str().unwrap_or("").to_owned())
    };
    let d = app
        .wait_for(&format!("/api/v1/alerts/{cancel}"), WAIT, |d| {
            mine(d).as_deref() == Some("played")
        })
        .await
        .unwrap();
    assert_eq!(mine(&d).as_deref(), Some("played"));
    let (_, d) = app.get(&format!("/api/v1/alerts/{alert}")).await.unwrap();
    assert_eq!(mine(&d).as_deref(), Some("superseded"), "{d:#}");
    rx.stop().await;
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_back_on_its_session_plays_the_cancel_and_never_the_alert_it_cancels_on_the_embedded_broker()
 {
    a_receiver_back_on_its_session_plays_the_cancel_and_never_the_alert_it_cancels(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_back_on_its_session_plays_the_cancel_and_never_the_alert_it_cancels_on_mosquitto() {
    let Some(broker) = external_broker() else {
        return;
    };
    a_receiver_back_on_its_session_plays_the_cancel_and_never_the_alert_it_cancels(broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_warning_plays_when_it_takes_effect_and_a_wrong_receiver_clock_is_flagged() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let mut rx = app.start_receiver("06385", "loa-sched").await.unwrap();
    let an = app.login_new_user("an.tran", "officer").await.unwrap();
    let effective = chrono::Utc::now() + chrono::Duration::seconds(4);
    let draft = serde_json::json!({
        "hazard": "flood", "risk_level": 2, "communes": ["06385"],
        "headline": "Thông báo xả lũ hồ Bản Lải lúc 14 giờ", "description": "Hồ xả lũ theo lịch.",
        "instruction": "Không đi lại dưới hạ du.",
        "effective": effective.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "valid_minutes": 60,
    });
    let alert = app.issue_warning(&an, &draft).await.unwrap();
    let (_, d) = app.get(&format!("/api/v1/alerts/{alert}")).await.unwrap();
    assert_eq!(d["alert"]["state"], "scheduled", "{d:#}");
    // The receiver takes it at once and plays it at its time, not before.
    loop {
        match rx.next(WAIT).await.unwrap() {
            ReceiverEvent::Scheduled { alert_id, .. } if alert_id == alert => break,
            ReceiverEvent::Played(p) => panic!("played before it took effect: {p:?}"),
            _ => {}
        }
    }
    assert_eq!(next_played(&mut rx).await.0, alert);
    assert!(
        chrono::Utc::now() >= effective - chrono::Duration::seconds(1),
        "played before its effective time"
    );
    let (_, d) = app.get(&format!("/api/v1/alerts/{alert}")).await.unwrap();
    assert_eq!(d["alert"]["state"], "live", "{d:#}");

    // A receiver whose clock is ten minutes ahead says so in its heartbeats: fleet health
    // and the delivery matrix flag it.
    app.register_receiver("06385", "loa-skewed").await.unwrap();
    let (raw, stop) = app.raw_client().await.unwrap();
    let skewed = chrono::Utc::now() + chrono::Duration::minutes(10);
    let heartbeat = serde_json::json!({"v": 1, "receiver_id": "loa-skewed", "commune": "06385",
        "at": skewed.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "uptime_s": 5, "last_played": null});
    raw.publish(
        &app.topics()
            .heartbeat(&domain::ReceiverId::new("loa-skewed").unwrap()),
        heartbeat.to_string().into_bytes(),
        false,
    )
    .await
    .unwrap();
    let fleet = app
        .wait_for("/api/v1/receivers", WAIT, |f| {
            f["receivers"].as_array().is_some_and(|v| {
                v.iter()
                    .any(|r| r["receiver_id"] == "loa-skewed" && r["clock_off"] == true)
            })
        })
        .await
        .unwrap();
    let skew = fleet["receivers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["receiver_id"] == "loa-skewed")
        .unwrap()["clock_offset_s"]
        .as_f64()
        .unwrap();
    assert!((590.0..610.0).contains(&skew), "{skew}");
    let honest = fleet["receivers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["receiver_id"] == "loa-sched")
        .unwrap()
        .clone();
    assert_eq!(honest["clock_off"], false, "{honest:#}");
    let second = app.issue_bulletin("SKEW-1").await.unwrap();
    let matrix = app
        .wait_for(&format!("/api/v1/alerts/{second}/deliveries"), WAIT, |m| {
            m["communes"].as_array().is_some_and(|c| !c.is_empty())
        })
        .await
        .unwrap();
    let row = matrix["communes"][0]["receivers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["receiver_id"] == "loa-skewed")
        .cloned()
        .unwrap();
    assert_eq!(row["clock_off"], true, "{row:#}");
    let metrics = app.get_text("/metrics").await.unwrap();
    assert!(metrics.contains("canhbao_receivers_clock_off 1"), "{metrics}");
    stop.cancel();
    rx.stop().await;
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_which_communes_the_rules_reach_and_each_stations_historic_flood() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let (status, cover) = app.get("/api/v1/coverage").await.unwrap();
    assert_eq!(status, 200, "{cover}");
    let rows = cover.as_array().unwrap();
    let flood: Vec<&serde_json::Value> = rows.iter().filter(|r| r["hazard"] == "flood").collect();
    assert_eq!(flood.len(), 65, "every commune is listed");
    // As shipped, no station has its Art. 45 area class: no flood risk level anywhere,
    // and the gap is named.
    let huu_lung = flood.iter().find(|r| r["commune"] == "06385").unwrap();
    assert_eq!(huu_lung["covered"], false, "{huu_lung}");
    assert_eq!(
        huu_lung["missing"],
        serde_json::json!(["area class of station HUULUNG"])
    );
    assert!(
        rows.iter().any(|r| r["covered"] == false
            && r["missing"][0]
                .as_str()
                .is_some_and(|m| m.starts_with("a station mapped"))),
        "communes no station maps are shown"
    );

    let (status, historic) = app.get("/api/v1/stations/historic").await.unwrap();
    assert_eq!(status, 200, "{historic}");
    let of = |id: &str| {
        historic
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["station"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (
            of("HUULUNG")["in_force_m"].as_f64(),
            of("HUULUNG")["configured_tag"].as_str()
        ),
        (Some(23.96), Some("V"))
    );
    assert!(of("LANGSON")["in_force_m"].is_null());
    // A reading that was never stored cannot be confirmed, and nothing is written.
    let (status, answer) = app
        .post(
            "/api/v1/stations/HUULUNG/historic",
            "application/json",
            br#"{"observed_at": "2026-10-09T01:00:00Z", "reason": "checked against the staff gauge"}"#,
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer.to_string().contains("no good water level reading"),
        "{answer}"
    );
    let (_, again) = app.get("/api/v1/stations/historic").await.unwrap();
    assert!(again.as_array().unwrap().iter().all(|s| s["confirmed"].is_null()));
}
