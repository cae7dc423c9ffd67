//! The MQTT link, shared by the service's loudspeaker channel (`dispatch`) and the
//! loudspeaker agent (`receiver`): the one task that owns the broker connection. Others
//! reach it through a cloneable [`MqttHandle`]; inbound messages ([`InboundMessage`]) leave
//! it through a channel, so nothing ever blocks inside the rumqttc event loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use protocol::InboundMessage;

/// A broker address: `mqtt://host:port` or `tcp://host:port` (port 1883 if omitted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    /// `mqtts://`: TLS (port 8883 unless given).
    pub tls: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerUrlError {
    #[error("broker url {0:?} must start with mqtt://, tcp:// or (TLS) mqtts://")]
    Scheme(String),
    #[error("broker url {0:?} has no host")]
    NoHost(String),
    #[error("broker url {0:?} has an invalid port")]
    Port(String),
}

impl BrokerUrl {
    pub fn parse(url: &str) -> Result<Self, BrokerUrlError> {
        let (rest, tls) = match url.strip_prefix("mqtts://") {
            Some(rest) => (rest, true),
            None => (
                url.strip_prefix("mqtt://")
                    .or_else(|| url.strip_prefix("tcp://"))
                    .ok_or_else(|| BrokerUrlError::Scheme(url.to_owned()))?,
                false,
            ),
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| BrokerUrlError::Port(url.to_owned()))?),
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() || host.contains(['/', '@']) {
            return Err(BrokerUrlError::NoHost(url.to_owned()));
        }
        Ok(Self {
            host: host.trim_start_matches('[').trim_end_matches(']').to_owned(),
            port,
            tls,
        })
    }
}

/// What a TLS connection (`mqtts://`) trusts and shows, as PEM. Without a CA, the
/// system's roots; a client certificate needs the CA that signed the broker's.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsMaterial {
    pub ca_pem: Option<Vec<u8>>,
    /// The client certificate and its private key, for brokers that require one.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field(
                "ca_pem",
                &self.ca_pem.as_ref().map(|c| format!("{} bytes", c.len())),
            )
            .field("client", &self.client.as_ref().map(|_| "<certificate and key>"))
            .finish()
    }
}

/// How to connect.
#[derive(Clone, Debug)]
pub struct MqttSettings {
    pub broker: BrokerUrl,
    pub client_id: String,
    pub username: Option<String>,
    /// Never shown: `Debug` prints it redacted.
    pub password: Option<SecretString>,
    pub keep_alive: Duration,
    /// Keep the session (and QoS 1 messages queued for it) across reconnects.
    pub persistent_session: bool,
    /// Topic filters to (re)subscribe to after every connect, at QoS 1.
    pub subscriptions: Vec<String>,
    /// A message the broker publishes (retained) if the connection drops: (topic, payload).
    pub last_will: Option<(String, Vec<u8>)>,
    /// A message to publish (retained) after every connect: (topic, payload).
    pub on_connect: Option<(String, Vec<u8>)>,
    /// For `mqtts://` brokers.
    pub tls: TlsMaterial,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to the broker")]
    NotConnected,
    #[error("the MQTT connection task has stopped: {0}")]
    Closed(String),
}

/// The connection's history, as a watch: how many times it was established, and whether
/// the broker still held this client's session the last time (MQTT's CONNACK "session
/// present"). Without it, the broker lost what it kept for the client, and likely its
/// retained messages too (a restart without persistence).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Connected {
    pub count: u64,
    pub session_present: bool,
}

/// A cloneable way to reach the connection.
#[derive(Clone, Debug)]
pub struct MqttHandle {
    client: AsyncClient,
    connected: Arc<AtomicBool>,
    /// Changes at each (re)connect.
    connections: watch::Receiver<Connected>,
}

impl MqttHandle {
    /// Queues a QoS 1 publish. Acceptance by the broker is not delivery: only a
    /// receiver's receipt proves that.
    pub async fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) -> Result<(), PublishError> {
        if !self.is_connected() {
            return Err(PublishError::NotConnected);
        }
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .map_err(|e| PublishError::Closed(e.to_string()))
    }

    /// Queues a QoS 1 publish even while disconnected; the client sends it once the
    /// connection is back (unless the request queue is full, which is an error).
    pub fn enqueue(&self, topic: &str, payload: Vec<u8>, retain: bool) -> Result<(), PublishError> {
        self.client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
            .map_err(|e| PublishError::Closed(e.to_string()))
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Marks each time the connection is established (first connect and every
    /// reconnect): `changed()` on it resolves once the broker is back.
    pub fn connections(&self) -> watch::Receiver<Connected> {
        self.connections.clone()
    }

    /// Subscribes to `filter` again (QoS 1): the broker then sends its retained messages
    /// of the filter again, flagged as retained.
    pub fn resubscribe(&self, filter: &str) -> Result<(), PublishError> {
        self.client
            .try_subscribe(filter, QoS::AtLeastOnce)
            .map_err(|e| PublishError::Closed(e.to_string()))
    }

    /// Sends DISCONNECT (no last will is published).
    pub async fn disconnect(&self) {
        let _ = self.client.disconnect().await;
    }
}

/// The owner task's state; drive it with [`MqttDriver::run`].
pub struct MqttDriver {
    eventloop: EventLoop,
    client: AsyncClient,
    settings: MqttSettings,
    connected: Arc<AtomicBool>,
    connections: watch::Sender<Connected>,
    inbound: mpsc::Sender<InboundMessage>,
    /// The broker first, then its fallbacks.
    brokers: Vec<BrokerUrl>,
    current: usize,
}

/// Capacity of the inbound channel; past it, messages are dropped with an error log.
pub const INBOUND_CAPACITY: usize = 16_384;

/// Creates the handle, the driver and the inbound stream. Nothing connects until the
/// driver runs.
pub fn connect(settings: MqttSettings) -> (MqttHandle, MqttDriver, mpsc::Receiver<InboundMessage>) {
    connect_with_fallback(settings, Vec::new())
}

/// As [`connect`], with brokers to fall back to: after [`FAILURES_BEFORE_SWITCH`] failed
/// attempts in a row on one broker, the driver tries the next (and after the last, the
/// first again); it stays on whichever answers until that one fails.
pub fn connect_with_fallback(
    settings: MqttSettings,
    fallback: Vec<BrokerUrl>,
) -> (MqttHandle, MqttDriver, mpsc::Receiver<InboundMessage>) {
    let opts = options(&settings, &settings.broker);
    let (client, eventloop) = AsyncClient::new(opts, 1024);
    let connected = Arc::new(AtomicBool::new(false));
    let (connections, connections_rx) = watch::channel(Connected::default());
    let (tx, rx) = mpsc::channel(INBOUND_CAPACITY);
    let handle = MqttHandle {
        client: client.clone(),
        connected: connected.clone(),
        connections: connections_rx,
    };
    let mut brokers = vec![settings.broker.clone()];
    brokers.extend(fallback);
    let driver = MqttDriver {
        eventloop,
        client,
        settings,
        connected,
        connections,
        inbound: tx,
        brokers,
        current: 0,
    };
    (handle, driver, rx)
}

/// Failed connection attempts in a row on one broker before the next is tried.
pub const FAILURES_BEFORE_SWITCH: u32 = 2;

fn options(settings: &MqttSettings, broker: &BrokerUrl) -> MqttOptions {
    let mut opts = MqttOptions::new(&settings.client_id, &broker.host, broker.port);
    opts.set_keep_alive(settings.keep_alive);
    opts.set_clean_session(!settings.persistent_session);
    opts.set_max_packet_size(256 * 1024, 256 * 1024);
    if let (Some(u), Some(p)) = (&settings.username, &settings.password) {
        opts.set_credentials(u, p.expose_secret());
    }
    if let Some((topic, payload)) = &settings.last_will {
        opts.set_last_will(LastWill::new(topic, payload.clone(), QoS::AtLeastOnce, true));
    }
    if broker.tls {
        opts.set_transport(rumqttc::Transport::tls_with_config(
            match tls_config(&settings.tls) {
                Ok(config) => rumqttc::TlsConfiguration::Rustls(config),
                Err(e) => {
                    // Settings are checked when loaded; should this still fail, trust nothing
                    // (every connect then fails, and says so) rather than connect in the clear.
                    tracing::error!(error = %e, "mqtt TLS settings unusable; the connection will fail");
                    rumqttc::TlsConfiguration::Simple {
                        ca: Vec::new(),
                        alpn: None,
                        client_auth: None,
                    }
                }
            },
        ));
    }
    opts
}

/// Why TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the CA file holds no PEM certificate")]
    NoCa,
    #[error("a certificate cannot be read: {0}")]
    Certificate(String),
    #[error("the client key cannot be read: {0}")]
    Key(String),
    #[error("TLS cannot be set up: {0}")]
    Rustls(String),
}

/// The rustls client configuration for `tls`: the CA given (or the system's roots), and
/// the client certificate if any, with the aws-lc-rs provider (named explicitly: more than
/// one provider is compiled in, so there is no process default).
pub fn tls_config(tls: &TlsMaterial) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_pem {
        Some(ca) => {
            for cert in CertificateDer::pem_slice_iter(ca) {
                let cert = cert.map_err(|e| TlsError::Certificate(e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| TlsError::Certificate(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(TlsError::NoCa);
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_root_certificates(roots);
    let config = match &tls.client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsError::Certificate(e.to_string()))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Key(e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::Rustls(e.to_string()))?
        }
    };
    Ok(Arc::new(config))
}

impl MqttDriver {
    /// Polls the connection until `shutdown`, reconnecting with capped exponential backoff.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let name = |b: &BrokerUrl| format!("{}:{}", b.host, b.port);
        let mut broker = name(&self.brokers[0]);
        let mut failures: u32 = 0;
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => break,
                event = self.eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    failures = 0;
                    self.connected.store(true, Ordering::Release);
                    tracing::info!(broker = %broker, client_id = %self.settings.client_id, "mqtt connected");
                    self.after_connect();
                    self.connections.send_modify(|c| {
                        c.count += 1;
                        c.session_present = ack.session_present;
                    });
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let msg = InboundMessage {
                        topic: p.topic,
                        payload: p.payload.to_vec(),
                        retain: p.retain,
                        connection: self.connections.borrow().count,
                    };
                    if let Err(e) = self.inbound.try_send(msg) {
                        tracing::error!(error = %e, "inbound mqtt queue full or closed; message dropped");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    self.connected.store(false, Ordering::Release);
                    failures = failures.saturating_add(1);
                    let wait = Duration::from_millis(200u64 << failures.min(6)).min(Duration::from_secs(10));
                    tracing::warn!(broker = %broker, error = %e, retry_in_ms = wait.as_millis() as u64, "mqtt connection lost");
                    if self.brokers.len() > 1 && failures.is_multiple_of(FAILURES_BEFORE_SWITCH) {
                        self.current = (self.current + 1) % self.brokers.len();
                        let next = &self.brokers[self.current];
                        self.eventloop.mqtt_options = options(&self.settings, next);
                        broker = name(next);
                        tracing::warn!(broker = %broker, "switching to the next configured mqtt broker");
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        self.connected.store(false, Ordering::Release);
        // Best effort: a clean DISCONNECT, flushed within a short deadline.
        let _ = self.client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while self.eventloop.poll().await.is_ok() {}
        })
        .await;
    }

    fn after_connect(&self) {
        for filter in &self.settings.subscriptions {
            if let Err(e) = self.client.try_subscribe(filter, QoS::AtLeastOnce) {
                tracing::error!(filter = %filter, error = %e, "mqtt subscribe failed");
            }
        }
        if let Some((topic, payload)) = &self.settings.on_connect
            && let Err(e) = self
                .client
                .try_publish(topic, QoS::AtLeastOnce, true, payload.clone())
        {
            tracing::warn!(topic = %topic, error = %e, "mqtt on-connect publish failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_or_say_why_not() {
        assert_eq!(
            BrokerUrl::parse("mqtt://127.0.0.1:1884"),
            Ok(BrokerUrl {
                host: "127.0.0.1".into(),
                port: 1884,
                tls: false,
            })
        );
        assert_eq!(BrokerUrl::parse("tcp://broker").map(|b| b.port), Ok(1883));
        assert_eq!(
            BrokerUrl::parse("mqtts://broker.example.vn").map(|b| (b.port, b.tls)),
            Ok((8883, true))
        );
        assert!(matches!(
            BrokerUrl::parse("http://x"),
            Err(BrokerUrlError::Scheme(_))
        ));
        assert!(matches!(
            BrokerUrl::parse("mqtt://:1883"),
            Err(BrokerUrlError::NoHost(_))
        ));
        assert!(matches!(
            BrokerUrl::parse("mqtt://h:99999"),
            Err(BrokerUrlError::Port(_))
        ));
    }
}
