//! The SMS channel through the two gateway kinds that need no Kannel: Jasmin's HTTP API
//! and a templated JSON webhook, each played by a small HTTP/1.1 server in the test. The
//! server records what it got, answers as the provider does and then, like the provider,
//! calls the delivery-report URL from the request back, recording what canhbao answered.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use canhbao_tests::kannel::free_port;
use canhbao_tests::{Broker, TestApp};
use serde_json::Value;
use testkit::http::{Request, form_encode, form_fields, read_request, url_encode};
use tokio::net::{TcpListener, TcpStream};

use super::{DLR_SECRET, import_contacts, issue, sms_rows, wait_until};

/// Jasmin's message id in its `Success "<id>"` answer.
const JASMIN_ID: &str = "07033084-5cfd-4812-90a4-e4d24ffb6e3d";
/// A password a form body can break on.
const JASMIN_PASSWORD: &str = "jasm1n&pw=+ Sơn%";
/// The webhook provider's API key, sent in a header.
const API_KEY: &str = "sk_test_4f2a9c+Lạng/Sơn";
/// 05983 has no loudspeaker receiver: its chair gets the SMS at once.
const CHAIR_05983: &str = "name,phone,commune,role,language,opt_out\n\
                           Chủ tịch 05983,0912000006,05983,commune_chair,vi,no\n";

// ------------------------------------------------------------------------------------
// A fake provider
// ------------------------------------------------------------------------------------

/// What the fake provider answers to one request, and the reports it sends afterwards.
struct Answer {
    status: u16,
    content_type: &'static str,
    body: String,
    reports: Vec<Report>,
    /// How long the provider takes before it answers (longer than the gateway's timeout:
    /// the request is taken but canhbao never hears so).
    delay: Duration,
}

/// One delivery report the provider POSTs back.
struct Report {
    url: String,
    content_type: &'static str,
    body: String,
}

type Respond = Arc<dyn Fn(&Request) -> Answer + Send + Sync>;

/// What the fake provider saw: the requests it got and canhbao's answers to its reports.
#[derive(Clone, Default)]
struct Log {
    requests: Arc<Mutex<Vec<Request>>>,
    report_answers: Arc<Mutex<Vec<(u16, String)>>>,
}

impl Log {
    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    fn report_answers(&self) -> Vec<(u16, String)> {
        self.report_answers.lock().unwrap().clone()
    }
}

/// Starts a provider on a free loopback port; returns its root URL and its log.
async fn fake_provider(respond: Respond) -> (String, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log = Log::default();
    let shared = log.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(socket, respond.clone(), shared.clone()));
        }
    });
    (base, log)
}

/// One connection: reads the request, answers it and closes the connection, then (only
/// once the answer is out, as a provider does) sends its reports one after the other.
async fn serve(mut socket: TcpStream, respond: Respond, log: Log) {
    let Some(request) = read_request(&mut socket).await else {
        return;
    };
    let answer = respond(&request);
    log.requests.lock().unwrap().push(request);
    tokio::time::sleep(answer.delay).await;
    let written = testkit::http::respond(
        &mut socket,
        answer.status,
        answer.content_type,
        &answer.body,
        true,
    );
    if written.await.is_err() {
        return;
    }
    drop(socket);
    let http = client();
    for report in answer.reports {
        let answered = http
            .post(&report.url)
            .header("content-type", report.content_type)
            .body(report.body)
            .send()
            .await;
        let entry = match answered {
            Ok(resp) => {
                let status = resp.status().as_u16();
                (status, resp.text().await.unwrap_or_default())
            }
            Err(e) => (0, format!("no answer: {e}")),
        };
        log.report_answers.lock().unwrap().push(entry);
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// UTF-16BE in hexadecimal back to text.
fn utf16_hex_decode(hex: &str) -> String {
    assert!(
        hex.len().is_multiple_of(4) && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{hex}"
    );
    let units: Vec<u16> = (0..hex.len())
        .step_by(4)
        .map(|i| u16::from_str_radix(&hex[i..i + 4], 16).unwrap())
        .collect();
    String::from_utf16(&units).unwrap()
}

/// Checks a delivery-report URL: canhbao's endpoint for `gateway` under the app's public
/// URL, with the message's reference and the gateway's secret in its query.
fn assert_dlr_url(url: &str, port: u16, gateway: &str, message_ref: &str, secret: &str) {
    let (base, query) = url.split_once('?').unwrap_or_else(|| panic!("no query: {url}"));
    assert_eq!(base, format!("http://127.0.0.1:{port}/api/v1/sms/dlr/{gateway}"));
    let pairs = form_fields(query);
    let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["ref", "secret"], "{url}");
    assert_eq!(pairs[0].1, message_ref, "{url}");
    assert_eq!(pairs[1].1, secret, "the secret must survive the URL: {url}");
}

/// An app whose only SMS gateway is `gateway` (a TOML inline table), with `extra`
/// variables (its secrets, other `[sms]` settings).
async fn provider_app(port: u16, gateway: &str, extra: &[(&str, &str)]) -> TestApp {
    let listen = format!("127.0.0.1:{port}");
    let public = format!("http://127.0.0.1:{port}");
    let gateways = format!("[{gateway}]");
    let mut vars: Vec<(&str, &str)> = vec![
        ("CANHBAO__HTTP__LISTEN", &listen),
        ("CANHBAO__SMS__PUBLIC_URL", &public),
        ("CANHBAO__SMS__GATEWAYS", &gateways),
        ("CANHBAO__SMS__SWEEP_MS", "200"),
        // Longer than the test waits: a missing report shows as a message that never
        // gets to `delivered`, not as a move to another gateway.
        ("CANHBAO__SMS__REPORT_DEADLINE_S", "120"),
    ];
    vars.extend_from_slice(extra);
    TestApp::spawn_with(Broker::Embedded, &vars).await.unwrap()
}

async fn dlr_rejections(app: &TestApp, gateway: &str) -> Vec<String> {
    let (_, rejections) = app.get("/api/v1/rejections").await.unwrap();
    let source = format!("sms-dlr:{gateway}");
    rejections
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["source"] == source.as_str())
        .map(|r| r["reason"].as_str().unwrap_or_default().to_owned())
        .collect()
}

// ------------------------------------------------------------------------------------
// Jasmin
// ------------------------------------------------------------------------------------

/// What Jasmin posts to the `dlr-url` for a message it took: the SMSC's `submit_sm_resp`
/// (level 1), then the handset's receipt (level 2).
fn jasmin_reports(dlr_url: &str, short_text: &str) -> Vec<Report> {
    let level1 = form_body(&[("id", JASMIN_ID), ("message_status", "ESME_ROK"), ("level", "1")]);
    vec![
        Report {
            url: dlr_url.to_owned(),
            content_type: "application/x-www-form-urlencoded",
            body: level1,
        },
        Report {
            url: dlr_url.to_owned(),
            content_type: "application/x-www-form-urlencoded",
            body: jasmin_level2(short_text),
        },
    ]
}

fn jasmin_level2(short_text: &str) -> String {
    form_body(&[
        ("id", JASMIN_ID),
        ("id_smsc", "2a7f4c19"),
        ("message_status", "DELIVRD"),
        ("level", "2"),
        ("subdate", "2501011200"),
        ("donedate", "2501011201"),
        ("sub", "001"),
        ("dlvrd", "001"),
        ("err", "000"),
        ("text", short_text),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jasmin_takes_the_fallback_sms_and_its_reports_are_acknowledged_as_jasmin_expects() {
    // The fake Jasmin: `POST /send` gets `Success "<id>"`, then both reports follow.
    let respond: Respond = Arc::new(|r: &Request| {
        if r.method != "POST" || r.target != "/send" {
            return Answer {
                delay: Duration::ZERO,
                status: 404,
                content_type: "text/plain",
                body: "Not found".into(),
                reports: vec![],
            };
        }
        let form = r.form();
        let dlr_url = form.iter().find(|(k, _)| k == "dlr-url").map(|(_, v)| v.clone());
        let text = form
            .iter()
            .find(|(k, _)| k == "content" || k == "hex-content")
            .map(|(_, v)| v.chars().take(20).collect::<String>())
            .unwrap_or_default();
        Answer {
            delay: Duration::ZERO,
            status: 200,
            content_type: "text/plain",
            body: format!("Success \"{JASMIN_ID}\""),
            reports: dlr_url.map(|u| jasmin_reports(&u, &text)).unwrap_or_default(),
        }
    });
    let (jasmin, log) = fake_provider(respond).await;
    let port = free_port();
    let gateway = format!(
        r#"{{ id = "jasmin-1", kind = "jasmin", url = "{jasmin}", username = "canhbao", password_env = "CANHBAO_SECRET_JASMIN_PASSWORD", dlr_secret_env = "CANHBAO_SECRET_JASMIN_DLR", per_second = 50, burst = 1, max_in_flight = 2, timeout_ms = 2000, connect_timeout_ms = 500 }}"#
    );
    // UCS-2 throughout: the text goes as `hex-content` with `coding=8`.
    let app = provider_app(
        port,
        &gateway,
        &[
            ("CANHBAO__SMS__POLICY", "ucs2"),
            ("CANHBAO_SECRET_JASMIN_PASSWORD", JASMIN_PASSWORD),
            ("CANHBAO_SECRET_JASMIN_DLR", DLR_SECRET),
        ],
    )
    .await;
    import_contacts(&app, CHAIR_05983).await;
    let alerts = issue(&app, "LU-JASMIN-1", &["05983"]).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");

    let rows = sms_rows(&app, &alerts[0], 1, &["delivered"]).await;
    let row = &rows[0];
    assert_eq!(
        (
            row["gateway"].as_str(),
            row["cause"].as_str(),
            row["attempts"].as_i64(),
            row["encoding"].as_str()
        ),
        (Some("jasmin-1"), Some("fallback"), Some(1), Some("UCS-2")),
        "{row}"
    );
    let message_ref = row["message_ref"].as_str().unwrap();

    // What Jasmin got: one form with every field it knows, in sms_jasmin's order, and no
    // other (Jasmin refuses unknown arguments).
    let requests = log.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let send = &requests[0];
    assert_eq!((send.method.as_str(), send.target.as_str()), ("POST", "/send"));
    assert_eq!(
        send.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let names: Vec<String> = send.form().into_iter().map(|(k, _)| k).collect();
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
        ],
        "{}",
        send.body
    );
    assert!(
        !send.body.contains(JASMIN_PASSWORD),
        "the password is form-encoded"
    );
    for (name, expected) in [
        ("username", "canhbao"),
        ("password", JASMIN_PASSWORD),
        ("to", "84912000006"),
        ("from", "PCTTLANGSON"),
        ("coding", "8"),
        ("dlr", "yes"),
        ("dlr-level", "3"),
        ("dlr-method", "POST"),
    ] {
        assert_eq!(send.field(name), expected, "{name}");
    }
    let text = utf16_hex_decode(&send.field("hex-content"));
    // The headline only repeated the prefix, so the text goes on with the advice.
    assert!(text.starts_with("[PCTT Lạng Sơn] CẢNH BÁO LŨ cấp 3. "), "{text}");
    assert_eq!(text.to_lowercase().matches("cảnh báo lũ").count(), 1, "{text}");
    assert_dlr_url(&send.field("dlr-url"), port, "jasmin-1", message_ref, DLR_SECRET);

    // Both reports were taken, and answered as Jasmin needs to stop resending them.
    wait_until("canhbao's answers to both reports", || {
        log.report_answers().len() == 2
    })
    .await;
    let ack = (200, "ACK/Jasmin".to_owned());
    assert_eq!(log.report_answers(), [ack.clone(), ack.clone()]);

    // Jasmin resends a report whose ACK it did not get: the repeat is acknowledged too and
    // changes nothing.
    let dlr_url = send.field("dlr-url");
    let level2 = jasmin_level2("[PCTT Lang Son] CAN");
    let http = client();
    let post = |url: String, body: String| {
        let http = http.clone();
        async move {
            let resp = http
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    assert_eq!(post(dlr_url.clone(), level2.clone()).await, ack);

    // A report with a wrong secret is refused, and not acknowledged as Jasmin's ACK.
    let forged_url = format!(
        "http://127.0.0.1:{port}/api/v1/sms/dlr/jasmin-1?ref={}&secret={}",
        url_encode(message_ref),
        url_encode("guessed-secret-0000000000")
    );
    let (status, body) = post(forged_url, level2).await;
    assert_eq!(status, 401, "{body}");
    assert_ne!(body.trim(), "ACK/Jasmin");
    let rejections = dlr_rejections(&app, "jasmin-1").await;
    assert_eq!(rejections.len(), 1, "{rejections:?}");
    assert!(rejections[0].starts_with("401"), "{rejections:?}");

    let rows = sms_rows(&app, &alerts[0], 1, &["delivered"]).await;
    assert_eq!(rows[0]["gateway"], "jasmin-1", "{rows:?}");
    assert_eq!(log.requests().len(), 1, "nothing sent twice");
    app.app.stop().await;
}

// ------------------------------------------------------------------------------------
// A templated JSON webhook
// ------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_templated_webhook_gets_the_json_and_its_reports_apply() {
    // The fake provider: takes the JSON with 202 and its id, then reports it delivered.
    let respond: Respond = Arc::new(|r: &Request| {
        let json: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        let reports = json["callback"]["url"]
            .as_str()
            .map(|url| {
                vec![Report {
                    url: url.to_owned(),
                    content_type: "application/json",
                    body: r#"{"id": "msg-0001", "status": "DELIVERED"}"#.to_owned(),
                }]
            })
            .unwrap_or_default();
        Answer {
            delay: Duration::ZERO,
            status: 202,
            content_type: "application/json",
            body: r#"{"id": "msg-0001", "status": "QUEUED"}"#.to_owned(),
            reports,
        }
    });
    let (provider, log) = fake_provider(respond).await;
    let port = free_port();
    let gateway = format!(
        r#"{{ id = "hook-1", kind = "webhook", url = "{provider}/v1/messages", method = "POST", dlr_secret_env = "CANHBAO_SECRET_HOOK_DLR", headers = {{ Authorization = "Bearer ${{CANHBAO_SECRET_HOOK_KEY}}", X-Api-Version = "2" }}, body = {{ to = "{{{{to}}}}", msisdn = "{{{{to_digits}}}}", sender = "{{{{from}}}}", message = {{ text = "{{{{text}}}}", encoding = "{{{{encoding}}}}" }}, callback = {{ url = "{{{{dlr_url}}}}", reference = "{{{{ref}}}}" }}, flash = false, validity_minutes = 60 }}, status_pointer = "/status", status_map = {{ DELIVERED = "delivered", UNDELIVERABLE = "failed" }}, per_second = 50, max_in_flight = 2, timeout_ms = 2000, connect_timeout_ms = 500 }}"#
    );
    let app = provider_app(
        port,
        &gateway,
        &[
            ("CANHBAO_SECRET_HOOK_KEY", API_KEY),
            ("CANHBAO_SECRET_HOOK_DLR", DLR_SECRET),
        ],
    )
    .await;
    import_contacts(&app, CHAIR_05983).await;
    let alerts = issue(&app, "LU-HOOK-1", &["05983"]).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");

    let rows = sms_rows(&app, &alerts[0], 1, &["delivered"]).await;
    let row = &rows[0];
    assert_eq!(
        (
            row["gateway"].as_str(),
            row["cause"].as_str(),
            row["attempts"].as_i64()
        ),
        (Some("hook-1"), Some("fallback"), Some(1)),
        "{row}"
    );
    let message_ref = row["message_ref"].as_str().unwrap();
    let encoding = row["encoding"].as_str().unwrap();

    // What the provider got: the template filled in, the key from the secret variable.
    let requests = log.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let send = &requests[0];
    assert_eq!(
        (send.method.as_str(), send.target.as_str()),
        ("POST", "/v1/messages")
    );
    assert_eq!(send.header("content-type"), Some("application/json"));
    let bearer = format!("Bearer {API_KEY}");
    assert_eq!(send.header("authorization"), Some(bearer.as_str()));
    assert_eq!(send.header("x-api-version"), Some("2"));
    let json: Value = serde_json::from_str(&send.body).unwrap();
    assert_eq!(json["to"], "+84912000006", "{json}");
    assert_eq!(json["msisdn"], "84912000006", "{json}");
    assert_eq!(json["sender"], "PCTTLANGSON", "{json}");
    assert_eq!(json["message"]["encoding"], encoding, "{json}");
    assert_eq!(json["callback"]["reference"], message_ref, "{json}");
    assert_eq!(json["flash"], false, "{json}");
    assert_eq!(json["validity_minutes"], 60, "{json}");
    let text = json["message"]["text"].as_str().unwrap();
    // The default policy (auto, at most 3 UCS-2 parts) sends this wording in GSM-7.
    assert!(
        text.starts_with("[PCTT Lang Son] CANH BAO LU cap 3. ")
            || text.starts_with("[PCTT Lạng Sơn] CẢNH BÁO LŨ cấp 3. "),
        "{text}"
    );
    assert_eq!(encoding == "GSM-7", text.is_ascii(), "{encoding}: {text}");
    assert_dlr_url(
        json["callback"]["url"].as_str().unwrap(),
        port,
        "hook-1",
        message_ref,
        DLR_SECRET,
    );

    // The report was taken.
    wait_until("canhbao's answer to the report", || {
        !log.report_answers().is_empty()
    })
    .await;
    let answers = log.report_answers();
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].0, 200, "{answers:?}");

    // The same report with a wrong secret is refused and recorded.
    let forged = client()
        .post(format!(
            "http://127.0.0.1:{port}/api/v1/sms/dlr/hook-1?ref={}&secret={}",
            url_encode(message_ref),
            url_encode("guessed-secret-0000000000")
        ))
        .header("content-type", "application/json")
        .body(r#"{"status": "UNDELIVERABLE"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401);
    assert_eq!(dlr_rejections(&app, "hook-1").await.len(), 1);
    // A flood of them: every one counted, one a second recorded (not a row each).
    let started = std::time::Instant::now();
    for i in 0..300 {
        let r = client()
            .post(format!(
                "http://127.0.0.1:{port}/api/v1/sms/dlr/hook-1?ref={}&secret=guess-{i}",
                url_encode(message_ref)
            ))
            .header("content-type", "application/json")
            .body(r#"{"status": "UNDELIVERABLE"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }
    let seconds = started.elapsed().as_secs() as usize + 2;
    let recorded = dlr_rejections(&app, "hook-1").await.len();
    assert!(
        recorded <= 1 + seconds,
        "{recorded} rows for 300 refusals in {seconds} s"
    );
    let metrics = app.get_text("/metrics").await.unwrap();
    assert!(metrics.contains("canhbao_sms_dlr_refused_total 301"), "{metrics}");
    // A provider that can may send the secret in a header instead of the URL (out of
    // access logs): as X-Canhbao-Dlr-Secret, or as the password of basic auth.
    let basic = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("hook:{DLR_SECRET}"))
    };
    for (name, value, want) in [
        ("x-canhbao-dlr-secret", DLR_SECRET.to_owned(), 200),
        ("authorization", format!("Basic {basic}"), 200),
        (
            "x-canhbao-dlr-secret",
            "guessed-secret-0000000000".to_owned(),
            401,
        ),
    ] {
        let r = client()
            .post(format!(
                "http://127.0.0.1:{port}/api/v1/sms/dlr/hook-1?ref={}",
                url_encode(message_ref)
            ))
            .header(name, value)
            .header("content-type", "application/json")
            .body(r#"{"id": "msg-0001", "status": "DELIVERED"}"#)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert_eq!(status, want, "{name}: {}", r.text().await.unwrap_or_default());
    }
    let metrics = app.get_text("/metrics").await.unwrap();
    assert!(metrics.contains("canhbao_sms_dlr_refused_total 302"), "{metrics}");
    let rows = sms_rows(&app, &alerts[0], 1, &["delivered"]).await;
    assert_eq!(rows[0]["gateway"], "hook-1", "{rows:?}");
    assert_eq!(log.requests().len(), 1, "nothing sent twice");
    app.app.stop().await;
}

// ------------------------------------------------------------------------------------
// A provider that fails half its requests
// ------------------------------------------------------------------------------------

/// 24 commune chairs, each of a commune without a loudspeaker receiver, so each gets the
/// alert by SMS at once.
fn chairs(n: usize) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/areas/lang-son.toml"
    ))
    .unwrap();
    let doc: toml::Table = text.parse().unwrap();
    let communes: Vec<String> = doc["commune"]
        .as_array()
        .unwrap()
        .iter()
        .take(n)
        .map(|c| c["code"].as_str().unwrap().to_owned())
        .collect();
    let mut csv = String::from("name,phone,commune,role,language,opt_out\n");
    for (i, c) in communes.iter().enumerate() {
        csv.push_str(&format!("Chủ tịch {c},09130{i:05},{c},commune_chair,vi,no\n"));
    }
    (csv, communes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_failing_or_timing_out_half_its_requests_loses_no_sms_and_sends_none_twice() {
    // Of every four requests: one refused for now (503), one taken but answered only after
    // the gateway gave up waiting (its report still follows), two taken at once.
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    // What the provider did with each request, (number, refused?): recorded where it
    // decides, since requests in flight together may reach the log in another order.
    let decisions: Arc<std::sync::Mutex<Vec<(String, bool)>>> = Arc::default();
    let decided = decisions.clone();
    let respond: Respond = Arc::new(move |r: &Request| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let json: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        decided
            .lock()
            .unwrap()
            .push((json["to"].as_str().unwrap_or_default().to_owned(), n % 4 == 1));
        let taken = |delay: Duration| {
            let reports = json["callback"]["url"]
                .as_str()
                .map(|url| {
                    vec![Report {
                        url: url.to_owned(),
                        content_type: "application/json",
                        body: format!(r#"{{"id": "m-{n}", "status": "DELIVERED"}}"#),
                    }]
                })
                .unwrap_or_default();
            Answer {
                delay,
                status: 202,
                content_type: "application/json",
                body: format!(r#"{{"id": "m-{n}", "status": "QUEUED"}}"#),
                reports,
            }
        };
        match n % 4 {
            1 => Answer {
                delay: Duration::ZERO,
                status: 503,
                content_type: "application/json",
                body: r#"{"error": "busy"}"#.to_owned(),
                reports: vec![],
            },
            3 => taken(Duration::from_millis(1500)),
            _ => taken(Duration::ZERO),
        }
    });
    let (provider, log) = fake_provider(respond).await;
    let port = free_port();
    let gateway = format!(
        r#"{{ id = "flaky", kind = "webhook", url = "{provider}/v1/messages", method = "POST", dlr_secret_env = "CANHBAO_SECRET_FLAKY_DLR", body = {{ to = "{{{{to}}}}", text = "{{{{text}}}}", callback = {{ url = "{{{{dlr_url}}}}" }} }}, status_pointer = "/status", status_map = {{ DELIVERED = "delivered" }}, per_second = 100, max_in_flight = 4, timeout_ms = 500, connect_timeout_ms = 500 }}"#
    );
    let app = provider_app(
        port,
        &gateway,
        &[
            ("CANHBAO_SECRET_FLAKY_DLR", DLR_SECRET),
            ("CANHBAO__SMS__RETRY_BASE_MS", "100"),
        ],
    )
    .await;
    let (csv, communes) = chairs(24);
    import_contacts(&app, &csv).await;
    let refs: Vec<&str> = communes.iter().map(String::as_str).collect();
    let alerts = issue(&app, "LU-FLAKY-1", &refs).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");

    // Every number ends delivered: none lost.
    let rows = sms_rows(&app, &alerts[0], 24, &["delivered"]).await;
    assert_eq!(rows.len(), 24);
    // The provider took each number exactly once: refused requests were sent again, and a
    // request that went unanswered was never sent again blindly.
    let mut taken: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut refused = 0;
    for (to, was_refused) in decisions.lock().unwrap().iter() {
        if *was_refused {
            refused += 1;
        } else {
            *taken.entry(to.clone()).or_default() += 1;
        }
    }
    assert_eq!(taken.len(), 24, "{taken:?}");
    assert!(
        taken.values().all(|&n| n == 1),
        "a number was taken twice: {taken:?}"
    );
    assert!(
        refused >= 6,
        "half the requests failed or timed out ({refused} refused)"
    );
    let unconfirmed_then_delivered = rows
        .iter()
        .filter(|r| {
            r["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("time") || e.contains("answer"))
        })
        .count();
    eprintln!(
        "{} requests for 24 numbers: {refused} refused, {} taken; {unconfirmed_then_delivered} delivered after an unanswered request",
        log.requests().len(),
        taken.values().sum::<usize>()
    );
}
