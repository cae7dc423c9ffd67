//! The `[sms]` section: the policy, the fallback deadlines, and the gateways in failover
//! order. Gateway secrets (passwords, DLR secrets, API keys) never live in a file: each
//! is named by an environment variable starting with `CANHBAO_SECRET_`.

use secrecy::ExposeSecret as _;
use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::Deserialize;
use sms::callback::DlrStatus;
use sms::gateways::{Gateway, GatewayKind};
use sms::jasmin::{JasminConfig, JasminGateway};
use sms::kannel::{KannelConfig, KannelGateway};
use sms::link::GatewayLimits;
use sms::plan::{FallbackAfter, SmsTiming};
use sms::text::{SmsPolicy, SmsTemplates};
use sms::webhook::{WebhookConfig, WebhookGateway, WebhookMethod};
use sms::worker::{Gateways, SmsSettings};

/// Environment variables holding gateway secrets start with this.
pub const SECRET_PREFIX: &str = "CANHBAO_SECRET_";

/// Directory roles the fallback may go to.
pub const ROLES: [&str; 3] = ["commune_chair", "village_head", "resident"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SmsRaw {
    sender: String,
    signature: String,
    policy: String,
    ucs2_max_segments: u32,
    public_url: String,
    fallback_roles: Vec<String>,
    fallback_after_s: FallbackRaw,
    report_deadline_s: u64,
    lease_s: u64,
    batch: i64,
    sweep_ms: u64,
    retry_base_ms: u64,
    retry_max_ms: u64,
    #[serde(default)]
    gateways: Vec<GatewayRaw>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FallbackRaw {
    emergency: u64,
    priority: u64,
    normal: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewayRaw {
    id: String,
    /// `kannel`, `jasmin` or `webhook`.
    kind: String,
    /// Kannel: smsbox's root (`/cgi-bin/sendsms` is added). Jasmin: the HTTP API's root
    /// (`/send` is added). Webhook: the full request URL.
    url: String,
    #[serde(default)]
    username: String,
    /// The variable holding the password (Kannel, Jasmin).
    #[serde(default)]
    password_env: String,
    /// The variable holding the secret of this gateway's delivery-report URL.
    dlr_secret_env: String,
    #[serde(default = "default_per_second")]
    per_second: u32,
    #[serde(default)]
    burst: Option<u32>,
    #[serde(default = "default_in_flight")]
    max_in_flight: usize,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_connect_ms")]
    connect_timeout_ms: u64,
    /// Webhook: `POST` or `PUT`.
    #[serde(default)]
    method: Option<String>,
    /// Webhook: request headers; `${CANHBAO_SECRET_...}` in a value is replaced by the variable.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Webhook: the JSON body template.
    #[serde(default)]
    body: Option<toml::Value>,
    /// Webhook: where the status is in a delivery report's JSON body.
    #[serde(default)]
    status_pointer: Option<String>,
    /// Webhook: the provider's status words and what they mean (`delivered`, `failed`,
    /// `buffered`, `accepted`, `rejected`).
    #[serde(default)]
    status_map: BTreeMap<String, String>,
}

fn default_per_second() -> u32 {
    10
}
fn default_in_flight() -> usize {
    4
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_connect_ms() -> u64 {
    3_000
}

/// The SMS channel as configured: the worker's settings and how to build each gateway.
#[derive(Clone)]
pub struct SmsConfig {
    pub settings: SmsSettings,
    pub gateways: Vec<GatewaySpec>,
}

impl std::fmt::Debug for SmsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsConfig")
            .field(
                "gateways",
                &self.gateways.iter().map(|g| &g.id).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// One gateway's settings, secrets resolved; [`SmsConfig::build`] makes the clients.
#[derive(Clone)]
pub struct GatewaySpec {
    pub id: String,
    kind: SpecKind,
    limits: GatewayLimits,
}

#[derive(Clone)]
enum SpecKind {
    Kannel(KannelConfig),
    Jasmin(JasminConfig),
    Webhook(WebhookConfig),
}

impl SmsConfig {
    /// The gateways, in failover order. Fails on settings a gateway refuses.
    pub fn build(&self) -> Result<Gateways, sms::link::GatewayError> {
        let mut out = Vec::with_capacity(self.gateways.len());
        for g in &self.gateways {
            let kind = match &g.kind {
                SpecKind::Kannel(c) => GatewayKind::Kannel(KannelGateway::new(c.clone(), g.limits)?),
                SpecKind::Jasmin(c) => GatewayKind::Jasmin(JasminGateway::new(c.clone(), g.limits)?),
                SpecKind::Webhook(c) => GatewayKind::Webhook(WebhookGateway::new(c.clone(), g.limits)?),
            };
            out.push(Gateway::new(g.id.clone(), kind));
        }
        Ok(Gateways::new(out))
    }
}

/// Reads `[sms]`; every problem goes to `problems`. `secrets` are the `CANHBAO_SECRET_*`
/// variables.
pub(crate) fn load(
    raw: SmsRaw,
    secrets: &[(String, String)],
    problems: &mut Vec<String>,
) -> Option<SmsConfig> {
    let policy = SmsPolicy::from_code(&raw.policy, raw.ucs2_max_segments);
    if policy.is_none() {
        problems.push(format!(
            "sms.policy {:?} must be ucs2, gsm7 or auto (with sms.ucs2_max_segments at least 1)",
            raw.policy
        ));
    }
    if !valid_sender(&raw.sender) {
        problems.push(format!(
            "sms.sender {:?} must be an alphanumeric sender id of 1 to 11 characters (A-Z a-z 0-9 . - _ and spaces), \
             or a number of up to 15 digits",
            raw.sender
        ));
    }
    if raw.signature.trim().is_empty() {
        problems.push("sms.signature must name who speaks in the messages".into());
    }
    for role in &raw.fallback_roles {
        if !ROLES.contains(&role.as_str()) {
            problems.push(format!(
                "sms.fallback_roles: {role:?} is not one of {}",
                ROLES.join(", ")
            ));
        }
    }
    if raw.fallback_roles.is_empty() {
        problems.push("sms.fallback_roles must name at least one role".into());
    }
    let f = &raw.fallback_after_s;
    if f.emergency == 0 || f.priority == 0 || f.normal == 0 {
        problems.push("sms.fallback_after_s: each class needs a deadline greater than 0".into());
    }
    for (name, v) in [
        ("sms.report_deadline_s", raw.report_deadline_s),
        ("sms.lease_s", raw.lease_s),
        ("sms.sweep_ms", raw.sweep_ms),
        ("sms.retry_base_ms", raw.retry_base_ms),
        ("sms.retry_max_ms", raw.retry_max_ms),
    ] {
        if v == 0 {
            problems.push(format!("{name} must be greater than 0"));
        }
    }
    if raw.batch <= 0 {
        problems.push(format!("sms.batch {} must be greater than 0", raw.batch));
    }
    const DAY_S: u64 = 86_400;
    for (name, v) in [
        ("sms.fallback_after_s.emergency", f.emergency),
        ("sms.fallback_after_s.priority", f.priority),
        ("sms.fallback_after_s.normal", f.normal),
        ("sms.report_deadline_s", raw.report_deadline_s),
        ("sms.lease_s", raw.lease_s),
        ("sms.retry_max_ms", raw.retry_max_ms / 1000),
    ] {
        if v > DAY_S {
            problems.push(format!("{name} {v} s is longer than a day"));
        }
    }
    if raw.lease_s >= raw.report_deadline_s {
        problems.push(format!(
            "sms.lease_s {} must be shorter than sms.report_deadline_s {}: a message left mid-send must \
             wait for its report after the lease",
            raw.lease_s, raw.report_deadline_s
        ));
    }
    if raw.retry_base_ms > raw.retry_max_ms {
        problems.push(format!(
            "sms.retry_base_ms {} must not exceed sms.retry_max_ms {}",
            raw.retry_base_ms, raw.retry_max_ms
        ));
    }
    let public_url_ok = raw.public_url.starts_with("http://") || raw.public_url.starts_with("https://");
    if !raw.gateways.is_empty() && !public_url_ok {
        problems.push(format!(
            "sms.public_url {:?} must be the http(s) address gateways reach canhbao at, for delivery reports",
            raw.public_url
        ));
    }
    let secret = |at: &str, name: &str, problems: &mut Vec<String>| -> String {
        if !name.starts_with(SECRET_PREFIX) {
            problems.push(format!(
                "{at}: {name:?} must be an environment variable starting with {SECRET_PREFIX}"
            ));
            return String::new();
        }
        match secrets.iter().find(|(k, _)| k == name) {
            Some((_, v)) if !v.is_empty() => v.clone(),
            _ => {
                problems.push(format!("{at}: the environment variable {name} is not set"));
                String::new()
            }
        }
    };
    let mut specs = Vec::new();
    for (i, g) in raw.gateways.iter().enumerate() {
        let at = format!("sms.gateways[{i}] ({})", g.id);
        if g.id.is_empty()
            || !g
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            problems.push(format!("{at}: id must be letters, digits, - and _"));
        }
        if raw.gateways[..i].iter().any(|o| o.id == g.id) {
            problems.push(format!("{at}: id is used twice"));
        }
        let limits = GatewayLimits {
            per_second: NonZeroU32::new(g.per_second).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(g.burst.unwrap_or(g.per_second)).unwrap_or(NonZeroU32::MIN),
            max_in_flight: NonZeroUsize::new(g.max_in_flight).unwrap_or(NonZeroUsize::MIN),
            timeout: Duration::from_millis(g.timeout_ms),
            connect_timeout: Duration::from_millis(g.connect_timeout_ms),
        };
        if g.per_second == 0
            || g.burst == Some(0)
            || g.max_in_flight == 0
            || g.timeout_ms == 0
            || g.connect_timeout_ms == 0
        {
            problems.push(format!(
                "{at}: per_second, burst, max_in_flight, timeout_ms and connect_timeout_ms must be greater than 0"
            ));
        }
        let dlr_secret = secret(&format!("{at}.dlr_secret_env"), &g.dlr_secret_env, problems);
        let dlr_url_base = format!("{}/api/v1/sms/dlr/{}", raw.public_url.trim_end_matches('/'), g.id);
        let kind = match g.kind.as_str() {
            "kannel" => {
                let password = secret(&format!("{at}.password_env"), &g.password_env, problems);
                let config = KannelConfig {
                    base_url: g.url.clone(),
                    username: g.username.clone(),
                    password: password.into(),
                    from: raw.sender.clone(),
                    dlr_url_base,
                    dlr_secret: dlr_secret.into(),
                };
                let missing = (
                    config.password.expose_secret().is_empty(),
                    config.dlr_secret.expose_secret().is_empty(),
                );
                problems.extend(gateway_problems(&at, config.problems(), missing));
                Some(SpecKind::Kannel(config))
            }
            "jasmin" => {
                let password = secret(&format!("{at}.password_env"), &g.password_env, problems);
                let config = JasminConfig {
                    base_url: g.url.clone(),
                    username: g.username.clone(),
                    password: password.into(),
                    from: raw.sender.clone(),
                    dlr_url_base,
                    dlr_secret: dlr_secret.into(),
                };
                let missing = (
                    config.password.expose_secret().is_empty(),
                    config.dlr_secret.expose_secret().is_empty(),
                );
                problems.extend(gateway_problems(&at, config.problems(), missing));
                Some(SpecKind::Jasmin(config))
            }
            "webhook" => webhook(g, &at, &raw.sender, dlr_url_base, dlr_secret, secrets, problems)
                .map(SpecKind::Webhook),
            other => {
                problems.push(format!("{at}: kind {other:?} must be kannel, jasmin or webhook"));
                None
            }
        };
        if let Some(kind) = kind {
            specs.push(GatewaySpec {
                id: g.id.clone(),
                kind,
                limits,
            });
        }
    }
    let settings = SmsSettings {
        policy: policy?,
        templates: SmsTemplates::builtin(raw.signature.trim()),
        fallback_after: FallbackAfter {
            emergency: chrono::Duration::seconds(i64::try_from(f.emergency).ok()?),
            priority: chrono::Duration::seconds(i64::try_from(f.priority).ok()?),
            normal: chrono::Duration::seconds(i64::try_from(f.normal).ok()?),
        },
        roles: raw.fallback_roles.clone(),
        timing: SmsTiming {
            report_deadline: chrono::Duration::seconds(i64::try_from(raw.report_deadline_s).ok()?),
            retry_base: chrono::Duration::milliseconds(i64::try_from(raw.retry_base_ms).ok()?),
            retry_max: chrono::Duration::milliseconds(i64::try_from(raw.retry_max_ms).ok()?),
        },
        lease: chrono::Duration::seconds(i64::try_from(raw.lease_s).ok()?),
        batch: raw.batch,
        sweep_every: Duration::from_millis(raw.sweep_ms),
    };
    Some(SmsConfig {
        settings,
        gateways: specs,
    })
}

/// A webhook gateway's settings: the body template as JSON, `${CANHBAO_SECRET_...}` in
/// header values replaced by the variable, and the status words mapped.
fn webhook(
    g: &GatewayRaw,
    at: &str,
    sender: &str,
    dlr_url_base: String,
    dlr_secret: String,
    secrets: &[(String, String)],
    problems: &mut Vec<String>,
) -> Option<WebhookConfig> {
    let Some(body) = g.body.clone() else {
        problems.push(format!("{at}: a webhook needs a body template"));
        return None;
    };
    let body = match serde_json::to_value(body) {
        Ok(v) => v,
        Err(e) => {
            problems.push(format!("{at}: the body template is not JSON: {e}"));
            return None;
        }
    };
    let method = match g.method.as_deref().unwrap_or("POST") {
        "POST" => WebhookMethod::Post,
        "PUT" => WebhookMethod::Put,
        other => {
            problems.push(format!("{at}: method {other:?} must be POST or PUT"));
            WebhookMethod::Post
        }
    };
    let mut headers = Vec::new();
    for (name, value) in &g.headers {
        // `${NAME}` is replaced by the variable; the search goes on after what was put in,
        // so a secret that itself holds `${` is never read as a name.
        let mut value = value.clone();
        let mut from = 0;
        while let Some(start) = value[from..].find("${").map(|i| i + from) {
            let Some(len) = value[start..].find('}') else {
                problems.push(format!("{at}: header {name}: an unclosed ${{"));
                break;
            };
            let var = value[start + 2..start + len].to_owned();
            let secret = if var.starts_with(SECRET_PREFIX) {
                secrets.iter().find(|(k, _)| *k == var).map(|(_, v)| v.clone())
            } else {
                None
            };
            let Some(secret) = secret else {
                problems.push(format!(
                    "{at}: header {name}: ${{{var}}} must be a set environment variable starting with {SECRET_PREFIX}"
                ));
                break;
            };
            value.replace_range(start..start + len + 1, &secret);
            from = start + secret.len();
        }
        headers.push((name.clone(), value));
    }
    let mut status_map = Vec::new();
    for (word, meaning) in &g.status_map {
        let status = match meaning.as_str() {
            "delivered" => DlrStatus::Delivered,
            "failed" => DlrStatus::Failed,
            "buffered" => DlrStatus::Buffered,
            "accepted" => DlrStatus::SmscAccepted,
            "rejected" => DlrStatus::SmscRejected,
            other => {
                problems.push(format!(
                    "{at}: status_map {word:?} = {other:?} must be delivered, failed, buffered, accepted or rejected"
                ));
                continue;
            }
        };
        status_map.push((word.clone(), status));
    }
    let mut config = WebhookConfig::new(g.url.clone(), body);
    config.method = method;
    config.headers = headers;
    config.from = sender.to_owned();
    config.dlr_url_base = dlr_url_base;
    config.dlr_secret = dlr_secret.into();
    if let Some(p) = &g.status_pointer {
        config.status_pointer = p.clone();
    }
    config.status_map = status_map;
    problems.extend(gateway_problems(
        at,
        config.problems(),
        (false, config.dlr_secret.expose_secret().is_empty()),
    ));
    Some(config)
}

/// What a handset shows as the sender: GSM 03.40 allows 11 alphanumeric characters, or a
/// number.
fn valid_sender(sender: &str) -> bool {
    let digits = sender.strip_prefix('+').unwrap_or(sender);
    let numeric = !digits.is_empty() && digits.len() <= 15 && digits.bytes().all(|b| b.is_ascii_digit());
    let alphanumeric = !sender.trim().is_empty()
        && sender.len() <= 11
        && sender
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b' '));
    numeric || alphanumeric
}

/// A gateway's own problems, without those about a secret whose variable was already
/// reported missing (`missing` = password, DLR secret).
fn gateway_problems(
    at: &str,
    found: Vec<String>,
    missing: (bool, bool),
) -> impl Iterator<Item = String> + '_ {
    found
        .into_iter()
        .filter(move |p| {
            !(missing.0 && p.starts_with("password") || missing.1 && p.starts_with("dlr_secret"))
        })
        .map(move |p| format!("{at}: {p}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_are_what_a_handset_can_show() {
        for ok in ["PCTTLANGSON", "PCTT-LS", "+84912345678", "8085"] {
            assert!(valid_sender(ok), "{ok}");
        }
        for bad in ["PCTT Lang Son", "", " ", "PCTT Lạng", "+849123456781234567"] {
            assert!(!valid_sender(bad), "{bad}");
        }
    }
}
