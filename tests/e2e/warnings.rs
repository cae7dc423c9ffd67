//! The duty desk's lifecycle over real HTTP, SQLite and the embedded broker: drafts,
//! the two-person rule, returns, the emergency override, Update and Cancel chains built
//! by the server, expiry, pre-warnings, and Idempotency-Key under concurrency.

use std::time::Duration;

use canhbao_receiver::ReceiverEvent;
use canhbao_tests::{Broker, TestApp};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

fn draft(level: u8, headline: &str) -> Value {
    json!({
        "hazard": "flood", "risk_level": level, "communes": ["06385"],
        "headline": headline, "description": "Mực nước sông Thương lên nhanh.",
        "instruction": "Chuẩn bị sơ tán.", "valid_minutes": 120,
    })
}

/// Writes a draft as `token`; returns its id.
async fn write(app: &TestApp, token: &str, body: &Value) -> String {
    let (status, w, _) = app
        .call_as(token, "POST", "/api/v1/warnings", None, body)
        .await
        .unwrap();
    assert_eq!(status, 201, "{w}");
    assert_eq!(w["state"], "draft");
    w["id"].as_str().unwrap().to_owned()
}

async fn act(app: &TestApp, token: &str, id: &str, verb: &str, body: Value) -> (u16, Value) {
    let (status, v, _) = app
        .call_as(
            token,
            "POST",
            &format!("/api/v1/warnings/{id}/{verb}"),
            None,
            &body,
        )
        .await
        .unwrap();
    (status, v)
}

/// Approves `id` as `token`, naming the version just read (as a reviewer's screen does).
async fn approve(app: &TestApp, token: &str, id: &str, note: &str) -> (u16, Value) {
    let (_, w, _) = app
        .call_as(
            token,
            "GET",
            &format!("/api/v1/warnings/{id}"),
            None,
            &json!(null),
        )
        .await
        .unwrap();
    act(
        app,
        token,
        id,
        "approve",
        json!({"version": w["version"], "note": note}),
    )
    .await
}

async fn played(rx: &mut canhbao_tests::TestReceiver) -> Box<dispatch::wire::AlertPayload> {
    loop {
        if let ReceiverEvent::Played(p) = rx.next(WAIT).await.unwrap() {
            return p;
        }
    }
}

async fn officer_alerts(app: &TestApp) -> Vec<Value> {
    let (_, list) = app.get("/api/v1/alerts?limit=500").await.unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .filter(|a| a["origin"]["kind"] == "officer")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_level_3_warning_waits_for_a_second_person_who_is_never_its_author() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let an = app.login_new_user("an.tran", "officer").await.unwrap();
    let binh = app.login_new_user("binh.vo", "officer").await.unwrap();
    let chi = app.login_new_user("chi.le", "approver").await.unwrap();
    let mut rx = app.start_receiver("06385", "loa-w-1").await.unwrap();

    let id = write(&app, &an, &draft(3, "Lũ lớn trên sông Thương")).await;
    // Only the author edits or submits.
    let (status, _, _) = app
        .call_as(
            &binh,
            "PUT",
            &format!("/api/v1/warnings/{id}"),
            None,
            &draft(3, "x"),
        )
        .await
        .unwrap();
    assert_eq!(status, 403);
    assert_eq!(act(&app, &binh, &id, "submit", json!({})).await.0, 403);

    let (status, sub) = act(&app, &an, &id, "submit", json!({})).await;
    assert_eq!(status, 202, "{sub}");
    assert_eq!(sub["warning"]["state"], "pending");
    assert!(
        sub["warning"]["approval_reason"]
            .as_str()
            .unwrap()
            .contains("risk level 3"),
        "{sub}"
    );
    assert!(
        officer_alerts(&app).await.is_empty(),
        "nothing is sent before approval"
    );

    // The approver returns it; the author is told why and edits it.
    let (status, back) = act(
        &app,
        &chi,
        &id,
        "reject",
        json!({"reason": "ghi rõ xã bị ảnh hưởng"}),
    )
    .await;
    assert_eq!(status, 200, "{back}");
    assert_eq!(
        (back["state"].as_str(), back["review_note"].as_str()),
        (Some("draft"), Some("ghi rõ xã bị ảnh hưởng"))
    );
    let (_, told, _) = app
        .call_as(&an, "GET", "/api/v1/notifications", None, &json!(null))
        .await
        .unwrap();
    assert_eq!(told[0]["kind"], "returned", "{told}");
    let (status, _, _) = app
        .call_as(
            &an,
            "PUT",
            &format!("/api/v1/warnings/{id}"),
            None,
            &draft(3, "Lũ lớn tại xã Hữu Lũng"),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(act(&app, &an, &id, "submit", json!({})).await.0, 202);

    // A key (here the bootstrap admin's) approves nothing, even what it did not write:
    // a second person is a person's login.
    let own = write(&app, &app.token, &draft(4, "Lũ rất lớn")).await;
    assert_eq!(act(&app, &app.token, &own, "submit", json!({})).await.0, 202);
    let (status, e) = approve(&app, &app.token, &own, "").await;
    assert_eq!(status, 403, "{e}");
    assert!(e["detail"].as_str().unwrap().contains("person's login"), "{e}");

    // An approval names the version its approver read: chi read version N, then the
    // warning was returned, edited and resubmitted; chi's approval of N is refused.
    let (_, seen, _) = app
        .call_as(&chi, "GET", &format!("/api/v1/warnings/{id}"), None, &json!(null))
        .await
        .unwrap();
    let binh_approver = app.login_new_user("binh.approver", "approver").await.unwrap();
    let (status, _) = act(&app, &binh_approver, &id, "reject", json!({"reason": "thêm xã"})).await;
    assert_eq!(status, 200);
    let (status, _, _) = app
        .call_as(
            &an,
            "PUT",
            &format!("/api/v1/warnings/{id}"),
            None,
            &draft(3, "Lũ lớn tại xã Hữu Lũng"),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(act(&app, &an, &id, "submit", json!({})).await.0, 202);
    let (status, e) = act(&app, &chi, &id, "approve", json!({"version": seen["version"]})).await;
    assert_eq!(status, 409, "{e}");
    assert!(
        e["detail"]
            .as_str()
            .unwrap()
            .contains("changed since it was read"),
        "{e}"
    );
    let (status, e) = act(&app, &chi, &id, "approve", json!({})).await;
    assert_eq!(status, 422, "an approval without a version: {e}");

    let (status, ok) = approve(&app, &chi, &id, "đã kiểm tra").await;
    assert_eq!(status, 201, "{ok}");
    let alert_id = ok["alert_id"].as_str().unwrap().to_owned();
    assert_eq!(ok["warning"]["reviewed_by"], "user:chi.le");
    let shown = played(&mut rx).await;
    assert_eq!(
        (shown.id.as_str(), shown.headline.as_str()),
        (alert_id.as_str(), "Lũ lớn tại xã Hữu Lũng")
    );
    assert_eq!(shown.class, "emergency");
    // The delivery matrix shows the commune, its topic and the receiver that played it.
    let m = app
        .wait_for(&format!("/api/v1/alerts/{alert_id}/deliveries"), WAIT, |m| {
            m["communes"][0]["receivers"][0]["state"] == "played"
        })
        .await
        .unwrap();
    assert_eq!(m["communes"][0]["commune"], "06385");
    assert_eq!(m["communes"][0]["topic"]["state"], "published");
    assert_eq!(m["communes"][0]["receivers"][0]["receiver_id"], "loa-w-1");
    assert!(m["communes"][0]["receivers"][0]["received"].is_string(), "{m}");
    assert_eq!(m["summary"]["receivers_by_state"], json!({"played": 1}));
    // /metrics counts it: one live alert, a receiver that played it and how fast, and
    // the admin's warning still waiting for a second person.
    let metrics = app.get_text("/metrics").await.unwrap();
    for line in [
        "canhbao_alerts{status=\"Actual\",state=\"live\"} 1",
        "canhbao_deliveries{channel=\"topic\",state=\"published\"} 1",
        "canhbao_deliveries{channel=\"receiver\",state=\"played\"} 1",
        "canhbao_receipt_latency_seconds_count{step=\"played\"} 1",
        "canhbao_receipt_latency_seconds_bucket{step=\"received\",le=\"+Inf\"} 1",
        "canhbao_warnings_pending 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} not in\n{metrics}");
    }
    // Approving again sends nothing.
    assert_eq!(approve(&app, &chi, &id, "").await.0, 409);
    assert_eq!(officer_alerts(&app).await.len(), 1);

    let (_, audit) = app.get("/api/v1/audit?limit=50").await.unwrap();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    for a in [
        "warning.create",
        "warning.submit",
        "warning.return",
        "warning.edit",
        "warning.approve",
    ] {
        assert!(actions.contains(&a), "{a} not in {actions:?}");
    }
    let approve = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "warning.approve")
        .unwrap();
    assert_eq!(approve["actor"], "user:chi.le");
    assert_eq!(approve["detail"]["author"], "user:an.tran");
    assert_eq!(approve["detail"]["alert_id"], alert_id.as_str());
    rx.stop().await;
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_issues_alone_with_a_reason_is_flagged_and_every_approver_is_told() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let an = app.login_new_user("an.tran", "officer").await.unwrap();
    let chi = app.login_new_user("chi.le", "approver").await.unwrap();
    let dung = app.login_new_user("dung.ho", "approver").await.unwrap();

    // Below the rule, an officer issues alone, no override needed.
    let low = write(&app, &an, &draft(2, "Mưa lớn")).await;
    let (status, issued) = act(&app, &an, &low, "submit", json!({})).await;
    assert_eq!(status, 201, "{issued}");
    assert_eq!(issued["warning"]["overridden"], false);

    let id = write(&app, &an, &draft(4, "Lũ quét tại Hữu Lũng")).await;
    let (status, e) = act(&app, &an, &id, "submit", json!({"override_reason": "  "})).await;
    assert_eq!(status, 422, "an override needs a reason: {e}");
    let (status, ok) = act(
        &app,
        &an,
        &id,
        "submit",
        json!({"override_reason": "lũ quét đang xảy ra, không liên lạc được lãnh đạo"}),
    )
    .await;
    assert_eq!(status, 201, "{ok}");
    assert_eq!(ok["warning"]["overridden"], true);
    assert_eq!(ok["warning"]["state"], "issued");
    let alert_id = ok["alert_id"].as_str().unwrap();
    for approver in [&chi, &dung] {
        let (_, told, _) = app
            .call_as(approver, "GET", "/api/v1/notifications", None, &json!(null))
            .await
            .unwrap();
        assert_eq!(told[0]["kind"], "override", "{told}");
        assert_eq!(told[0]["alert_id"], alert_id);
        assert!(
            told[0]["text"].as_str().unwrap().contains("không liên lạc được"),
            "{told}"
        );
    }
    let (_, mine, _) = app
        .call_as(&an, "GET", "/api/v1/notifications", None, &json!(null))
        .await
        .unwrap();
    assert_eq!(mine, json!([]), "the officer is not told of their own override");
    let (_, audit) = app.get("/api/v1/audit?limit=20").await.unwrap();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "warning.override" && a["actor"] == "user:an.tran")
    );
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_and_cancels_reference_the_whole_incident_and_only_the_latest_can_change() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let an = app.login_new_user("an.tran", "officer").await.unwrap();
    let chi = app.login_new_user("chi.le", "approver").await.unwrap();
    let mut rx = app.start_receiver("06385", "loa-w-2").await.unwrap();

    let first = write(&app, &an, &draft(2, "Mưa lớn cấp 2")).await;
    let a = act(&app, &an, &first, "submit", json!({})).await.1["alert_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(played(&mut rx).await.id, a);

    // Update A to level 3: the server builds the reference, the rule applies again.
    let mut up = draft(3, "Lũ cấp 3");
    up["updates"] = json!(a);
    let second = write(&app, &an, &up).await;
    assert_eq!(act(&app, &an, &second, "submit", json!({})).await.0, 202);
    let (status, ok) = approve(&app, &chi, &second, "").await;
    assert_eq!(status, 201, "{ok}");
    let b = ok["alert_id"].as_str().unwrap().to_owned();
    assert_eq!(
        (ok["msg_type"].as_str(), ok["references"].clone()),
        (Some("Update"), json!([a]))
    );
    let shown = played(&mut rx).await;
    assert_eq!(
        (shown.id.as_str(), shown.msg_type.as_str()),
        (b.as_str(), "Update")
    );

    // A second update of A (no longer the latest) is refused at issue; an update of B
    // references A and B.
    let mut stale = draft(2, "cũ");
    stale["updates"] = json!(a);
    let stale = write(&app, &an, &stale).await;
    let (status, e) = act(&app, &an, &stale, "submit", json!({})).await;
    assert_eq!(status, 409, "{e}");
    assert!(e["detail"].as_str().unwrap().contains(&b), "{e}");
    // An Exercise cannot update an Actual alert (nor the reverse).
    let mut drill = draft(2, "Diễn tập");
    drill["updates"] = json!(b);
    drill["status"] = json!("Exercise");
    let drill = write(&app, &an, &drill).await;
    let (status, e) = act(&app, &an, &drill, "submit", json!({})).await;
    assert_eq!(status, 422, "{e}");
    // Lowering B (level 3) to level 2 replaces what the rule covered: a second person
    // approves that too.
    let mut again = draft(2, "Lũ giảm, cấp 2");
    again["updates"] = json!(b);
    let third = write(&app, &an, &again).await;
    let (status, sub) = act(&app, &an, &third, "submit", json!({})).await;
    assert_eq!(status, 202, "{sub}");
    assert!(
        sub["warning"]["approval_reason"].as_str().unwrap().contains(&b),
        "{sub}"
    );
    let (status, ok) = approve(&app, &chi, &third, "").await;
    assert_eq!(status, 201, "{ok}");
    let c = ok["alert_id"].as_str().unwrap().to_owned();
    assert_eq!(ok["references"], json!([a, b]));
    let (_, list) = app.get("/api/v1/alerts").await.unwrap();
    let state_of =
        |id: &str| list.as_array().unwrap().iter().find(|x| x["id"] == id).unwrap()["state"].clone();
    assert_eq!(
        (state_of(&a), state_of(&b), state_of(&c)),
        (json!("updated"), json!("updated"), json!("live"))
    );

    // An update must still reach every commune it reached.
    let mut narrow = draft(2, "hẹp");
    narrow["communes"] = json!(["05977"]);
    narrow["updates"] = json!(c);
    let narrow = write(&app, &an, &narrow).await;
    let (status, e) = act(&app, &an, &narrow, "submit", json!({})).await;
    assert_eq!(status, 422, "{e}");

    // Cancelling an old version is refused, naming the latest; the Cancel of the latest
    // references the whole incident and reaches the receiver.
    let (status, e, _) = app
        .call_as(
            &an,
            "POST",
            &format!("/api/v1/alerts/{a}/cancel"),
            None,
            &json!({"reason": "x"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 409, "{e}");
    assert!(e["detail"].as_str().unwrap().contains(&c), "{e}");
    let cancel_id = app.cancel(&c, "nước đã rút").await.unwrap();
    // A cancel needs no second person, but every approver is told, with the reason.
    let (_, told, _) = app
        .call_as(&chi, "GET", "/api/v1/notifications", None, &json!(null))
        .await
        .unwrap();
    assert_eq!(
        (told[0]["kind"].as_str(), told[0]["alert_id"].as_str()),
        (Some("cancel"), Some(cancel_id.as_str()))
    );
    assert!(
        told[0]["text"].as_str().unwrap().contains("nước đã rút"),
        "{told}"
    );
    let (_, detail) = app.get(&format!("/api/v1/alerts/{cancel_id}")).await.unwrap();
    assert_eq!(detail["alert"]["references"], json!([a, b, c]));
    loop {
        let p = played(&mut rx).await;
        if p.id == cancel_id {
            assert_eq!(p.msg_type, "Cancel");
            break;
        }
    }
    // Every version now shows that its incident was cancelled, and by which message.
    let (_, list) = app.get("/api/v1/alerts").await.unwrap();
    for id in [&a, &b, &c] {
        let row = list.as_array().unwrap().iter().find(|x| &x["id"] == id).unwrap();
        assert_eq!(
            (&row["state"], &row["replaced_by"]),
            (&json!("cancelled"), &json!(cancel_id)),
            "{row}"
        );
    }
    rx.stop().await;
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warning_cannot_be_issued_expired_and_bad_drafts_name_every_fault() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let an = app.login_new_user("an.tran", "officer").await.unwrap();
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let mut d = draft(2, "Sắp hết hạn");
    d["expires"] = json!(soon);
    let id = write(&app, &an, &d).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, e) = act(&app, &an, &id, "submit", json!({})).await;
    assert_eq!(status, 422, "{e}");
    assert!(e["detail"].as_str().unwrap().contains("expired"), "{e}");
    assert_eq!(
        app.get(&format!("/api/v1/warnings/{id}")).await.unwrap().1["state"],
        "draft",
        "a refused submit changes nothing"
    );

    let mut bad = draft(2, "x");
    bad["effective"] = json!("2026-12-02T00:00:00Z");
    bad["expires"] = json!("2026-12-01T00:00:00Z");
    bad["communes"] = json!(["06385", "00000"]);
    bad["risk_level"] = json!(7);
    let (status, e, _) = app
        .call_as(&an, "POST", "/api/v1/warnings", None, &bad)
        .await
        .unwrap();
    assert_eq!(status, 422, "{e}");
    let fields: Vec<&str> = e["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["field"].as_str())
        .collect();
    assert_eq!(fields, ["risk_level", "communes[1]", "expires"], "{e}");
    let (_, list) = app.get("/api/v1/warnings").await.unwrap();
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "nothing written for the bad draft"
    );
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_or_racing_request_sends_once_and_gets_the_first_answer() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let an = app.login_new_user("an.tran", "officer").await.unwrap();
    let chi = app.login_new_user("chi.le", "approver").await.unwrap();
    let dung = app.login_new_user("dung.ho", "approver").await.unwrap();

    // Without a key, a sending request is refused before it does anything.
    let id = write(&app, &an, &draft(2, "Mưa lớn")).await;
    let resp = app
        .http
        .post(format!("{}/api/v1/warnings/{id}/submit", app.base))
        .bearer_auth(&an)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);

    // Two identical submits race with one key: one runs, the other gets its answer.
    let path = format!("/api/v1/warnings/{id}/submit");
    let empty = json!({});
    let (x, y) = tokio::join!(
        app.call_as(&an, "POST", &path, Some("key-race-0001"), &empty),
        app.call_as(&an, "POST", &path, Some("key-race-0001"), &empty),
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!((x.0, y.0), (201, 201), "{x:?} {y:?}");
    assert_eq!(x.1, y.1, "the same answer");
    assert!(x.2 ^ y.2, "exactly one is a replay: {} {}", x.2, y.2);
    // A later retry too; the same key for another request is refused.
    let (status, body, replayed) = app
        .call_as(&an, "POST", &path, Some("key-race-0001"), &json!({}))
        .await
        .unwrap();
    assert_eq!((status, replayed, &body), (201, true, &x.1));
    let (status, _, _) = app
        .call_as(
            &an,
            "POST",
            &path,
            Some("key-race-0001"),
            &json!({"override_reason": "khác"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 422);
    assert_eq!(officer_alerts(&app).await.len(), 1);

    // Two approvers approve at once with their own keys: one alert.
    let id = write(&app, &an, &draft(3, "Lũ lớn")).await;
    assert_eq!(act(&app, &an, &id, "submit", json!({})).await.0, 202);
    let path = format!("/api/v1/warnings/{id}/approve");
    let version = json!({"version": app.get(&format!("/api/v1/warnings/{id}")).await.unwrap().1["version"]});
    let (x, y) = tokio::join!(
        app.call_as(&chi, "POST", &path, None, &version),
        app.call_as(&dung, "POST", &path, None, &version),
    );
    let mut codes = [x.unwrap().0, y.unwrap().0];
    codes.sort();
    assert_eq!(codes, [201, 409]);
    assert_eq!(officer_alerts(&app).await.len(), 2);

    // A cancel retried with its key is one Cancel.
    let alert_id = officer_alerts(&app).await[0]["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/alerts/{alert_id}/cancel");
    let reason = json!({"reason": "thử"});
    let (x, y) = tokio::join!(
        app.call_as(&an, "POST", &path, Some("key-cancel-01"), &reason),
        app.call_as(&an, "POST", &path, Some("key-cancel-01"), &reason),
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!((x.0, y.0, x.1 == y.1), (201, 201, true), "{x:?} {y:?}");
    let cancels = officer_alerts(&app)
        .await
        .iter()
        .filter(|a| a["msg_type"] == "Cancel")
        .count();
    assert_eq!(cancels, 1);
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_warning_is_confirmed_with_an_escalation_or_dismissed_once() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let an = app.login_new_user("an.tran", "officer").await.unwrap();
    let chi = app.login_new_user("chi.le", "approver").await.unwrap();
    let fog = |value: u32| {
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        format!(
            r#"{{"station":"HUULUNG","parameter":"visibility","value":{value},"unit":"m","observed_at":"{at}"}}"#
        )
    };
    // 40 m of visibility: fog level 2 at Xã Hữu Lũng, a pre-warning.
    let (status, _, report) = app.post_observations(&fog(40)).await.unwrap();
    assert_eq!(status, 200, "{report}");
    let (_, queue, _) = app
        .call_as(&an, "GET", "/api/v1/prewarnings", None, &json!(null))
        .await
        .unwrap();
    assert_eq!(queue.as_array().unwrap().len(), 1, "{queue}");
    let p = &queue[0];
    assert_eq!(
        (p["hazard"].as_str(), p["level"].as_i64(), p["commune"].as_str()),
        (Some("fog"), Some(2), Some("06385"))
    );
    let pid = p["id"].as_i64().unwrap();

    // Confirmed with +1 (fog with heavy rain): level 3, so a second person approves.
    let path = format!("/api/v1/prewarnings/{pid}/confirm");
    let (status, e, _) = app
        .call_as(
            &an,
            "POST",
            &path,
            None,
            &json!({"escalation": {"steps": 3, "reason": "x"}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{e}");
    // Refused confirms write nothing and leave the pre-warning in the queue.
    for bad in [
        json!({"expires": "2020-01-01T00:00:00Z"}),
        json!({"override_reason": "   "}),
        json!({"communes": ["99999"]}),
        json!({"colour": "red"}),
    ] {
        let (status, e, _) = app.call_as(&an, "POST", &path, None, &bad).await.unwrap();
        assert_eq!(status, 422, "{bad}: {e}");
    }
    assert_eq!(app.get("/api/v1/warnings").await.unwrap().1, json!([]));
    let (_, still, _) = app
        .call_as(&an, "GET", "/api/v1/prewarnings", None, &json!(null))
        .await
        .unwrap();
    assert_eq!(still.as_array().unwrap().len(), 1);
    let (status, ok, _) = app
        .call_as(
            &an,
            "POST",
            &path,
            None,
            &json!({"escalation": {"steps": 1, "reason": "sương mù cùng mưa lớn"}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{ok}");
    let wid = ok["warning"]["id"].as_str().unwrap().to_owned();
    assert_eq!(ok["warning"]["prewarning_id"], pid);
    assert_eq!(
        ok["warning"]["draft"]["risk_level"], 2,
        "the computed level is kept"
    );
    let (status, ok) = approve(&app, &chi, &wid, "").await;
    assert_eq!(status, 201, "{ok}");
    let (_, detail) = app
        .get(&format!("/api/v1/alerts/{}", ok["alert_id"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(detail["alert"]["risk_level"], 3);
    assert_eq!(detail["alert"]["class"], "emergency");
    let text = detail["alert"]["description"].as_str().unwrap();
    assert!(
        text.contains("từ cấp 2 lên cấp 3") && text.contains("sương mù cùng mưa lớn"),
        "{text}"
    );

    // Once confirmed it leaves the queue and cannot be confirmed or dismissed again.
    let (_, queue, _) = app
        .call_as(&an, "GET", "/api/v1/prewarnings", None, &json!(null))
        .await
        .unwrap();
    assert_eq!(queue, json!([]));
    let (status, _, _) = app.call_as(&an, "POST", &path, None, &json!({})).await.unwrap();
    assert_eq!(status, 409);
    let (status, _, _) = app
        .call_as(
            &an,
            "POST",
            &format!("/api/v1/prewarnings/{pid}/dismiss"),
            None,
            &json!({"reason": "x"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 409);

    app.app.stop().await;

    // On another desk the same pre-warning is dismissed: a reason is required, and once
    // dismissed it is neither in the queue nor confirmable.
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let (status, _, report) = app.post_observations(&fog(40)).await.unwrap();
    assert_eq!(status, 200, "{report}");
    let (_, queue) = app.get("/api/v1/prewarnings").await.unwrap();
    let pid = queue[0]["id"].as_i64().unwrap();
    let dismiss = format!("/api/v1/prewarnings/{pid}/dismiss");
    let (status, _) = app.post(&dismiss, "application/json", b"{}").await.unwrap();
    assert_eq!(status, 422, "a dismissal needs a reason");
    let (status, _) = app
        .post(
            &dismiss,
            "application/json",
            r#"{"reason": "cảm biến bẩn"}"#.as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(status, 204);
    assert_eq!(app.get("/api/v1/prewarnings").await.unwrap().1, json!([]));
    let (status, e) = app
        .post(
            &format!("/api/v1/prewarnings/{pid}/confirm"),
            "application/json",
            b"{}",
        )
        .await
        .unwrap();
    assert_eq!(status, 409, "{e}");
    assert!(e["detail"].as_str().unwrap().contains("cảm biến bẩn"), "{e}");
    app.app.stop().await;
}

/// Reads Server-Sent Events until `done` holds for the (event, id, data) read so far.
async fn read_events(
    resp: &mut reqwest::Response,
    done: impl Fn(&[(String, String, Value)]) -> bool,
) -> Vec<(String, String, Value)> {
    let mut buf = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done(&events) {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("events came in time")
            .unwrap()
            .expect("the stream stays open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut kind, mut id, mut data) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    kind = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if !kind.is_empty() {
                events.push((kind, id, serde_json::from_str(&data).unwrap_or(Value::Null)));
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_changes_stream_as_server_sent_events_and_a_reconnect_resumes() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let an = app.login_new_user("an.tran", "officer").await.unwrap();
    let viewer = app.login_new_user("vy.ops", "viewer").await.unwrap();
    let open = |last: Option<String>| {
        let mut r = app
            .http
            .get(format!("{}/api/v1/events", app.base))
            .bearer_auth(&viewer);
        if let Some(l) = last {
            r = r.header("last-event-id", l);
        }
        r.send()
    };
    let mut resp = open(None).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut rx = app.start_receiver("06385", "loa-sse").await.unwrap();

    let id = write(&app, &an, &draft(2, "Mưa lớn")).await;
    let alert_id = act(&app, &an, &id, "submit", json!({})).await.1["alert_id"]
        .as_str()
        .unwrap()
        .to_owned();
    played(&mut rx).await;
    let events = read_events(&mut resp, |evs| {
        evs.iter()
            .any(|(k, _, d)| k == "receipt" && d["status"] == "played")
            && evs.iter().any(|(_, _, d)| d["action"] == "warning.issue")
    })
    .await;
    let kinds: Vec<&str> = events.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(kinds[0], "hello");
    let alert = events
        .iter()
        .find(|(k, _, _)| k == "alert")
        .expect("an alert event");
    assert_eq!(
        (alert.2["id"].as_str(), alert.2["origin"].as_str()),
        (Some(alert_id.as_str()), Some("officer"))
    );
    assert!(
        events
            .iter()
            .any(|(k, _, d)| k == "action" && d["action"] == "warning.issue" && d["actor"] == "user:an.tran"),
        "{events:?}"
    );

    drop(resp);

    // Reconnecting from the first numbered event gives everything after it again.
    let first = events.iter().find(|(_, id, _)| !id.is_empty()).unwrap();
    let mut again = open(Some(first.1.clone())).await.unwrap();
    let after = read_events(&mut again, |evs| evs.len() >= events.len() - 1).await;
    assert_eq!(after[0].0, "hello");
    assert_eq!(after[0].2["resumed"], true);
    let ids: Vec<&str> = after[1..].iter().map(|(_, id, _)| id.as_str()).collect();
    let expected: Vec<&str> = events
        .iter()
        .skip_while(|e| e.1 != first.1)
        .skip(1)
        .map(|(_, id, _)| id.as_str())
        .collect();
    assert_eq!(&ids[..expected.len()], expected.as_slice());
    // An id this instance never gave: start over.
    let mut lost = open(Some("999999".into())).await.unwrap();
    let reset = read_events(&mut lost, |evs| !evs.is_empty()).await;
    assert_eq!(reset[0].0, "reset");
    rx.stop().await;
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exercise_reaches_only_receivers_enrolled_for_drills_and_is_marked_as_one() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let an = app.login_new_user("an.tran", "officer").await.unwrap();
    let mut enrolled = app.start_receiver("06385", "loa-drill").await.unwrap();
    let mut other = app
        .start_receiver_without_drills("06385", "loa-real-only")
        .await
        .unwrap();
    let mut d = draft(2, "Diễn tập sơ tán lũ");
    d["status"] = json!("Exercise");
    let id = write(&app, &an, &d).await;
    let (status, ok) = act(&app, &an, &id, "submit", json!({})).await;
    assert_eq!(status, 201, "{ok}");
    let alert_id = ok["alert_id"].as_str().unwrap().to_owned();
    let shown = played(&mut enrolled).await;
    assert_eq!(
        (shown.id.as_str(), shown.status.as_str()),
        (alert_id.as_str(), "Exercise")
    );
    loop {
        match other.next(WAIT).await.unwrap() {
            ReceiverEvent::DrillIgnored {
                alert_id: ignored, ..
            } => {
                assert_eq!(ignored, alert_id);
                break;
            }
            ReceiverEvent::Played(p) => panic!("a receiver not enrolled played the exercise {}", p.id),
            _ => {}
        }
    }
    // Only the enrolled receiver is expected to play it; the exercise is marked as such.
    let m = app
        .wait_for(&format!("/api/v1/alerts/{alert_id}/deliveries"), WAIT, |m| {
            m["summary"]["receivers_by_state"]["played"] == 1
        })
        .await
        .unwrap();
    let ids: Vec<&str> = m["communes"][0]["receivers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["receiver_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["loa-drill"], "{m}");
    assert_eq!(m["status"], "Exercise");
    // A real alert reaches both.
    let id = write(&app, &an, &draft(2, "Lũ thật")).await;
    let real = act(&app, &an, &id, "submit", json!({})).await.1["alert_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(played(&mut enrolled).await.id, real);
    assert_eq!(played(&mut other).await.id, real);
    enrolled.stop().await;
    other.stop().await;
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spike_is_stored_flagged_and_duty_officers_see_it_on_every_channel() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let an = app.login_new_user("an.tran", "officer").await.unwrap();
    let mut events = app
        .http
        .get(format!("{}/api/v1/events", app.base))
        .bearer_auth(&an)
        .send()
        .await
        .unwrap();
    // Steady readings, one 5 m above its neighbours, then back: ten minutes apart.
    let now = chrono::Utc::now();
    let body: Vec<Value> = [16.00, 16.02, 16.01, 21.01, 16.03]
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let at = now - chrono::Duration::minutes(10 * (4 - i as i64));
            json!({"station": "HUULUNG", "parameter": "water_level", "value": v, "unit": "m",
                   "observed_at": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)})
        })
        .collect();
    // The first four, then the fifth: the spike waits for the reading after it.
    let (status, _, answer) = app
        .post_observations(&Value::from(body[..4].to_vec()).to_string())
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["stored"], 4, "every reading is stored: {answer}");
    assert!(
        answer["flagged"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str().unwrap_or("").contains("suspect-rate")),
        "{answer}"
    );
    let (_, _, answer) = app.post_observations(&body[4].to_string()).await.unwrap();
    assert_eq!(answer["alerts"], json!([]), "a spike raises nothing: {answer}");
    // The endpoint lists it, with why.
    let (status, flagged, _) = app
        .call_as(&an, "GET", "/api/v1/readings/flagged", None, &Value::Null)
        .await
        .unwrap();
    assert_eq!(status, 200, "{flagged}");
    let spike = flagged
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["quality"] == "suspect-spike")
        .unwrap_or_else(|| panic!("{flagged:#}"));
    assert_eq!(
        (spike["station"].as_str(), spike["value"].as_f64()),
        (Some("HUULUNG"), Some(21.01))
    );
    assert!(spike["reason"].as_str().unwrap().contains("spike"), "{spike}");
    // A notification, the events feed and the metrics say it too.
    let (_, notes, _) = app
        .call_as(&an, "GET", "/api/v1/notifications", None, &Value::Null)
        .await
        .unwrap();
    assert!(
        notes.to_string().contains("suspect-spike"),
        "the officer is told: {notes:#}"
    );
    let seen = read_events(&mut events, |evs| {
        evs.iter()
            .any(|(k, _, d)| k == "reading" && d["quality"] == "suspect-spike")
    })
    .await;
    assert!(
        seen.iter()
            .any(|(k, _, d)| k == "reading" && d["quality"] == "suspect-rate")
    );
    let metrics = app.get_text("/metrics").await.unwrap();
    assert!(
        metrics.contains("canhbao_readings{quality=\"suspect-spike\"} 1"),
        "{metrics}"
    );
    app.app.stop().await;
}

/// An officer's cancel reached an instance that sent the Cancel and died before it kept
/// its answer; the officer's client retries with the same Idempotency-Key (on the other
/// instance, or this one restarted). The retry takes the claim over once its lease ran out
/// and answers with the Cancel that was sent: the first outcome, and nothing sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_the_instance_died_mid_request_gets_the_first_outcome_and_sends_nothing_again() {
    use sqlx::{Connection, Row};
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    app.prime("HUULUNG", 19.4).await.unwrap();
    let (_, _, body) = app
        .post_observations(&canhbao_tests::observation_now("HUULUNG", 19.4))
        .await
        .unwrap();
    let alert_id = body["alerts"][0].as_str().unwrap().to_owned();
    let key = "6f1c1a4e-4c55-4a8e-9d52-0c3f6b1d2e7a";
    let path = format!("/api/v1/alerts/{alert_id}/cancel");
    let reason = json!({"reason": "Nước sông Trung đã xuống dưới báo động 1"});
    let (status, first, _) = app
        .call_as(&app.token, "POST", &path, Some(key), &reason)
        .await
        .unwrap();
    assert_eq!(status, 201, "{first}");
    let cancel_id = first["cancel_id"].as_str().unwrap().to_owned();

    // The claim names the Cancel, written with it. Now the instance "dies" after sending
    // it: its answer was never kept, and its lease is long gone.
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(&app.database_url).await.unwrap();
    let named: Option<String> = sqlx::query("SELECT alert_id FROM idempotency_keys WHERE key = $1")
        .bind(key)
        .fetch_one(&mut db)
        .await
        .unwrap()
        .try_get("alert_id")
        .unwrap();
    assert_eq!(named.as_deref(), Some(cancel_id.as_str()));
    let reset = sqlx::query(
        "UPDATE idempotency_keys SET state = 'running', status = NULL, content_type = NULL, body = NULL,
            lease_ms = 0 WHERE key = $1",
    )
    .bind(key)
    .execute(&mut db)
    .await
    .unwrap();
    assert_eq!(reset.rows_affected(), 1);

    let (status, retried, _) = app
        .call_as(&app.token, "POST", &path, Some(key), &reason)
        .await
        .unwrap();
    assert_eq!(
        status, 201,
        "the first outcome, not 409 already cancelled: {retried}"
    );
    assert_eq!(retried["cancel_id"], cancel_id.as_str());
    let cancels: i64 = sqlx::query("SELECT COUNT(*) AS n FROM alerts WHERE msg_type = 'Cancel'")
        .fetch_one(&mut db)
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    assert_eq!(cancels, 1, "one Cancel sent");
    // The answer is kept now: a third try gets it at once.
    let (status, third, _) = app
        .call_as(&app.token, "POST", &path, Some(key), &reason)
        .await
        .unwrap();
    assert_eq!((status, &third["cancel_id"]), (201, &json!(cancel_id)));
    app.app.stop().await;
}
