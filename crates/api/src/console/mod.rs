//! The duty desk's console (issue 22, first part): server-rendered pages in Vietnamese,
//! working without JavaScript. A person logs in with a form (the same checks and limits as
//! `POST /api/v1/login`, [`crate::login::authenticate`]) and gets the same kind of token,
//! in a session cookie (HttpOnly, SameSite=Strict, Path=/console; Secure when the service
//! serves HTTPS, or a trusted proxy says the browser used HTTPS). Every form that changes something carries a CSRF token derived from the
//! session's secret and is refused without it. Pages use only the origin's own stylesheet:
//! the API's content security policy (`default-src 'self'`) forbids inline styles and
//! scripts, and the console needs neither.

use std::sync::OnceLock;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::auth::{Caller, Role, caller_from_secret, token_hash};
use crate::error::ApiError;

/// The session cookie's name.
pub const COOKIE: &str = "cb_session";

/// What the console's pages need beyond the API's state.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// The province's name, as the area file gives it.
    pub province_name: String,
    /// Whether the session cookie is `Secure` (the service serves HTTPS itself).
    pub secure_cookie: bool,
}

const CSS: &str = include_str!("../../assets/console.css");

/// The console's routes (merged into the API's router, under its limits and headers).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(board))
        .route("/console/login", get(login_page).post(login_form))
        .route("/console/logout", axum::routing::post(logout_form))
        .route("/console/alerts", get(alerts_page))
        .route("/console/approvals", get(approvals_page))
        .route("/console/static/console.css", get(stylesheet))
        .layer(axum::extract::DefaultBodyLimit::max(crate::LOGIN_BODY_BYTES))
}

fn templates() -> &'static minijinja::Environment<'static> {
    static ENV: OnceLock<minijinja::Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        for (name, text) in [
            ("base.html", include_str!("templates/base.html")),
            ("login.html", include_str!("templates/login.html")),
            ("board.html", include_str!("templates/board.html")),
            ("alerts.html", include_str!("templates/alerts.html")),
            ("approvals.html", include_str!("templates/approvals.html")),
            ("error.html", include_str!("templates/error.html")),
        ] {
            // The templates are part of the binary; one that does not parse is a build
            // mistake the console's tests catch on their first page.
            if let Err(e) = env.add_template(name, text) {
                tracing::error!(template = name, error = %e, "console template does not parse");
            }
        }
        env
    })
}

/// A page, or a plain 500 that says which template failed (never a secret).
fn render(status: StatusCode, name: &str, ctx: minijinja::Value) -> Response {
    match templates().get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(template = name, error = %e, "console page could not be rendered");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<!doctype html><title>Lỗi</title><p>Trang không hiển thị được.</p>".to_owned()),
            )
                .into_response()
        }
    }
}

fn see_other(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

/// The session's secret from the request's cookies, if any.
fn session_secret(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 256)
}

/// The CSRF token of a session: derived from its secret, which only the browser holding
/// the cookie knows, so another origin cannot know it.
pub fn csrf_token(secret: &str) -> String {
    let digest = Sha256::digest(format!("canhbao console csrf\0{secret}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn same_token(given: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(expected.as_bytes()),
    );
    a.ct_eq(&b).into()
}

/// Whether the browser reached the console over HTTPS: the service serves it itself, or a
/// trusted proxy (`[login] trusted_proxies`) says so in `X-Forwarded-Proto`.
fn over_https(state: &AppState, parts: &axum::http::request::Parts) -> bool {
    if state.console.secure_cookie {
        return true;
    }
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    peer.is_some_and(|p| state.login.limits().trusted_proxies.contains(&p))
        && parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

fn session_cookie(secure: bool, value: &str, max_age_s: i64) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("cb_session=; Path=/console; Max-Age=0"))
}

/// A person's session, or `None` when there is none or it ended.
async fn session(state: &AppState, headers: &HeaderMap) -> Option<(Caller, String)> {
    let secret = session_secret(headers)?;
    let caller = caller_from_secret(state, &secret).await.ok()?;
    // Machine keys never hold a console session.
    caller.user_id?;
    Some((caller, secret))
}

fn role_vi(role: Role) -> &'static str {
    match role {
        Role::Admin => "quản trị",
        Role::Officer => "cán bộ trực",
        Role::Approver => "người phê duyệt",
        Role::Station => "trạm",
        Role::Viewer => "theo dõi",
    }
}

/// `application/x-www-form-urlencoded` fields: `+` is a space, `%XX` a byte.
fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    let decode = |v: &str| {
        percent_encoding::percent_decode_str(&v.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if session(&state, &headers).await.is_some() {
        return see_other("/console");
    }
    login_view(&state, StatusCode::OK, "", None)
}

fn login_view(state: &AppState, status: StatusCode, username: &str, error: Option<&str>) -> Response {
    render(
        status,
        "login.html",
        minijinja::context! {
            title => "Đăng nhập",
            province_name => state.console.province_name.clone(),
            username => username,
            error => error,
        },
    )
}

async fn login_form(
    State(state): State<AppState>,
    parts: axum::http::request::Parts,
    body: Bytes,
) -> Response {
    let address = match crate::login::admit_address(&state, &parts) {
        Ok(a) => a,
        Err(e) => return refused_login(&state, "", &e),
    };
    let fields = form_fields(&body);
    let username = field(&fields, "username").unwrap_or_default().trim().to_owned();
    let password = field(&fields, "password").unwrap_or_default();
    if username.is_empty() || password.is_empty() || username.len() > 256 || password.len() > 256 {
        return login_view(
            &state,
            StatusCode::BAD_REQUEST,
            &username,
            Some("Hãy nhập tên đăng nhập và mật khẩu."),
        );
    }
    match crate::login::authenticate(&state, address, &username, secrecy::SecretString::from(password)).await
    {
        Ok(login) => {
            let max_age = (login.expires - Utc::now()).num_seconds().max(0);
            let mut response = see_other("/console");
            response.headers_mut().insert(
                header::SET_COOKIE,
                session_cookie(over_https(&state, &parts), &login.token, max_age),
            );
            response
        }
        Err(e) => refused_login(&state, &username, &e),
    }
}

/// The login page again, with why, under the status and `Retry-After` of the refusal.
fn refused_login(state: &AppState, username: &str, e: &ApiError) -> Response {
    let message = match e.status {
        StatusCode::UNAUTHORIZED => "Tên đăng nhập hoặc mật khẩu không đúng.".to_owned(),
        StatusCode::TOO_MANY_REQUESTS => format!(
            "Đăng nhập sai quá nhiều lần. Hãy thử lại sau {} giây.",
            e.retry_after.map_or(60, |s| s.get())
        ),
        _ => "Không đăng nhập được lúc này. Hãy thử lại.".to_owned(),
    };
    let mut response = login_view(state, e.status, username, Some(&message));
    if let Some(s) = e.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s.get()));
    }
    response
}

async fn logout_form(
    State(state): State<AppState>,
    parts: axum::http::request::Parts,
    body: Bytes,
) -> Response {
    let headers = &parts.headers;
    let Some((_, secret)) = session(&state, headers).await else {
        return see_other("/console/login");
    };
    let fields = form_fields(&body);
    if !field(&fields, "csrf").is_some_and(|t| same_token(t, &csrf_token(&secret))) {
        return (
            StatusCode::FORBIDDEN,
            Html("<!doctype html><html lang=\"vi\"><title>Bị từ chối</title><p>Yêu cầu không có mã bảo vệ (CSRF) đúng: không thực hiện.</p></html>".to_owned()),
        )
            .into_response();
    }
    if let Err(e) = state.store.revoke_token(&token_hash(&secret), Utc::now()).await {
        tracing::error!(error = %e, "console logout could not revoke the session");
    }
    let mut response = see_other("/console/login");
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(over_https(&state, &parts), "", 0),
    );
    response
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

#[derive(Serialize)]
struct HazardColumn {
    code: &'static str,
    name: &'static str,
}

#[derive(Serialize)]
struct Cell {
    level: i64,
    drill: bool,
}

#[derive(Serialize)]
struct CommuneRow {
    code: String,
    name: String,
    levels: Vec<Cell>,
}

/// The situation board: what needs action first, then every commune's current level per
/// hazard (the official or computed level in force; drills marked apart).
async fn board(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some((caller, secret)) = session(&state, &headers).await else {
        return see_other("/console/login");
    };
    match board_context(&state, &caller, &secret).await {
        Ok(ctx) => render(StatusCode::OK, "board.html", ctx),
        Err(e) => unavailable(&state, &e.detail),
    }
}

async fn board_context(
    state: &AppState,
    caller: &Caller,
    secret: &str,
) -> Result<minijinja::Value, ApiError> {
    let now = Utc::now();
    let hazards: Vec<HazardColumn> = domain::Hazard::ALL
        .iter()
        .map(|h| HazardColumn {
            code: h.code(),
            name: h.name_vi(),
        })
        .collect();
    let actual = state.store.area_levels("Actual").await?;
    let drills = state.store.area_levels("Exercise").await?;
    let level_of = |list: &[(String, String, i64)], hazard: &str, commune: &str| {
        list.iter()
            .find(|(h, c, _)| h == hazard && c == commune)
            .map_or(0, |(_, _, l)| *l)
    };
    let mut drill_communes = 0;
    let communes: Vec<CommuneRow> = state
        .communes
        .iter()
        .map(|code| {
            let code = code.to_string();
            let mut any_drill = false;
            let levels = hazards
                .iter()
                .map(|h| {
                    let real = level_of(&actual, h.code, &code);
                    let drill = level_of(&drills, h.code, &code);
                    if real == 0 && drill > 0 {
                        any_drill = true;
                        Cell {
                            level: drill,
                            drill: true,
                        }
                    } else {
                        Cell {
                            level: real,
                            drill: false,
                        }
                    }
                })
                .collect();
            drill_communes += usize::from(any_drill);
            CommuneRow {
                name: state
                    .commune_names
                    .get(&code)
                    .cloned()
                    .unwrap_or_else(|| code.clone()),
                code,
                levels,
            }
        })
        .collect();
    let pending = state.store.list_warnings(Some("pending"), 1000).await?.len();
    let prewarnings = state.store.open_prewarnings(1000).await?.len();
    let live_alerts = state.store.live_public_alerts(now, 10_000).await?.len();
    let fleet = state.store.fleet().await?;
    let online_window = chrono::Duration::minutes(3);
    let offline_communes = state
        .communes
        .iter()
        .filter(|c| {
            !fleet.iter().any(|f| {
                f.receiver.commune == c.as_str()
                    && f.last_seen.is_some_and(|t| now - t <= online_window)
                    && f.online == Some(true)
            })
        })
        .count();
    let frame = frame(state, caller, secret, "Tình hình");
    Ok(minijinja::context! {
        now_vi => desk::render::local_time_vi(now),
        hazards => minijinja::Value::from(minijinja::value::Serde(&hazards)),
        communes => minijinja::Value::from(minijinja::value::Serde(&communes)),
        drill_communes => drill_communes,
        pending => pending,
        prewarnings => prewarnings,
        live_alerts => live_alerts,
        offline_communes => offline_communes,
        ..frame
    })
}

/// "12 phút trước": how long ago, as the board and the lists show it beside a time.
pub fn age_vi(now: chrono::DateTime<Utc>, t: chrono::DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    match secs {
        s if s < 0 => "sắp tới".to_owned(),
        s if s < 60 => "vừa xong".to_owned(),
        s if s < 3600 => format!("{} phút trước", s / 60),
        s if s < 86_400 => format!("{} giờ trước", s / 3600),
        s => format!("{} ngày trước", s / 86_400),
    }
}

/// The page's frame: who is logged in, their CSRF token, the province.
fn frame(state: &AppState, caller: &Caller, secret: &str, title: &str) -> minijinja::Value {
    minijinja::context! {
        title => title,
        province_name => state.console.province_name.clone(),
        user => caller.label.strip_prefix("user:").unwrap_or(&caller.label).to_owned(),
        role_vi => role_vi(caller.role),
        csrf => csrf_token(secret),
    }
}

#[derive(Serialize)]
struct AlertRow {
    sent: String,
    age: String,
    kind: &'static str,
    hazard: &'static str,
    /// The risk level (Decision 18's colours), if the alert states one.
    level: Option<i64>,
    /// The station alarm level (BĐ1–BĐ3), which is not a risk level and has no risk colour.
    alarm: Option<i64>,
    drill: bool,
    status: &'static str,
    headline: String,
    communes: usize,
    expires: String,
    state: String,
}

fn status_vi(status: &str) -> &'static str {
    match status {
        "Actual" => "Thật",
        "Exercise" => "DIỄN TẬP",
        "Test" => "THỬ NGHIỆM",
        _ => "Khác",
    }
}

/// The newest alerts, each with its kind, level, status and whether it still holds.
async fn alerts_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some((caller, secret)) = session(&state, &headers).await else {
        return see_other("/console/login");
    };
    let now = Utc::now();
    let alerts = match state.store.list_alerts(200).await {
        Ok(a) => a,
        Err(e) => return unavailable(&state, &e.to_string()),
    };
    let rows: Vec<AlertRow> = alerts
        .iter()
        .map(|a| AlertRow {
            sent: desk::render::local_time_vi(a.sent),
            age: age_vi(now, a.sent),
            kind: match a.msg_type.as_str() {
                "Update" => "Cập nhật",
                "Cancel" => "Hủy",
                _ => "Mới",
            },
            hazard: domain::Hazard::from_code(&a.hazard).map_or("khác", domain::Hazard::name_vi),
            level: a.risk_level,
            alarm: a.alarm_level.filter(|_| a.risk_level.is_none()),
            drill: a.status != "Actual",
            status: status_vi(&a.status),
            headline: a.headline.clone(),
            communes: a.communes.len(),
            expires: desk::render::local_time_vi(a.expires),
            state: match &a.replaced_by {
                Some((kind, _)) if kind == "Cancel" => "đã hủy".to_owned(),
                Some(_) => "đã có bản cập nhật".to_owned(),
                None if a.expires <= now => "hết hiệu lực".to_owned(),
                None => "đang hiệu lực".to_owned(),
            },
        })
        .collect();
    let mut ctx = frame(&state, &caller, &secret, "Bản tin");
    ctx = minijinja::context! { alerts => minijinja::Value::from(minijinja::value::Serde(&rows)), ..ctx };
    render(StatusCode::OK, "alerts.html", ctx)
}

#[derive(Serialize)]
struct WarningRow {
    submitted: String,
    age: String,
    headline: String,
    level: Option<i64>,
    author: String,
    reason: String,
    version: i64,
}

/// Warnings waiting for a second person: what each is, who wrote it, and the version an
/// approver would approve.
async fn approvals_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some((caller, secret)) = session(&state, &headers).await else {
        return see_other("/console/login");
    };
    let now = Utc::now();
    let warnings = match state.store.list_warnings(Some("pending"), 500).await {
        Ok(w) => w,
        Err(e) => return unavailable(&state, &e.to_string()),
    };
    let rows: Vec<WarningRow> = warnings
        .iter()
        .map(|w| {
            let draft: serde_json::Value = serde_json::from_str(&w.draft).unwrap_or_default();
            let submitted = w.submitted.unwrap_or(w.updated);
            WarningRow {
                submitted: desk::render::local_time_vi(submitted),
                age: age_vi(now, submitted),
                headline: draft["headline"]
                    .as_str()
                    .unwrap_or("(không có tiêu đề)")
                    .to_owned(),
                level: draft["risk_level"].as_i64(),
                author: w.author.strip_prefix("user:").unwrap_or(&w.author).to_owned(),
                reason: w.approval_reason.clone().unwrap_or_default(),
                version: w.version,
            }
        })
        .collect();
    let mut ctx = frame(&state, &caller, &secret, "Chờ phê duyệt");
    ctx = minijinja::context! { warnings => minijinja::Value::from(minijinja::value::Serde(&rows)), ..ctx };
    render(StatusCode::OK, "approvals.html", ctx)
}

/// The store could not be read: a page that says so, never a stack of errors.
fn unavailable(state: &AppState, why: &str) -> Response {
    tracing::error!(error = %why, "console page could not read the store");
    render(
        StatusCode::SERVICE_UNAVAILABLE,
        "error.html",
        minijinja::context! {
            title => "Tạm thời không đọc được dữ liệu",
            province_name => state.console.province_name.clone(),
            error => "Không đọc được cơ sở dữ liệu lúc này. Hãy tải lại trang sau ít phút.",
        },
    )
}
