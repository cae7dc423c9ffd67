//! The console's first pages over real HTTP (issue 22, first part): the form login with
//! the API's own checks, the session cookie, the CSRF token, and the situation board.

use canhbao_tests::{Broker, TestApp};

/// A client that shows redirects instead of following them.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn add_person(app: &TestApp, name: &str, role: &str) -> String {
    let password = format!("{name}-mat-khau-dai");
    canhbao_server::users::add(app.app.store(), &app.data_dir, name, role, Some(password.clone()))
        .await
        .unwrap();
    password
}

async fn post_form(app: &TestApp, path: &str, cookie: Option<&str>, form: &str) -> reqwest::Response {
    let mut r = browser()
        .post(format!("{}{path}", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_owned());
    if let Some(c) = cookie {
        r = r.header("cookie", c);
    }
    r.send().await.unwrap()
}

async fn get_page(app: &TestApp, path: &str, cookie: Option<&str>) -> (u16, Option<String>, String) {
    let mut r = browser().get(format!("{}{path}", app.base));
    if let Some(c) = cookie {
        r = r.header("cookie", c);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, location, resp.text().await.unwrap())
}

/// Logs `name` in through the form; returns the `Cookie` header value to send back.
async fn log_in(app: &TestApp, name: &str, password: &str) -> String {
    let resp = post_form(
        app,
        "/console/login",
        None,
        &format!("username={name}&password={password}"),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 303);
    let set = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    set.split(';').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_officer_logs_in_with_the_form_and_sees_every_commune_at_its_level() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let password = add_person(&app, "an.tran", "officer").await;

    // No session: the board sends to the login page, which is Vietnamese and self-contained.
    let (status, location, _) = get_page(&app, "/console", None).await;
    assert_eq!((status, location.as_deref()), (303, Some("/console/login")));
    let resp = browser()
        .get(format!("{}/console/login", app.base))
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'self'")
    );
    let page = resp.text().await.unwrap();
    assert!(
        page.contains("<html lang=\"vi\">") && page.contains("Đăng nhập"),
        "{page}"
    );
    assert!(
        !page.contains("<script") && !page.contains("style="),
        "no inline script or style"
    );

    // A wrong password: the same answer as the API, no cookie.
    let resp = post_form(
        &app,
        "/console/login",
        None,
        "username=an.tran&password=sai-mat-khau",
    )
    .await;
    assert_eq!(resp.status().as_u16(), 401);
    assert!(resp.headers().get("set-cookie").is_none());
    assert!(resp.text().await.unwrap().contains("không đúng"));

    // The right one: a session cookie the page's scripts cannot read and no other site sends.
    let resp = post_form(
        &app,
        "/console/login",
        None,
        &format!("username=an.tran&password={password}"),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 303);
    let set = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP here: {set}");
    let cookie = set.split(';').next().unwrap().to_owned();

    // An official level-3 flood bulletin; the board shows it on its commune, number written.
    app.issue_bulletin("console-board-1").await.unwrap();
    let (status, _, board) = get_page(&app, "/console", Some(&cookie)).await;
    assert_eq!(status, 200, "{board}");
    assert_eq!(board.matches("<th scope=\"row\">").count(), 65, "every commune");
    assert!(board.contains("Hữu Lũng"), "commune names with diacritics");
    assert!(
        board.contains("class=\"lv lv3\">3<"),
        "the level's colour and number"
    );
    assert!(board.contains("cảnh báo chờ phê duyệt") && board.contains("an.tran"));
    assert!(!board.contains("<script") && !board.contains("style="));
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_without_the_sessions_csrf_token_is_refused_and_with_it_ends_the_session() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let password = add_person(&app, "chi.le", "viewer").await;
    let cookie = log_in(&app, "chi.le", &password).await;
    let (_, _, board) = get_page(&app, "/console", Some(&cookie)).await;
    let csrf = board
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    assert_eq!(csrf.len(), 64);

    // Another site's form (no token, or a made-up one) logs nobody out.
    for form in ["", "csrf=0000", &format!("csrf={}", "a".repeat(64))] {
        let resp = post_form(&app, "/console/logout", Some(&cookie), form).await;
        assert_eq!(resp.status().as_u16(), 403, "{form:?}");
    }
    assert_eq!(get_page(&app, "/console", Some(&cookie)).await.0, 200);

    // The page's own form does, and the token behind the cookie is revoked.
    let resp = post_form(&app, "/console/logout", Some(&cookie), &format!("csrf={csrf}")).await;
    assert_eq!(resp.status().as_u16(), 303);
    assert!(
        resp.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let (status, location, _) = get_page(&app, "/console", Some(&cookie)).await;
    assert_eq!((status, location.as_deref()), (303, Some("/console/login")));
    let secret = cookie.split_once('=').unwrap().1;
    let resp = app
        .http
        .get(format!("{}/api/v1/alerts", app.base))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401, "the session's token is revoked");
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_key_in_the_cookie_opens_no_console_session() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let cookie = format!("cb_session={}", app.token.trim());
    let (status, location, _) = get_page(&app, "/console", Some(&cookie)).await;
    assert_eq!((status, location.as_deref()), (303, Some("/console/login")));
    app.app.stop().await;
}

/// Behind the TLS proxy the production profile expects, the service sees plain HTTP: the
/// cookie is `Secure` when a trusted proxy says the browser used HTTPS, and only then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cookie_is_secure_when_a_trusted_proxy_says_the_browser_used_https() {
    let app = TestApp::spawn_with(
        Broker::Embedded,
        &[("CANHBAO__LOGIN__TRUSTED_PROXIES", r#"["127.0.0.1"]"#)],
    )
    .await
    .unwrap();
    let password = add_person(&app, "binh.vo", "officer").await;
    let login = |proto: &'static str| {
        let (app, password) = (&app, password.clone());
        async move {
            let resp = browser()
                .post(format!("{}/console/login", app.base))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-forwarded-proto", proto)
                .body(format!("username=binh.vo&password={password}"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 303);
            resp.headers()["set-cookie"].to_str().unwrap().to_owned()
        }
    };
    assert!(login("https").await.contains("; Secure"));
    assert!(!login("http").await.contains("Secure"));
    app.app.stop().await;
}

/// The board's counts lead to lists a person reads: the newest bulletins with their kind,
/// level and state, and the warnings waiting for a second person with their author and
/// the version to approve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_list_and_the_approval_queue_show_what_waits_and_what_was_sent() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let password = add_person(&app, "chi.le", "approver").await;
    let cookie = log_in(&app, "chi.le", &password).await;
    for path in ["/console/alerts", "/console/approvals"] {
        let (status, location, _) = get_page(&app, path, None).await;
        assert_eq!(
            (status, location.as_deref()),
            (303, Some("/console/login")),
            "{path}"
        );
    }
    let (_, _, empty) = get_page(&app, "/console/approvals", Some(&cookie)).await;
    assert!(empty.contains("Không có cảnh báo nào chờ phê duyệt"), "{empty}");

    app.issue_bulletin("console-list-1").await.unwrap();
    let an = app.login_new_user("an.tran", "officer").await.unwrap();
    let draft = serde_json::json!({
        "hazard": "flood", "risk_level": 3, "communes": ["06385"],
        "headline": "Lũ lớn trên sông Thương", "description": "Mực nước lên nhanh.",
        "instruction": "Chuẩn bị sơ tán.", "valid_minutes": 120,
    });
    let (status, w, _) = app
        .call_as(&an, "POST", "/api/v1/warnings", None, &draft)
        .await
        .unwrap();
    assert_eq!(status, 201, "{w}");
    let id = w["id"].as_str().unwrap().to_owned();
    let (status, sub, _) = app
        .call_as(
            &an,
            "POST",
            &format!("/api/v1/warnings/{id}/submit"),
            Some("console-list-submit-1"),
            &serde_json::json!({}),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{sub}");

    // A station above its alarm level 3: an alarm level, not a risk level, so no risk colour.
    app.prime("HUULUNG", 19.4).await.unwrap();
    let (status, _, answer) = app
        .post_observations(&canhbao_tests::observation_now("HUULUNG", 19.4))
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");

    let (status, _, alerts) = get_page(&app, "/console/alerts", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(
        alerts.contains("đang hiệu lực") && alerts.contains("class=\"lv lv3\">3<"),
        "{alerts}"
    );
    assert!(
        alerts.contains("BĐ3</abbr>"),
        "the station's alarm level: {alerts}"
    );
    assert_eq!(
        alerts.matches("class=\"lv lv3").count(),
        1,
        "only the bulletin's risk level is coloured"
    );
    assert!(
        alerts.contains("vừa xong") || alerts.contains("phút trước"),
        "{alerts}"
    );
    let (status, _, queue) = get_page(&app, "/console/approvals", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(
        queue.contains("Lũ lớn trên sông Thương") && queue.contains("an.tran"),
        "{queue}"
    );
    assert!(queue.contains("risk level 3"), "why it waits: {queue}");
    assert!(!queue.contains("<script") && !queue.contains("style="));
    app.app.stop().await;
}
