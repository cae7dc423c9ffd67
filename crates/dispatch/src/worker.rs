//! The outbox worker: claims due deliveries, publishes their signed envelopes outside
//! any transaction, and records the outcome. A new alert wakes it at once, and so does the
//! broker's return: what waited for it to come back is due at once, not after its back-off.
//! Before the alerts of a claimed batch, it publishes the commune state of each of their
//! communes (protocol §4a), so that a receiver always finds a state at least as new as any
//! alert the broker gives it.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use store::{ClaimedDelivery, Store};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::Topics;
use crate::wire::{CommuneStateWire, Signer, envelope_bytes, to_json};
use mqtt::MqttHandle;

/// What the worker needs to publish commune states: the key that signs them, where, and
/// every commune of the province (each always has a retained state, so that a receiver
/// gets one as soon as it subscribes).
#[derive(Clone)]
pub struct StatePublisher {
    pub signer: Arc<Signer>,
    pub topics: Topics,
    pub communes: Arc<Vec<String>>,
}

impl std::fmt::Debug for StatePublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatePublisher")
            .field("key_id", &self.signer.key_id())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct OutboxSettings {
    /// How long a claim is held before another worker may take the row.
    pub lease: Duration,
    /// Rows claimed per round.
    pub batch: i64,
    /// Longest sleep between rounds when nothing wakes the worker.
    pub idle_poll: Duration,
    /// First retry delay; doubles per attempt up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Delays before a published commune topic is sent again while a registered receiver
    /// has not sent `received`; the last one repeats until the alert ends.
    pub resend: Vec<Duration>,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            batch: 64,
            idle_poll: Duration::from_secs(5),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            resend: vec![
                Duration::from_secs(30),
                Duration::from_secs(60),
                Duration::from_secs(120),
                Duration::from_secs(300),
            ],
        }
    }
}

/// The delay before attempt `attempts + 1`, after `attempts` failed ones.
pub fn retry_delay(settings: &OutboxSettings, attempts: i64) -> Duration {
    let exp = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(20);
    settings
        .retry_base
        .saturating_mul(1u32 << exp)
        .min(settings.retry_max)
}

/// Runs the worker until `shutdown`. Store errors are logged and retried; they never end it.
pub async fn run_outbox(
    store: Store,
    mqtt: MqttHandle,
    wake: Arc<Notify>,
    settings: OutboxSettings,
    states: StatePublisher,
    shutdown: CancellationToken,
) {
    let mut connections = Some(mqtt.connections());
    // A connection made before the worker started counts as a return of the broker too:
    // starting against a broker that lost its retained messages must rebuild them.
    if let Some(c) = connections.as_mut() {
        let first = *c.borrow_and_update();
        if first.count > 0 {
            broker_back(&store, &mqtt, &states, first).await;
        }
    }
    loop {
        if let Err(e) = maintain(&store, &mqtt, &settings).await {
            tracing::error!(error = %e, "outbox maintenance failed; resends or clears may be delayed");
        }
        let full = match round(&store, &mqtt, &settings, &states).await {
            Ok(n) => n as i64 >= settings.batch,
            Err(e) => {
                tracing::error!(error = %e, "outbox round failed; alerts may be delayed");
                false
            }
        };
        if full {
            continue;
        }
        let sleep = match store.next_due().await {
            Ok(Some(due)) => (due - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(settings.idle_poll),
            _ => settings.idle_poll,
        };
        let reconnected = async {
            match connections.as_mut() {
                Some(c) => c.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
            back = reconnected => {
                if back {
                    let connected = connections.as_mut().map(|c| *c.borrow_and_update()).unwrap_or_default();
                    broker_back(&store, &mqtt, &states, connected).await;
                } else {
                    // The connection task ended (the service is stopping).
                    connections = None;
                }
            }
        }
    }
}

/// The broker connection was (re)established: deliveries waiting out a failed publish's
/// back-off (up to `retry_max`) are due now. A broker that came back without this
/// service's session lost its retained alerts too (and maybe receipts in flight): every
/// live alert is published again, so that a receiver connecting later still finds it,
/// and the receivers acknowledge again what they already played (without playing it).
async fn broker_back(store: &Store, mqtt: &MqttHandle, states: &StatePublisher, connected: mqtt::Connected) {
    // Without this service's session (a broker that restarted without persistence, an
    // embedded one, or a first connection ever), the broker cannot be trusted to hold the
    // retained alerts and states: publish every commune's state, and every live alert,
    // again.
    if !connected.session_present {
        if let Err(e) = publish_states(store, mqtt, states, &states.communes).await {
            tracing::warn!(error = %e, "publishing the commune states failed; each goes out again with its next alert");
        }
        match store.requeue_live(Utc::now()).await {
            // At start (an embedded broker is always new) this is routine; later, the
            // broker lost what it held.
            Ok(n) if connected.count <= 1 => tracing::info!(
                deliveries = n,
                "the broker holds no session of this service: publishing live alerts and commune states to make sure they are retained"
            ),
            Ok(n) => tracing::warn!(
                deliveries = n,
                "the broker came back without this service's session (restarted without persistence?): publishing live alerts again to rebuild its retained messages"
            ),
            Err(e) => {
                tracing::error!(error = %e, "the broker lost this service's session, but the live alerts could not be queued again; they wait for their resends")
            }
        }
    }
    match store.retry_queued_now(Utc::now()).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            deliveries = n,
            "broker connection back: deliveries that failed to publish are due now"
        ),
        Err(e) => {
            tracing::error!(error = %e, "broker connection back, but the waiting deliveries could not be made due; they wait out their back-off")
        }
    }
}

/// Resends what registered receivers have not acknowledged, ends the deliveries of expired
/// alerts, and clears retained messages that are due (an empty retained publish).
async fn maintain(store: &Store, mqtt: &MqttHandle, settings: &OutboxSettings) -> store::Result<()> {
    let now = Utc::now();
    let schedule: Vec<chrono::Duration> = settings
        .resend
        .iter()
        .filter_map(|d| chrono::Duration::from_std(*d).ok())
        .collect();
    let resent = store.requeue_unacknowledged(now, &schedule).await?;
    if resent > 0 {
        tracing::info!(
            topics = resent,
            "resending alerts that a registered receiver has not acknowledged"
        );
    }
    let expired = store.expire_deliveries(now).await?;
    if expired > 0 {
        tracing::warn!(
            receivers = expired,
            "alerts expired before these receivers acknowledged them"
        );
    }
    for topic in store.due_clears(now, settings.batch).await? {
        match mqtt.publish(&topic, Vec::new(), true).await {
            Ok(()) => store.mark_cleared(&topic, Utc::now()).await?,
            Err(e) => {
                tracing::warn!(topic = %topic, error = %e, "clearing a retained alert failed; will retry");
                break;
            }
        }
    }
    Ok(())
}

/// Claims a batch, publishes each claimed delivery, and records the publications of the
/// batch in one transaction: the last commune of a province-wide alert no longer waits
/// for a disk sync per commune before it. A crash before that commit leaves the claims to
/// run out their lease and be published again; receivers drop what they already played.
async fn round(
    store: &Store,
    mqtt: &MqttHandle,
    settings: &OutboxSettings,
    states: &StatePublisher,
) -> store::Result<usize> {
    let lease = chrono::Duration::from_std(settings.lease).unwrap_or(chrono::Duration::seconds(30));
    let batch = store.claim_due(Utc::now(), lease, settings.batch).await?;
    let n = batch.len();
    // Each commune's state first, then its alerts: a receiver that gets an alert from the
    // broker can always get a state that knows it.
    let communes: Vec<String> = batch
        .iter()
        .map(|d| d.commune.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let stated = match publish_states(store, mqtt, states, &communes).await {
        Ok(seqs) => seqs,
        Err(e) => {
            // Its alerts fail the same way, and are tried again with it.
            tracing::warn!(communes = communes.len(), error = %e, "publishing commune states failed");
            Default::default()
        }
    };
    let mut published = Vec::with_capacity(n);
    let mut failed = None;
    for d in batch {
        match publish_one(store, mqtt, settings, d).await {
            Ok(Some(done)) => published.push(done),
            Ok(None) => {}
            // The rest of the batch waits out its lease; what went out is still recorded.
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    if !published.is_empty() {
        store.mark_published_all(&published).await?;
    }
    // Another instance may have published an older state after ours: whoever sees a newer
    // alert than the state it published publishes the newest again, so the last state
    // the broker keeps is the newest.
    if !stated.is_empty() {
        let now_seqs = store.commune_seqs(&communes).await?;
        let stale: Vec<String> = stated
            .iter()
            .filter(|(c, seq)| now_seqs.get(*c).is_some_and(|n| n > *seq))
            .map(|(c, _)| c.clone())
            .collect();
        if !stale.is_empty()
            && let Err(e) = publish_states(store, mqtt, states, &stale).await
        {
            tracing::warn!(communes = stale.len(), error = %e, "publishing commune states failed");
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(n),
    }
}

/// Why a commune state could not be published.
#[derive(Debug, thiserror::Error)]
enum StateError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Publish(#[from] mqtt::PublishError),
}

/// Signs and publishes, retained, the state of each of `communes` now; returns the `seq`
/// each was published with. A commune code that is not valid (no delivery has one) is
/// skipped.
async fn publish_states(
    store: &Store,
    mqtt: &MqttHandle,
    states: &StatePublisher,
    communes: &[String],
) -> Result<std::collections::BTreeMap<String, i64>, StateError> {
    let now = Utc::now();
    let mut published = std::collections::BTreeMap::new();
    for (commune, state) in store.commune_states(communes, now).await? {
        let Ok(code) = domain::CommuneCode::new(&commune) else {
            continue;
        };
        let wire = CommuneStateWire::new(states.topics.province().as_str(), &commune, &state);
        let signed = states.signer.sign(to_json(&wire));
        mqtt.publish(&states.topics.state(&code), envelope_bytes(&signed), true)
            .await?;
        published.insert(commune, state.seq);
    }
    Ok(published)
}

/// Publishes one claimed delivery. Returns its id and the time when the broker took it;
/// an expired or failed one is recorded here.
async fn publish_one(
    store: &Store,
    mqtt: &MqttHandle,
    settings: &OutboxSettings,
    d: ClaimedDelivery,
) -> store::Result<Option<(i64, chrono::DateTime<Utc>)>> {
    let now = Utc::now();
    if d.expires <= now {
        tracing::error!(alert_id = %d.alert_id, commune = %d.commune, "delivery expired before it could be published");
        store.mark_expired(d.id).await?;
        return Ok(None);
    }
    match mqtt.publish(&d.topic, envelope_bytes(&d.signed), true).await {
        Ok(()) => {
            tracing::info!(alert_id = %d.alert_id, commune = %d.commune, attempt = d.attempts, "alert published");
            Ok(Some((d.id, Utc::now())))
        }
        Err(e) => {
            let delay = retry_delay(settings, d.attempts);
            tracing::warn!(alert_id = %d.alert_id, commune = %d.commune, attempt = d.attempts, error = %e,
                retry_in_ms = delay.as_millis() as u64, "publish failed; will retry");
            let next = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::seconds(60));
            store.mark_retry(d.id, &e.to_string(), next).await?;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_a_cap() {
        let s = OutboxSettings::default();
        let got: Vec<u64> = (1..=9).map(|a| retry_delay(&s, a).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(retry_delay(&s, i64::MAX).as_secs(), 60);
    }
}
