//! The one generic HTTP poller: per source an interval and a timeout, conditional GET
//! (ETag, Last-Modified), a body-size cap, a User-Agent with a contact, exponential backoff
//! with jitter after failures, a pause between requests to the same host, and health
//! persisted per source. The format's pure parser does the rest.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use store::Store;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::bulletin::BulletinSettings;
use desk::{Pipeline, Source};

/// What a source serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedFormat {
    Cap,
    /// An Atom or RSS CAP feed: embedded alerts, or links to CAP documents.
    CapFeed,
    /// NWS alerts GeoJSON.
    Nws,
    StationJson,
    StationCsv,
    /// Open-Meteo forecast API (hourly): forecasts.
    OpenMeteo,
    /// Open-Meteo flood API (daily river discharge): forecasts.
    OpenMeteoFlood,
    /// USGS Water Data OGC API `continuous` items: observations.
    UsgsOgc,
    /// USGS NWIS instantaneous values (legacy): observations.
    UsgsIv,
}

impl FeedFormat {
    pub fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "cap" => Self::Cap,
            "atom" | "rss" => Self::CapFeed,
            "nws" => Self::Nws,
            "station-json" => Self::StationJson,
            "station-csv" => Self::StationCsv,
            "open-meteo" => Self::OpenMeteo,
            "open-meteo-flood" => Self::OpenMeteoFlood,
            "usgs-ogc" => Self::UsgsOgc,
            "usgs-iv" => Self::UsgsIv,
            _ => return None,
        })
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::Cap => "cap",
            Self::CapFeed => "atom",
            Self::Nws => "nws",
            Self::StationJson => "station-json",
            Self::StationCsv => "station-csv",
            Self::OpenMeteo => "open-meteo",
            Self::OpenMeteoFlood => "open-meteo-flood",
            Self::UsgsOgc => "usgs-ogc",
            Self::UsgsIv => "usgs-iv",
        }
    }

    /// Every format code a source may name.
    pub const CODES: [&str; 10] = [
        "cap",
        "atom",
        "rss",
        "nws",
        "station-json",
        "station-csv",
        "open-meteo",
        "open-meteo-flood",
        "usgs-ogc",
        "usgs-iv",
    ];

    /// Whether the format's values are at the feed's own points, which the source's
    /// `points` must tie to stations.
    pub fn uses_points(self) -> bool {
        matches!(
            self,
            Self::OpenMeteo | Self::OpenMeteoFlood | Self::UsgsOgc | Self::UsgsIv
        )
    }
}

/// Runs a hydro-met format's pure decoder.
pub fn decode_hydromet(format: FeedFormat, body: &[u8]) -> Result<crate::hydromet::Decoded, String> {
    match format {
        FeedFormat::OpenMeteo => crate::openmeteo::parse_forecast(body).map_err(|e| e.to_string()),
        FeedFormat::OpenMeteoFlood => crate::openmeteo::parse_flood(body).map_err(|e| e.to_string()),
        FeedFormat::UsgsOgc => crate::usgs::parse_ogc(body).map_err(|e| e.to_string()),
        FeedFormat::UsgsIv => crate::usgs::parse_iv(body).map_err(|e| e.to_string()),
        other => Err(format!("{} is not a hydro-met format", other.code())),
    }
}

/// One polled source.
#[derive(Debug, Clone)]
pub struct PollSource {
    pub id: String,
    pub url: String,
    pub format: FeedFormat,
    pub interval: Duration,
    /// Always shorter than `interval` (checked with the settings).
    pub timeout: Duration,
    pub max_body: usize,
    /// The feed's points and their stations (hydro-met formats only).
    pub points: Arc<crate::hydromet::PointMap>,
}

/// Shared by every source.
#[derive(Clone)]
pub struct PollerContext {
    pub client: reqwest::Client,
    pub pipeline: Pipeline,
    pub store: Store,
    pub bulletins: Arc<BulletinSettings>,
    pub province: String,
    pub communes: Arc<Vec<domain::CommuneCode>>,
    pub max_batch: usize,
    pub host_pause: Duration,
    hosts: Arc<Mutex<HashMap<String, Instant>>>,
    /// One poller per source.
    pub lease: SourceLease,
    /// CAP documents already fetched from feeds, per source.
    links: Arc<Mutex<std::collections::HashSet<(String, String)>>>,
}

impl PollerContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        user_agent: &str,
        pipeline: Pipeline,
        store: Store,
        bulletins: Arc<BulletinSettings>,
        province: String,
        communes: Arc<Vec<domain::CommuneCode>>,
        max_batch: usize,
        host_pause: Duration,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .user_agent(user_agent)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()?;
        // One poller per source among all instances on the database (on SQLite, one
        // process: the local lease is all there is).
        let lease = SourceLease::Shared(store.clone());
        Ok(Self {
            client,
            pipeline,
            store,
            bulletins,
            province,
            communes,
            max_batch,
            host_pause,
            hosts: Arc::new(Mutex::new(HashMap::new())),
            lease,
            links: Arc::new(Mutex::new(std::collections::HashSet::new())),
        })
    }

    /// Whether `url` was already fetched for `source`.
    async fn seen_link(&self, source: &str, url: &str) -> bool {
        self.links
            .lock()
            .await
            .contains(&(source.to_owned(), url.to_owned()))
    }

    /// Remembers that `url` was fetched for `source` (not refetched while the process lives).
    async fn mark_link(&self, source: &str, url: &str) {
        self.links
            .lock()
            .await
            .insert((source.to_owned(), url.to_owned()));
    }

    /// Waits until `host_pause` has passed since the last request to `host`.
    async fn pace(&self, host: &str) {
        let mut hosts = self.hosts.lock().await;
        let now = Instant::now();
        let at = match hosts.get(host) {
            Some(last) if *last + self.host_pause > now => *last + self.host_pause,
            _ => now,
        };
        hosts.insert(host.to_owned(), at);
        drop(hosts);
        tokio::time::sleep_until(at).await;
    }
}

/// The delay before the next poll after `failures` consecutive failures: the interval
/// doubled per failure, capped at one hour, with ±25 % jitter.
pub fn backoff(interval: Duration, failures: u32, jitter_unit: f64) -> Duration {
    let base = interval
        .saturating_mul(1u32 << failures.min(10))
        .min(Duration::from_secs(3600));
    base.mul_f64(0.75 + 0.5 * jitter_unit.clamp(0.0, 1.0))
}

/// How long after a bulletin's announced next issue the source is polled, so that the
/// new bulletin is there when we ask.
pub const NEXT_ISSUE_GRACE: Duration = Duration::from_secs(30);

/// The delay before the next poll. After failures, [`backoff`]. After a success, the
/// interval, or sooner where a bulletin announced its next issue before that (never
/// later: an unannounced bulletin must not wait for the announced one).
pub fn next_delay(
    interval: Duration,
    failures: u32,
    jitter_unit: f64,
    next_issue: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Duration {
    if failures > 0 {
        return backoff(interval, failures - 1, jitter_unit);
    }
    match next_issue.and_then(|t| (t - now).to_std().ok()) {
        Some(until) => interval.min(until + NEXT_ISSUE_GRACE),
        None => interval,
    }
}

/// Who may poll a source: one poller per source at a time. In one process the local
/// lease does it; with several instances on PostgreSQL, a session advisory lock per source
/// ([`Store::try_singleton`]) is taken as well, and the poll loop does not change.
#[derive(Clone, Default)]
pub enum SourceLease {
    #[default]
    Local,
    /// The local lease, and the database's lock shared by every instance.
    Shared(Store),
}

static LOCAL_LEASES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// A held lease; dropping it lets another poller take the source.
pub struct LeaseGuard {
    id: String,
    shared: Option<store::SingletonLock>,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Ok(mut held) = LOCAL_LEASES.lock() {
            held.retain(|h| h != &self.id);
        }
    }
}

impl LeaseGuard {
    /// Whether the lease is still held (a shared lock is lost with its connection).
    pub async fn still_held(&mut self) -> bool {
        match &mut self.shared {
            None => true,
            Some(lock) => lock.still_held().await,
        }
    }
}

impl SourceLease {
    /// Takes the lease on `id`, or `None` if another poller (here or in another
    /// instance) holds it, or the shared lock cannot be asked for now.
    pub async fn try_acquire(&self, id: &str) -> Option<LeaseGuard> {
        let mut guard = {
            let mut held = LOCAL_LEASES.lock().ok()?;
            if held.iter().any(|h| h == id) {
                return None;
            }
            held.push(id.to_owned());
            LeaseGuard {
                id: id.to_owned(),
                shared: None,
            }
        };
        if let Self::Shared(store) = self {
            match store.try_singleton(&format!("poller:{id}")).await {
                Ok(Some(lock)) => guard.shared = Some(lock),
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(feed = %id, error = %e, "cannot ask the database for this source's lock");
                    return None;
                }
            }
        }
        Some(guard)
    }
}

/// How often a poller without its source's lease asks again: a killed holder's lock is
/// freed as soon as its connection drops, and the source should not wait a whole interval.
const LEASE_RETRY: Duration = Duration::from_secs(5);

fn jitter() -> f64 {
    (uuid::Uuid::new_v4().as_u128() % 10_000) as f64 / 10_000.0
}

/// The validators of a fetched body, for the next conditional GET.
struct Polled {
    etag: Option<String>,
    last_modified: Option<String>,
}

async fn fetch(
    ctx: &PollerContext,
    src: &PollSource,
    etag: Option<&str>,
    modified: Option<&str>,
) -> Result<Option<(Vec<u8>, Polled)>, String> {
    let mut req = ctx.client.get(&src.url).timeout(src.timeout);
    if let Some(e) = etag {
        req = req.header(reqwest::header::IF_NONE_MATCH, e);
    }
    if let Some(m) = modified {
        req = req.header(reqwest::header::IF_MODIFIED_SINCE, m);
    }
    let mut resp = req.send().await.map_err(|e| {
        if e.is_timeout() {
            format!("timeout after {} s", src.timeout.as_secs_f32())
        } else if e.is_connect() {
            format!("cannot connect: {e}")
        } else {
            format!("request failed: {e}")
        }
    })?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(None);
    }
    if !status.is_success() {
        // The first bytes of an error body usually say why (Open-Meteo's `reason`).
        let mut excerpt = Vec::new();
        while excerpt.len() < 300 {
            match resp.chunk().await {
                Ok(Some(c)) => excerpt.extend_from_slice(&c),
                _ => break,
            }
        }
        excerpt.truncate(300);
        let text: String = String::from_utf8_lossy(&excerpt)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let text = text.trim();
        return Err(if text.is_empty() {
            format!("HTTP {}", status.as_u16())
        } else {
            format!("HTTP {}: {text}", status.as_u16())
        });
    }
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let etag = header(reqwest::header::ETAG);
    let last_modified = header(reqwest::header::LAST_MODIFIED);
    if resp.content_length().is_some_and(|n| n > src.max_body as u64) {
        return Err(format!("body over {} bytes", src.max_body));
    }
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > src.max_body {
                    return Err(format!("body over {} bytes", src.max_body));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) if e.is_timeout() => {
                return Err(format!(
                    "timeout after {} s while reading the body",
                    src.timeout.as_secs_f32()
                ));
            }
            Err(e) => return Err(format!("body truncated: {e}")),
        }
    }
    Ok(Some((body, Polled { etag, last_modified })))
}

/// What one poll took in.
#[derive(Debug, Default)]
struct Intake {
    accepted: i64,
    rejected: i64,
    /// The soonest next issue that a bulletin of this poll announced.
    next_issue: Option<DateTime<Utc>>,
}

impl Intake {
    fn counts(accepted: i64, rejected: i64) -> Self {
        Self {
            accepted,
            rejected,
            next_issue: None,
        }
    }
}

/// At most this many refused values of one poll are recorded one by one; the rest are counted.
const MAX_RECORDED_PER_POLL: usize = 20;

/// Ties decoded hydro-met samples to stations and accepts them; every refused value is
/// recorded for operators (up to [`MAX_RECORDED_PER_POLL`], then a count).
async fn ingest_samples(
    ctx: &PollerContext,
    src: &PollSource,
    decoded: &crate::hydromet::Decoded,
    now: DateTime<Utc>,
) -> Result<Intake, (String, i64)> {
    let source = Source {
        name: format!("feed:{}", src.id),
        alert_status: domain::AlertStatus::Actual,
    };
    let (outcome, errors) = match decoded.kind {
        crate::hydromet::SampleKind::Observed => {
            let (obs, errors) = src.points.observations(decoded, now);
            let n = obs.len() as i64;
            let r = ctx.pipeline.accept(obs, &source, now).await;
            (r.map_err(|e| (format!("ingest: {e}"), n)), errors)
        }
        crate::hydromet::SampleKind::Forecast => {
            let (fc, errors) = src.points.forecasts(decoded, now);
            let n = fc.len() as i64;
            let r = ctx.pipeline.accept_forecasts(&fc, &source, now).await;
            (r.map_err(|e| (format!("ingest: {e}"), n)), errors)
        }
    };
    for e in errors.iter().take(MAX_RECORDED_PER_POLL) {
        record(ctx, &src.id, &format!("{}: {}", e.field, e.detail)).await;
    }
    if errors.len() > MAX_RECORDED_PER_POLL {
        let more = errors.len() - MAX_RECORDED_PER_POLL;
        record(ctx, &src.id, &format!("{more} more values refused in this poll")).await;
    }
    let report = outcome?;
    // Readings that quality control flagged are stored (and shown to officers), not refused.
    Ok(Intake::counts(report.stored as i64, errors.len() as i64))
}

/// Records a refused item of a feed where operators see it (`GET /api/v1/rejections`).
async fn record(ctx: &PollerContext, feed: &str, reason: &str) {
    tracing::warn!(feed, reason, "feed item refused");
    if let Err(err) = ctx.store.record_rejection("feed", feed, reason, Utc::now()).await {
        tracing::error!(feed, error = %err, "recording a refused feed item failed");
    }
}

/// Parses and accepts a body; returns what it took in or the reason it was refused whole.
async fn ingest_body(ctx: &PollerContext, src: &PollSource, body: &[u8]) -> Result<Intake, (String, i64)> {
    let now = Utc::now();
    match src.format {
        FeedFormat::OpenMeteo | FeedFormat::OpenMeteoFlood | FeedFormat::UsgsOgc | FeedFormat::UsgsIv => {
            let decoded = decode_hydromet(src.format, body).map_err(|e| (format!("parse: {e}"), 1))?;
            ingest_samples(ctx, src, &decoded, now).await
        }
        FeedFormat::StationJson | FeedFormat::StationCsv => {
            let parsed = if src.format == FeedFormat::StationJson {
                crate::station::parse_json(body, now, ctx.max_batch)
            } else {
                let text = std::str::from_utf8(body)
                    .map_err(|e| (format!("parse: the body is not UTF-8: {e}"), 1))?;
                crate::station::parse_csv(text, now, ctx.max_batch)
            };
            let observations = parsed.map_err(|errors| {
                let n = errors.len() as i64;
                let first = errors
                    .first()
                    .map(|e| format!("{}: {}", e.field, e.detail))
                    .unwrap_or_default();
                (format!("parse: {n} bad rows; the first: {first}"), n)
            })?;
            let source = Source {
                name: format!("feed:{}", src.id),
                alert_status: domain::AlertStatus::Actual,
            };
            let n = observations.len() as i64;
            let report = ctx
                .pipeline
                .accept(observations, &source, now)
                .await
                .map_err(|e| (format!("ingest: {e}"), n))?;
            Ok(Intake::counts(report.stored as i64, 0))
        }
        FeedFormat::Cap => {
            let cap = crate::cap::parse_cap(body).map_err(|e| (format!("parse: {e}"), 1))?;
            let accepted = accept_cap(ctx, &src.id, &src.url, &cap)
                .await
                .map_err(|e| (e, 1))?;
            Ok(Intake {
                accepted,
                rejected: 0,
                next_issue: crate::bulletin::next_issue(&cap, &ctx.bulletins, now),
            })
        }
        FeedFormat::Nws => {
            let alerts = crate::nws::parse_nws(body).map_err(|e| (format!("parse: {e}"), 1))?;
            let next_issue = alerts
                .iter()
                .filter_map(|a| crate::bulletin::next_issue(a, &ctx.bulletins, now))
                .min();
            let (accepted, rejected) = tally(
                ctx,
                alerts
                    .iter()
                    .map(|a| (a.identifier.clone(), accept_cap(ctx, &src.id, &src.url, a))),
                &src.id,
            )
            .await;
            Ok(Intake {
                accepted,
                rejected,
                next_issue,
            })
        }
        FeedFormat::CapFeed => {
            let entries = crate::feed::parse_feed(body).map_err(|e| (format!("parse: {e}"), 1))?;
            let mut results = Vec::new();
            for entry in entries {
                match entry.cap {
                    crate::feed::EntryCap::Embedded(cap) => {
                        results.push((entry.id, accept_cap(ctx, &src.id, &src.url, &cap).await))
                    }
                    crate::feed::EntryCap::Linked(url) => {
                        // A CAP document is fetched once; later polls skip it.
                        if !ctx.seen_link(&src.id, &url).await {
                            let doc = fetch_linked(ctx, src, &url).await;
                            let outcome = match doc {
                                Ok(cap) => {
                                    ctx.mark_link(&src.id, &url).await;
                                    accept_cap(ctx, &src.id, &url, &cap).await
                                }
                                Err(e) => Err(e),
                            };
                            results.push((url, outcome));
                        }
                    }
                    crate::feed::EntryCap::Summary(_) | crate::feed::EntryCap::None => {}
                }
            }
            let (accepted, rejected) = tally(
                ctx,
                results.into_iter().map(|(id, r)| (id, std::future::ready(r))),
                &src.id,
            )
            .await;
            Ok(Intake::counts(accepted, rejected))
        }
    }
}

/// Validates a CAP alert fetched from `url` by `feed`, maps it to bulletins and accepts
/// them; returns how many were new. It is authoritative only if `url` is HTTPS on a host
/// configured for its sender and its XML signature holds ([`crate::bulletin::vouch`]); a
/// signature that does not is recorded for operators, and the bulletin taken as a
/// pre-warning.
async fn accept_cap(
    ctx: &PollerContext,
    feed: &str,
    url: &str,
    cap: &crate::cap::CapAlert,
) -> Result<i64, String> {
    let now = Utc::now();
    if let Some(f) = crate::cap::validate(cap, now).into_iter().find(|f| f.is_fatal()) {
        return Err(format!("{}: {}", f.rule, f.detail));
    }
    let mut change = crate::bulletin::to_bulletins(cap, &ctx.bulletins, &ctx.province, &ctx.communes)
        .map_err(|e| format!("bulletin: {e}"))?;
    let trust = crate::bulletin::vouch(&ctx.bulletins, cap, crate::bulletin::Channel::Polled { url });
    change.authoritative = trust.is_ok();
    if let Err(why) = trust.as_ref()
        && why.is_signature()
    {
        let reason = format!("bulletin {} taken only as a pre-warning: {why}", cap.identifier);
        record(ctx, feed, &reason).await;
    }
    let report = ctx
        .pipeline
        .accept_bulletin(&change, now)
        .await
        .map_err(|e| format!("ingest: {e}"))?;
    Ok(report.stored as i64)
}

/// Fetches a CAP document linked from a feed, through the same pacing and limits.
async fn fetch_linked(
    ctx: &PollerContext,
    src: &PollSource,
    url: &str,
) -> Result<crate::cap::CapAlert, String> {
    let host = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    ctx.pace(&host).await;
    let linked = PollSource {
        url: url.to_owned(),
        ..src.clone()
    };
    match fetch(ctx, &linked, None, None).await? {
        Some((body, _)) => crate::cap::parse_cap(&body).map_err(|e| format!("linked {url}: {e}")),
        None => Err(format!("linked {url}: 304 without a validator")),
    }
}

/// Counts entries accepted and rejected; each rejection is logged and recorded for operators.
async fn tally<F>(ctx: &PollerContext, items: impl Iterator<Item = (String, F)>, feed: &str) -> (i64, i64)
where
    F: std::future::Future<Output = Result<i64, String>>,
{
    let (mut accepted, mut rejected) = (0, 0);
    for (id, outcome) in items {
        match outcome.await {
            Ok(n) => accepted += n,
            Err(e) => {
                rejected += 1;
                record(ctx, feed, &format!("entry {id}: {e}")).await;
            }
        }
    }
    (accepted, rejected)
}

/// Polls one source until `shutdown`. One task per source: a source's failure or slowness
/// never delays another. The source is polled only while its lease is held.
pub async fn run_source(ctx: PollerContext, src: PollSource, shutdown: CancellationToken) {
    loop {
        let mut said = false;
        let lease = loop {
            match ctx.lease.try_acquire(&src.id).await {
                Some(guard) => break guard,
                None => {
                    if !said {
                        tracing::info!(feed = %src.id, "another poller holds this source; waiting");
                        said = true;
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(LEASE_RETRY.min(src.interval)) => {}
                    }
                }
            }
        };
        tracing::info!(feed = %src.id, "polling this source");
        if poll_while_held(&ctx, &src, lease, &shutdown).await {
            return;
        }
    }
}

/// Polls `src` while `lease` is held. True when `shutdown` ended it, false when the
/// lease was lost (the caller takes it again before polling on).
async fn poll_while_held(
    ctx: &PollerContext,
    src: &PollSource,
    mut lease: LeaseGuard,
    shutdown: &CancellationToken,
) -> bool {
    let host = reqwest::Url::parse(&src.url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let health = match ctx
        .store
        .source_health(&src.id, &src.url, src.format.code())
        .await
    {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(feed = %src.id, error = %e, "source health unavailable; source not polled");
            return true;
        }
    };
    let (mut etag, mut modified) = (health.etag, health.last_modified);
    let mut failures = u32::try_from(health.consecutive_failures).unwrap_or(0);
    loop {
        ctx.pace(&host).await;
        let now = Utc::now();
        let outcome = match fetch(ctx, src, etag.as_deref(), modified.as_deref()).await {
            Ok(None) => Ok(Intake::default()),
            Ok(Some((body, polled))) => {
                etag = polled.etag.or(etag);
                modified = polled.last_modified.or(modified);
                ingest_body(ctx, src, &body).await
            }
            Err(e) => Err((e, 0)),
        };
        let wait = match &outcome {
            Ok(intake) => next_delay(src.interval, 0, 0.5, intake.next_issue, now),
            Err(_) => next_delay(src.interval, failures + 1, jitter(), None, now),
        };
        let next = now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(1));
        let recorded = match outcome {
            Ok(Intake {
                accepted,
                rejected,
                next_issue,
            }) => {
                failures = 0;
                tracing::debug!(feed = %src.id, accepted, ?next_issue, "feed polled");
                ctx.store
                    .source_succeeded(
                        &src.id,
                        etag.as_deref(),
                        modified.as_deref(),
                        accepted,
                        rejected,
                        now,
                        next,
                    )
                    .await
            }
            Err((error, rejected)) => {
                failures = failures.saturating_add(1);
                tracing::warn!(feed = %src.id, error = %error, failures, retry_in_s = wait.as_secs(), "feed failed");
                ctx.store
                    .source_failed(&src.id, &error, rejected, now, next)
                    .await
            }
        };
        if let Err(e) = recorded {
            tracing::error!(feed = %src.id, error = %e, "source health could not be recorded");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return true,
            _ = tokio::time::sleep(wait) => {}
        }
        if !lease.still_held().await {
            tracing::warn!(feed = %src.id, "lost this source's lease (its database connection broke); taking it again");
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announced_next_issue_brings_the_poll_forward_but_never_delays_it() {
        let now: DateTime<Utc> = "2026-10-09T09:00:00Z".parse().unwrap();
        let hour = Duration::from_secs(3600);
        let at = |m: i64| Some(now + chrono::Duration::minutes(m));
        assert_eq!(next_delay(hour, 0, 0.5, None, now), hour);
        assert_eq!(next_delay(hour, 0, 0.5, at(10), now), Duration::from_secs(630));
        assert_eq!(
            next_delay(hour, 0, 0.5, at(180), now),
            hour,
            "never later than the interval"
        );
        assert_eq!(
            next_delay(hour, 0, 0.5, at(-5), now),
            hour,
            "a past announcement is ignored"
        );
        let minute = Duration::from_secs(60);
        assert_eq!(
            next_delay(minute, 2, 0.5, at(1), now),
            2 * minute,
            "failures back off"
        );
    }

    #[tokio::test]
    async fn one_poller_per_source_at_a_time() {
        let lease = SourceLease::Local;
        let first = lease.try_acquire("lease-test").await;
        assert!(first.is_some());
        assert!(lease.try_acquire("lease-test").await.is_none());
        assert!(lease.try_acquire("lease-test-other").await.is_some());
        drop(first);
        assert!(lease.try_acquire("lease-test").await.is_some());
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let i = Duration::from_secs(60);
        assert_eq!(backoff(i, 0, 0.5), Duration::from_secs(60));
        assert_eq!(backoff(i, 1, 0.5), Duration::from_secs(120));
        assert_eq!(backoff(i, 3, 0.0), Duration::from_secs(360));
        assert_eq!(backoff(i, 3, 1.0), Duration::from_secs(600));
        assert_eq!(backoff(i, 30, 0.5), Duration::from_secs(3600));
    }
}
