//! The one generic HTTP poller: per source an interval and a timeout, conditional GET
//! (ETag, Last-Modified), a body-size cap, a User-Agent with a contact, exponential backoff
//! with jitter after failures, a pause between requests to the same host, and health
//! persisted per source. The format's pure parser does the rest.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use store::Store;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::bulletin::BulletinSettings;
use crate::{Pipeline, Source};

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
}

impl FeedFormat {
    pub fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "cap" => Self::Cap,
            "atom" | "rss" => Self::CapFeed,
            "nws" => Self::Nws,
            "station-json" => Self::StationJson,
            "station-csv" => Self::StationCsv,
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
        }
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
        return Err(format!("HTTP {}", status.as_u16()));
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

/// Parses and accepts a body; returns (accepted, rejected) or the reason it was refused whole.
async fn ingest_body(
    ctx: &PollerContext,
    src: &PollSource,
    body: &[u8],
) -> Result<(i64, i64), (String, i64)> {
    let now = Utc::now();
    match src.format {
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
            Ok((report.stored as i64, report.flagged.len() as i64))
        }
        FeedFormat::Cap => {
            let cap = crate::cap::parse_cap(body).map_err(|e| (format!("parse: {e}"), 1))?;
            accept_cap(ctx, &cap).await.map(|n| (n, 0)).map_err(|e| (e, 1))
        }
        FeedFormat::Nws => {
            let alerts = crate::nws::parse_nws(body).map_err(|e| (format!("parse: {e}"), 1))?;
            Ok(tally(
                ctx,
                alerts.iter().map(|a| (a.identifier.clone(), accept_cap(ctx, a))),
                &src.id,
            )
            .await)
        }
        FeedFormat::CapFeed => {
            let entries = crate::feed::parse_feed(body).map_err(|e| (format!("parse: {e}"), 1))?;
            let mut results = Vec::new();
            for entry in entries {
                match entry.cap {
                    crate::feed::EntryCap::Embedded(cap) => {
                        results.push((entry.id, accept_cap(ctx, &cap).await))
                    }
                    crate::feed::EntryCap::Linked(url) => {
                        // A CAP document is fetched once; later polls skip it.
                        if !ctx.seen_link(&src.id, &url).await {
                            let doc = fetch_linked(ctx, src, &url).await;
                            let outcome = match doc {
                                Ok(cap) => {
                                    ctx.mark_link(&src.id, &url).await;
                                    accept_cap(ctx, &cap).await
                                }
                                Err(e) => Err(e),
                            };
                            results.push((url, outcome));
                        }
                    }
                    crate::feed::EntryCap::Summary(_) | crate::feed::EntryCap::None => {}
                }
            }
            Ok(tally(
                ctx,
                results.into_iter().map(|(id, r)| (id, std::future::ready(r))),
                &src.id,
            )
            .await)
        }
    }
}

/// Validates a CAP alert, maps it to bulletins and accepts them; returns how many were new.
async fn accept_cap(ctx: &PollerContext, cap: &crate::cap::CapAlert) -> Result<i64, String> {
    let now = Utc::now();
    if let Some(f) = crate::cap::validate(cap, now).into_iter().find(|f| f.is_fatal()) {
        return Err(format!("{}: {}", f.rule, f.detail));
    }
    let change = crate::bulletin::to_bulletins(cap, &ctx.bulletins, &ctx.province, &ctx.communes)
        .map_err(|e| format!("bulletin: {e}"))?;
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
                tracing::warn!(feed, entry = %id, error = %e, "feed entry refused");
                let reason = format!("entry {id}: {e}");
                if let Err(err) = ctx
                    .store
                    .record_rejection("feed", feed, &reason, Utc::now())
                    .await
                {
                    tracing::error!(feed, error = %err, "recording a refused feed entry failed");
                }
            }
        }
    }
    (accepted, rejected)
}

/// Polls one source until `shutdown`. One task per source: a source's failure or slowness
/// never delays another. (A lock seam for several instances goes where the loop starts a
/// poll: today a single instance polls everything.)
pub async fn run_source(ctx: PollerContext, src: PollSource, shutdown: CancellationToken) {
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
            return;
        }
    };
    let (mut etag, mut modified) = (health.etag, health.last_modified);
    let mut failures = u32::try_from(health.consecutive_failures).unwrap_or(0);
    loop {
        ctx.pace(&host).await;
        let now = Utc::now();
        let outcome = match fetch(&ctx, &src, etag.as_deref(), modified.as_deref()).await {
            Ok(None) => Ok((0, 0)),
            Ok(Some((body, polled))) => {
                etag = polled.etag.or(etag);
                modified = polled.last_modified.or(modified);
                ingest_body(&ctx, &src, &body).await
            }
            Err(e) => Err((e, 0)),
        };
        let wait = match &outcome {
            Ok(_) => src.interval,
            Err(_) => backoff(src.interval, failures, jitter()),
        };
        let next = now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(1));
        let recorded = match outcome {
            Ok((accepted, rejected)) => {
                failures = 0;
                tracing::debug!(feed = %src.id, accepted, "feed polled");
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
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
