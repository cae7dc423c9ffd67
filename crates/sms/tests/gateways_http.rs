//! The Jasmin and webhook gateways at the socket: small HTTP/1.1 servers on loopback that
//! answer as Jasmin's documentation says it does (`sending-mt.rst`) and as a JSON provider
//! would, and record what they received.

#![allow(clippy::unwrap_used)]

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sms::callback::DlrStatus;
use sms::gateways::{Gateway, GatewayKind};
use sms::jasmin::{JasminConfig, JasminGateway};
use sms::kannel::Encoding;
use sms::link::{GatewayError, GatewayLimits};
use sms::message::{MessageRef, RejectKind, SendOutcome, SmsMessage};
use sms::webhook::{WebhookConfig, WebhookGateway, WebhookMethod};
use testkit::http::{Request, form_encode, read_request, respond};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Percent signs, `+`, `/`, `&`, `=`, `?`, spaces and Vietnamese: everything a URL can
/// break on.
const SECRET: &str = "Zq%C3+/&x=1 ~Lạng Sơn ?%d";
const API_KEY: &str = "sk_test_4f2a9c";
const UCS2_TEXT: &str = "Cảnh báo lũ cấp 3 tại xã Hữu Lũng: \"sơ tán\" ngay & an toàn = 100%\n+ đê vỡ";
const GSM7_TEXT: &str = "Canh bao lu: a&b=c+d \"quoted\"\nnew line 100% @";
const JASMIN_ID: &str = "07033084-5cfd-4812-90a4-e4d24ffb6e3d";

type Answer = fn(&Request) -> (u16, &'static str, String);

/// A server on a free loopback port that answers every request with `answer` and hands
/// on what it got.
async fn server(answer: Answer) -> (String, mpsc::UnboundedReceiver<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(request) = read_request(&mut socket).await {
                    let (status, content_type, body) = answer(&request);
                    let _ = tx.send(request);
                    if respond(&mut socket, status, content_type, &body, false)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (base, rx)
}

/// Jasmin as documented: the answer depends on the number, so one server plays every case.
fn jasmin_answer(request: &Request) -> (u16, &'static str, String) {
    let plain = "text/plain";
    if request
        .form()
        .iter()
        .any(|(k, v)| k == "password" && v != "jasmin-pw&=+")
    {
        return (
            403,
            plain,
            "Error \"Authentication failure for username:canhbao\"".to_owned(),
        );
    }
    let to = request.field("to");
    match to.as_str() {
        "84900000412" => (412, plain, "Error \"No route found\"".to_owned()),
        "84900000500" => (
            500,
            plain,
            "Error \"Cannot send submit_sm, check SMPPClientManagerPB log file for details\"".to_owned(),
        ),
        _ => (200, plain, format!("Success \"{JASMIN_ID}\"")),
    }
}

fn provider_answer(request: &Request) -> (u16, &'static str, String) {
    let json = "application/json";
    let body: Value = serde_json::from_str(&request.body).unwrap_or(Value::Null);
    match body["to"].as_str() {
        Some("+84900000400") => (400, json, r#"{"error":"invalid destination"}"#.to_owned()),
        Some("+84900000503") => (503, json, r#"{"error":"try later"}"#.to_owned()),
        _ => (202, json, r#"{"id":"prov-1","status":"queued"}"#.to_owned()),
    }
}

fn limits() -> GatewayLimits {
    GatewayLimits {
        per_second: NonZeroU32::new(100).unwrap(),
        burst: NonZeroU32::new(100).unwrap(),
        max_in_flight: NonZeroUsize::new(4).unwrap(),
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
    }
}

fn sms(to: &str, text: &str, encoding: Encoding, reference: &str) -> SmsMessage {
    SmsMessage {
        to: to.to_owned(),
        text: text.to_owned(),
        encoding,
        message_ref: MessageRef::new(reference).unwrap(),
    }
}

fn jasmin_config(base_url: &str) -> JasminConfig {
    JasminConfig {
        base_url: base_url.to_owned(),
        username: "canhbao".to_owned(),
        password: "jasmin-pw&=+".to_owned().into(),
        from: "CANHBAO".to_owned(),
        dlr_url_base: "http://127.0.0.1:9/api/v1/sms/dlr/jasmin".to_owned(),
        dlr_secret: SECRET.to_owned().into(),
    }
}

fn webhook_config(url: &str) -> WebhookConfig {
    WebhookConfig {
        method: WebhookMethod::Put,
        headers: vec![
            ("Authorization".to_owned(), format!("Bearer {API_KEY}")),
            ("Idempotency-Key".to_owned(), "{{ref}}".to_owned()),
        ],
        from: "CANHBAO".to_owned(),
        dlr_url_base: "http://127.0.0.1:9/api/v1/sms/dlr/hook".to_owned(),
        dlr_secret: SECRET.to_owned().into(),
        status_pointer: "/event/status".to_owned(),
        status_map: vec![
            ("DELIVERED".to_owned(), DlrStatus::Delivered),
            ("FAILED".to_owned(), DlrStatus::Failed),
        ],
        accepted_statuses: vec![200, 202],
        ..WebhookConfig::new(
            format!("{url}/v2/sms?account=42"),
            json!({
                "to": "{{to}}",
                "msisdn": "{{to_digits}}",
                "sender": "{{from}}",
                "text": "{{text}}",
                "coding": "{{encoding}}",
                "client_ref": "{{ref}}",
                "callback": "{{dlr_url}}",
                "ttl": 3600
            }),
        )
    }
}

fn query_of(url: &str) -> &str {
    url.split_once('?').unwrap().1
}

#[tokio::test]
async fn jasmin_gets_every_field_and_its_answers_map_to_outcomes() {
    let (base, mut received) = server(jasmin_answer).await;
    let gateway = Gateway::new(
        "jasmin-1",
        GatewayKind::Jasmin(JasminGateway::new(jasmin_config(&base), limits()).unwrap()),
    );
    assert_eq!(
        format!("{gateway:?}"),
        "Gateway { id: \"jasmin-1\", kind: \"jasmin\" }"
    );
    assert_eq!(gateway.dlr_ack(), "ACK/Jasmin");

    let ucs2 = sms(
        "+84912345678",
        UCS2_TEXT,
        Encoding::Ucs2,
        "alert-1.v1:84912345678",
    );
    assert_eq!(gateway.send(&ucs2).await.unwrap(), SendOutcome::Accepted);
    let got = received.recv().await.unwrap();
    assert_eq!((got.method.as_str(), got.target.as_str()), ("POST", "/send"));
    assert_eq!(
        got.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let names: Vec<String> = got.form().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        names,
        [
            "username",
            "password",
            "to",
            "from",
            "coding",
            "dlr",
            "dlr-url",
            "dlr-level",
            "dlr-method",
            "hex-content"
        ]
    );
    assert_eq!(got.field("username"), "canhbao");
    assert_eq!(got.field("password"), "jasmin-pw&=+");
    assert_eq!(got.field("to"), "84912345678");
    assert_eq!(got.field("from"), "CANHBAO");
    assert_eq!(got.field("coding"), "8");
    assert_eq!(got.field("dlr"), "yes");
    assert_eq!(got.field("dlr-level"), "3");
    assert_eq!(got.field("dlr-method"), "POST");
    // The content, as the SMSC will get it: UTF-16BE.
    let hex = got.field("hex-content");
    let units: Vec<u16> = (0..hex.len())
        .step_by(4)
        .map(|i| u16::from_str_radix(&hex[i..i + 4], 16).unwrap())
        .collect();
    assert_eq!(String::from_utf16(&units).unwrap(), UCS2_TEXT);

    // The dlr-url leads back to this message, and Jasmin's report on it (as throwers.py
    // posts it) reads through the same Gateway.
    let dlr_url = got.field("dlr-url");
    assert!(
        dlr_url.starts_with("http://127.0.0.1:9/api/v1/sms/dlr/jasmin?ref="),
        "{dlr_url}"
    );
    let query = query_of(&dlr_url);
    for (level, status, expected) in [
        ("1", "ESME_ROK", DlrStatus::SmscAccepted),
        ("2", "DELIVRD", DlrStatus::Delivered),
        ("2", "UNDELIV", DlrStatus::Failed),
    ] {
        let body = [
            ("id", JASMIN_ID),
            ("level", level),
            ("message_status", status),
            ("id_smsc", "2567"),
            ("sub", "001"),
            ("dlvrd", "001"),
            ("subdate", "1311022338"),
            ("donedate", "1311022338"),
            ("err", "000"),
            ("text", "Cảnh báo lũ cấp 3 tạ"),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={}", form_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
        let report = gateway.parse_dlr(query, &body).unwrap();
        assert_eq!(report.message_ref, ucs2.message_ref);
        assert_eq!(report.status, expected);
        assert_eq!(report.smsc_message_id.as_deref(), Some(JASMIN_ID));
        let wrong = format!("{}&secret=guess", query.split("&secret=").next().unwrap());
        assert!(gateway.parse_dlr(&wrong, &body).is_err());
    }

    let gsm7 = sms(
        "+84912345679",
        GSM7_TEXT,
        Encoding::Gsm7,
        "alert-1.v1:84912345679",
    );
    assert_eq!(gateway.send(&gsm7).await.unwrap(), SendOutcome::Accepted);
    let got = received.recv().await.unwrap();
    assert_eq!(got.field("coding"), "0");
    assert_eq!(got.field("content"), GSM7_TEXT);
    assert!(got.form().iter().all(|(k, _)| k != "hex-content"));

    let rejected = |status: u16, reason: &str, kind| SendOutcome::Rejected {
        status,
        reason: reason.to_owned(),
        kind,
    };
    let no_route = sms("+84900000412", "x", Encoding::Gsm7, "r-412");
    assert_eq!(
        gateway.send(&no_route).await.unwrap(),
        rejected(412, "Error \"No route found\"", RejectKind::Permanent)
    );
    let failing = sms("+84900000500", "x", Encoding::Gsm7, "r-500");
    assert_eq!(
        gateway.send(&failing).await.unwrap(),
        rejected(
            500,
            "Error \"Cannot send submit_sm, check SMPPClientManagerPB log file for details\"",
            RejectKind::Transient
        )
    );
    let wrong_password = JasminGateway::new(
        JasminConfig {
            password: "not-it".to_owned().into(),
            ..jasmin_config(&base)
        },
        limits(),
    )
    .unwrap();
    assert_eq!(
        wrong_password.send(&no_route).await.unwrap(),
        rejected(
            403,
            "Error \"Authentication failure for username:canhbao\"",
            RejectKind::Permanent
        )
    );

    gateway.close();
    assert!(matches!(gateway.send(&gsm7).await, Err(GatewayError::Closed)));
}

#[tokio::test]
async fn the_webhook_gets_the_filled_in_json_and_headers_and_its_answers_map_to_outcomes() {
    let (base, mut received) = server(provider_answer).await;
    let gateway = Gateway::new(
        "hook-1",
        GatewayKind::Webhook(WebhookGateway::new(webhook_config(&base), limits()).unwrap()),
    );
    assert_eq!(
        format!("{gateway:?}"),
        "Gateway { id: \"hook-1\", kind: \"webhook\" }"
    );
    assert_eq!(gateway.dlr_ack(), "OK");

    let msg = sms(
        "+84912345678",
        UCS2_TEXT,
        Encoding::Ucs2,
        "alert-2.v1:84912345678",
    );
    assert_eq!(gateway.send(&msg).await.unwrap(), SendOutcome::Accepted);
    let got = received.recv().await.unwrap();
    assert_eq!(
        (got.method.as_str(), got.target.as_str()),
        ("PUT", "/v2/sms?account=42")
    );
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(
        got.header("authorization"),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    assert_eq!(got.header("idempotency-key"), Some("alert-2.v1:84912345678"));
    let body: Value = serde_json::from_str(&got.body).unwrap();
    let callback = body["callback"].as_str().unwrap().to_owned();
    assert_eq!(
        body,
        json!({
            "to": "+84912345678",
            "msisdn": "84912345678",
            "sender": "CANHBAO",
            "text": UCS2_TEXT,
            "coding": "UCS-2",
            "client_ref": "alert-2.v1:84912345678",
            "callback": callback,
            "ttl": 3600
        })
    );
    assert!(
        callback.starts_with("http://127.0.0.1:9/api/v1/sms/dlr/hook?ref="),
        "{callback}"
    );

    // The provider's report on it comes back to the callback and reads through the Gateway.
    let query = query_of(&callback);
    let report = gateway
        .parse_dlr(query, r#"{"event":{"status":"DELIVERED","id":"prov-1"}}"#)
        .unwrap();
    assert_eq!(
        (report.message_ref, report.status),
        (msg.message_ref.clone(), DlrStatus::Delivered)
    );
    assert!(
        gateway
            .parse_dlr(query, r#"{"event":{"status":"delivered"}}"#)
            .is_err()
    );
    assert!(
        gateway
            .parse_dlr("ref=x&secret=guess", r#"{"event":{"status":"DELIVERED"}}"#)
            .is_err()
    );

    let rejected = |status: u16, reason: &str, kind| SendOutcome::Rejected {
        status,
        reason: reason.to_owned(),
        kind,
    };
    let bad = sms("+84900000400", GSM7_TEXT, Encoding::Gsm7, "r-400");
    assert_eq!(
        gateway.send(&bad).await.unwrap(),
        rejected(400, r#"{"error":"invalid destination"}"#, RejectKind::Permanent)
    );
    let got = received.recv().await.unwrap();
    let body: Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!(
        (body["text"].as_str(), body["coding"].as_str()),
        (Some(GSM7_TEXT), Some("GSM-7"))
    );
    let busy = sms("+84900000503", "x", Encoding::Gsm7, "r-503");
    assert_eq!(
        gateway.send(&busy).await.unwrap(),
        rejected(503, r#"{"error":"try later"}"#, RejectKind::Transient)
    );
}

#[tokio::test]
async fn a_gateway_that_never_answers_times_out_as_maybe_sent() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            sockets.push(socket);
        }
    });
    let limits = GatewayLimits {
        timeout: Duration::from_millis(300),
        ..limits()
    };
    let jasmin = JasminGateway::new(jasmin_config(&base), limits).unwrap();
    let webhook = WebhookGateway::new(webhook_config(&base), limits).unwrap();
    let msg = sms("+84912345678", "x", Encoding::Gsm7, "r-1");
    for err in [
        jasmin.send(&msg).await.unwrap_err(),
        webhook.send(&msg).await.unwrap_err(),
    ] {
        assert!(matches!(err, GatewayError::Timeout { .. }), "{err:?}");
        assert!(err.may_have_sent());
        let shown = format!("{err}");
        assert!(
            !shown.contains("jasmin-pw") && !shown.contains("account=42"),
            "{shown}"
        );
    }
    hold.abort();
}

#[tokio::test]
async fn an_unreachable_gateway_is_known_to_have_sent_nothing() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let jasmin = JasminGateway::new(jasmin_config(&base), limits()).unwrap();
    let webhook = WebhookGateway::new(webhook_config(&base), limits()).unwrap();
    let msg = sms("+84912345678", "x", Encoding::Gsm7, "r-1");
    for err in [
        jasmin.send(&msg).await.unwrap_err(),
        webhook.send(&msg).await.unwrap_err(),
    ] {
        assert!(matches!(err, GatewayError::Unreachable { .. }), "{err:?}");
        assert!(!err.may_have_sent());
        let chain = format!("{err} / {:?}", std::error::Error::source(&err));
        assert!(
            !chain.contains("jasmin-pw") && !chain.contains(API_KEY) && !chain.contains("account=42"),
            "{chain}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_spaces_out_a_batch() {
    let (base, mut received) = server(jasmin_answer).await;
    let limits = GatewayLimits {
        per_second: NonZeroU32::new(10).unwrap(),
        burst: NonZeroU32::new(1).unwrap(),
        ..limits()
    };
    let gateway = Arc::new(JasminGateway::new(jasmin_config(&base), limits).unwrap());
    let started = Instant::now();
    let mut batch = tokio::task::JoinSet::new();
    for i in 0..5 {
        let gateway = Arc::clone(&gateway);
        batch.spawn(async move {
            let msg = sms(
                &format!("+8491234560{i}"),
                "x",
                Encoding::Gsm7,
                &format!("batch-{i}"),
            );
            gateway.send(&msg).await.unwrap()
        });
    }
    while let Some(outcome) = batch.join_next().await {
        assert_eq!(outcome.unwrap(), SendOutcome::Accepted);
    }
    let took = started.elapsed();
    // One at once, then one every 100 ms: at least 400 ms for five.
    assert!(
        took >= Duration::from_millis(380),
        "5 messages at 10/s with burst 1 took {took:?}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    let mut numbers = Vec::new();
    while let Ok(got) = received.try_recv() {
        numbers.push(got.field("to"));
    }
    numbers.sort();
    assert_eq!(
        numbers,
        (0..5).map(|i| format!("8491234560{i}")).collect::<Vec<_>>()
    );
}
