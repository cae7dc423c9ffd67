//! The embedded MQTT broker: rmqtt used as a library, on a loopback listener, with an
//! in-memory retained-message store (rmqtt keeps none without one).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use rmqtt::context::ServerContext;
use rmqtt::net::Builder;
use rmqtt::retain::{DefaultRetainStorage, RetainStorage};
use rmqtt::server::MqttServer;
use rmqtt::types::{Retain, TopicFilter, TopicName};
use tokio::task::JoinHandle;

/// Retained messages kept in memory, through rmqtt's own retain tree. Lost when the
/// process stops: on start, canhbao re-queues every live alert to rebuild them.
struct MemoryRetain(DefaultRetainStorage);

#[async_trait]
impl RetainStorage for MemoryRetain {
    fn enable(&self) -> bool {
        true
    }

    async fn set(&self, topic: &TopicName, retain: Retain, expiry: Option<Duration>) -> rmqtt::Result<()> {
        self.0.set_with_timeout(topic, retain, expiry).await
    }

    async fn get(&self, filter: &TopicFilter) -> rmqtt::Result<Vec<(TopicName, Retain)>> {
        self.0.get_message(filter).await
    }

    async fn count(&self) -> isize {
        self.0.count().await
    }

    async fn max(&self) -> isize {
        self.0.max().await
    }
}

/// A running embedded broker.
pub struct EmbeddedBroker {
    pub addr: SocketAddr,
    pub task: JoinHandle<()>,
}

/// Binds `listen` (port 0 picks a free port) and runs the broker on the current runtime.
/// Anonymous clients are allowed: the listener is loopback-only by configuration.
pub async fn start(listen: SocketAddr) -> Result<EmbeddedBroker> {
    let scx = ServerContext::new().build().await;
    *scx.extends.retain_mut().await = Box::new(MemoryRetain(DefaultRetainStorage::new()));
    let listener = Builder::new()
        .name("canhbao/tcp")
        .laddr(listen)
        .allow_anonymous(true)
        .max_connections(100_000)
        // Receipts come back in bursts (two per receiver for each alert, all at once); the
        // default queue of 1,000 per client dropped part of such a burst for the service's
        // own connection (bench dispatch, 1,000 receivers), which the resend 30 s later
        // then had to recover. The same limit as deploy/mosquitto/canhbao.conf.
        .max_mqueue_len(100_000)
        // A restart after a crash (systemd restarts after 2 s) must get its port back at
        // once: the connections of the killed process sit in TIME_WAIT for a minute, and
        // without SO_REUSEADDR the bind fails for as long. SO_REUSEPORT stays off, so
        // that two live processes can never share the port.
        .reuseaddr(Some(true))
        .bind()
        .with_context(|| format!("binding the embedded MQTT broker to {listen}"))?
        .tcp()
        .context("configuring the embedded broker's TCP listener")?;
    let addr = listener
        .local_addr()
        .context("reading the embedded broker's address")?;
    let server = MqttServer::new(scx).listener(listener).build();
    let task = tokio::spawn(async move {
        if let Err(e) = server.run().await {
            tracing::error!(error = %e, "embedded MQTT broker stopped");
        }
    });
    tracing::info!(addr = %addr, "embedded MQTT broker listening");
    Ok(EmbeddedBroker { addr, task })
}
