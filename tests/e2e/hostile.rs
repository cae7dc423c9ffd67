//! Hostile and careless requests against the duty desk: each gets a clean 4xx as
//! `application/problem+json`, and nothing is written (no warning, no alert, no audit row).
//! Also: alert filters and cursor pages, followed through their `Link` headers.

use canhbao_tests::{Broker, TestApp};
use serde_json::{Value, json};

async fn raw(
    app: &TestApp,
    token: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Option<String>, Value) {
    // A connection of its own for each request: the server closes the one it refused an
    // oversized body on, and a pooled client could send the next request down it.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let resp = http
        .request(method.parse().unwrap(), format!("{}{path}", app.base))
        .bearer_auth(token)
        .header("content-type", content_type)
        .header("idempotency-key", api::warnings::uuid_v4())
        .body(body)
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        // The server refuses an oversized body on its Content-Length and closes the
        // connection without reading it; a client still writing it may see the close
        // before the answer. Status 0 says so; only an oversized case may accept it, and
        // the caller still checks that nothing was written.
        Err(e) if e.is_request() => {
            return (
                0,
                None,
                Value::String(format!("the connection closed before an answer: {e:?}")),
            );
        }
        Err(e) => panic!("{method} {path}: {e:?}"),
    };
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match resp.bytes().await {
        Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
        Err(e) => Value::String(format!("the answer was cut off: {e}")),
    };
    (status, ctype, body)
}

/// (what, method, path, content type, body, expected status).
type Case = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Vec<u8>,
    u16,
);

fn good_draft() -> Value {
    json!({"hazard": "flood", "risk_level": 2, "communes": ["06385"],
        "headline": "Lũ", "description": "Nước lên."})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_clean_problems_and_write_nothing() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let an = app.login_new_user("an.tran", "officer").await.unwrap();
    let (_, before) = app.get("/api/v1/audit/verify").await.unwrap();
    let json_ct = "application/json";
    let with = |f: &dyn Fn(&mut Value)| {
        let mut d = good_draft();
        f(&mut d);
        d.to_string().into_bytes()
    };

    let cases: Vec<Case> = vec![
        // 3 MiB of headline: over the 2 MiB body limit.
        (
            "oversized body",
            "POST",
            "/api/v1/warnings",
            json_ct,
            with(&|d| d["headline"] = json!("a".repeat(3 << 20))),
            413,
        ),
        (
            "bad JSON",
            "POST",
            "/api/v1/warnings",
            json_ct,
            b"{\"hazard\": \"flood\",".to_vec(),
            400,
        ),
        (
            "JSON nested past the parser's depth",
            "POST",
            "/api/v1/warnings",
            json_ct,
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
            400,
        ),
        (
            "not an object",
            "POST",
            "/api/v1/warnings",
            json_ct,
            b"[1, 2, 3]".to_vec(),
            422,
        ),
        (
            "wrong media type",
            "POST",
            "/api/v1/warnings",
            "text/plain",
            good_draft().to_string().into_bytes(),
            415,
        ),
        (
            "SQL in a commune code",
            "POST",
            "/api/v1/warnings",
            json_ct,
            with(&|d| d["communes"] = json!(["06385' OR '1'='1"])),
            422,
        ),
        (
            "unknown commune",
            "POST",
            "/api/v1/warnings",
            json_ct,
            with(&|d| d["communes"] = json!(["99999"])),
            422,
        ),
        (
            "20 000 communes",
            "POST",
            "/api/v1/warnings",
            json_ct,
            with(&|d| d["communes"] = json!(vec!["06385"; 20_000])),
            422,
        ),
        (
            // Over a form's body limit (256 KiB): refused before it is read.
            "100 000 communes",
            "POST",
            "/api/v1/warnings",
            json_ct,
            with(&|d| d["communes"] = json!(vec!["06385"; 100_000])),
            413,
        ),
        (
            "headline too long",
            "POST",
            "/api/v1/warnings",
            json_ct,
            with(&|d| d["headline"] = json!("x".repeat(161))),
            422,
        ),
        (
            "unknown field",
            "POST",
            "/api/v1/warnings",
            json_ct,
            with(&|d| d["level"] = json!(3)),
            422,
        ),
        (
            "update of a missing alert",
            "POST",
            "/api/v1/warnings",
            json_ct,
            with(&|d| d["updates"] = json!("'; DROP TABLE alerts; --")),
            422,
        ),
        ("wrong method", "DELETE", "/api/v1/warnings", json_ct, vec![], 405),
        (
            "SQL in a path",
            "GET",
            "/api/v1/warnings/x'%20OR%20'1'='1",
            json_ct,
            vec![],
            404,
        ),
        (
            "SQL in a pre-warning id",
            "POST",
            "/api/v1/prewarnings/1%20OR%201=1/dismiss",
            json_ct,
            br#"{"reason":"x"}"#.to_vec(),
            404,
        ),
        (
            "huge page",
            "GET",
            "/api/v1/alerts?limit=100000000",
            json_ct,
            vec![],
            400,
        ),
        (
            "negative page",
            "GET",
            "/api/v1/alerts?limit=-1",
            json_ct,
            vec![],
            400,
        ),
        (
            "page size not a number",
            "GET",
            "/api/v1/alerts?limit=1e99",
            json_ct,
            vec![],
            400,
        ),
        (
            "forged cursor",
            "GET",
            "/api/v1/alerts?cursor=1%27%20OR%201=1",
            json_ct,
            vec![],
            400,
        ),
        (
            "misspelt filter",
            "GET",
            "/api/v1/alerts?hazrd=flood",
            json_ct,
            vec![],
            400,
        ),
        (
            "SQL in a filter",
            "GET",
            "/api/v1/alerts?commune=06385%27%20OR%20%271%27=%271",
            json_ct,
            vec![],
            400,
        ),
        (
            "level out of range",
            "GET",
            "/api/v1/alerts?level=99",
            json_ct,
            vec![],
            400,
        ),
        (
            "bad warning state",
            "GET",
            "/api/v1/warnings?state=issued%27--",
            json_ct,
            vec![],
            400,
        ),
        (
            "huge audit page",
            "GET",
            "/api/v1/audit?limit=99999999999999999999",
            json_ct,
            vec![],
            400,
        ),
    ];
    let mut wrong = Vec::new();
    for (what, method, path, ct, body, expected) in cases {
        // The audit log is the admin's; everything else goes as the officer.
        let token = if path.starts_with("/api/v1/audit") {
            &app.token
        } else {
            &an
        };
        let (status, ctype, problem) = raw(&app, token, method, path, ct, body).await;
        // An oversized body: the server may close the connection as it refuses it, before
        // the client has sent it all or read the whole answer.
        if expected == 413 && (status == 0 || (status == 413 && problem.is_string())) {
            eprintln!("{what}: {status} {problem}");
            continue;
        }
        if status != expected
            || ctype.as_deref() != Some("application/problem+json")
            || problem["status"] != expected
        {
            wrong.push(format!("{what}: {status} {ctype:?} {problem}"));
        }
    }
    // An Idempotency-Key that is not one.
    let id = {
        let (s, w, _) = app
            .call_as(&an, "POST", "/api/v1/warnings", None, &good_draft())
            .await
            .unwrap();
        assert_eq!(s, 201);
        w["id"].as_str().unwrap().to_owned()
    };
    let key = "k".repeat(500);
    let (status, _, _) = app
        .call_as(
            &an,
            "POST",
            &format!("/api/v1/warnings/{id}/submit"),
            Some(&key),
            &json!({}),
        )
        .await
        .unwrap();
    if status != 400 {
        wrong.push(format!("a 500-character Idempotency-Key: {status}"));
    }
    // Hostile bodies to the sending actions change nothing either.
    for (verb, body) in [
        ("submit", json!({"override_reason": 42})),
        ("submit", json!({"override_reason": "x".repeat(501)})),
        ("approve", json!({"version": "1 OR 1=1"})),
        ("reject", json!({"reason": ""})),
    ] {
        let token = if verb == "submit" { &an } else { &app.token };
        let (status, _, problem) = raw(
            &app,
            token,
            "POST",
            &format!("/api/v1/warnings/{id}/{verb}"),
            json_ct,
            body.to_string().into_bytes(),
        )
        .await;
        if !(400..500).contains(&status) {
            wrong.push(format!("{verb} {body}: {status} {problem}"));
        }
    }
    let (_, w) = app.get(&format!("/api/v1/warnings/{id}")).await.unwrap();
    if w["state"] != "draft" || w["version"] != 1 {
        wrong.push(format!("the draft changed: {w}"));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Nothing but the one good draft was written; no alert; the audit chain holds and
    // grew by exactly that draft.
    let (_, list) = app.get("/api/v1/warnings").await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["state"], "draft");
    assert_eq!(app.get("/api/v1/alerts").await.unwrap().1, json!([]));
    let (_, after) = app.get("/api/v1/audit/verify").await.unwrap();
    assert_eq!(
        after["rows"].as_i64(),
        before["rows"].as_i64().map(|n| n + 1),
        "{before} {after}"
    );
    assert_eq!(after["intact"], true, "{after}");

    // Text that looks like SQL is only text: stored and shown as written.
    let sneaky = "Lũ'); DROP TABLE alerts; --";
    let mut d = good_draft();
    d["headline"] = json!(sneaky);
    let (status, w, _) = app
        .call_as(&an, "POST", "/api/v1/warnings", None, &d)
        .await
        .unwrap();
    assert_eq!(status, 201, "{w}");
    let (status, issued, _) = app
        .call_as(
            &an,
            "POST",
            &format!("/api/v1/warnings/{}/submit", w["id"].as_str().unwrap()),
            None,
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{issued}");
    let (_, alerts) = app.get("/api/v1/alerts").await.unwrap();
    assert_eq!(alerts[0]["headline"], sneaky);
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_filtered_and_paged_by_cursor_without_gaps_or_repeats() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let an = app.login_new_user("an.tran", "officer").await.unwrap();
    let mut issued = Vec::new();
    for (i, (hazard, commune)) in [
        ("flood", "06385"),
        ("heavy_rain", "06385"),
        ("flood", "05977"),
        ("flood", "06385"),
        ("heavy_rain", "05977"),
    ]
    .into_iter()
    .enumerate()
    {
        let d = json!({"hazard": hazard, "risk_level": 1 + (i % 2), "communes": [commune],
            "headline": format!("Tin {i}"), "description": "Mô tả."});
        let (_, w, _) = app
            .call_as(&an, "POST", "/api/v1/warnings", None, &d)
            .await
            .unwrap();
        let (status, ok, _) = app
            .call_as(
                &an,
                "POST",
                &format!("/api/v1/warnings/{}/submit", w["id"].as_str().unwrap()),
                None,
                &json!({}),
            )
            .await
            .unwrap();
        assert_eq!(status, 201, "{ok}");
        issued.push(ok["alert_id"].as_str().unwrap().to_owned());
    }
    // Pages of 2, newest first, followed by their Link headers.
    let mut seen = Vec::new();
    let mut next = Some("/api/v1/alerts?limit=2".to_owned());
    let mut pages = 0;
    while let Some(path) = next.take() {
        let resp = app
            .http
            .get(format!("{}{path}", app.base))
            .bearer_auth(&an)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        next = resp
            .headers()
            .get("link")
            .and_then(|l| l.to_str().ok())
            .and_then(|l| l.strip_prefix('<'))
            .and_then(|l| l.split_once(">; rel=\"next\""))
            .map(|(p, _)| p.to_owned());
        let page: Value = resp.json().await.unwrap();
        seen.extend(
            page.as_array()
                .unwrap()
                .iter()
                .map(|a| a["id"].as_str().unwrap().to_owned()),
        );
        pages += 1;
        assert!(pages <= 4, "the pages never end");
    }
    let newest_first: Vec<String> = issued.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, floods) = app
        .get("/api/v1/alerts?hazard=flood&commune=06385")
        .await
        .unwrap();
    assert_eq!(ids(&floods), [issued[3].clone(), issued[0].clone()]);
    let (_, level2) = app.get("/api/v1/alerts?level=2&hazard=heavy_rain").await.unwrap();
    assert_eq!(ids(&level2), [issued[1].clone()]);
    let (_, none) = app.get("/api/v1/alerts?status=Exercise").await.unwrap();
    assert_eq!(none, json!([]));
    let future =
        (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (_, later) = app.get(&format!("/api/v1/alerts?since={future}")).await.unwrap();
    assert_eq!(later, json!([]));
    // A filtered page carries its filter into the next link.
    let resp = app
        .http
        .get(format!("{}/api/v1/alerts?hazard=flood&limit=1", app.base))
        .bearer_auth(&an)
        .send()
        .await
        .unwrap();
    let link = resp.headers().get("link").unwrap().to_str().unwrap().to_owned();
    assert!(
        link.contains("hazard=flood") && link.contains("cursor="),
        "{link}"
    );
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_keys_do_only_what_their_scopes_allow() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let call = |token: String, method: &'static str, path: &'static str, ct: &'static str, body: Vec<u8>| {
        let app = &app;
        async move { raw(app, &token, method, path, ct, body).await.0 }
    };
    let reading = canhbao_tests::observation_now("HUULUNG", 16.0).into_bytes();
    let bulletin = canhbao_tests::live_bulletin("SCOPE-1", "kttv-langson@example.vn", 3);

    // A gauge's key by default: its own observations, and reading; never a bulletin,
    // whose level would override every computed one.
    let gauge = app
        .create_token("station", "Hữu Lũng gauge", &["HUULUNG"])
        .await
        .unwrap();
    assert_eq!(
        call(
            gauge.clone(),
            "POST",
            "/api/v1/observations",
            "application/json",
            reading.clone()
        )
        .await,
        200
    );
    assert_eq!(
        call(gauge.clone(), "GET", "/api/v1/alerts", "application/json", vec![]).await,
        200
    );
    assert_eq!(
        call(
            gauge,
            "POST",
            "/api/v1/bulletins",
            "application/cap+xml",
            bulletin.clone()
        )
        .await,
        403
    );

    // A write-only key cannot read; a key for the forecasting centre's bulletins posts
    // them and nothing else.
    let write_only = app
        .create_key("station", "logger", &["HUULUNG"], &["observations"])
        .await
        .unwrap();
    assert_eq!(
        call(
            write_only.clone(),
            "POST",
            "/api/v1/observations",
            "application/json",
            reading.clone()
        )
        .await,
        200
    );
    assert_eq!(
        call(write_only, "GET", "/api/v1/alerts", "application/json", vec![]).await,
        403
    );
    let kttv = app
        .create_key("station", "kttv bulletins", &[], &["bulletins"])
        .await
        .unwrap();
    assert_eq!(
        call(
            kttv.clone(),
            "POST",
            "/api/v1/bulletins",
            "application/cap+xml",
            bulletin
        )
        .await,
        200
    );
    assert_eq!(
        call(
            kttv.clone(),
            "POST",
            "/api/v1/observations",
            "application/json",
            reading
        )
        .await,
        403
    );
    assert_eq!(
        call(kttv, "GET", "/api/v1/alerts", "application/json", vec![]).await,
        403
    );

    // Keys are for machines: no officer or approver key, no scope that does not exist,
    // no label that names a person's login.
    for (role, label, scopes) in [
        ("officer", "desk", vec![]),
        ("approver", "desk", vec![]),
        ("station", "x", vec!["everything"]),
        ("admin", "user:chi.le", vec![]),
    ] {
        assert!(
            app.create_key(role, label, &[], &scopes).await.is_err(),
            "{role} {label} {scopes:?}"
        );
    }
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoes_are_bounded_every_bad_row_is_named_and_every_refusal_recorded() {
    use canhbao_tests::observation_now;
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();

    // A 900 KB station id: refused, quoted back cut, with its length.
    let huge = "H".repeat(900_000);
    let body = observation_now(&huge, 19.4);
    let resp = app
        .http
        .post(format!("{}/api/v1/observations", app.base))
        .bearer_auth(&app.token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let answer = resp.bytes().await.unwrap();
    assert!(answer.len() < 4_000, "the answer is {} bytes", answer.len());
    let text = String::from_utf8_lossy(&answer);
    assert!(text.contains("900000 bytes in all"), "{text}");
    let recorded = app.get("/api/v1/rejections").await.unwrap().1;
    let longest = recorded
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap().len() + r["source"].as_str().unwrap().len())
        .max()
        .unwrap();
    assert!(longest < 3_000, "a rejection row of {longest} bytes");

    // A wrong-typed row and an unknown station in one batch: both named, in order.
    let batch = format!(
        "[{},{}]",
        observation_now("HUULUNG", 19.4).replace("19.4", "\"19.4\""),
        observation_now("NOWHERE", 19.4)
    );
    let (status, _, body) = app.post_observations(&batch).await.unwrap();
    assert_eq!(status, 400, "{body}");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["[0].value", "[1].station"], "{body}");

    // 500 bad rows: the first 100 named, and how many more.
    let rows: Vec<String> = (0..500)
        .map(|_| observation_now("HUULUNG", 19.4).replace("\"m\"", "\"cm\""))
        .collect();
    let (status, _, body) = app
        .post_observations(&format!("[{}]", rows.join(",")))
        .await
        .unwrap();
    assert_eq!(status, 400);
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 101, "{}", errors.len());
    assert_eq!(errors[100]["detail"], "and 400 more faults like these");

    // A body over the limit: refused, counted, and recorded for operators.
    let (status, _, _) = raw(
        &app,
        &app.token,
        "POST",
        "/api/v1/observations",
        "application/json",
        vec![b' '; api::MAX_BODY_BYTES + 1],
    )
    .await;
    assert!(status == 413 || status == 0, "{status}");
    let recorded = app.get("/api/v1/rejections").await.unwrap().1;
    assert!(
        recorded
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["reason"].as_str().unwrap().starts_with("413:")),
        "{recorded}"
    );
    let metrics = app.get_text("/metrics").await.unwrap();
    assert!(metrics.contains("canhbao_too_large_total 1"), "{metrics}");
    app.app.stop().await;
}
