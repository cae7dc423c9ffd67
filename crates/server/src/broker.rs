//! The embedded MQTT broker: rmqtt used as a library, on a loopback listener, with an
//! in-memory retained-message store (rmqtt keeps none without one).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use rmqtt::context::ServerContext;
use rmqtt::net::Builder;
use rmqtt::retain::{DefaultRetainStorage, RetainStorage};
use rmqtt::server::MqttServer;
use rmqtt::types::{Retain, TopicFilter, TopicName};
use secrecy::{ExposeSecret as _, SecretString};
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

/// The service's own identity on the embedded broker: its client id, and a username and
/// password made for this process alone.
#[derive(Clone, Debug)]
pub struct ServiceIdentity {
    pub client_id: String,
    pub username: String,
    /// Never shown: `Debug` prints it redacted.
    pub password: SecretString,
}

impl ServiceIdentity {
    /// For `client_id`, with a fresh random password.
    pub fn new(client_id: &str) -> Result<Self> {
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no system randomness: {e}"))?;
        use base64::Engine as _;
        Ok(Self {
            client_id: client_id.to_owned(),
            username: "canhbao-service".to_owned(),
            password: base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(bytes)
                .into(),
        })
    }

    fn is(&self, username: Option<&str>, password: Option<&[u8]>) -> bool {
        use subtle::ConstantTimeEq;
        username == Some(self.username.as_str())
            && password.is_some_and(|p| bool::from(p.ct_eq(self.password.expose_secret().as_bytes())))
    }
}

/// What the embedded broker enforces, whoever connects on loopback: only the service
/// (its username and per-process password) may use the service's client id, and only the
/// service may publish under the province's topics (alerts and commune states: so no
/// other client can clear a live alert's retained copy or put a forged envelope before
/// receivers). A registered receiver logs in with its id and broker password, and alone
/// writes its receipts, heartbeat and status; anyone may read alerts, and stations push
/// telemetry anonymously.
struct Acl {
    service: ServiceIdentity,
    /// `{prefix}/{province}/`: alert and state topics.
    service_only: String,
    /// Receivers' own topics, to tell whose a receipt, heartbeat or status topic is.
    topics: dispatch::Topics,
    /// Every registered receiver, with its broker password hash if it has one, read from
    /// the registry every few seconds (so that logins never wait on the database, nor fail
    /// while it is away): their receipt, heartbeat and status topics take only their own
    /// login, and one without a password cannot log in at all.
    protected: Arc<std::sync::RwLock<std::collections::HashMap<String, Login>>>,
    /// The registry, asked when an id is not in `protected` (registered since the last
    /// read): a receiver registered a second ago is protected at once.
    store: store::Store,
}

/// Whether some topic matches both MQTT filters (`+` one level, `#` the rest).
fn filters_intersect(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.split('/'), b.split('/'));
    loop {
        match (a.next(), b.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (Some(x), Some(y)) if x == "+" || y == "+" || x == y => {}
            _ => return false,
        }
    }
}

/// A registered receiver, as the broker knows it.
#[derive(Debug, Clone)]
struct Login {
    commune: String,
    /// Its broker password's Mosquitto hash; `None`: it cannot log in.
    hash: Option<String>,
}

impl Acl {
    /// The registered receiver `id`, from the cache or else the registry (a database that
    /// does not answer counts as not registered, and says so).
    async fn login(&self, id: &str) -> Option<Login> {
        let cached = self
            .protected
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned();
        if cached.is_some() {
            return cached;
        }
        // Never wait long on the database: while it is away, logins and receipts go on
        // (an id it cannot answer for counts as unregistered, as before it was asked).
        match tokio::time::timeout(REGISTRY_WAIT, self.store.receiver_login(id)).await {
            Ok(Ok(Some((commune, hash)))) => {
                let login = Login { commune, hash };
                self.protected
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(id.to_owned(), login.clone());
                Some(login)
            }
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                tracing::warn!(receiver = %domain::cut(id), error = %e, "embedded broker: the registry could not be read for a receiver; taking it as unregistered");
                None
            }
            Err(_) => {
                tracing::warn!(receiver = %domain::cut(id), "embedded broker: the registry did not answer in time for a receiver; taking it as unregistered");
                None
            }
        }
    }

    /// Whether a client logged in as `username` may subscribe to `filter` (a client that
    /// is not the service). A registered receiver (its login checked when it connected)
    /// reads its own commune's alerts and state and the key set, as Mosquitto's generated
    /// ACL says; any other client reads anything but what receivers and stations send
    /// (receipts, heartbeats, statuses, telemetry): a filter that could match one of those
    /// is refused whole.
    fn may_subscribe(&self, username: Option<&str>, filter: &str) -> bool {
        let commune = username.and_then(|u| {
            self.protected
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(u)
                .map(|l| l.commune.clone())
        });
        match commune {
            Some(commune) => {
                filter == self.topics.key_set()
                    || filter.starts_with(&format!("{}{commune}/", self.service_only))
            }
            None => !self
                .topics
                .inbound_filters()
                .iter()
                .any(|inbound| filters_intersect(filter, inbound)),
        }
    }

    /// Whether a client logged in as `username` may publish on `topic` (a client that is
    /// not the service: alert and state topics are refused, and a protected receiver's
    /// own topics take only that receiver's login).
    async fn may_publish(&self, username: Option<&str>, topic: &str) -> bool {
        if topic.starts_with(self.service_only.as_str()) {
            return false;
        }
        let owner = match self.topics.parse_inbound(topic) {
            Ok(
                dispatch::topics::Inbound::Receipt(r)
                | dispatch::topics::Inbound::Heartbeat(r)
                | dispatch::topics::Inbound::Status(r),
            ) => r,
            _ => return true,
        };
        // A registered receiver's topics take only its own login (checked against its
        // broker password when it connected); an unregistered id's messages count for
        // nothing, and are left to the service to count.
        username == Some(owner.as_str()) || self.login(owner.as_str()).await.is_none()
    }
}

#[async_trait]
impl rmqtt::hook::Handler for Acl {
    async fn hook(
        &self,
        param: &rmqtt::hook::Parameter,
        acc: Option<rmqtt::hook::HookResult>,
    ) -> rmqtt::hook::ReturnType {
        use rmqtt::hook::{HookResult, Parameter};
        use rmqtt::types::{AuthResult, PublishAclResult};
        match param {
            // Every client comes here (the listener takes no one anonymously on its own).
            Parameter::ClientAuthenticate(info) => {
                let user = info.username().map(|u| u.as_ref());
                let password = info.password().map(|p| p.as_ref());
                let is_service = self.service.is(user, password);
                let result = if &info.client_id()[..] == self.service.client_id.as_str() && !is_service {
                    tracing::warn!(client_id = %info.client_id(), "embedded broker: a client took the service's client id; refused");
                    AuthResult::NotAuthorized
                } else if user == Some(self.service.username.as_str()) {
                    if is_service {
                        AuthResult::Allow(true, None)
                    } else {
                        tracing::warn!(client_id = %info.client_id(), "embedded broker: the service's username with a wrong password refused");
                        AuthResult::BadUsernameOrPassword
                    }
                } else if let Some(user) = user {
                    // A registered receiver logs in with its id and broker password.
                    let hash = self.login(user).await.map(|l| l.hash);
                    match hash {
                        Some(Some(hash))
                            if password.is_some_and(|p| {
                                std::str::from_utf8(p)
                                    .is_ok_and(|p| api::fleet::verify_mosquitto_hash(p, &hash))
                            }) =>
                        {
                            AuthResult::Allow(false, None)
                        }
                        Some(Some(_)) => {
                            tracing::warn!(receiver = %domain::cut(user), "embedded broker: a receiver's login with a wrong password refused");
                            AuthResult::BadUsernameOrPassword
                        }
                        // Registered without a broker password (only the store can do
                        // that): nobody may speak for it.
                        Some(None) => {
                            tracing::warn!(receiver = %domain::cut(user), "embedded broker: a receiver registered without a broker password cannot log in; register it with `canhbao receivers add` or POST /api/v1/receivers");
                            AuthResult::BadUsernameOrPassword
                        }
                        // Not a receiver with a password: an anonymous client, as any other.
                        None => AuthResult::Allow(false, None),
                    }
                } else {
                    AuthResult::Allow(false, None)
                };
                (false, Some(HookResult::AuthResult(result)))
            }
            // Only reached for clients that are not the service (it is a superuser).
            Parameter::ClientSubscribeCheckAcl(session, subscribe) => {
                let username = session.id.username.as_ref().map(|u| &u[..]);
                if !self.may_subscribe(username, &subscribe.topic_filter) {
                    tracing::warn!(filter = %domain::cut(&subscribe.topic_filter), username = ?username.map(domain::cut),
                        "embedded broker: a subscription to topics that are not the client's to read refused");
                    return (
                        false,
                        Some(HookResult::SubscribeAclResult(
                            rmqtt::types::SubscribeAclResult::new_failure(
                                rmqtt::codec::v5::SubscribeAckReason::NotAuthorized,
                            ),
                        )),
                    );
                }
                (true, acc)
            }
            Parameter::MessagePublishCheckAcl(session, publish) => {
                let username = session.id.username.as_ref().map(|u| &u[..]);
                if !self.may_publish(username, &publish.inner.topic).await {
                    tracing::warn!(topic = %domain::cut(&publish.inner.topic), "embedded broker: a client published on a topic that is not its own; dropped");
                    return (
                        false,
                        Some(HookResult::PublishAclResult(PublishAclResult::rejected(
                            false, None,
                        ))),
                    );
                }
                (true, acc)
            }
            _ => (true, acc),
        }
    }
}

/// Binds `listen` (port 0 picks a free port) and runs the broker on the current runtime.
/// Anonymous clients are allowed (the listener is loopback-only by configuration), under
/// the [`Acl`] that keeps alert topics and the service's identity to the service.
pub async fn start(
    listen: SocketAddr,
    service: ServiceIdentity,
    topics: dispatch::Topics,
    store: store::Store,
) -> Result<EmbeddedBroker> {
    let protected = Arc::new(std::sync::RwLock::new(std::collections::HashMap::new()));
    refresh_protected(&store, &protected).await;
    {
        let (store, protected) = (store.clone(), protected.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROTECTED_REFRESH).await;
                refresh_protected(&store, &protected).await;
            }
        });
    }
    let scx = ServerContext::new().build().await;
    *scx.extends.retain_mut().await = Box::new(MemoryRetain(DefaultRetainStorage::new()));
    {
        use rmqtt::hook::Type;
        let register = scx.extends.hook_mgr().register();
        let acl = || {
            Box::new(Acl {
                service: service.clone(),
                service_only: format!("{}/{}/", topics.prefix(), topics.province()),
                topics: topics.clone(),
                protected: protected.clone(),
                store: store.clone(),
            })
        };
        register.add(Type::ClientAuthenticate, acl()).await;
        register.add(Type::MessagePublishCheckAcl, acl()).await;
        register.add(Type::ClientSubscribeCheckAcl, acl()).await;
        register.start().await;
    }
    let listener = Builder::new()
        .name("canhbao/tcp")
        .laddr(listen)
        // Anonymous clients are still let in, by the Acl's ClientAuthenticate hook, which
        // sees every client this way (with anonymity allowed here it would skip them).
        .allow_anonymous(false)
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

/// How long a login or a publish waits for the registry about an id not yet read.
const REGISTRY_WAIT: Duration = Duration::from_millis(300);

/// How often the registered receivers are read again: a receiver registered is protected
/// within this. While the database is away the last list stands.
const PROTECTED_REFRESH: Duration = Duration::from_secs(2);

async fn refresh_protected(
    store: &store::Store,
    protected: &std::sync::RwLock<std::collections::HashMap<String, Login>>,
) {
    match store.receiver_logins().await {
        Ok(ids) => {
            *protected
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = ids
                .into_iter()
                .map(|(id, commune, hash)| (id, Login { commune, hash }))
                .collect();
        }
        Err(e) => {
            tracing::warn!(error = %e, "embedded broker: the registered receivers could not be read")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::filters_intersect;

    #[test]
    fn filters_intersect_where_some_topic_matches_both() {
        let receipts = "canhbao/v1/receipts/+";
        for f in [
            "#",
            "canhbao/#",
            "+/v1/receipts/loa-1",
            "canhbao/v1/+/+",
            "canhbao/+/receipts/#",
        ] {
            assert!(filters_intersect(f, receipts), "{f}");
        }
        for f in [
            "canhbao/v1/20/06385/alerts/+",
            "canhbao/v1/receipts",
            "canhbao/v1/receipts/a/b",
            "other/v1/receipts/+",
            "canhbao/v1/+",
        ] {
            assert!(!filters_intersect(f, receipts), "{f}");
        }
    }
}
