//! The HTTP server: the API's router on a listener of our own, HTTP/1.1 through hyper,
//! with what `axum::serve` does not give: a deadline for a request's headers (a client
//! that dribbles them, slowloris-style, is cut off), a bound on open connections, and
//! HTTPS (rustls) with a certificate and key read from files and read again on SIGHUP
//! or when the files change.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How the server treats connections (`[http]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request's headers must arrive within this (and a TLS handshake too).
    pub header_read_timeout: Duration,
    /// Connections open at once; more are closed as they come.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

/// HTTPS: PEM files for the certificate chain and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The TLS configuration in force, replaced when the files are read again.
pub struct TlsReloader {
    files: TlsFiles,
    current: RwLock<(Arc<rustls::ServerConfig>, Option<SystemTime>)>,
}

impl TlsReloader {
    /// Reads the files; refuses to start without a usable certificate and key.
    pub fn new(files: TlsFiles) -> Result<Arc<Self>> {
        let config = load_tls(&files)?;
        let stamp = stamp(&files);
        Ok(Arc::new(Self {
            files,
            current: RwLock::new((Arc::new(config), stamp)),
        }))
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let guard = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tokio_rustls::TlsAcceptor::from(guard.0.clone())
    }

    /// Reads the files again; on an error the configuration in force stays (and the error
    /// is logged), so that a half-written certificate never takes HTTPS down.
    pub fn reload(&self, why: &str) {
        match load_tls(&self.files) {
            Ok(config) => {
                let mut guard = self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                *guard = (Arc::new(config), stamp(&self.files));
                tracing::info!(cert = %self.files.cert_file.display(), why, "TLS certificate loaded");
            }
            Err(e) => tracing::error!(error = %format!("{e:#}"), why,
                "TLS certificate not reloaded; the one in force stays"),
        }
    }

    /// Reloads if either file changed since it was last read.
    fn reload_if_changed(&self) {
        let seen = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1;
        if stamp(&self.files) != seen {
            self.reload("the certificate or key file changed");
        }
    }
}

/// The newer modification time of the two files.
fn stamp(files: &TlsFiles) -> Option<SystemTime> {
    let m = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    m(&files.cert_file).max(m(&files.key_file))
}

/// Whether the certificate and key can be read, parsed and go together: what
/// `check-config` says before the service would fail to start on them.
pub fn check_tls_files(files: &TlsFiles) -> Result<()> {
    load_tls(files).map(drop)
}

fn load_tls(files: &TlsFiles) -> Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&files.cert_file)
        .with_context(|| format!("reading the TLS certificate {}", files.cert_file.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading the TLS certificate {}", files.cert_file.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{} holds no certificate",
        files.cert_file.display()
    );
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .with_context(|| format!("reading the TLS key {}", files.key_file.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not go together")
}

/// Serves `router` on `listener` until `stop`; then closes idle connections, lets
/// requests in flight finish within `grace`, and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<TlsReloader>>,
    limits: HttpLimits,
    stop: CancellationToken,
    grace: Duration,
) {
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let tracker = tokio_util::task::TaskTracker::new();
    if let Some(tls) = &tls {
        tracker.spawn(watch_tls(tls.clone(), stop.clone()));
    }
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of files, or a connection reset before it was taken: go on.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(peer = %peer, max = limits.max_connections, "too many HTTP connections; one refused");
            drop(stream);
            continue;
        };
        let router = router.clone();
        let tls = tls.as_ref().map(|t| t.acceptor());
        let stop = stop.clone();
        let header_read_timeout = limits.header_read_timeout;
        tracker.spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(stream, peer, router, header_read_timeout, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(header_read_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, peer, router, header_read_timeout, stop).await;
                        }
                        Ok(Err(e)) => tracing::debug!(peer = %peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(peer = %peer, "TLS handshake too slow; closed"),
                    }
                }
            }
        });
    }
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            grace_s = grace.as_secs(),
            "HTTP requests still running at the end of the grace time"
        );
    }
}

/// One connection: HTTP/1.1 with the header deadline, the client's address in each
/// request (`ConnectInfo`), closed gracefully on `stop`.
async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    router: Router,
    header_read_timeout: Duration,
    stop: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(req.map(axum::body::Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(peer = %peer, error = %e, "HTTP connection ended with an error");
            }
        }
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Reads the certificate again on SIGHUP, and when its files change (checked every 30 s).
async fn watch_tls(tls: Arc<TlsReloader>, stop: CancellationToken) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "no SIGHUP handler; the certificate is reloaded when its files change");
            None
        }
    };
    let mut every = tokio::time::interval(Duration::from_secs(30));
    every.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => tls.reload_if_changed(),
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                tls.reload("SIGHUP");
            }
        }
    }
}
