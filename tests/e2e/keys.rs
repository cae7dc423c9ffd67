//! Key rotation and revocation in the field (protocol §10a): `canhbao keys` signs a new
//! key set with the provisioning key, the running service publishes it retained, and
//! receivers apply it: a retired key's alerts are rejected from the next message on.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use canhbao_receiver::ReceiverEvent;
use canhbao_server::keyring::{KeysAction, run_keys};
use canhbao_tests::{Broker, TestApp};
use dispatch::Signer;
use dispatch::wire::{Envelope, envelope_bytes};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

/// `canhbao keys ACTION` on the app's data directory; the keys it lists.
fn keys(app: &TestApp, action: KeysAction) -> Vec<Value> {
    let mut out = Vec::new();
    run_keys(
        &action,
        &app.data_dir,
        &app.data_dir.join("signing.key"),
        "20",
        chrono::Utc::now(),
        &mut out,
    )
    .unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn applied(rx: &mut canhbao_tests::TestReceiver) -> (u64, Vec<String>, Vec<String>) {
    match rx.next_key_set(WAIT).await.unwrap() {
        ReceiverEvent::KeySetApplied {
            seq,
            trusted,
            revoked,
        } => (seq, trusted, revoked),
        other => panic!("expected a key set applied, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_retired_with_canhbao_keys_is_refused_by_receivers_from_the_next_message() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let alert_id = super::alert_reaches_receiver_and_is_receipted(&app).await;
    let mut rx = app.start_receiver("06385", "loa-06385-02").await.unwrap();
    assert!(matches!(rx.next(WAIT).await.unwrap(), ReceiverEvent::Played(_)));
    // The service published its key set when it started: its one signing key.
    assert_eq!(applied(&mut rx).await, (1, vec![app.app.key_id.clone()], vec![]));

    // A second key, published but not signing yet: receivers trust both.
    let listed = keys(&app, KeysAction::Generate { activate: false });
    let second = listed.iter().find(|k| k["state"] == "valid").unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (seq, trusted, _) = applied(&mut rx).await;
    assert_eq!(seq, 2);
    assert!(
        trusted.contains(&second) && trusted.contains(&app.app.key_id),
        "{trusted:?}"
    );

    // Its secret leaks; the key is retired. Receivers drop it within one message.
    let hex = second.rsplit(':').next().unwrap();
    let seed = B64
        .decode(
            std::fs::read_to_string(app.data_dir.join("keyring").join(format!("{hex}.key")))
                .unwrap()
                .trim(),
        )
        .unwrap();
    let stolen = Signer::from_seed(&seed.try_into().unwrap());
    keys(&app, KeysAction::Retire(second.clone()));
    assert_eq!(
        applied(&mut rx).await,
        (3, vec![app.app.key_id.clone()], vec![second.clone()])
    );
    super::publish_forgery(&app, &alert_id, |env| {
        let mut payload: Value = serde_json::from_slice(&B64.decode(&env.payload).unwrap()).unwrap();
        payload["headline"] = "Nước đã rút, người dân trở về nhà".into();
        let bytes = serde_json::to_vec(&payload).unwrap();
        serde_json::from_slice::<Envelope>(&envelope_bytes(&stolen.sign(bytes))).unwrap()
    })
    .await;
    match rx.next(WAIT).await.unwrap() {
        ReceiverEvent::Rejected { alert_id: id, reason } => {
            assert_eq!(id, alert_id);
            assert_eq!(reason.code(), "unknown_key", "{reason}");
        }
        other => panic!("an alert signed by a retired key must be rejected, got {other:?}"),
    }
    // The receiver's key file lists the provisioning key apart from the signing keys.
    let published: Value =
        serde_json::from_str(&std::fs::read_to_string(app.data_dir.join("signing-keys.pub.json")).unwrap())
            .unwrap();
    assert_eq!(
        published
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["state"] == "provisioning")
            .count(),
        1
    );
    rx.stop().await;
    app.app.stop().await;
}
