//! The store on a real SQLite file and, when `CANHBAO_TEST_POSTGRES_URL` is set, on a
//! real PostgreSQL database: atomic alert writes, exclusive outbox claims, idempotent
//! receipts, the audit chain and upgrades from the previous release.

#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Duration, Utc};
use domain::{
    AlarmLevel, Alert, AlertId, AlertOrigin, AlertSpec, AlertStatus, CommuneCode, Hazard, MessageClass,
    MsgType, ProvinceCode, Repeat, StationId,
};
use store::{NewDelivery, NewReceipt, SignedPayload, Store};

fn t0() -> DateTime<Utc> {
    "2026-10-09T01:00:00Z".parse().unwrap()
}

fn alert(id: &str, class: MessageClass, communes: &[&str]) -> Alert {
    Alert::new(spec(id, class, communes)).unwrap()
}

fn spec(id: &str, class: MessageClass, communes: &[&str]) -> AlertSpec {
    AlertSpec {
        id: AlertId::new(id).unwrap(),
        province: ProvinceCode::new("20").unwrap(),
        msg_type: MsgType::Alert,
        status: AlertStatus::Actual,
        references: vec![],
        origin: AlertOrigin::Computed {
            rule_id: "test@1".into(),
        },
        hazard: Hazard::Flood,
        risk_level: None,
        alarm_level: Some(AlarmLevel::Bd3),
        station: Some(StationId::new("HUULUNG").unwrap()),
        class,
        communes: communes.iter().map(|c| CommuneCode::new(c).unwrap()).collect(),
        sent: t0(),
        effective: t0(),
        expires: t0() + Duration::hours(6),
        headline: "h".into(),
        description: "d".into(),
        instruction: String::new(),
        repeat: Repeat {
            times: 1,
            interval_s: 0,
        },
        provisional: vec![],
        english: None,
        follow: None,
    }
}

fn signed() -> SignedPayload {
    SignedPayload {
        payload: b"{}".to_vec(),
        key_id: "ed25519:test".into(),
        sig: "c2ln".into(),
    }
}

/// One database for one test: a SQLite file in a directory of its own, or a PostgreSQL
/// database of its own.
type Db = testkit::db::TestDb;

/// Opens (and migrates) a test's database.
trait Open {
    async fn open(&self) -> Store;
}

impl Open for Db {
    async fn open(&self) -> Store {
        Store::open(self.url()).await.unwrap()
    }
}

use testkit::on_both_backends;

on_both_backends!(
    an_uncommitted_alert_leaves_nothing_behind,
    emergencies_are_claimed_before_a_backlog_of_other_messages,
    a_claimed_delivery_is_invisible_until_its_lease_runs_out,
    receipts_are_idempotent_per_alert_receiver_and_status,
    reopening_a_database_keeps_its_data_and_migrations,
    each_registered_receiver_is_tracked_resent_to_until_it_acknowledges_and_expires_visibly,
    an_update_supersedes_what_its_predecessor_had_not_delivered_and_clears_its_topic,
    an_sms_caught_mid_send_by_a_crash_is_never_sent_again_blindly,
    a_cancel_reaches_whoever_had_any_version_and_stops_what_was_not_sent,
    a_commune_whose_loudspeakers_all_played_is_never_a_fallback_candidate,
    the_audit_chain_detects_a_changed_or_removed_row,
    a_database_of_the_previous_release_upgrades_with_its_data_intact,
    a_database_a_later_release_migrated_is_refused_and_left_untouched,
    workers_of_two_instances_claiming_at_once_never_get_the_same_delivery,
    a_new_alert_wakes_the_workers_of_every_instance,
    the_alert_list_counts_each_alerts_publications_plays_and_refusals_in_one_query,
    a_batch_of_receipts_and_heartbeats_leaves_what_one_write_after_another_would,
    a_published_batch_is_recorded_at_once_each_commune_with_its_own_time,
    old_records_are_pruned_in_batches_and_alerts_and_the_audit_are_kept,
    a_running_idempotency_claim_is_taken_over_only_once_its_lease_runs_out,
);

/// A request still running (its instance renews the lease) is never taken over, however
/// long it takes; one whose instance died is, once the lease runs out.
async fn a_running_idempotency_claim_is_taken_over_only_once_its_lease_runs_out(db: Db) {
    use store::IdempotencyBegin as B;
    let store = &db.open().await;
    let at = |s: i64| t0() + Duration::seconds(s);
    assert_eq!(
        store
            .idempotency_begin("officer", "k", "sha", at(0))
            .await
            .unwrap(),
        B::Run
    );
    // A retry while it runs waits; it runs long, renewing its lease.
    for s in [5, 10, 15, 20, 25] {
        store.idempotency_renew("officer", "k", at(s)).await.unwrap();
        assert_eq!(
            store
                .idempotency_begin("officer", "k", "sha", at(s + 14))
                .await
                .unwrap(),
            B::Running { same: true },
            "taken over at {}s while its instance renews the lease",
            s + 14
        );
    }
    // Its instance dies after the last renewal (25 s): taken over 15 s later.
    assert_eq!(
        store
            .idempotency_begin("officer", "k", "sha", at(41))
            .await
            .unwrap(),
        B::Run
    );
    // The new claim holds a lease of its own.
    assert_eq!(
        store
            .idempotency_begin("officer", "k", "sha", at(50))
            .await
            .unwrap(),
        B::Running { same: true }
    );
}

async fn old_records_are_pruned_in_batches_and_alerts_and_the_audit_are_kept(db: Db) {
    use store::retention::Kind;
    let store = db.open().await;
    // Readings every hour for 10 days before t0, an old alert, old and new refusals.
    let mut tx = store.begin().await.unwrap();
    for h in 0..240 {
        let at = t0() - Duration::hours(h);
        let o = domain::Observation::new(
            StationId::new("HUULUNG").unwrap(),
            "water_level",
            16.0,
            "m",
            at,
            t0(),
        )
        .unwrap();
        tx.insert_observation(&o, "test", "Actual", at).await.unwrap();
    }
    tx.record_rejection("http", "api:test", "old", t0() - Duration::days(9))
        .await
        .unwrap();
    tx.record_rejection("http", "api:test", "new", t0())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    insert(&store, &alert("old-alert", MessageClass::Priority, &["06385"]), 1).await;
    let audit_before = store.verify_audit().await.unwrap();

    // Keep 3 days of readings, in batches of 50: five batches and a short one.
    let before = t0() - Duration::days(3);
    let mut batches = Vec::new();
    loop {
        let n = store.prune_batch(Kind::Observations, before, 50).await.unwrap();
        batches.push(n);
        if n < 50 {
            break;
        }
    }
    assert_eq!(batches.iter().sum::<u64>(), 240 - 73, "{batches:?}");
    assert!(batches.iter().all(|n| *n <= 50), "{batches:?}");
    let mut tx = store.begin().await.unwrap();
    let kept = tx
        .readings_since("Actual", t0() - Duration::days(30))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(kept.len(), 73, "3 days and the hour at t0");
    assert!(kept.iter().all(|r| r.at >= before));

    assert_eq!(
        store
            .prune_batch(Kind::Rejections, t0() - Duration::days(1), 500)
            .await
            .unwrap(),
        1
    );
    let left: Vec<String> = store
        .list_rejections(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.reason)
        .collect();
    assert_eq!(left, ["new"]);
    // Every other kind prunes without error, and alerts and the audit chain are untouched.
    for kind in Kind::ALL {
        store.prune_batch(kind, t0(), 500).await.unwrap();
    }
    assert!(
        store
            .list_alerts(10)
            .await
            .unwrap()
            .iter()
            .any(|a| a.id == "old-alert")
    );
    assert_eq!(store.verify_audit().await.unwrap(), audit_before);
}

async fn insert(store: &Store, a: &Alert, priority: i64) {
    let deliveries: Vec<NewDelivery> = a
        .communes
        .iter()
        .map(|c| NewDelivery {
            commune: c.to_string(),
            topic: format!("t/{c}/{}", a.id),
            priority,
        })
        .collect();
    let mut tx = store.begin().await.unwrap();
    tx.insert_alert(a, &signed(), &deliveries, t0()).await.unwrap();
    tx.commit().await.unwrap();
}

async fn an_uncommitted_alert_leaves_nothing_behind(db: Db) {
    let store = db.open().await;
    {
        let mut tx = store.begin().await.unwrap();
        let a = alert("a1", MessageClass::Priority, &["06385"]);
        let d = [NewDelivery {
            commune: "06385".into(),
            topic: "t".into(),
            priority: 1,
        }];
        tx.insert_alert(&a, &signed(), &d, t0()).await.unwrap();
        // dropped without commit
    }
    assert!(store.list_alerts(10).await.unwrap().is_empty());
    assert!(
        store
            .claim_due(t0(), Duration::seconds(30), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn emergencies_are_claimed_before_a_backlog_of_other_messages(db: Db) {
    let store = db.open().await;
    for i in 0..5 {
        insert(
            &store,
            &alert(&format!("normal-{i}"), MessageClass::Normal, &["06385", "06391"]),
            0,
        )
        .await;
    }
    insert(
        &store,
        &alert("emergency", MessageClass::Emergency, &["06385"]),
        2,
    )
    .await;
    let claimed = store.claim_due(t0(), Duration::seconds(30), 3).await.unwrap();
    assert_eq!(claimed.len(), 3);
    assert_eq!(claimed[0].alert_id, "emergency");
    assert_eq!(claimed[0].attempts, 1);
}

async fn a_claimed_delivery_is_invisible_until_its_lease_runs_out(db: Db) {
    let store = db.open().await;
    insert(&store, &alert("a1", MessageClass::Priority, &["06385"]), 1).await;
    let lease = Duration::seconds(30);
    let first = store.claim_due(t0(), lease, 10).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(
        store
            .claim_due(t0() + Duration::seconds(29), lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The worker died: after the lease another one takes it.
    let again = store
        .claim_due(t0() + Duration::seconds(31), lease, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);

    store
        .mark_retry(again[0].id, "broker down", t0() + Duration::seconds(60))
        .await
        .unwrap();
    assert!(
        store
            .claim_due(t0() + Duration::seconds(59), lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let d = store.deliveries_for_alert("a1").await.unwrap();
    assert_eq!(d[0].last_error.as_deref(), Some("broker down"));
    // The broker is back at 40 s: the delivery is due then, not after its back-off.
    let back = t0() + Duration::seconds(40);
    assert_eq!(store.retry_queued_now(back).await.unwrap(), 1);
    assert_eq!(store.next_due().await.unwrap(), Some(back));
    assert_eq!(
        store.retry_queued_now(back).await.unwrap(),
        0,
        "nothing waits any more"
    );

    let third = store
        .claim_due(t0() + Duration::seconds(61), lease, 10)
        .await
        .unwrap();
    store
        .mark_published(third[0].id, t0() + Duration::seconds(61))
        .await
        .unwrap();
    assert!(
        store
            .claim_due(t0() + Duration::hours(1), lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let d = store.deliveries_for_alert("a1").await.unwrap();
    assert_eq!(d[0].state, "published");
    assert_eq!(d[0].last_error, None);

    // After a broker restart, a live alert's deliveries go back in the queue.
    assert_eq!(store.requeue_live(t0() + Duration::hours(1)).await.unwrap(), 1);
    assert_eq!(
        store.requeue_live(t0() + Duration::hours(7)).await.unwrap(),
        0,
        "expired alerts stay done"
    );
}

async fn receipts_are_idempotent_per_alert_receiver_and_status(db: Db) {
    let store = db.open().await;
    let r = NewReceipt {
        alert_id: "a1",
        receiver_id: "loa-1",
        commune: Some("06385"),
        status: "played",
        reason: None,
        receiver_at: t0(),
    };
    assert!(store.record_receipt(&r, t0()).await.unwrap());
    assert!(
        !store
            .record_receipt(&r, t0() + Duration::seconds(5))
            .await
            .unwrap()
    );
    let rejected = NewReceipt {
        status: "rejected",
        reason: Some("bad_signature"),
        ..r.clone()
    };
    assert!(store.record_receipt(&rejected, t0()).await.unwrap());
    // Another kind of refusal of the same alert is kept; the same kind again is not, and
    // invented codes all count as one.
    let unknown_key = NewReceipt {
        reason: Some("unknown_key: key id \"x\" is not trusted"),
        ..rejected.clone()
    };
    assert!(store.record_receipt(&unknown_key, t0()).await.unwrap());
    assert!(!store.record_receipt(&unknown_key, t0()).await.unwrap());
    for junk in ["zzz: a", "yyy: b"] {
        let r = NewReceipt {
            reason: Some(junk),
            ..rejected.clone()
        };
        store.record_receipt(&r, t0()).await.unwrap();
    }
    let all = store.receipts_for_alert("a1").await.unwrap();
    assert_eq!(all.len(), 4, "played, bad_signature, unknown_key, other: {all:?}");
}

async fn reopening_a_database_keeps_its_data_and_migrations(db: Db) {
    let url = db.url().to_owned();
    let store = Store::open(&url).await.unwrap();
    insert(&store, &alert("a1", MessageClass::Priority, &["06385"]), 1).await;
    store.close().await;
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.list_alerts(10).await.unwrap().len(), 1);
}

async fn register(store: &Store, id: &str, commune: &str) {
    let r = store::RegisteredReceiver {
        receiver_id: id.into(),
        commune: commune.into(),
        password_hash: None,
        trusted_keys: vec![],
        firmware: None,
        registered: t0(),
        drills: true,
    };
    assert!(store.register_receiver(&r).await.unwrap());
}

fn states(rows: &[store::ReceiverDeliveryRecord]) -> Vec<(String, String)> {
    rows.iter()
        .map(|r| (r.receiver_id.clone(), r.state.clone()))
        .collect()
}

async fn each_registered_receiver_is_tracked_resent_to_until_it_acknowledges_and_expires_visibly(db: Db) {
    let store = db.open().await;
    register(&store, "loa-a", "06385").await;
    register(&store, "loa-b", "06385").await;
    register(&store, "loa-c", "05977").await;
    register(&store, "gone", "06385").await;
    assert!(store.remove_receiver("gone", t0()).await.unwrap());
    assert!(
        !store
            .register_receiver(&store.registered_receiver("loa-a").await.unwrap().unwrap())
            .await
            .unwrap(),
        "already registered"
    );
    let a = alert("a-1", MessageClass::Emergency, &["06385"]);
    insert(&store, &a, 2).await;
    // One row per registered, not removed, receiver of the alert's communes.
    let rows = store.receiver_deliveries("a-1").await.unwrap();
    assert_eq!(
        states(&rows),
        [
            ("loa-a".into(), "queued".into()),
            ("loa-b".into(), "queued".into())
        ]
    );
    let claimed = store.claim_due(t0(), Duration::seconds(30), 10).await.unwrap();
    store.mark_published(claimed[0].id, t0()).await.unwrap();
    // Receipts move a row forward, never back.
    assert!(
        store
            .advance_receiver_delivery("a-1", "loa-a", "played", None, t0())
            .await
            .unwrap()
    );
    assert!(
        !store
            .advance_receiver_delivery("a-1", "loa-a", "received", None, t0())
            .await
            .unwrap()
    );
    assert!(
        !store
            .advance_receiver_delivery("a-1", "loa-a", "rejected", Some("replayed"), t0())
            .await
            .unwrap()
    );
    assert!(
        !store
            .advance_receiver_delivery("a-1", "stranger", "played", None, t0())
            .await
            .unwrap()
    );
    let rows = store.receiver_deliveries("a-1").await.unwrap();
    assert_eq!(
        states(&rows),
        [("loa-a".into(), "played".into()), ("loa-b".into(), "sent".into())]
    );
    assert_eq!(rows[0].received, Some(t0()), "played implies received");
    // loa-b has not acknowledged: the topic is re-queued once 30 s have passed, then 60 s.
    let schedule = [Duration::seconds(30), Duration::seconds(60)];
    assert_eq!(
        store
            .requeue_unacknowledged(t0() + Duration::seconds(29), &schedule)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .requeue_unacknowledged(t0() + Duration::seconds(30), &schedule)
            .await
            .unwrap(),
        1
    );
    let again = store
        .claim_due(t0() + Duration::seconds(30), Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    store
        .mark_published(again[0].id, t0() + Duration::seconds(31))
        .await
        .unwrap();
    assert_eq!(
        store
            .requeue_unacknowledged(t0() + Duration::seconds(61), &schedule)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .requeue_unacknowledged(t0() + Duration::seconds(91), &schedule)
            .await
            .unwrap(),
        1
    );
    // `received` alone does not end the resends: its `played` may be lost with a broker.
    let third = store
        .claim_due(t0() + Duration::seconds(91), Duration::seconds(30), 10)
        .await
        .unwrap();
    store
        .mark_published(third[0].id, t0() + Duration::seconds(92))
        .await
        .unwrap();
    assert!(
        store
            .advance_receiver_delivery("a-1", "loa-b", "received", None, t0())
            .await
            .unwrap()
    );
    let resent = store.requeue_unacknowledged(t0() + Duration::seconds(152), &schedule);
    assert_eq!(resent.await.unwrap(), 1);
    let fourth = store
        .claim_due(t0() + Duration::seconds(152), Duration::seconds(30), 10)
        .await
        .unwrap();
    store
        .mark_published(fourth[0].id, t0() + Duration::seconds(153))
        .await
        .unwrap();
    // How it played ends them; a failure is final, and a late `received` does not undo it.
    let failed = store.advance_receiver_delivery("a-1", "loa-b", "failed", Some("player: exit 1"), t0());
    assert!(failed.await.unwrap());
    let late = store.advance_receiver_delivery("a-1", "loa-b", "received", None, t0());
    assert!(!late.await.unwrap());
    let resent = store.requeue_unacknowledged(t0() + Duration::hours(1), &schedule);
    assert_eq!(resent.await.unwrap(), 0);

    // A second alert that nobody acknowledges expires visibly, and its topic is cleared.
    let b = alert("b-1", MessageClass::Normal, &["05977"]);
    insert(&store, &b, 0).await;
    assert!(
        store
            .due_clears(t0() + Duration::hours(5), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.expire_deliveries(t0() + Duration::hours(6)).await.unwrap(),
        1
    );
    let rows = store.receiver_deliveries("b-1").await.unwrap();
    assert_eq!(states(&rows), [("loa-c".into(), "expired".into())]);
    let due = store.due_clears(t0() + Duration::hours(6), 10).await.unwrap();
    assert!(due.contains(&"t/05977/b-1".to_owned()), "{due:?}");
    store
        .mark_cleared("t/05977/b-1", t0() + Duration::hours(6))
        .await
        .unwrap();
    assert!(
        !store
            .due_clears(t0() + Duration::hours(7), 10)
            .await
            .unwrap()
            .contains(&"t/05977/b-1".to_owned())
    );
}

async fn an_update_supersedes_what_its_predecessor_had_not_delivered_and_clears_its_topic(db: Db) {
    let store = db.open().await;
    register(&store, "loa-a", "06385").await;
    register(&store, "loa-b", "06385").await;
    insert(&store, &alert("old", MessageClass::Priority, &["06385"]), 1).await;
    assert!(
        store
            .advance_receiver_delivery("old", "loa-a", "played", None, t0())
            .await
            .unwrap()
    );
    let mut update = spec("new", MessageClass::Emergency, &["06385"]);
    update.msg_type = MsgType::Update;
    update.references = vec![AlertId::new("old").unwrap()];
    insert(&store, &Alert::new(update).unwrap(), 2).await;
    let rows = store.receiver_deliveries("old").await.unwrap();
    assert_eq!(
        states(&rows),
        [
            ("loa-a".into(), "played".into()),
            ("loa-b".into(), "superseded".into())
        ]
    );
    assert_eq!(rows[1].reason.as_deref(), Some("superseded by new"));
    // The old topic is cleared a minute after the update, long before it would expire.
    let due = store.due_clears(t0() + Duration::seconds(60), 10).await.unwrap();
    assert_eq!(due, ["t/06385/old"]);
    // What was not yet published never is, and is never published again at a restart.
    let old = store.deliveries_for_alert("old").await.unwrap();
    assert_eq!(old[0].state, "superseded");
    assert_eq!(
        store.requeue_live(t0() + Duration::minutes(1)).await.unwrap(),
        0,
        "nothing published, and the old one never will be"
    );
    let claimed = store
        .claim_due(t0() + Duration::minutes(1), Duration::seconds(30), 10)
        .await
        .unwrap();
    assert!(claimed.iter().all(|d| d.alert_id == "new"), "{claimed:?}");
    // A receiver that played it after all (from its session's queue, say) shows as
    // played, not superseded: the matrix records what each receiver did.
    assert!(
        store
            .advance_receiver_delivery("old", "loa-b", "played", None, t0())
            .await
            .unwrap()
    );
    let rows = store.receiver_deliveries("old").await.unwrap();
    assert_eq!(rows[1].state, "played");
}

fn sms(phone: &str) -> store::NewSms {
    store::NewSms {
        phone: phone.into(),
        commune: "06385".into(),
        role: "commune_chair".into(),
        cause: "fallback".into(),
        message_ref: format!("ref-{phone}"),
        text: "t".into(),
        encoding: "GSM-7".into(),
        segments: 1,
        priority: 2,
        gateway: "a".into(),
    }
}

async fn an_sms_caught_mid_send_by_a_crash_is_never_sent_again_blindly(db: Db) {
    let store = db.open().await;
    let a = alert("a-sms", MessageClass::Emergency, &["06385"]);
    insert(&store, &a, 2).await;
    assert!(
        store
            .decide_fallback(
                "a-sms",
                "06385",
                "no receiver",
                &[sms("+84912000001"), sms("+84912000002")],
                t0()
            )
            .await
            .unwrap()
    );
    // A second instance deciding the same commune writes nothing more.
    assert!(
        !store
            .decide_fallback("a-sms", "06385", "no receiver", &[sms("+84912000003")], t0())
            .await
            .unwrap()
    );
    let lease = Duration::seconds(60);
    let claimed = store.claim_sms(t0(), lease, 10).await.unwrap();
    assert_eq!(claimed.len(), 2);
    // A sender that dies before trying them leaves them to the next claim, once its lease
    // is over.
    assert!(
        store
            .claim_sms(t0() + Duration::seconds(59), lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let claimed = store.claim_sms(t0(), lease, 10).await.unwrap_or_default();
    assert!(claimed.is_empty(), "still leased");
    let claimed = store
        .claim_sms(t0() + Duration::seconds(60), lease, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    assert_eq!(claimed[0].attempts, 2);
    let ids: Vec<i64> = claimed.iter().map(|c| c.id).collect();
    assert_eq!(store.mark_sms_sending(&ids, t0(), lease).await.unwrap(), ids);
    assert!(
        store
            .mark_sms_sending(&ids, t0(), lease)
            .await
            .unwrap()
            .is_empty(),
        "marked once"
    );
    // The process dies mid-call: both are `sending`, and nothing claims them again...
    assert!(
        store
            .claim_sms(t0() + Duration::hours(1), lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .recover_sms_sending(t0() + Duration::seconds(59), Duration::seconds(300))
            .await
            .unwrap(),
        0
    );
    // ...until the lease is over: then they wait for a report, still not queued.
    let later = t0() + Duration::seconds(61);
    assert_eq!(
        store
            .recover_sms_sending(later, Duration::seconds(300))
            .await
            .unwrap(),
        2
    );
    assert!(store.claim_sms(later, lease, 10).await.unwrap().is_empty());
    let rows = store.sms_for_alert("a-sms").await.unwrap();
    assert!(rows.iter().all(|r| r.state == "unconfirmed"), "{rows:?}");
    // A report for one settles it (a repeat in the same burst changes nothing); the other
    // moves to gateway b once its deadline passes.
    let report = store::IncomingReport {
        message_ref: "ref-+84912000001".into(),
        gateway: "a".into(),
        status: "1".into(),
        detail: "delivered".into(),
        reported: None,
    };
    let mut seen = Vec::new();
    let applied = store
        .apply_sms_reports(&[report.clone(), report], later, |i, state, gw, _, _| {
            seen.push((i, state.to_owned(), gw.to_owned()));
            if state == "unconfirmed" {
                store::ReportDecision::Set("delivered".into())
            } else {
                store::ReportDecision::Keep
            }
        })
        .await
        .unwrap();
    assert_eq!(
        seen,
        [
            (0, "unconfirmed".to_owned(), "a".to_owned()),
            (1, "delivered".to_owned(), "a".to_owned())
        ]
    );
    assert_eq!(
        applied,
        [
            store::SmsReportApplied::Applied {
                state: "delivered".into(),
                repeat: false
            },
            store::SmsReportApplied::Applied {
                state: "delivered".into(),
                repeat: true
            },
        ]
    );
    // Its report has a full deadline from the recovery, not from the send before the crash.
    let deadline = later + Duration::seconds(300);
    assert!(
        store
            .overdue_sms(deadline - Duration::seconds(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let overdue = store.overdue_sms(deadline, 10).await.unwrap();
    assert_eq!(overdue.len(), 1);
    assert!(
        store
            .resolve_overdue(&overdue[0], Some("b"), "no report from a", deadline)
            .await
            .unwrap()
    );
    let again = store.claim_sms(deadline, lease, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].gateway.as_str(), again[0].tried.clone()),
        ("b", vec!["a".to_owned()])
    );
}

/// An Update (or Cancel) of `old`.
fn follow_up(id: &str, kind: MsgType, old: &str) -> Alert {
    let mut s = spec(id, MessageClass::Emergency, &["06385"]);
    s.msg_type = kind;
    s.references = vec![AlertId::new(old).unwrap()];
    Alert::new(s).unwrap()
}

/// Claims, marks and records every due SMS as submitted; returns their alert ids.
async fn send_all(store: &Store, now: DateTime<Utc>) -> Vec<String> {
    let lease = Duration::seconds(60);
    let claimed = store.claim_sms(now, lease, 100).await.unwrap();
    let ids: Vec<i64> = claimed.iter().map(|c| c.id).collect();
    let marked = store.mark_sms_sending(&ids, now, lease).await.unwrap();
    let outcomes: Vec<_> = claimed
        .iter()
        .filter(|c| marked.contains(&c.id))
        .map(|c| {
            (
                c.clone(),
                store::SmsOutcome::Submitted {
                    report_deadline: now + Duration::seconds(300),
                },
            )
        })
        .collect();
    store.record_sms_outcomes(&outcomes, now).await.unwrap();
    outcomes.iter().map(|(c, _)| c.alert_id.clone()).collect()
}

async fn a_cancel_reaches_whoever_had_any_version_and_stops_what_was_not_sent(db: Db) {
    let store = db.open().await;
    insert(&store, &alert("v1", MessageClass::Emergency, &["06385"]), 2).await;
    store
        .decide_fallback("v1", "06385", "no receiver", &[sms("+84912000001")], t0())
        .await
        .unwrap();
    assert_eq!(send_all(&store, t0()).await, ["v1"]);

    // The update follows by SMS to whoever had v1; it is claimed, but a cancel of the
    // update comes before its call leaves.
    insert(&store, &follow_up("v2", MsgType::Update, "v1"), 2).await;
    let due = store.follow_up_candidates(t0(), 10).await.unwrap();
    assert_eq!(
        due,
        [(
            "v2".into(),
            "+84912000001".into(),
            "06385".into(),
            "commune_chair".into()
        )]
    );
    let mut m = sms("+84912000001");
    m.message_ref = "ref-v2".into();
    m.cause = "follow_up".into();
    store.queue_sms("v2", &[m], t0()).await.unwrap();
    let claimed = store.claim_sms(t0(), Duration::seconds(60), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    insert(&store, &follow_up("v3", MsgType::Cancel, "v2"), 2).await;
    assert!(
        store
            .mark_sms_sending(&[claimed[0].id], t0(), Duration::seconds(60))
            .await
            .unwrap()
            .is_empty(),
        "a message of an updated or cancelled version is never sent"
    );
    let v2 = store.sms_for_alert("v2").await.unwrap();
    assert_eq!(v2[0].state, "superseded", "{v2:?}");

    // The cancel references only v2, yet reaches the number that had v1; v2 itself gets
    // no more follow-ups now that it is replaced.
    let due = store.follow_up_candidates(t0(), 10).await.unwrap();
    assert_eq!(
        due,
        [(
            "v3".into(),
            "+84912000001".into(),
            "06385".into(),
            "commune_chair".into()
        )]
    );
}

async fn a_commune_whose_loudspeakers_all_played_is_never_a_fallback_candidate(db: Db) {
    let store = db.open().await;
    register(&store, "r-1", "06385").await;
    insert(
        &store,
        &alert("p1", MessageClass::Emergency, &["06385", "05977"]),
        2,
    )
    .await;
    let communes = |c: Vec<store::FallbackCandidate>| c.into_iter().map(|c| c.commune).collect::<Vec<_>>();
    let later = t0() + Duration::minutes(1);
    assert_eq!(
        communes(store.fallback_candidates(later, 10).await.unwrap()),
        ["05977", "06385"]
    );
    for status in ["received", "played"] {
        store
            .advance_receiver_delivery("p1", "r-1", status, None, later)
            .await
            .unwrap();
    }
    assert_eq!(
        communes(store.fallback_candidates(later, 10).await.unwrap()),
        ["05977"]
    );
    // An alert its officer kept to the loudspeakers never goes by SMS.
    insert(&store, &alert("p2", MessageClass::Emergency, &["05990"]), 2).await;
    assert!(communes(store.fallback_candidates(later, 10).await.unwrap()).contains(&"05990".to_owned()));
    let mut tx = store.begin().await.unwrap();
    tx.alert_without_sms("p2").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        communes(store.fallback_candidates(later, 10).await.unwrap()),
        ["05977"]
    );
    assert!(!store.get_alert("p2").await.unwrap().unwrap().sms);
}

async fn the_audit_chain_detects_a_changed_or_removed_row(db: Db) {
    let url = db.url().to_owned();
    let store = Store::open(&url).await.unwrap();
    for (i, action) in ["login", "alert.cancel", "receiver.register"].iter().enumerate() {
        let row = store
            .append_audit(
                "truc.ban",
                action,
                &format!("t-{i}"),
                &serde_json::json!({"n": i}),
                t0(),
            )
            .await
            .unwrap();
        assert_eq!(row.id, i64::try_from(i).unwrap() + 1);
    }
    let ok = store.verify_audit().await.unwrap();
    assert_eq!((ok.rows, ok.broken_at), (3, None));

    // An anchor copied out of the database holds while nothing changes...
    let head = store.audit_head().await.unwrap().unwrap();
    assert_eq!(
        store.check_audit_anchor(head.id, &head.hash).await.unwrap(),
        "holds"
    );
    // Someone with the database file rewrites what row 2 says...
    sqlx::any::install_default_drivers();
    let raw = sqlx::AnyPool::connect(&url).await.unwrap();
    sqlx::query("UPDATE audit_log SET detail = '{\"n\":9}' WHERE id = 2")
        .execute(&raw)
        .await
        .unwrap();
    assert_eq!(store.verify_audit().await.unwrap().broken_at, Some(2));
    // ...or removes it.
    sqlx::query("DELETE FROM audit_log WHERE id = 2")
        .execute(&raw)
        .await
        .unwrap();
    assert_eq!(store.verify_audit().await.unwrap().broken_at, Some(3));
}

/// The schema of the release before this one (migrations 1 to 12, as they landed).
const PREVIOUS_RELEASE_SCHEMA: i64 = 12;

async fn a_database_of_the_previous_release_upgrades_with_its_data_intact(db: Db) {
    let url = db.url().to_owned();
    // The previous release wrote these rows.
    let old = Store::open_at_schema(&url, PREVIOUS_RELEASE_SCHEMA)
        .await
        .unwrap();
    // The same two bytes `{}`, in each engine's blob literal.
    let blob = match &db {
        Db::Sqlite(..) => "X'7B7D'",
        Db::Postgres(_) => "'\\x7b7d'",
    };
    for sql in [
        format!(
            "INSERT INTO alerts (id, province, msg_type, status, refs, origin_kind, origin_detail, hazard,
            risk_level, alarm_level, station, class, communes, sent_ms, effective_ms, expires_ms,
            headline, description, instruction, repeat_times, repeat_interval_s, provisional,
            payload, key_id, sig, created_ms)
         VALUES ('old-1', '20', 'Alert', 'Actual', '[]', 'computed', 'flood@1', 'flood', 3, 3,
            'HUULUNG', 'emergency', '[\"06385\"]', 1000, 1000, 99999999999999, 'Lũ', 'Nước lên', '',
            3, 300, '[]', {blob}, 'ed25519:old', 'c2ln', 1000)"
        ),
        "INSERT INTO receiver_registry (receiver_id, commune, trusted_keys, registered_ms)
         VALUES ('loa-old', '06385', '[]', 1000)"
            .to_owned(),
        "INSERT INTO api_tokens (token_sha256, role, label, created_ms, stations)
         VALUES ('aa', 'station', 'old gauge', 1000, '[\"HUULUNG\"]')"
            .to_owned(),
        // Art. 46 levels under both former codes for one commune, and one alone.
        "INSERT INTO area_levels (status, hazard, commune, level, since_ms) VALUES
            ('Actual', 'landslide', '06385', 2, 1000), ('Actual', 'flash_flood', '06385', 1, 1000),
            ('Actual', 'landslide', '06463', 1, 1000)"
            .to_owned(),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&old).await.unwrap();
    }
    old.close().await;

    // This release opens it: every migration after 12 runs, forward only.
    let store = Store::open(&url).await.unwrap();
    let a = store.get_alert("old-1").await.unwrap().unwrap();
    assert_eq!(
        (a.headline.as_str(), a.risk_level, a.signed.payload.as_slice()),
        ("Lũ", Some(3), &b"{}"[..])
    );
    assert!(a.english.is_none() && a.sms, "new columns take their defaults");
    assert_eq!(a.replaced_by, None);
    let fleet = store.fleet().await.unwrap();
    assert_eq!(fleet.len(), 1);
    assert!(
        !fleet[0].receiver.drills,
        "an old receiver is not enrolled for drills"
    );
    let token = store.find_token("aa", t0()).await.unwrap().unwrap();
    assert_eq!((token.label.as_str(), token.scopes.clone()), ("old gauge", None));
    assert_eq!(token.stations, Some(vec!["HUULUNG".to_owned()]));
    assert!(store.list_warnings(None, 10).await.unwrap().is_empty());
    // Art. 46 is one hazard now: the higher level of the two is kept, under flash_flood.
    let mut levels = store.area_levels("Actual").await.unwrap();
    levels.sort();
    assert_eq!(
        levels,
        vec![
            ("flash_flood".to_owned(), "06385".to_owned(), 2),
            ("flash_flood".to_owned(), "06463".to_owned(), 1),
        ]
    );
    store
        .append_audit("cli", "upgrade", "-", &serde_json::json!({}), t0())
        .await
        .unwrap();
    assert_eq!(store.verify_audit().await.unwrap().broken_at, None);
    // Opening again changes nothing: each migration ran once.
    drop(store);
    let again = Store::open(&url).await.unwrap();
    assert_eq!(again.get_alert("old-1").await.unwrap().unwrap().headline, "Lũ");
    assert!(Store::schema_version() > PREVIOUS_RELEASE_SCHEMA);
}

/// An instance of an older release must not run on a newer schema (an upgrade that was
/// rolled back by replacing the binary, or an instance left running on the old release):
/// it refuses to start, says why and what to do, and writes nothing.
async fn a_database_a_later_release_migrated_is_refused_and_left_untouched(db: Db) {
    let url = db.url().to_owned();
    let store = Store::open(&url).await.unwrap();
    store
        .register_receiver(&store::RegisteredReceiver {
            receiver_id: "loa-1".into(),
            commune: "06385".into(),
            password_hash: None,
            trusted_keys: vec![],
            firmware: None,
            registered: t0(),
            drills: false,
        })
        .await
        .unwrap();
    drop(store);
    // The later release's migration, as sqlx records it.
    let later = Store::schema_version() + 1;
    let raw = Store::open_at_schema(&url, Store::schema_version())
        .await
        .unwrap();
    let blob = match &db {
        Db::Sqlite(..) => "X'00'",
        Db::Postgres(_) => "'\\x00'",
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES ({later}, 'a later release', TRUE, {blob}, 1)"
    )))
    .execute(&raw)
    .await
    .unwrap();
    let tables = |pool: sqlx::AnyPool| async move {
        use sqlx::Row;
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get(0);
        pool.close().await;
        n
    };
    let before = tables(raw).await;

    let Err(refused) = Store::open(&url).await else {
        panic!("an older build opened a newer schema");
    };
    assert!(
        matches!(refused, store::StoreError::NewerSchema { found, known }
            if found == later && known == Store::schema_version()),
        "{refused:?}"
    );
    let said = refused.to_string();
    assert!(
        said.contains(&format!("version {later}")) && said.contains("restore the backup"),
        "{said}"
    );
    // Nothing changed: the history as the later release left it, the data still there.
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    use sqlx::Row;
    let receivers: i64 = sqlx::query("SELECT COUNT(*) FROM receiver_registry")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(receivers, 1);
    assert_eq!(tables(pool).await, before);
}

#[tokio::test]
async fn every_connection_is_durable_wal_with_foreign_keys() {
    let db = Db::sqlite();
    let store = db.open().await;
    // Several at once, so that more than one pooled connection is asked.
    let (a, b, c) = tokio::join!(store.pragmas(), store.pragmas(), store.pragmas());
    for p in [a, b, c] {
        assert_eq!(
            p.unwrap(),
            ("wal".to_owned(), 2, 1),
            "journal_mode, synchronous = FULL, foreign_keys"
        );
    }
}

/// Two instances' outbox workers, each with its own pool on the same database, claiming
/// in a loop at the same time: every delivery is claimed once, by one of them.
async fn workers_of_two_instances_claiming_at_once_never_get_the_same_delivery(db: Db) {
    let first = db.open().await;
    let second = db.open().await;
    let communes: Vec<String> = (0..60).map(|i| format!("{:05}", 6000 + i)).collect();
    for n in 0..5 {
        let refs: Vec<&str> = communes.iter().map(String::as_str).collect();
        insert(&first, &alert(&format!("a{n}"), MessageClass::Priority, &refs), 1).await;
    }
    let claim_all = |store: Store| async move {
        let mut mine = Vec::new();
        loop {
            let batch = store.claim_due(t0(), Duration::seconds(60), 7).await.unwrap();
            if batch.is_empty() {
                return mine;
            }
            mine.extend(batch.into_iter().map(|d| d.id));
            tokio::task::yield_now().await;
        }
    };
    let (x, y) = tokio::join!(
        tokio::spawn(claim_all(first.clone())),
        tokio::spawn(claim_all(second.clone()))
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    let mut all: Vec<i64> = x.iter().chain(&y).copied().collect();
    all.sort_unstable();
    let claimed = all.len();
    all.dedup();
    assert_eq!(claimed, all.len(), "a delivery was claimed twice");
    assert_eq!(claimed, 5 * 60, "every delivery is claimed");
    eprintln!("claims: {} and {}", x.len(), y.len());
}

/// On PostgreSQL, an alert committed by one instance wakes the outbox workers of another
/// (LISTEN/NOTIFY), so that they do not wait for their idle poll. On SQLite (one process)
/// there is no other instance, and listening ends at once.
async fn a_new_alert_wakes_the_workers_of_every_instance(db: Db) {
    let listener = db.open().await;
    let writer = db.open().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let listening = tokio::spawn(async move {
        listener
            .listen_for_alerts(move || {
                let _ = tx.send(());
            })
            .await
    });
    if matches!(db, Db::Sqlite(..)) {
        tokio::time::timeout(std::time::Duration::from_secs(5), listening)
            .await
            .expect("nothing to listen for on SQLite")
            .unwrap();
        return;
    }
    let wait = std::time::Duration::from_secs(5);
    // One wake once listening: whatever was committed before may have been missed.
    tokio::time::timeout(wait, rx.recv())
        .await
        .expect("listening")
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(rx.try_recv().is_err(), "no wake without a new alert");
    insert(&writer, &alert("w1", MessageClass::Emergency, &["06385"]), 2).await;
    tokio::time::timeout(wait, rx.recv())
        .await
        .expect("the other instance's commit wakes this one")
        .unwrap();
    // A transaction rolled back notifies nobody.
    let mut tx = writer.begin().await.unwrap();
    tx.insert_alert(
        &alert("w2", MessageClass::Emergency, &["06385"]),
        &signed(),
        &[],
        t0(),
    )
    .await
    .unwrap();
    drop(tx);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(rx.try_recv().is_err(), "a rolled-back alert woke a worker");
    listening.abort();
}

/// The alert list's counts: communes published, receivers that played, refusals (each kind
/// of refusal a row), for a page of alerts at once.
async fn the_alert_list_counts_each_alerts_publications_plays_and_refusals_in_one_query(db: Db) {
    let store = db.open().await;
    insert(
        &store,
        &alert("a1", MessageClass::Priority, &["06385", "06388"]),
        1,
    )
    .await;
    insert(&store, &alert("a2", MessageClass::Priority, &["06385"]), 1).await;
    let claimed = store.claim_due(t0(), Duration::seconds(30), 10).await.unwrap();
    let one = claimed.iter().find(|d| d.alert_id == "a1").unwrap();
    store.mark_published(one.id, t0()).await.unwrap();
    for (receiver, status, reason) in [
        ("loa-1", "played", None),
        ("loa-2", "played", None),
        ("loa-3", "rejected", Some("bad_signature")),
        ("loa-3", "rejected", Some("expired")),
        ("loa-4", "received", None),
    ] {
        let r = NewReceipt {
            alert_id: "a1",
            receiver_id: receiver,
            commune: Some("06385"),
            status,
            reason,
            receiver_at: t0(),
        };
        store.record_receipt(&r, t0()).await.unwrap();
    }
    let ids = ["a1", "a2", "nope"].map(String::from);
    let counts = store.alert_counts(&ids).await.unwrap();
    assert_eq!(
        counts["a1"],
        store::AlertCounts {
            communes_published: 1,
            receivers_played: 2,
            receivers_rejected: 2
        }
    );
    assert_eq!(counts["a2"], store::AlertCounts::default());
    assert!(!counts.contains_key("nope"), "an unknown id has no row");
}

/// The inbound path writes a burst of receipts and heartbeats in a few multi-row
/// statements: repeats within the burst, a delivery moved twice, and one receiver heard
/// from several times end as they would one write at a time.
async fn a_batch_of_receipts_and_heartbeats_leaves_what_one_write_after_another_would(db: Db) {
    use store::{DeliveryAdvance, ReceiverTouch};
    let store = db.open().await;
    register(&store, "loa-a", "06385").await;
    register(&store, "loa-b", "06385").await;
    let a = alert("a-1", MessageClass::Emergency, &["06385"]);
    insert(&store, &a, 2).await;
    // 250 receipts, more than one statement's worth: each receiver's `received` and
    // `played` over and over, and one refusal of another kind.
    let mut receipts = Vec::new();
    for i in 0..250 {
        let (receiver_id, status) = match i % 4 {
            0 => ("loa-a", "received"),
            1 => ("loa-a", "played"),
            2 => ("loa-b", "received"),
            _ => ("loa-b", "played"),
        };
        receipts.push(NewReceipt {
            alert_id: "a-1",
            receiver_id,
            commune: Some("06385"),
            status,
            reason: None,
            receiver_at: t0(),
        });
    }
    receipts.insert(
        3,
        NewReceipt {
            status: "rejected",
            reason: Some("replayed: seen before"),
            ..receipts[0].clone()
        },
    );
    let mut tx = store.begin().await.unwrap();
    let new = tx.record_receipts(&receipts, t0()).await.unwrap();
    let firsts: Vec<usize> = new
        .iter()
        .enumerate()
        .filter(|(_, n)| **n)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(firsts, [0, 1, 2, 3, 4], "only the first of each is new");
    // loa-a: received, then a refusal (which must not move it back), then played;
    // loa-b: only received. Moved in one call, as one call each would.
    let advance = |receiver_id, state, reason| DeliveryAdvance {
        alert_id: "a-1",
        receiver_id,
        state,
        reason,
    };
    let moved = tx
        .advance_receiver_deliveries(
            &[
                advance("loa-a", "received", None),
                advance("loa-a", "rejected", Some("replayed")),
                advance("loa-b", "received", None),
                advance("loa-a", "played", None),
                advance("stranger", "played", None),
            ],
            t0() + Duration::seconds(1),
        )
        .await
        .unwrap();
    assert_eq!(moved, 3, "received and played of loa-a, received of loa-b");
    let touch = |receiver_id, commune, online, detail| ReceiverTouch {
        receiver_id,
        commune,
        online,
        detail,
        clock_offset_ms: None,
    };
    tx.touch_receivers(
        &[
            touch("loa-a", Some("06385"), true, Some("{\"fw\":\"1\"}")),
            touch("loa-a", None, false, None),
            touch("loa-b", Some("06385"), false, None),
            touch("loa-b", None, true, None),
        ],
        t0() + Duration::seconds(2),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let all = store.receipts_for_alert("a-1").await.unwrap();
    assert_eq!(all.len(), 5, "two per receiver and the refusal: {all:?}");
    let rows = store.receiver_deliveries("a-1").await.unwrap();
    assert_eq!(
        states(&rows),
        [
            ("loa-a".into(), "played".into()),
            ("loa-b".into(), "received".into())
        ]
    );
    assert_eq!(rows[0].received, Some(t0() + Duration::seconds(1)));
    assert_eq!(rows[0].played, Some(t0() + Duration::seconds(1)));
    assert_eq!(rows[1].played, None);
    let receivers = store.list_receivers().await.unwrap();
    let heard = |id: &str| receivers.iter().find(|r| r.receiver_id == id).unwrap().clone();
    let (a, b) = (heard("loa-a"), heard("loa-b"));
    assert_eq!((a.online, a.commune.as_deref()), (false, Some("06385")));
    assert_eq!(
        a.detail.as_deref(),
        Some("{\"fw\":\"1\"}"),
        "the last detail given is kept"
    );
    assert_eq!((b.online, b.last_seen), (true, t0() + Duration::seconds(2)));
}

async fn a_published_batch_is_recorded_at_once_each_commune_with_its_own_time(db: Db) {
    let store = db.open().await;
    register(&store, "loa-a", "06385").await;
    register(&store, "loa-c", "05977").await;
    insert(
        &store,
        &alert("a1", MessageClass::Emergency, &["06385", "05977", "06181"]),
        2,
    )
    .await;
    let claimed = store.claim_due(t0(), Duration::seconds(30), 10).await.unwrap();
    assert_eq!(claimed.len(), 3);
    // Two went out (at 1 s and 2 s); the third failed and is not in the batch.
    let at = |s: i64| t0() + Duration::seconds(s);
    let (out, failed): (Vec<_>, Vec<_>) = claimed.iter().partition(|d| d.commune != "06181");
    let batch: Vec<(i64, DateTime<Utc>)> = out.iter().zip(1..).map(|(d, s)| (d.id, at(s))).collect();
    store.mark_published_all(&batch).await.unwrap();

    let rows = store.deliveries_for_alert("a1").await.unwrap();
    for (d, (_, when)) in out.iter().zip(&batch) {
        let row = rows.iter().find(|r| r.id == d.id).unwrap();
        assert_eq!((row.state.as_str(), row.published), ("published", Some(*when)));
    }
    let left = rows.iter().find(|r| r.id == failed[0].id).unwrap();
    assert_eq!((left.state.as_str(), left.published), ("queued", None));
    // Each published commune's receivers are sent, at their commune's time.
    let mut sent: Vec<(String, String, Option<DateTime<Utc>>)> = store
        .receiver_deliveries("a1")
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.receiver_id, r.state, r.sent))
        .collect();
    sent.sort();
    let time_of = |commune: &str| {
        let d = out.iter().position(|d| d.commune == commune).unwrap();
        Some(batch[d].1)
    };
    assert_eq!(
        sent,
        [
            ("loa-a".into(), "sent".into(), time_of("06385")),
            ("loa-c".into(), "sent".into(), time_of("05977")),
        ]
    );
}
