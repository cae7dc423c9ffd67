//! Wiring: opens the store, loads the keys, starts the broker (embedded or not), the MQTT
//! owner, the outbox worker, the inbound consumer, the demo feed and the HTTP server, and
//! stops them all within the grace period.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use anyhow::{Context, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::Utc;
use dispatch::wire::key_id;
use dispatch::{Topics, inbound, worker};
use mqtt::{BrokerUrl, MqttSettings};
use store::Store;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{MqttMode, Settings};
use crate::secrets;

/// A running service.
pub struct App {
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// Where receivers connect: the embedded broker, or the external one.
    pub broker: BrokerUrl,
    /// The public signing key's id and base64 value.
    pub key_id: String,
    pub public_key_b64: String,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    grace: std::time::Duration,
    store: Store,
    #[cfg(feature = "embedded-broker")]
    embedded: Option<crate::broker::EmbeddedBroker>,
    /// On the embedded broker, the service's own credentials (this process's alone).
    pub broker_service: Option<crate::broker::ServiceIdentity>,
}

impl App {
    /// Starts every part of the service and returns once the HTTP listener is bound.
    pub async fn start(settings: Settings) -> Result<App> {
        let shutdown = CancellationToken::new();
        std::fs::create_dir_all(&settings.data_dir)
            .with_context(|| format!("creating data directory {}", settings.data_dir.display()))?;
        let _ = std::fs::set_permissions(&settings.data_dir, std::fs::Permissions::from_mode(0o700));

        let store = Store::open(&settings.database_url)
            .await
            .context("opening the database")?;
        tracing::info!(data_dir = %settings.data_dir.display(), "database ready, migrations applied");
        // A SQLite database made before files were made 0600 (or by another tool) is
        // brought to 0600, with its journal.
        if let Some(path) = settings.database_url.strip_prefix("sqlite://") {
            for suffix in ["", "-wal", "-shm"] {
                let file = format!("{path}{suffix}");
                if std::path::Path::new(&file).exists() {
                    let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600));
                }
            }
        }

        let keyring_dir = settings.data_dir.join("keyring");
        let mut keyring = crate::keyring::Keyring::load_or_init(
            &keyring_dir,
            &settings.signing_key_file,
            chrono::Utc::now(),
        )?;
        let signer = Arc::new(keyring.active_signer(&keyring_dir)?);
        tracing::info!(
            key_id = signer.key_id(),
            keys = keyring.published().len(),
            "signing keyring loaded"
        );
        // The key set receivers get (protocol §10a), signed again if the keyring changed
        // since it was last signed.
        keyring.refresh_key_set(&keyring_dir, settings.province.as_str(), chrono::Utc::now())?;
        let (provisioning_id, provisioning_b64) = crate::keyring::provisioning_public(&keyring_dir)?;
        let mut provisioning = dispatch::TrustedKeys::default();
        provisioning.add_base64(&provisioning_id, &provisioning_b64)?;
        let mut published = keyring.published();
        published.push((provisioning_id, provisioning_b64, "provisioning".to_owned()));
        let public_keys = settings.data_dir.join("signing-keys.pub.json");
        secrets::write_public_keys(&public_keys, &published)?;
        tracing::info!(path = %public_keys.display(), "public signing keys for receivers written");
        secrets::bootstrap_admin_token(&store, &settings.data_dir).await?;

        #[cfg(feature = "embedded-broker")]
        let mut embedded = None;
        let mut broker_service = None;
        let fallback: Vec<BrokerUrl> = match &settings.mqtt.mode {
            MqttMode::External { fallback, .. } => fallback.iter().cloned().collect(),
            MqttMode::Embedded { .. } => vec![],
        };
        let broker = match &settings.mqtt.mode {
            MqttMode::External { url, .. } => url.clone(),
            #[cfg(feature = "embedded-broker")]
            MqttMode::Embedded { listen } => {
                let service = crate::broker::ServiceIdentity::new(&settings.mqtt.client_id)?;
                let b = crate::broker::start(
                    *listen,
                    service.clone(),
                    Topics::new(&settings.mqtt.topic_prefix, settings.province.clone())?,
                    store.clone(),
                )
                .await?;
                broker_service = Some(service);
                let url = BrokerUrl {
                    host: b.addr.ip().to_string(),
                    port: b.addr.port(),
                    tls: false,
                };
                // The embedded broker forgot its retained alerts when it last stopped.
                let n = store.requeue_live(Utc::now()).await?;
                if n > 0 {
                    tracing::info!(
                        deliveries = n,
                        "re-queued live alerts to rebuild retained messages"
                    );
                }
                embedded = Some(b);
                url
            }
            #[cfg(not(feature = "embedded-broker"))]
            MqttMode::Embedded { .. } => anyhow::bail!("this build has no embedded broker"),
        };

        let topics = Topics::new(&settings.mqtt.topic_prefix, settings.province.clone())?;
        let (mqtt, driver, inbound_rx) = mqtt::connect_with_fallback(
            MqttSettings {
                broker: broker.clone(),
                client_id: settings.mqtt.client_id.clone(),
                username: broker_service
                    .as_ref()
                    .map(|s| s.username.clone())
                    .or_else(|| settings.mqtt.username.clone()),
                password: broker_service
                    .as_ref()
                    .map(|s| s.password.clone())
                    .or_else(|| settings.mqtt.password.clone()),
                keep_alive: settings.mqtt.keep_alive,
                persistent_session: true,
                // What receivers send, and the province's alert topics: a live alert's
                // retained copy that another client clears is published again.
                subscriptions: topics
                    .inbound_filters()
                    .into_iter()
                    .chain([topics.province_alerts_filter()])
                    .collect(),
                last_will: None,
                on_connect: None,
                tls: settings.mqtt.tls.clone(),
            },
            fallback,
        );
        let wake = Arc::new(Notify::new());
        let pipeline = desk::Pipeline::new(
            store.clone(),
            settings.area.stations.clone(),
            signer.clone(),
            topics.clone(),
            settings.alerts.clone(),
            wake.clone(),
        )
        .with_engine(
            settings.rules.clone(),
            crate::tools::inputs_for(&settings.area, &[])?,
        )
        .with_approval(settings.approval.clone());
        let restored = pipeline.restore_levels().await?;
        tracing::info!(
            rules = settings.rules.rules.len(),
            levels_restored = restored,
            "rules engine ready"
        );

        let mut tasks = JoinSet::new();
        tasks.spawn(driver.run(shutdown.clone()));
        let (telemetry_tx, telemetry_rx) = tokio::sync::mpsc::channel(mqtt::INBOUND_CAPACITY);
        let inbound_counters = Arc::new(inbound::InboundCounters::default());
        tasks.spawn(inbound::run_inbound(
            store.clone(),
            topics.clone(),
            inbound_rx,
            telemetry_tx,
            inbound_counters.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(ingest::telemetry::run_telemetry(
            pipeline.clone(),
            store.clone(),
            settings.max_batch,
            telemetry_rx,
            shutdown.clone(),
        ));
        tasks.spawn(
            crate::keyset::KeySetPublisher {
                mqtt: mqtt.clone(),
                topics: topics.clone(),
                file: crate::keyring::key_set_path(&keyring_dir),
                provisioning,
                signing_key_id: signer.key_id().to_owned(),
            }
            .run(shutdown.clone()),
        );
        tasks.spawn(worker::run_outbox(
            store.clone(),
            mqtt.clone(),
            wake.clone(),
            settings.outbox.clone(),
            worker::StatePublisher {
                signer: signer.clone(),
                topics: topics.clone(),
                communes: Arc::new(
                    settings
                        .area
                        .communes
                        .iter()
                        .map(|c| c.code.to_string())
                        .collect(),
                ),
            },
            shutdown.clone(),
        ));
        if !settings.poll.sources.is_empty() {
            let ctx = ingest::poller::PollerContext::new(
                &settings.poll.user_agent,
                pipeline.clone(),
                store.clone(),
                Arc::new(settings.bulletins.clone()),
                settings.province.to_string(),
                Arc::new(settings.area.communes.iter().map(|c| c.code.clone()).collect()),
                settings.max_batch,
                settings.poll.host_pause,
            )
            .context("building the HTTP client for feeds")?;
            for src in settings.poll.sources.clone() {
                tracing::info!(feed = %src.id, url = %src.url, format = src.format.code(),
                    interval_s = src.interval.as_secs(), "polling feed");
                tasks.spawn(ingest::poller::run_source(ctx.clone(), src, shutdown.clone()));
            }
        }
        {
            // A new alert committed by another instance wakes this one's outbox workers
            // (on PostgreSQL; on SQLite there is no other instance, and this ends at once).
            let (store, wake, shutdown) = (store.clone(), wake.clone(), shutdown.clone());
            tasks.spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = store.listen_for_alerts(|| wake.notify_one()) => {}
                }
            });
        }
        // The sender always runs: without a gateway it still ends queued messages visibly.
        let gateways = settings.sms.build().context("building the sms gateways")?;
        let sms_wake = Arc::new(Notify::new());
        tasks.spawn(sms::worker::run_sms(
            store.clone(),
            gateways.clone(),
            settings.sms.settings.clone(),
            sms_wake.clone(),
            shutdown.clone(),
        ));
        let sms = if gateways.is_empty() {
            tracing::info!("sms channel off: no gateway is configured in [sms]");
            None
        } else {
            tracing::info!(gateways = ?gateways.order(), "sms channel on");
            let (reports, queue) = sms::worker::ReportApplier::new();
            tasks.spawn(sms::worker::run_report_applier(
                store.clone(),
                gateways.clone(),
                queue,
                shutdown.clone(),
            ));
            Some(api::sms::SmsContext {
                reports,
                gateways,
                wake: Arc::new(move || sms_wake.notify_one()),
            })
        };
        tasks.spawn(desk::follow::run_follower(
            pipeline.clone(),
            settings.follow_interval,
            shutdown.clone(),
        ));
        if let Some(interval) = settings.demo_interval {
            tasks.spawn(ingest::demo::run_demo(
                pipeline.clone(),
                interval,
                shutdown.clone(),
            ));
        }

        let public_key_b64 = B64.encode(signer.public_key().as_bytes());
        let key_id = key_id(&signer.public_key());
        let state = api::AppState {
            console: Arc::new(api::console::ConsoleSettings {
                province_name: settings.area.name.clone(),
                // Secure when the service itself serves HTTPS. Behind a TLS proxy it sees
                // plain HTTP and cannot tell (left: a setting for it).
                secure_cookie: settings.http.tls.is_some(),
            }),
            store: store.clone(),
            pipeline,
            keys: Arc::new(
                published
                    .into_iter()
                    .map(|(key_id, public_key, state)| api::KeyDto {
                        key_id,
                        algorithm: "ed25519",
                        public_key,
                        state,
                    })
                    .collect(),
            ),
            broker_ready: Arc::new({
                let mqtt = mqtt.clone();
                move || mqtt.is_connected()
            }),
            bulletins: Arc::new(settings.bulletins.clone()),
            province: settings.province.to_string(),
            communes: Arc::new(settings.area.communes.iter().map(|c| c.code.clone()).collect()),
            commune_names: Arc::new(
                settings
                    .area
                    .communes
                    .iter()
                    .map(|c| (c.code.to_string(), c.name.clone()))
                    .collect(),
            ),
            max_batch: settings.max_batch,
            sms,
            sms_settings: Arc::new(settings.sms.settings.clone()),
            login: api::login::LoginGuard::new(settings.login.clone()),
            counters: Arc::new(api::Counters {
                inbound: inbound_counters,
                ..Default::default()
            }),
            events: api::events::Hub::new(),
            max_clock_offset: settings.max_clock_offset,
            metrics: Default::default(),
        };
        tasks.spawn(crate::retention::run(
            store.clone(),
            settings.retention.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(api::idempotency::run_pruner(store.clone(), {
            let stop = shutdown.clone();
            async move { stop.cancelled().await }
        }));
        tasks.spawn(api::events::run_feed(
            store.clone(),
            state.events.clone(),
            std::time::Duration::from_secs(1),
            {
                let stop = shutdown.clone();
                async move { stop.cancelled().await }
            },
        ));
        let listener = tokio::net::TcpListener::bind(settings.http_listen)
            .await
            .with_context(|| format!("binding the HTTP API to {}", settings.http_listen))?;
        let http_addr = listener.local_addr()?;
        let router = api::router(state);
        let tls = match &settings.http.tls {
            Some(files) => Some(crate::http::TlsReloader::new(files.clone())?),
            None => None,
        };
        if settings.http.in_clear_on(http_addr) {
            tracing::warn!(http = %http_addr,
                "the API is plain HTTP on an address other than loopback: passwords and tokens cross the network in clear; set [http] tls_cert_file and tls_key_file, or listen on 127.0.0.1 behind a TLS proxy (docs/operations.md)");
        }
        tasks.spawn(crate::http::serve(
            listener,
            router,
            tls,
            settings.http.limits.clone(),
            shutdown.clone(),
            settings.grace,
        ));
        tracing::info!(http = %http_addr, broker = %format!("mqtt://{}:{}", broker.host, broker.port),
            province = %settings.province, "canhbao started");

        Ok(App {
            http_addr,
            broker,
            key_id,
            public_key_b64,
            shutdown,
            tasks,
            grace: settings.grace,
            store,
            #[cfg(feature = "embedded-broker")]
            embedded,
            broker_service,
        })
    }

    /// The service's store (for in-process tools such as `bench dispatch`).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A token that stops the service when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the shutdown token is cancelled, then stops everything within the grace
    /// period; tasks still running after it are aborted.
    pub async fn run_until_stopped(mut self) {
        self.shutdown.cancelled().await;
        tracing::info!(grace_s = self.grace.as_secs(), "shutting down");
        let deadline = tokio::time::sleep(self.grace);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = self.tasks.join_next() => if next.is_none() { break },
                _ = &mut deadline => {
                    tracing::warn!(remaining = self.tasks.len(), "grace period over; aborting remaining tasks");
                    self.tasks.abort_all();
                    break;
                }
            }
        }
        #[cfg(feature = "embedded-broker")]
        if let Some(b) = self.embedded.take() {
            b.task.abort();
        }
        self.store.close().await;
        tracing::info!("stopped");
    }

    /// Stops the service (as on SIGTERM) and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.run_until_stopped().await;
    }
}

/// Open files below this are too few for an embedded broker with a province's receivers.
const OPEN_FILES_WANTED: u64 = 4096;

/// Raises the soft limit on open files to the hard one. Every MQTT connection to the
/// embedded broker is a file, besides the database's and HTTP's; systemd starts services
/// with a soft limit of 1,024, and past it the database cannot even be opened (`/readyz`
/// then answers `unreachable`: "unable to open database file").
/// Process-wide, so the binary calls it once before it starts the service.
pub fn raise_open_files_limit(embedded_broker: bool) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current;
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    if limit.current != limit.maximum
        && let Err(e) = setrlimit(Resource::Nofile, raised)
    {
        tracing::warn!(error = %e, "could not raise the open-files limit");
    }
    let now = getrlimit(Resource::Nofile).current;
    tracing::info!(
        open_files = now.map_or_else(|| "unlimited".to_owned(), |n| n.to_string()),
        was = before.map_or_else(|| "unlimited".to_owned(), |n| n.to_string()),
        "open-files limit"
    );
    if embedded_broker && now.is_some_and(|n| n < OPEN_FILES_WANTED) {
        tracing::warn!(
            open_files = now,
            wanted = OPEN_FILES_WANTED,
            "the embedded broker holds one open file per receiver: raise the hard limit (LimitNOFILE= in the systemd unit, ulimit -Hn)"
        );
    }
}
