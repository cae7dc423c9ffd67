//! The authorization matrix: every endpoint of the router × no token and every role,
//! against the expected answer. The endpoints are read from the router's source, so an
//! endpoint added without a row here fails this test.

use std::collections::BTreeSet;

use canhbao_tests::{Broker, TestApp};

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allowed {
    /// No token needed (health, keys, login, delivery reports with their own secret).
    Public,
    /// Any valid token.
    AnyToken,
    /// Only these roles; others get 403.
    Roles(&'static [&'static str]),
}

const ROLES: [&str; 5] = ["viewer", "station", "officer", "approver", "admin"];

/// (method, path, who may call it).
const MATRIX: &[(&str, &str, Allowed)] = &[
    ("GET", "/healthz", Allowed::Public),
    ("GET", "/readyz", Allowed::Public),
    ("GET", "/api/v1/keys", Allowed::Public),
    ("GET", "/api/v1/openapi.json", Allowed::Public),
    ("POST", "/api/v1/login", Allowed::Public),
    ("POST", "/api/v1/logout", Allowed::AnyToken),
    (
        "POST",
        "/api/v1/observations",
        Allowed::Roles(&["station", "admin"]),
    ),
    ("GET", "/api/v1/alerts", Allowed::AnyToken),
    (
        "POST",
        "/api/v1/alerts/preview",
        Allowed::Roles(&["officer", "admin"]),
    ),
    ("GET", "/api/v1/alerts/{id}", Allowed::AnyToken),
    ("GET", "/api/v1/alerts/{id}/deliveries", Allowed::AnyToken),
    (
        "POST",
        "/api/v1/alerts/{id}/cancel",
        Allowed::Roles(&["officer", "admin"]),
    ),
    (
        "POST",
        "/api/v1/alerts/{id}/release",
        Allowed::Roles(&["officer", "admin"]),
    ),
    ("GET", "/api/v1/receivers", Allowed::AnyToken),
    ("POST", "/api/v1/receivers", Allowed::Roles(&["admin"])),
    ("DELETE", "/api/v1/receivers/{id}", Allowed::Roles(&["admin"])),
    ("GET", "/metrics", Allowed::AnyToken),
    ("GET", "/feeds/alerts.atom", Allowed::Public),
    ("GET", "/feeds/cap/{file}", Allowed::Public),
    ("GET", "/api/v1/rejections", Allowed::AnyToken),
    ("GET", "/api/v1/readings/flagged", Allowed::AnyToken),
    ("GET", "/api/v1/stations/historic", Allowed::AnyToken),
    ("GET", "/api/v1/coverage", Allowed::AnyToken),
    (
        "POST",
        "/api/v1/stations/{id}/historic",
        Allowed::Roles(&["admin"]),
    ),
    ("GET", "/api/v1/audit", Allowed::Roles(&["admin"])),
    ("GET", "/api/v1/audit/verify", Allowed::Roles(&["admin"])),
    ("GET", "/api/v1/assessments", Allowed::AnyToken),
    // A station key posts bulletins only when given the `bulletins` scope (the matrix's
    // station key has its role's default: observations and read).
    ("POST", "/api/v1/bulletins", Allowed::Roles(&["admin"])),
    ("GET", "/api/v1/sources", Allowed::AnyToken),
    ("GET", "/api/v1/forecasts", Allowed::AnyToken),
    ("POST", "/api/v1/sms/preview", Allowed::AnyToken),
    ("GET", "/api/v1/sms/dlr/{gateway}", Allowed::Public),
    ("POST", "/api/v1/sms/dlr/{gateway}", Allowed::Public),
    ("GET", "/api/v1/warnings", Allowed::AnyToken),
    ("POST", "/api/v1/warnings", Allowed::Roles(&["officer", "admin"])),
    ("GET", "/api/v1/warnings/{id}", Allowed::AnyToken),
    (
        "PUT",
        "/api/v1/warnings/{id}",
        Allowed::Roles(&["officer", "admin"]),
    ),
    (
        "POST",
        "/api/v1/warnings/{id}/submit",
        Allowed::Roles(&["officer", "admin"]),
    ),
    (
        "POST",
        "/api/v1/warnings/{id}/approve",
        Allowed::Roles(&["approver", "admin"]),
    ),
    (
        "POST",
        "/api/v1/warnings/{id}/reject",
        Allowed::Roles(&["approver", "admin"]),
    ),
    (
        "POST",
        "/api/v1/warnings/{id}/discard",
        Allowed::Roles(&["officer", "admin"]),
    ),
    ("GET", "/api/v1/notifications", Allowed::AnyToken),
    ("GET", "/api/v1/events", Allowed::AnyToken),
    ("GET", "/api/v1/prewarnings", Allowed::AnyToken),
    (
        "POST",
        "/api/v1/prewarnings/{id}/confirm",
        Allowed::Roles(&["officer", "admin"]),
    ),
    (
        "POST",
        "/api/v1/prewarnings/{id}/dismiss",
        Allowed::Roles(&["officer", "admin"]),
    ),
    ("GET", "/api/v1/contacts", Allowed::Roles(&["admin"])),
    ("POST", "/api/v1/contacts/import", Allowed::Roles(&["admin"])),
];

/// (method, path) of every `.route(...)` in the API's router.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let src = include_str!("../../crates/api/src/lib.rs");
    let start = src.find("pub fn router").expect("the router function");
    let body = &src[start..src[start..].find(".with_state(").map_or(src.len(), |i| start + i)];
    let mut found = BTreeSet::new();
    for call in body.split(".route(").skip(1) {
        let path = call.split('"').nth(1).expect("a path literal").to_owned();
        for (method, marker) in [
            ("GET", "get("),
            ("POST", "post("),
            ("DELETE", "delete("),
            ("PUT", "put("),
        ] {
            if call.contains(marker) {
                found.insert((method.to_owned(), path.clone()));
            }
        }
    }
    found
}

#[test]
fn every_route_of_the_router_has_a_row_in_the_matrix() {
    let in_source = routes_in_source();
    let in_matrix: BTreeSet<(String, String)> = MATRIX
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(
        in_source, in_matrix,
        "the router and the authorization matrix disagree: add a row for every new endpoint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_every_role_and_no_token_as_the_matrix_says() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let store = app.app.store();
    let mut tokens: Vec<(&str, Option<String>)> = vec![("no token", None)];
    for role in ROLES {
        let token = match role {
            "admin" => app.token.clone(),
            "station" => app.create_token("station", "matrix-station", &[]).await.unwrap(),
            person => {
                let name = format!("matrix.{person}");
                let pw = "matrix-password-123".to_owned();
                canhbao_server::users::add(store, &app.data_dir, &name, person, Some(pw.clone()))
                    .await
                    .unwrap();
                let r: serde_json::Value = app
                    .http
                    .post(format!("{}/api/v1/login", app.base))
                    .header("content-type", "application/json")
                    .body(serde_json::json!({"username": name, "password": pw}).to_string())
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                r["token"].as_str().unwrap().to_owned()
            }
        };
        tokens.push((role, Some(token)));
    }
    let mut wrong = Vec::new();
    for (method, path, allowed) in MATRIX {
        // Logging out would end the token the next rows need: checked last, below.
        if *path == "/api/v1/logout" {
            continue;
        }
        let url = format!(
            "{}{}",
            app.base,
            path.replace("{id}", "no-such-id")
                .replace("{gateway}", "no-such-gateway")
        );
        for (who, token) in &tokens {
            let mut request = app
                .http
                .request(method.parse().unwrap(), &url)
                .header("content-type", "application/json")
                .body("{}");
            if let Some(t) = token {
                request = request.bearer_auth(t);
            }
            let status = request.send().await.unwrap().status().as_u16();
            let expected_denial = match (allowed, token) {
                (Allowed::Public, _) => None,
                (_, None) => Some(401),
                (Allowed::AnyToken, Some(_)) => None,
                (Allowed::Roles(roles), Some(_)) => (!roles.contains(who)).then_some(403),
            };
            let ok = match expected_denial {
                Some(code) => status == code,
                None => status != 401 && status != 403,
            };
            if !ok {
                wrong.push(format!(
                    "{method} {path} as {who}: {status}, expected {expected_denial:?}"
                ));
            }
        }
    }
    for (who, token) in &tokens {
        let mut request = app.http.post(format!("{}/api/v1/logout", app.base));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let status = request.send().await.unwrap().status().as_u16();
        let expected = if token.is_some() { 204 } else { 401 };
        if status != expected {
            wrong.push(format!(
                "POST /api/v1/logout as {who}: {status}, expected {expected}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    app.app.stop().await;
}

/// Routes that need no token (their operations carry no security requirement).
fn public_routes() -> BTreeSet<(String, String)> {
    MATRIX
        .iter()
        .filter(|(_, _, a)| *a == Allowed::Public)
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_route_and_nothing_else() {
    let app = TestApp::spawn(Broker::Embedded).await.unwrap();
    let resp = app
        .http
        .get(format!("{}/api/v1/openapi.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "public, no token");
    let doc: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut described = BTreeSet::new();
    let mut operation_ids = BTreeSet::new();
    let mut wrong = Vec::new();
    let public = public_routes();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let key = (method.to_uppercase(), path.clone());
            let secured = op.get("security").is_some();
            if secured == public.contains(&key) {
                wrong.push(format!(
                    "{key:?}: security {secured}, public {}",
                    public.contains(&key)
                ));
            }
            if op["responses"]["4XX"]["content"]["application/problem+json"].is_null() {
                wrong.push(format!("{key:?}: no problem+json for 4XX"));
            }
            if !operation_ids.insert(op["operationId"].as_str().unwrap_or_default().to_owned()) {
                wrong.push(format!(
                    "{key:?}: operationId {} is not unique",
                    op["operationId"]
                ));
            }
            described.insert(key);
        }
    }
    // Every reference resolves.
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = r.split('"').next().unwrap();
        if !schemas.contains_key(name) {
            wrong.push(format!("dangling $ref {name}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(
        routes_in_source(),
        described,
        "the router and the OpenAPI document disagree: annotate the handler and list it in openapi.rs"
    );
    // The schemas are the handlers' own: a warning's fields are described.
    let warning = &schemas["WarningDto"]["properties"];
    for field in ["state", "author", "updates", "override_reason", "alert_id"] {
        assert!(warning.get(field).is_some(), "WarningDto.{field}");
    }
    // Where CI installs a validator, the document passes it too.
    if let Some(validator) = testkit::service("CANHBAO_TEST_OPENAPI_VALIDATOR") {
        let file = app.data_dir.join("openapi.json");
        std::fs::write(&file, text).unwrap();
        let out = std::process::Command::new(&validator)
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{validator}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    app.app.stop().await;
}
