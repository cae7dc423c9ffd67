//! Layered, typed settings: `config/default.toml`, then `config/$CANHBAO_ENV.toml`, then
//! `CANHBAO__SECTION__KEY` variables, then command-line flags. Raw values are turned into
//! validated [`Settings`] in one pass that reports every problem at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use desk::AlertPolicy;
use dispatch::worker::OutboxSettings;
use domain::{ProvinceCode, Repeat};
use mqtt::BrokerUrl;
use rules::RuleSet;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::places::{self, Area};

/// The built-in copies, used when the config directory does not exist (a binary
/// deployed on its own).
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../config/default.toml");
pub const EMBEDDED_AREA: &str = include_str!("../../../config/areas/lang-son.toml");
pub const EMBEDDED_RULES: [(&str, &str); 7] = [
    (
        "cold_heat.toml",
        include_str!("../../../config/rules/cold_heat.toml"),
    ),
    (
        "flash_flood.toml",
        include_str!("../../../config/rules/flash_flood.toml"),
    ),
    ("flood.toml", include_str!("../../../config/rules/flood.toml")),
    ("fog.toml", include_str!("../../../config/rules/fog.toml")),
    (
        "heavy_rain.toml",
        include_str!("../../../config/rules/heavy_rain.toml"),
    ),
    (
        "settings.toml",
        include_str!("../../../config/rules/settings.toml"),
    ),
    ("storm.toml", include_str!("../../../config/rules/storm.toml")),
];

/// The prefix of environment variables that override settings.
pub const ENV_PREFIX: &str = "CANHBAO__";

/// Where settings come from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The config directory (`config` by default).
    pub config_dir: PathBuf,
    /// The environment file's name (`production` reads `production.toml`).
    pub env: Option<String>,
    /// `CANHBAO__...` variables, as (name, value).
    pub vars: Vec<(String, String)>,
    /// Command-line overrides, as (`section.key`, value).
    pub flags: Vec<(String, toml::Value)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Embedded,
    Production,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttMode {
    /// Run rmqtt in-process on this loopback address.
    Embedded { listen: SocketAddr },
    External {
        url: BrokerUrl,
        /// Used when `url` is down (`[mqtt] fallback_url`).
        fallback: Option<BrokerUrl>,
    },
}

#[derive(Clone, Debug)]
pub struct MqttConfig {
    pub mode: MqttMode,
    /// For `mqtts://` brokers: the CA to trust and the client certificate, read at load.
    pub tls: mqtt::TlsMaterial,
    pub topic_prefix: String,
    pub client_id: String,
    pub username: Option<String>,
    /// Never shown: `Debug` prints it redacted.
    pub password: Option<secrecy::SecretString>,
    pub keep_alive: Duration,
}

/// How the API is served: HTTPS or not, and connection limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpServing {
    pub tls: Option<crate::http::TlsFiles>,
    pub limits: crate::http::HttpLimits,
}

impl HttpServing {
    /// Whether serving on `listen` sends passwords and tokens in clear to the network:
    /// plain HTTP on an address other than loopback.
    pub fn in_clear_on(&self, listen: SocketAddr) -> bool {
        self.tls.is_none() && !listen.ip().is_loopback()
    }
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub profile: Profile,
    pub province: ProvinceCode,
    pub data_dir: PathBuf,
    pub http_listen: SocketAddr,
    /// HTTPS and connection limits (`[http]`).
    pub http: HttpServing,
    pub database_url: String,
    pub mqtt: MqttConfig,
    pub signing_key_file: PathBuf,
    /// The demo feed's tick, if the demo is on.
    pub demo_interval: Option<Duration>,
    pub alerts: AlertPolicy,
    /// How often the station follower looks at every station between readings.
    pub follow_interval: Duration,
    pub outbox: OutboxSettings,
    pub grace: Duration,
    /// A receiver whose heartbeat clock is off by more than this is flagged in fleet
    /// health and the delivery matrix.
    pub max_clock_offset: chrono::Duration,
    /// The province's places (communes, stations, mappings).
    pub area: Area,
    /// The validated rules, every example run.
    pub rules: RuleSet,
    /// How official CAP bulletins map to levels.
    pub bulletins: ingest::bulletin::BulletinSettings,
    /// Most observations accepted in one batch.
    pub max_batch: usize,
    pub poll: PollSettings,
    /// The SMS channel: off (no gateway) unless `[[sms.gateways]]` names one.
    pub sms: crate::sms_config::SmsConfig,
    /// When a duty officer's warning needs a second person.
    pub approval: desk::warnings::ApprovalPolicy,
    /// Login rate limits and back-off (`[login]`).
    pub login: api::login::LoginLimits,
    /// How long each kind of record is kept (`[retention]`).
    pub retention: crate::retention::Retention,
}

// ---- raw sections, as written ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceRaw {
    profile: String,
    province: String,
    data_dir: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpRaw {
    listen: String,
    #[serde(default)]
    tls_cert_file: String,
    #[serde(default)]
    tls_key_file: String,
    #[serde(default = "default_header_read_timeout_s")]
    header_read_timeout_s: u64,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
}

fn default_header_read_timeout_s() -> u64 {
    10
}

fn default_max_connections() -> usize {
    1024
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DatabaseRaw {
    url: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MqttRaw {
    mode: String,
    listen: String,
    url: String,
    fallback_url: String,
    ca_file: String,
    client_cert_file: String,
    client_key_file: String,
    topic_prefix: String,
    client_id: String,
    username: String,
    password: String,
    keep_alive_s: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SigningRaw {
    key_file: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoRaw {
    enabled: bool,
    interval_ms: u64,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct RepeatRaw {
    times: u8,
    interval_s: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsRaw {
    ttl_minutes: i64,
    max_reading_age_minutes: i64,
    renew_before_minutes: i64,
    restate_emergency_minutes: i64,
    restate_priority_minutes: i64,
    confirm_unverified_emergency_minutes: i64,
    blind_renew_minutes: i64,
    all_clear_minutes: i64,
    follow_interval_s: u64,
    repeat_emergency: RepeatRaw,
    repeat_priority: RepeatRaw,
    repeat_normal: RepeatRaw,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalRaw {
    two_person: bool,
    min_level: u8,
    classes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutboxRaw {
    lease_s: u64,
    batch: i64,
    idle_poll_ms: u64,
    retry_base_ms: u64,
    retry_max_ms: u64,
    resend_s: Vec<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShutdownRaw {
    grace_s: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetRaw {
    max_clock_offset_s: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestRaw {
    max_batch: usize,
    max_water_level_rate_m_per_h: f64,
    stuck_after_minutes: i64,
    first_reading: String,
    user_agent: String,
    host_pause_ms: u64,
    sources: Vec<SourceRaw>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceRaw {
    id: String,
    url: String,
    format: String,
    interval_s: u64,
    timeout_s: u64,
    #[serde(default = "default_max_body")]
    max_body_bytes: usize,
    /// Open-Meteo and USGS: the feed's points and the stations they stand for.
    #[serde(default)]
    points: Vec<PointRaw>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PointRaw {
    /// `0`, `1`, ... (Open-Meteo locations in request order) or a USGS site id.
    point: String,
    station: String,
    /// Added to water levels: the gauge datum's height on the national datum.
    #[serde(default)]
    water_level_offset_m: f64,
}

fn default_max_body() -> usize {
    1024 * 1024
}

/// Polling settings.
#[derive(Debug, Clone)]
pub struct PollSettings {
    pub user_agent: String,
    pub host_pause: Duration,
    pub sources: Vec<ingest::poller::PollSource>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BulletinsRaw {
    authoritative_senders: Vec<String>,
    /// For each sender, the hosts whose polled HTTPS sources vouch for it.
    #[serde(default)]
    authoritative_hosts: std::collections::BTreeMap<String, Vec<String>>,
    /// For each sender that signs its CAP with XML-DSig, PEM files (relative to the config
    /// directory) of the certificates it signs with.
    #[serde(default)]
    signing_certs: std::collections::BTreeMap<String, Vec<String>>,
    level_parameters: Vec<String>,
    hazard_parameter: String,
    commune_geocode: String,
    province_geocode: String,
    #[serde(default)]
    next_issue_parameters: Vec<String>,
    #[serde(default)]
    events: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainRaw {
    area_file: String,
    rules_dir: String,
}

const SECTIONS: [&str; 17] = [
    "service",
    "approval",
    "login",
    "retention",
    "http",
    "database",
    "mqtt",
    "signing",
    "demo",
    "alerts",
    "outbox",
    "shutdown",
    "fleet",
    "domain",
    "bulletins",
    "ingest",
    "sms",
];

/// Collects every problem found while loading.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<String>);

impl Problems {
    fn push(&mut self, p: impl Into<String>) {
        self.0.push(p.into());
    }
}

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} configuration problem(s):", self.0.len())?;
        for p in &self.0 {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

fn read_layer(path: &Path, fallback: Option<&str>, problems: &mut Problems) -> Option<toml::Table> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match fallback {
            Some(t) => t.to_owned(),
            None => {
                problems.push(format!("{}: file not found", path.display()));
                return None;
            }
        },
        Err(e) => {
            problems.push(format!("{}: {e}", path.display()));
            return None;
        }
    };
    match text.parse::<toml::Table>() {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push(format!("{}: {e}", path.display()));
            None
        }
    }
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn set_path(root: &mut toml::Table, section: &str, key: &str, value: toml::Value) {
    let entry = root
        .entry(section.to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = entry {
        t.insert(key.to_owned(), value);
    }
}

/// Turns a variable's text into a value: a string where the setting is a string,
/// otherwise the text parsed as a TOML value (`true`, `30`, `{ times = 3, ... }`).
fn env_value(existing: Option<&toml::Value>, text: &str) -> Result<toml::Value, String> {
    if matches!(existing, Some(toml::Value::String(_)) | None) {
        return Ok(toml::Value::String(text.to_owned()));
    }
    let doc = format!("v = {text}");
    doc.parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .ok_or_else(|| format!("{text:?} is not a valid value"))
}

fn section<T: DeserializeOwned>(root: &toml::Table, name: &str, problems: &mut Problems) -> Option<T> {
    let Some(value) = root.get(name) else {
        problems.push(format!("[{name}]: section is missing"));
        return None;
    };
    match value.clone().try_into::<T>() {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(format!("[{name}]: {}", e.to_string().trim()));
            None
        }
    }
}

fn positive(problems: &mut Problems, name: &str, value: u64) -> Option<u64> {
    if value == 0 {
        problems.push(format!("{name} must be greater than 0"));
        None
    } else {
        Some(value)
    }
}

fn repeat(problems: &mut Problems, name: &str, r: RepeatRaw) -> Repeat {
    if r.times == 0 {
        problems.push(format!("alerts.{name}.times must be at least 1"));
    }
    Repeat {
        times: r.times.max(1),
        interval_s: r.interval_s,
    }
}

/// Loads and validates settings from `sources`, reporting every problem at once.
pub fn load(sources: &Sources) -> Result<Settings, Problems> {
    let mut problems = Problems::default();
    let dir_exists = sources.config_dir.is_dir();
    let mut root = read_layer(
        &sources.config_dir.join("default.toml"),
        (!dir_exists).then_some(EMBEDDED_DEFAULT),
        &mut problems,
    )
    .unwrap_or_default();
    if let Some(env) = &sources.env {
        if env.is_empty()
            || !env
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            problems.push(format!(
                "CANHBAO_ENV {env:?} must be a plain name such as \"production\""
            ));
        } else if let Some(layer) = read_layer(
            &sources.config_dir.join(format!("{env}.toml")),
            None,
            &mut problems,
        ) {
            merge(&mut root, layer);
        }
    }
    for (name, text) in &sources.vars {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        let [sec, key] = &parts[..] else {
            problems.push(format!("{name}: expected {ENV_PREFIX}SECTION__KEY"));
            continue;
        };
        let existing = root.get(sec.as_str()).and_then(|s| s.get(key.as_str()));
        match env_value(existing, text) {
            Ok(v) => set_path(&mut root, sec, key, v),
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    }
    for (path, value) in &sources.flags {
        if let Some((sec, key)) = path.split_once('.') {
            set_path(&mut root, sec, key, value.clone());
        }
    }
    for name in root.keys() {
        if !SECTIONS.contains(&name.as_str()) {
            problems.push(format!(
                "[{name}]: unknown section; expected one of {}",
                SECTIONS.join(", ")
            ));
        }
    }

    let service: Option<ServiceRaw> = section(&root, "service", &mut problems);
    let http: Option<HttpRaw> = section(&root, "http", &mut problems);
    let database: Option<DatabaseRaw> = section(&root, "database", &mut problems);
    let mqtt: Option<MqttRaw> = section(&root, "mqtt", &mut problems);
    let signing: Option<SigningRaw> = section(&root, "signing", &mut problems);
    let demo: Option<DemoRaw> = section(&root, "demo", &mut problems);
    let alerts: Option<AlertsRaw> = section(&root, "alerts", &mut problems);
    let retention = section::<std::collections::BTreeMap<String, u32>>(&root, "retention", &mut problems)
        .map(|days| {
            let mut kept = std::collections::BTreeMap::new();
            for (name, d) in days {
                match store::retention::Kind::ALL
                    .into_iter()
                    .find(|k| name == format!("{}_days", k.code()))
                {
                    Some(kind) => {
                        kept.insert(kind, d);
                    }
                    None => problems.push(format!(
                        "retention.{name}: not a kind of record; expected one of {}",
                        store::retention::Kind::ALL
                            .iter()
                            .map(|k| format!("{}_days", k.code()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                }
            }
            crate::retention::Retention(kept)
        });
    let login = section::<api::login::LoginLimits>(&root, "login", &mut problems).and_then(|l| {
        if l.per_account_burst <= l.per_address_burst || l.per_account_per_minute <= l.per_address_per_minute {
            problems.push(
                "login.per_account_* must be above login.per_address_*: otherwise one address can use up an officer's logins"
                    .to_owned(),
            );
            return None;
        }
        if l.first_hold_off_s > l.max_hold_off_s {
            problems.push(format!(
                "login.first_hold_off_s {} must not exceed login.max_hold_off_s {}",
                l.first_hold_off_s, l.max_hold_off_s
            ));
            return None;
        }
        Some(l)
    });
    let approval = section::<ApprovalRaw>(&root, "approval", &mut problems).and_then(|a| {
        let mut classes = Vec::new();
        for c in &a.classes {
            match domain::MessageClass::from_code(c) {
                Some(c) => classes.push(c),
                None => problems.push(format!(
                    "approval.classes: {c:?} is not emergency, priority or normal"
                )),
            }
        }
        if !(1..=6).contains(&a.min_level) {
            problems.push(format!(
                "approval.min_level {} must be 1 to 5 (6: no level needs approval)",
                a.min_level
            ));
            return None;
        }
        (classes.len() == a.classes.len()).then_some(desk::warnings::ApprovalPolicy {
            enabled: a.two_person,
            min_level: a.min_level,
            classes,
        })
    });
    let outbox: Option<OutboxRaw> = section(&root, "outbox", &mut problems);
    let shutdown: Option<ShutdownRaw> = section(&root, "shutdown", &mut problems);
    let fleet: Option<FleetRaw> = section(&root, "fleet", &mut problems);
    let max_clock_offset = fleet.and_then(|f| {
        if (1..=86_400).contains(&f.max_clock_offset_s) {
            Some(chrono::Duration::seconds(f.max_clock_offset_s))
        } else {
            problems.push(format!(
                "fleet.max_clock_offset_s {} must be between 1 and 86400",
                f.max_clock_offset_s
            ));
            None
        }
    });
    let domain_files: Option<DomainRaw> = section(&root, "domain", &mut problems);
    let bulletins_raw: Option<BulletinsRaw> = section(&root, "bulletins", &mut problems);
    let sms = section::<crate::sms_config::SmsRaw>(&root, "sms", &mut problems).and_then(|raw| {
        let secrets: Vec<(String, String)> = sources
            .vars
            .iter()
            .filter(|(k, _)| k.starts_with(crate::sms_config::SECRET_PREFIX))
            .cloned()
            .collect();
        crate::sms_config::load(raw, &secrets, &mut problems.0)
    });
    let ingest_raw: Option<IngestRaw> = section(&root, "ingest", &mut problems);
    let quality = ingest_raw.as_ref().and_then(|i| {
        if i.stuck_after_minutes < 0 {
            problems.push(format!(
                "ingest.stuck_after_minutes {} must be 0 (off) or positive",
                i.stuck_after_minutes
            ));
        }
        let first = rules::quality::FirstReading::from_code(&i.first_reading);
        if first.is_none() {
            problems.push(format!(
                "ingest.first_reading {:?} must be \"confirm\" or \"accept\"",
                i.first_reading
            ));
        }
        Some((
            (i.stuck_after_minutes > 0).then(|| chrono::Duration::minutes(i.stuck_after_minutes)),
            first?,
        ))
    });
    let max_rate = ingest_raw.as_ref().and_then(|i| {
        let r = i.max_water_level_rate_m_per_h;
        if !r.is_finite() || r < 0.0 {
            problems.push(format!(
                "ingest.max_water_level_rate_m_per_h {r} must be 0 (off) or positive"
            ));
        }
        (r > 0.0).then_some(r)
    });
    let (max_batch, poll) = match ingest_raw {
        Some(i) => {
            let max_batch = if (1..=100_000).contains(&i.max_batch) {
                Some(i.max_batch)
            } else {
                problems.push(format!(
                    "ingest.max_batch {} must be between 1 and 100000",
                    i.max_batch
                ));
                None
            };
            (max_batch, poll_settings(i, &mut problems))
        }
        None => (None, None),
    };
    let bulletins = bulletins_raw.map(|b| {
        let mut events = std::collections::BTreeMap::new();
        for (event, code) in b.events {
            match domain::Hazard::from_code(&code) {
                Some(h) => {
                    events.insert(event, h);
                }
                None => problems.push(format!(
                    "bulletins.events.{event:?}: {code:?} is not a hazard code"
                )),
            }
        }
        if b.level_parameters.is_empty() {
            problems.push("bulletins.level_parameters: name at least one parameter");
        }
        for (sender, hosts) in &b.authoritative_hosts {
            if !b.authoritative_senders.contains(sender) {
                problems.push(format!(
                    "bulletins.authoritative_hosts.{sender:?}: not among bulletins.authoritative_senders"
                ));
            }
            for h in hosts {
                let ok = !h.is_empty()
                    && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
                if !ok {
                    problems.push(format!(
                        "bulletins.authoritative_hosts.{sender:?}: {h:?} is not a host name (no scheme, port or path)"
                    ));
                }
            }
        }
        let mut signing_certs = std::collections::BTreeMap::new();
        for (sender, files) in &b.signing_certs {
            if !b.authoritative_senders.contains(sender) {
                problems.push(format!(
                    "bulletins.signing_certs.{sender:?}: not among bulletins.authoritative_senders"
                ));
            }
            let mut certs = Vec::new();
            for f in files {
                let path = sources.config_dir.join(f);
                match std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|pem| ingest::dsig::certificates_from_pem(&pem))
                {
                    Ok(c) => certs.extend(c),
                    Err(e) => problems.push(format!("bulletins.signing_certs.{sender:?}: {}: {e}", path.display())),
                }
            }
            if files.is_empty() {
                problems.push(format!(
                    "bulletins.signing_certs.{sender:?}: name at least one certificate file"
                ));
            }
            signing_certs.insert(sender.clone(), certs);
        }
        ingest::bulletin::BulletinSettings {
            authoritative_senders: b.authoritative_senders,
            authoritative_hosts: b.authoritative_hosts,
            signing_certs,
            level_parameters: b.level_parameters,
            hazard_parameter: b.hazard_parameter,
            events,
            commune_geocode: b.commune_geocode,
            province_geocode: b.province_geocode,
            next_issue_parameters: b.next_issue_parameters,
        }
    });

    let profile = service.as_ref().and_then(|s| match s.profile.as_str() {
        "embedded" => Some(Profile::Embedded),
        "production" => Some(Profile::Production),
        other => {
            problems.push(format!(
                "service.profile {other:?} must be \"embedded\" or \"production\""
            ));
            None
        }
    });
    let province = service.as_ref().and_then(|s| {
        ProvinceCode::new(&s.province)
            .map_err(|e| problems.push(format!("service.province: {e}")))
            .ok()
    });
    let data_dir = service.as_ref().map(|s| s.data_dir.clone());
    let http_listen = http.as_ref().and_then(|h| {
        h.listen
            .parse::<SocketAddr>()
            .map_err(|e| problems.push(format!("http.listen {:?}: {e}", h.listen)))
            .ok()
    });
    let http_serving = http.and_then(|h| {
        let tls = match (h.tls_cert_file.trim(), h.tls_key_file.trim()) {
            ("", "") => None,
            ("", _) | (_, "") => {
                problems.push(
                    "http.tls_cert_file and http.tls_key_file go together: set both for HTTPS, or neither",
                );
                return None;
            }
            (cert, key) => Some(crate::http::TlsFiles {
                cert_file: cert.into(),
                key_file: key.into(),
            }),
        };
        if !(1..=300).contains(&h.header_read_timeout_s) {
            problems.push(format!(
                "http.header_read_timeout_s {} must be 1 to 300",
                h.header_read_timeout_s
            ));
            return None;
        }
        if h.max_connections == 0 {
            problems.push("http.max_connections must be at least 1");
            return None;
        }
        Some(HttpServing {
            tls,
            limits: crate::http::HttpLimits {
                header_read_timeout: Duration::from_secs(h.header_read_timeout_s),
                max_connections: h.max_connections,
            },
        })
    });
    let database_url = match (&database, &data_dir) {
        (Some(d), Some(dir)) if d.url.is_empty() => {
            Some(format!("sqlite://{}", dir.join("canhbao.db").display()))
        }
        (Some(d), _) if store::Backend::of_url(&d.url).is_ok() => Some(d.url.clone()),
        (Some(_), _) => {
            // Never echo the URL: it may hold a password.
            problems.push("database.url: must start with sqlite:, postgres:// or postgresql://");
            None
        }
        _ => None,
    };
    let mqtt = mqtt.and_then(|m| mqtt_config(m, &mut problems));
    let signing_key_file = match (signing, &data_dir) {
        (Some(s), Some(dir)) if s.key_file.is_empty() => Some(dir.join("signing.key")),
        (Some(s), _) => Some(PathBuf::from(s.key_file)),
        _ => None,
    };
    let demo_interval = demo.and_then(|d| {
        if d.interval_ms < 100 {
            problems.push(format!("demo.interval_ms {} must be at least 100", d.interval_ms));
            return None;
        }
        Some(d.enabled.then(|| Duration::from_millis(d.interval_ms)))
    });
    let alerts = alerts.and_then(|a| {
        if a.ttl_minutes <= 0 {
            problems.push(format!(
                "alerts.ttl_minutes {} must be greater than 0",
                a.ttl_minutes
            ));
        }
        if a.max_reading_age_minutes <= 0 {
            problems.push(format!(
                "alerts.max_reading_age_minutes {} must be greater than 0",
                a.max_reading_age_minutes
            ));
        }
        for (name, v) in [
            ("alerts.renew_before_minutes", a.renew_before_minutes),
            ("alerts.blind_renew_minutes", a.blind_renew_minutes),
            ("alerts.all_clear_minutes", a.all_clear_minutes),
        ] {
            if v <= 0 {
                problems.push(format!("{name} {v} must be greater than 0"));
            }
        }
        if a.renew_before_minutes >= a.ttl_minutes {
            problems.push(format!(
                "alerts.renew_before_minutes {} must be less than alerts.ttl_minutes {}: an alert would be renewed as soon as it is issued",
                a.renew_before_minutes, a.ttl_minutes
            ));
        }
        for (name, v) in [
            ("alerts.restate_emergency_minutes", a.restate_emergency_minutes),
            ("alerts.restate_priority_minutes", a.restate_priority_minutes),
        ] {
            if v < 0 || (v > 0 && v < 30) {
                problems.push(format!(
                    "{name} {v} must be 0 (only before expiry) or at least 30: a loudspeaker restating a warning more often drowns it"
                ));
            }
        }
        if !(0..=60).contains(&a.confirm_unverified_emergency_minutes) {
            problems.push(format!(
                "alerts.confirm_unverified_emergency_minutes {} must be 0 (send at once) to 60: an emergency must not wait longer",
                a.confirm_unverified_emergency_minutes
            ));
        }
        if a.follow_interval_s == 0 || a.follow_interval_s > 600 {
            problems.push(format!(
                "alerts.follow_interval_s {} must be 1 to 600",
                a.follow_interval_s
            ));
        }
        let policy = AlertPolicy {
            ttl: chrono::Duration::minutes(a.ttl_minutes),
            max_reading_age: chrono::Duration::minutes(a.max_reading_age_minutes),
            repeat_emergency: repeat(&mut problems, "repeat_emergency", a.repeat_emergency),
            repeat_priority: repeat(&mut problems, "repeat_priority", a.repeat_priority),
            repeat_normal: repeat(&mut problems, "repeat_normal", a.repeat_normal),
            max_water_level_rate_m_per_h: max_rate,
            renew_before: chrono::Duration::minutes(a.renew_before_minutes),
            // 0 restates only before expiry.
            restate_emergency: (a.restate_emergency_minutes > 0)
                .then(|| chrono::Duration::minutes(a.restate_emergency_minutes)),
            restate_priority: (a.restate_priority_minutes > 0)
                .then(|| chrono::Duration::minutes(a.restate_priority_minutes)),
            confirm_unverified_emergency: (a.confirm_unverified_emergency_minutes > 0)
                .then(|| chrono::Duration::minutes(a.confirm_unverified_emergency_minutes)),
            blind_renew: chrono::Duration::minutes(a.blind_renew_minutes),
            all_clear_ttl: chrono::Duration::minutes(a.all_clear_minutes),
            // Filled in below from [ingest], the area file and the rules' limits.
            ..AlertPolicy::default()
        };
        (a.ttl_minutes > 0 && a.max_reading_age_minutes > 0)
            .then_some((policy, Duration::from_secs(a.follow_interval_s)))
    });
    let outbox = outbox.and_then(|o| {
        let lease = positive(&mut problems, "outbox.lease_s", o.lease_s);
        let idle = positive(&mut problems, "outbox.idle_poll_ms", o.idle_poll_ms);
        let base = positive(&mut problems, "outbox.retry_base_ms", o.retry_base_ms);
        let max = positive(&mut problems, "outbox.retry_max_ms", o.retry_max_ms);
        if o.batch <= 0 {
            problems.push(format!("outbox.batch {} must be greater than 0", o.batch));
        }
        if let (Some(b), Some(m)) = (base, max)
            && b > m
        {
            problems.push(format!(
                "outbox.retry_base_ms {b} must not exceed outbox.retry_max_ms {m}"
            ));
        }
        if o.resend_s.is_empty() || o.resend_s.contains(&0) {
            problems.push(format!(
                "outbox.resend_s {:?} must list at least one delay, each greater than 0",
                o.resend_s
            ));
        }
        Some(OutboxSettings {
            lease: Duration::from_secs(lease?),
            batch: o.batch,
            idle_poll: Duration::from_millis(idle?),
            retry_base: Duration::from_millis(base?),
            retry_max: Duration::from_millis(max?),
            resend: o.resend_s.iter().map(|s| Duration::from_secs(*s)).collect(),
        })
        .filter(|s| s.batch > 0 && s.retry_base <= s.retry_max)
    });
    let grace = shutdown.and_then(|s| {
        if (1..=300).contains(&s.grace_s) {
            Some(Duration::from_secs(s.grace_s))
        } else {
            problems.push(format!(
                "shutdown.grace_s {} must be between 1 and 300",
                s.grace_s
            ));
            None
        }
    });
    let places = domain_files.and_then(|d| {
        let path = sources.config_dir.join(&d.area_file);
        let (name, text) = match std::fs::read_to_string(&path) {
            Ok(t) => (path.display().to_string(), t),
            Err(_) if !dir_exists => (format!("(built-in) {}", d.area_file), EMBEDDED_AREA.to_owned()),
            Err(e) => {
                problems.push(format!("domain.area_file: {}: {e}", path.display()));
                return None;
            }
        };
        let (area, errs) = places::parse_area(&text);
        problems
            .0
            .extend(errs.into_iter().map(|e| format!("{name}: {e}")));
        let files = match rule_files(&sources.config_dir, &d.rules_dir, dir_exists) {
            Ok(f) => f,
            Err(e) => {
                problems.push(format!("domain.rules_dir: {e}"));
                return None;
            }
        };
        match rules::load(&files) {
            Ok(set) => Some((area, set)),
            Err(e) => {
                problems.0.extend(e.0);
                None
            }
        }
    });

    // The province the service publishes for is the one its area file describes: another
    // code would put every alert on topics no receiver of this province listens to.
    if let (Some(code), Some((area, _))) = (&province, &places)
        && !area.code.is_empty()
        && code.as_str() != area.code
    {
        problems.push(format!(
            "service.province {:?} is not the area file's province {:?} ({}): alerts would go to \
             topics no receiver of {} listens to",
            code.as_str(),
            area.code,
            area.name,
            area.name
        ));
    }
    // The bundled demo feed reads stations by id: each must be one the area file has.
    if let (Some(_), Some((area, _))) = (&demo_interval, &places)
        && let Ok(series) = ingest::demo::parse_series(ingest::demo::SERIES_CSV)
    {
        let mut missing: Vec<&str> = series
            .iter()
            .map(|r| r.station.as_str())
            .filter(|id| !area.stations.iter().any(|s| s.id.as_str() == *id))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            problems.push(format!(
                "demo.enabled: the demo feed reads stations {missing:?}, which the area file does \
                 not configure (turn the demo off with --no-demo or CANHBAO__DEMO__ENABLED=false)"
            ));
        }
    }
    if let (Some(poll), Some((area, _))) = (&poll, &places) {
        for src in &poll.sources {
            for (point, target) in &src.points.0 {
                if !area.stations.iter().any(|s| s.id == target.station) {
                    problems.push(format!(
                        "ingest.sources {:?}: point {point:?} names station {:?}, which the area file does not configure",
                        src.id, target.station.as_str()
                    ));
                }
            }
        }
    }
    // The checks and the follower share the rules' hold, margin and plausible ranges.
    let alerts = match (alerts, quality, &places) {
        (Some((mut policy, interval)), Some((stuck_after, first)), Some((area, rules))) => {
            policy.stuck_after = stuck_after;
            policy.first_reading = first;
            policy.first_reading_at = area.first_reading.iter().cloned().collect();
            policy.hold = chrono::Duration::minutes(rules.limits.hold_minutes.unwrap_or(180));
            policy.margin_m = rules
                .limits
                .hysteresis
                .get(&rules::series::Param::WaterLevel)
                .copied()
                .unwrap_or(0.0);
            policy.ranges = rules
                .limits
                .plausible
                .iter()
                .map(|(p, r)| (p.code().to_owned(), *r))
                .collect();
            Some((policy, interval))
        }
        _ => None,
    };
    if !problems.0.is_empty() {
        return Err(problems);
    }
    match (
        profile,
        province,
        data_dir,
        http_listen,
        http_serving,
        database_url,
        mqtt,
        signing_key_file,
        demo_interval,
        alerts,
        outbox,
        grace,
        max_clock_offset,
        places,
        bulletins,
        max_batch,
        poll,
        sms,
        approval,
        login,
        retention,
    ) {
        (
            Some(profile),
            Some(province),
            Some(data_dir),
            Some(http_listen),
            Some(http),
            Some(database_url),
            Some(mqtt),
            Some(signing_key_file),
            Some(demo_interval),
            Some((alerts, follow_interval)),
            Some(outbox),
            Some(grace),
            Some(max_clock_offset),
            Some((area, rules)),
            Some(bulletins),
            Some(max_batch),
            Some(poll),
            Some(sms),
            Some(approval),
            Some(login),
            Some(retention),
        ) => Ok(Settings {
            profile,
            province,
            data_dir,
            http_listen,
            http,
            database_url,
            mqtt,
            signing_key_file,
            demo_interval,
            alerts,
            follow_interval,
            outbox,
            grace,
            max_clock_offset,
            area,
            rules,
            bulletins,
            max_batch,
            poll,
            sms,
            approval,
            login,
            retention,
        }),
        _ => Err(Problems(vec!["settings are incomplete".into()])),
    }
}

fn poll_settings(i: IngestRaw, problems: &mut Problems) -> Option<PollSettings> {
    if i.user_agent.trim().is_empty() {
        problems.push("ingest.user_agent must name canhbao and a contact");
    }
    let mut ids = std::collections::HashSet::new();
    let mut sources = Vec::new();
    for (n, s) in i.sources.into_iter().enumerate() {
        let at = format!("ingest.sources[{n}] {:?}", s.id);
        if s.id.is_empty()
            || !s
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            problems.push(format!("{at}: id must be letters, digits, - and _"));
        }
        if !ids.insert(s.id.clone()) {
            problems.push(format!("{at}: id is used twice"));
        }
        if !(s.url.starts_with("https://") || s.url.starts_with("http://")) {
            problems.push(format!("{at}: url must be http:// or https://"));
        }
        let format = ingest::poller::FeedFormat::from_code(&s.format);
        if format.is_none() {
            problems.push(format!(
                "{at}: format {:?} must be one of {}",
                s.format,
                ingest::poller::FeedFormat::CODES.join(", ")
            ));
        }
        if s.interval_s == 0 {
            problems.push(format!("{at}: interval_s must be greater than 0"));
        }
        if s.timeout_s == 0 || s.timeout_s >= s.interval_s {
            problems.push(format!(
                "{at}: timeout_s {} must be greater than 0 and shorter than interval_s {}",
                s.timeout_s, s.interval_s
            ));
        }
        let mut points = std::collections::HashMap::new();
        for (k, p) in s.points.into_iter().enumerate() {
            let pat = format!("{at}: points[{k}]");
            match domain::StationId::new(&p.station) {
                Ok(station) if p.water_level_offset_m.is_finite() => {
                    let target = ingest::hydromet::PointTarget {
                        station,
                        water_level_offset_m: p.water_level_offset_m,
                    };
                    if points.insert(p.point.clone(), target).is_some() {
                        problems.push(format!("{pat}: point {:?} is mapped twice", p.point));
                    }
                }
                Ok(_) => problems.push(format!("{pat}: water_level_offset_m must be a number")),
                Err(e) => problems.push(format!("{pat}: station: {e}")),
            }
        }
        if format.is_some_and(|f| f.uses_points()) && points.is_empty() {
            problems.push(format!(
                "{at}: format {:?} needs points = [{{ point = \"...\", station = \"...\" }}] to tie its values to stations",
                s.format
            ));
        }
        if let Some(format) = format {
            sources.push(ingest::poller::PollSource {
                id: s.id,
                url: s.url,
                format,
                interval: Duration::from_secs(s.interval_s),
                timeout: Duration::from_secs(s.timeout_s),
                max_body: s.max_body_bytes,
                points: std::sync::Arc::new(ingest::hydromet::PointMap(points)),
            });
        }
    }
    Some(PollSettings {
        user_agent: i.user_agent,
        host_pause: Duration::from_millis(i.host_pause_ms),
        sources,
    })
}

/// The rule files of `dir` (relative to the config directory), or the built-in ones when
/// the config directory does not exist. Sorted by name.
pub fn rule_files(config_dir: &Path, dir: &str, dir_exists: bool) -> Result<Vec<(String, String)>, String> {
    if !dir_exists {
        return Ok(EMBEDDED_RULES
            .iter()
            .map(|(n, t)| (format!("(built-in) rules/{n}"), (*t).to_owned()))
            .collect());
    }
    read_rule_dir(&config_dir.join(dir))
}

/// Every `*.toml` file of a rules directory, sorted by name.
pub fn read_rule_dir(path: &Path) -> Result<Vec<(String, String)>, String> {
    let entries = std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let p = entry.map_err(|e| format!("{}: {e}", path.display()))?.path();
        if p.extension().is_some_and(|x| x == "toml") {
            let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            files.push((p.display().to_string(), text));
        }
    }
    if files.is_empty() {
        return Err(format!("{}: no rule files (*.toml)", path.display()));
    }
    files.sort();
    Ok(files)
}

fn mqtt_config(m: MqttRaw, problems: &mut Problems) -> Option<MqttConfig> {
    let mode = match m.mode.as_str() {
        "embedded" => {
            if !cfg!(feature = "embedded-broker") {
                problems
                    .push("mqtt.mode \"embedded\" needs the cargo feature embedded-broker; use \"external\"");
                None
            } else {
                match m.listen.parse::<SocketAddr>() {
                    Ok(a) if a.ip().is_loopback() => Some(MqttMode::Embedded { listen: a }),
                    Ok(a) => {
                        problems.push(format!(
                            "mqtt.listen {a}: the embedded broker binds to loopback only; use an external broker to serve a network"
                        ));
                        None
                    }
                    Err(e) => {
                        problems.push(format!("mqtt.listen {:?}: {e}", m.listen));
                        None
                    }
                }
            }
        }
        "external" => {
            let fallback = match m.fallback_url.trim() {
                "" => Ok(None),
                f => BrokerUrl::parse(f)
                    .map(Some)
                    .map_err(|e| problems.push(format!("mqtt.fallback_url: {e}"))),
            };
            match (BrokerUrl::parse(&m.url), fallback) {
                (Ok(url), Ok(fallback)) => Some(MqttMode::External { url, fallback }),
                (Err(e), _) => {
                    problems.push(format!("mqtt.url: {e}"));
                    None
                }
                (_, Err(())) => None,
            }
        }
        other => {
            problems.push(format!(
                "mqtt.mode {other:?} must be \"embedded\" or \"external\""
            ));
            None
        }
    };
    // Validate the prefix with any province; the real one is checked separately.
    if let Err(e) = dispatch::Topics::new(&m.topic_prefix, ProvinceCode::new("00").ok()?) {
        problems.push(format!("mqtt.topic_prefix: {e}"));
    }
    if m.client_id.is_empty() || m.client_id.len() > 64 {
        problems.push("mqtt.client_id must be 1 to 64 characters");
    }
    if !(5..=3600).contains(&m.keep_alive_s) {
        problems.push(format!(
            "mqtt.keep_alive_s {} must be between 5 and 3600",
            m.keep_alive_s
        ));
    }
    if !m.username.is_empty() && m.password.is_empty() {
        problems.push("mqtt.username is set but mqtt.password is empty; set CANHBAO__MQTT__PASSWORD");
    }
    let tls = mqtt_tls(&m, problems);
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    Some(MqttConfig {
        mode: mode?,
        tls: tls?,
        topic_prefix: m.topic_prefix,
        client_id: m.client_id,
        username: non_empty(m.username),
        password: non_empty(m.password).map(secrecy::SecretString::from),
        keep_alive: Duration::from_secs(m.keep_alive_s),
    })
}

/// The TLS files of `[mqtt]`, read: `ca_file` (PEM; empty: the system's roots) and the
/// client certificate with its key (both or neither; they need `ca_file`).
fn mqtt_tls(m: &MqttRaw, problems: &mut Problems) -> Option<mqtt::TlsMaterial> {
    let read = |name: &str, path: &str, problems: &mut Problems| -> Option<Option<Vec<u8>>> {
        if path.trim().is_empty() {
            return Some(None);
        }
        match std::fs::read(path) {
            Ok(bytes) if bytes.starts_with(b"-----BEGIN") => Some(Some(bytes)),
            Ok(_) => {
                problems.push(format!("mqtt.{name} {path:?} is not a PEM file"));
                None
            }
            Err(e) => {
                problems.push(format!("mqtt.{name} {path:?}: {e}"));
                None
            }
        }
    };
    let ca = read("ca_file", &m.ca_file, problems);
    let cert = read("client_cert_file", &m.client_cert_file, problems);
    let key = read("client_key_file", &m.client_key_file, problems);
    let (ca, cert, key) = (ca?, cert?, key?);
    let client = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            problems.push("mqtt.client_cert_file and mqtt.client_key_file go together");
            return None;
        }
    };
    if client.is_some() && ca.is_none() {
        problems
            .push("a client certificate (mqtt.client_cert_file) needs mqtt.ca_file, the CA of the broker");
        return None;
    }
    let material = mqtt::TlsMaterial { ca_pem: ca, client };
    // Whether the files make a TLS configuration is known now, not at the first connect.
    if (material.ca_pem.is_some() || material.client.is_some())
        && let Err(e) = mqtt::tls_config(&material)
    {
        problems.push(format!("mqtt TLS files: {e}"));
        return None;
    }
    Some(material)
}

/// Settings and secrets from files, as systemd's `LoadCredential=` (or a container's
/// secrets directory) provides them: each regular file in `dir` named like a canhbao
/// variable (`CANHBAO__DATABASE__URL`, `CANHBAO_SECRET_KANNEL`) sets that variable to its
/// content, without the trailing line break. Other files are left alone. A variable set
/// both in the environment (`existing`) and as a file is refused: which would win is not
/// obvious to whoever set them.
pub fn credential_vars(dir: &Path, existing: &[(String, String)]) -> Result<Vec<(String, String)>, Problems> {
    const MAX: u64 = 64 * 1024;
    let mut problems = Problems::default();
    let mut vars = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            return Err(Problems(vec![format!(
                "credentials directory {}: {e}",
                dir.display()
            )]));
        }
    };
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !(name.starts_with(ENV_PREFIX) || name.starts_with(crate::sms_config::SECRET_PREFIX)) {
            continue;
        }
        let path = entry.path();
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() && m.len() <= MAX => {}
            Ok(m) if m.is_file() => {
                problems.push(format!("credential {name}: {} bytes; at most {MAX}", m.len()));
                continue;
            }
            _ => continue,
        }
        if existing.iter().any(|(k, _)| *k == name) {
            problems.push(format!(
                "{name} is set both in the environment and as a credential file; keep one"
            ));
            continue;
        }
        match std::fs::read(&path).map(String::from_utf8) {
            Ok(Ok(text)) => {
                let value = text.strip_suffix('\n').unwrap_or(&text);
                let value = value.strip_suffix('\r').unwrap_or(value);
                vars.push((name, value.to_owned()));
            }
            Ok(Err(_)) => problems.push(format!("credential {name}: not UTF-8")),
            Err(e) => problems.push(format!("credential {name}: {e}")),
        }
    }
    if problems.0.is_empty() {
        Ok(vars)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(vars: &[(&str, &str)]) -> Sources {
        Sources {
            config_dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config")),
            env: None,
            vars: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            flags: vec![],
        }
    }

    #[test]
    fn the_shipped_defaults_are_valid_and_embedded() {
        let s = load(&sources(&[])).unwrap();
        assert_eq!(s.profile, Profile::Embedded);
        assert_eq!(s.http_listen.to_string(), "127.0.0.1:8080");
        assert!(matches!(s.mqtt.mode, MqttMode::Embedded { listen } if listen.port() == 1884));
        assert_eq!(s.area.communes.len(), 65);
        assert_eq!(s.area.stations.len(), 3);
        assert!(s.rules.rules.len() >= 30);
        assert!(s.demo_interval.is_some());
        assert_eq!(s.database_url, "sqlite://./var/canhbao.db");
    }

    /// The settings are checked against the data: a province code that is not the area
    /// file's would publish where no receiver of the province listens.
    #[test]
    fn a_province_other_than_the_area_files_is_refused() {
        let Err(problems) = load(&sources(&[("CANHBAO__SERVICE__PROVINCE", "99")])) else {
            panic!("province 99 loaded against Lạng Sơn's area file");
        };
        let said = problems.to_string();
        assert!(
            said.contains("service.province \"99\" is not the area file's province \"20\" (Lạng Sơn)"),
            "{said}"
        );
        assert!(load(&sources(&[("CANHBAO__SERVICE__PROVINCE", "20")])).is_ok());
    }

    #[test]
    fn the_production_file_turns_the_demo_off_and_points_at_an_external_broker() {
        let mut src = sources(&[("CANHBAO__MQTT__PASSWORD", "from-env")]);
        src.env = Some("production".into());
        let s = load(&src).unwrap();
        assert_eq!(s.profile, Profile::Production);
        assert_eq!(s.demo_interval, None);
        assert!(matches!(s.mqtt.mode, MqttMode::External { .. }));
        assert!(
            !format!("{:?}", s.mqtt).contains("from-env"),
            "secrets never reach Debug output"
        );
    }

    #[test]
    fn the_production_profile_never_serves_plain_http_on_a_public_address() {
        let mut src = sources(&[("CANHBAO__MQTT__PASSWORD", "from-env")]);
        src.env = Some("production".into());
        let s = load(&src).unwrap();
        assert!(!s.http.in_clear_on(s.http_listen), "{}", s.http_listen);
        let mut src = sources(&[
            ("CANHBAO__MQTT__PASSWORD", "from-env"),
            ("CANHBAO__HTTP__LISTEN", "0.0.0.0:8080"),
        ]);
        src.env = Some("production".into());
        let s = load(&src).unwrap();
        assert!(s.http.in_clear_on(s.http_listen), "plain HTTP on 0.0.0.0 is told");
        let half = load(&sources(&[("CANHBAO__HTTP__TLS_CERT_FILE", "/etc/ssl/c.pem")])).unwrap_err();
        assert!(half.to_string().contains("go together"), "{half}");
    }

    #[test]
    fn retention_names_known_kinds_and_keeps_alerts_out_of_reach() {
        let s = load(&sources(&[])).unwrap();
        assert_eq!(
            s.retention.0.get(&store::retention::Kind::Observations),
            Some(&800)
        );
        assert_eq!(s.retention.0.get(&store::retention::Kind::Rejections), Some(&90));
        let bad = load(&sources(&[("CANHBAO__RETENTION__ALERTS_DAYS", "30")])).unwrap_err();
        assert!(bad.to_string().contains("alerts_days"), "{bad}");
    }

    #[test]
    fn environment_variables_override_with_typed_values() {
        let s = load(&sources(&[
            ("CANHBAO__HTTP__LISTEN", "127.0.0.1:9999"),
            ("CANHBAO__DEMO__ENABLED", "false"),
            ("CANHBAO__OUTBOX__BATCH", "7"),
            (
                "CANHBAO__ALERTS__REPEAT_EMERGENCY",
                "{ times = 5, interval_s = 60 }",
            ),
            ("CANHBAO_ENV", "ignored: single underscore"),
        ]))
        .unwrap();
        assert_eq!(s.http_listen.port(), 9999);
        assert_eq!(s.demo_interval, None);
        assert_eq!(s.outbox.batch, 7);
        assert_eq!(s.alerts.repeat_emergency.times, 5);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = load(&sources(&[
            ("CANHBAO__HTTP__LISTEN", "nowhere"),
            ("CANHBAO__MQTT__MODE", "carrier-pigeon"),
            ("CANHBAO__OUTBOX__LEASE_S", "0"),
            ("CANHBAO__SHUTDOWN__GRACE_S", "9999"),
            ("CANHBAO__SERVICE__PROVINCE", "200"),
            ("CANHBAO__DEMO__SPEED", "1"),
            ("CANHBAO__DATABASE__URL", "mysql://user:hunter2@db/x"),
            (
                "CANHBAO__INGEST__SOURCES",
                r#"[{ id = "kttv", url = "https://example.vn/cap", format = "cap", interval_s = 60, timeout_s = 60 }]"#,
            ),
        ]))
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "http.listen \"nowhere\"",
            "mqtt.mode \"carrier-pigeon\"",
            "outbox.lease_s must be greater than 0",
            "shutdown.grace_s 9999",
            "service.province",
            "unknown field `speed`",
            "database.url: must start with sqlite:, postgres:// or postgresql://",
            "timeout_s 60 must be greater than 0 and shorter than interval_s 60",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert!(
            !text.contains("hunter2"),
            "a database password must never be echoed"
        );
        assert!(err.0.len() >= 7, "{text}");
    }

    #[test]
    fn hydromet_sources_must_tie_their_points_to_configured_stations() {
        let err = load(&sources(&[(
            "CANHBAO__INGEST__SOURCES",
            r#"[{ id = "om", url = "https://api.open-meteo.com/v1/forecast", format = "open-meteo", interval_s = 3600, timeout_s = 30 },
                { id = "usgs", url = "https://api.waterdata.usgs.gov/x", format = "usgs-ogc", interval_s = 900, timeout_s = 30,
                  points = [{ point = "USGS-1", station = "NOWHERE" }, { point = "USGS-1", station = "HUULUNG" }] },
                { id = "x", url = "https://example.vn/x", format = "grib", interval_s = 60, timeout_s = 30 }]"#,
        )]))
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "\"om\": format \"open-meteo\" needs points",
            "point \"USGS-1\" is mapped twice",
            "format \"grib\" must be one of cap, atom, rss, nws, station-json, station-csv, open-meteo",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        let ok = load(&sources(&[(
            "CANHBAO__INGEST__SOURCES",
            r#"[{ id = "usgs", url = "https://api.waterdata.usgs.gov/x", format = "usgs-iv", interval_s = 900, timeout_s = 30,
                  points = [{ point = "USGS-1", station = "HUULUNG", water_level_offset_m = 12.5 }] }]"#,
        )]))
        .unwrap();
        assert_eq!(ok.poll.sources[0].points.0["USGS-1"].water_level_offset_m, 12.5);
        let err = load(&sources(&[(
            "CANHBAO__INGEST__SOURCES",
            r#"[{ id = "usgs", url = "https://api.waterdata.usgs.gov/x", format = "usgs-iv", interval_s = 900, timeout_s = 30,
                  points = [{ point = "USGS-1", station = "NOWHERE" }] }]"#,
        )]))
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("names station \"NOWHERE\", which the area file does not configure"),
            "{err}"
        );
    }

    #[test]
    fn a_senders_signing_certificates_are_read_at_start_and_a_bad_file_stops_it() {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../ingest/fixtures/cap/signed");
        let sender = "kttv-langson@example.vn";
        let ok = load(&sources(&[
            (
                "CANHBAO__BULLETINS__AUTHORITATIVE_SENDERS",
                &format!("[\"{sender}\"]"),
            ),
            (
                "CANHBAO__BULLETINS__SIGNING_CERTS",
                &format!(
                    "{{ \"{sender}\" = [\"{fixtures}/kttv-test-rsa.pem\", \"{fixtures}/kttv-test-ec.pem\"] }}"
                ),
            ),
        ]))
        .unwrap();
        assert_eq!(ok.bulletins.signing_certs[sender].len(), 2);
        let err = load(&sources(&[
            ("CANHBAO__BULLETINS__AUTHORITATIVE_SENDERS", &format!("[\"{sender}\"]")),
            (
                "CANHBAO__BULLETINS__SIGNING_CERTS",
                &format!(
                    "{{ \"{sender}\" = [\"{fixtures}/missing.pem\", \"{fixtures}/make.sh\"], \"other@example.vn\" = [] }}"
                ),
            ),
        ]))
        .unwrap_err()
        .to_string();
        for needle in [
            "missing.pem: No such file",
            "make.sh: no PEM certificate",
            "\"other@example.vn\": not among bulletins.authoritative_senders",
            "\"other@example.vn\": name at least one certificate file",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
    }

    #[test]
    fn the_embedded_broker_refuses_a_non_loopback_address() {
        let err = load(&sources(&[("CANHBAO__MQTT__LISTEN", "0.0.0.0:1884")])).unwrap_err();
        assert!(err.to_string().contains("loopback only"), "{err}");
    }

    #[test]
    fn credentials_come_from_files_named_like_variables() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("CANHBAO__DATABASE__URL"), "sqlite://x.db\n").unwrap();
        std::fs::write(dir.path().join("CANHBAO_SECRET_KANNEL"), "s3cret\r\n").unwrap();
        std::fs::write(dir.path().join("unrelated"), "ignored").unwrap();
        let mut got = credential_vars(dir.path(), &[]).unwrap();
        got.sort();
        assert_eq!(
            got,
            [
                ("CANHBAO_SECRET_KANNEL".to_owned(), "s3cret".to_owned()),
                ("CANHBAO__DATABASE__URL".to_owned(), "sqlite://x.db".to_owned()),
            ]
        );
        // The same variable from two places is refused, naming it but not its value.
        let env = [("CANHBAO_SECRET_KANNEL".to_owned(), "other".to_owned())];
        let p = credential_vars(dir.path(), &env).unwrap_err().to_string();
        assert!(
            p.contains("CANHBAO_SECRET_KANNEL") && !p.contains("s3cret") && !p.contains("other"),
            "{p}"
        );
        std::fs::write(dir.path().join("CANHBAO__MQTT__PASSWORD"), [0xff, 0xfe]).unwrap();
        assert!(
            credential_vars(dir.path(), &[])
                .unwrap_err()
                .to_string()
                .contains("not UTF-8")
        );
    }
}
