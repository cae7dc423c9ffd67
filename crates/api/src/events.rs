//! `GET /api/v1/events`: Server-Sent Events for live changes: `alert` (a new alert,
//! Update or Cancel, whoever raised it), `receipt` (a receiver received, played, rejected
//! or failed), `action` (an entry of the audit log: who did what to which, without its
//! detail), `prewarning` (a level for a duty officer to confirm) and `reading` (a
//! reading that quality control flagged, or a flagged one that the next reading
//! confirmed).
//!
//! One feed task per instance ([`run_feed`]) reads rows added to the shared tables every
//! second and fans them out through a [`Hub`], so that what another instance did shows
//! too. Each event has an `id`; a client that reconnects with `Last-Event-ID` gets what
//! it missed from the last [`RING`] events of this instance, or a `reset` event when that
//! is not enough (it should then read the REST views again).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::StreamExt;
use futures_util::stream::{self, Stream};
use serde_json::{Value, json};
use store::{Change, Store};
use tokio::sync::broadcast;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// How many recent events an instance keeps for clients that reconnect.
pub const RING: usize = 1024;

/// One event, numbered in this instance's order.
#[derive(Debug, Clone)]
pub struct Ev {
    pub seq: u64,
    pub kind: &'static str,
    pub data: Value,
}

/// Fans events out to every connected client and keeps the recent ones.
#[derive(Debug, Clone)]
pub struct Hub {
    /// Streams open, per caller and in all.
    streams: Arc<Mutex<(usize, std::collections::HashMap<String, usize>)>>,
    tx: broadcast::Sender<Arc<Ev>>,
    ring: Arc<Mutex<(u64, VecDeque<Arc<Ev>>)>>,
    /// Set at shutdown: every stream ends, so that the server can stop.
    closing: Arc<tokio::sync::watch::Sender<bool>>,
    /// This process's start, in every event id (`{boot}-{seq}`): an id of another
    /// instance, or from before a restart, is never mistaken for one of ours.
    boot: Arc<str>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    pub fn new() -> Self {
        Self {
            streams: Arc::new(Mutex::new((0, std::collections::HashMap::new()))),
            tx: broadcast::channel(RING).0,
            ring: Arc::new(Mutex::new((0, VecDeque::with_capacity(RING)))),
            closing: Arc::new(tokio::sync::watch::channel(false).0),
            boot: {
                let mut b = [0u8; 4];
                let _ = getrandom::fill(&mut b);
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos());
                format!("{:08x}", u32::from_le_bytes(b) ^ nanos).into()
            },
        }
    }

    /// The id of event `seq` of this process.
    fn event_id(&self, seq: u64) -> String {
        format!("{}-{seq}", self.boot)
    }

    /// Ends every event stream (at shutdown).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Numbers and sends one event.
    pub fn publish(&self, kind: &'static str, data: Value) {
        {
            let mut ring = self
                .ring
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            ring.0 += 1;
            let ev = Arc::new(Ev {
                seq: ring.0,
                kind,
                data,
            });
            if ring.1.len() == RING {
                ring.1.pop_front();
            }
            ring.1.push_back(ev.clone());
            // Sent under the lock, so that a client subscribing meanwhile gets each event
            // once: in its catch-up list or live, never both.
            // No subscriber is not an error.
            let _ = self.tx.send(ev);
        }
    }

    /// A subscription, and the kept events after `last` (None: `last` is older than
    /// what is kept, or from another instance or an earlier start).
    fn subscribe(&self, last: Option<&str>) -> (broadcast::Receiver<Arc<Ev>>, Option<Vec<Arc<Ev>>>) {
        let ring = self
            .ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let rx = self.tx.subscribe();
        let last = last.map(|id| {
            id.split_once('-')
                .filter(|(boot, _)| *boot == &*self.boot)
                .and_then(|(_, seq)| seq.parse::<u64>().ok())
        });
        let missed = match last {
            None => Some(vec![]),
            Some(None) => None,
            Some(Some(last)) if last > ring.0 => None,
            Some(Some(last)) => {
                let oldest = ring.1.front().map_or(ring.0 + 1, |e| e.seq);
                (last + 1 >= oldest).then(|| ring.1.iter().filter(|e| e.seq > last).cloned().collect())
            }
        };
        (rx, missed)
    }
}

fn event_of(change: Change) -> (&'static str, Value) {
    match change {
        Change::Alert {
            id,
            msg_type,
            status,
            hazard,
            risk_level,
            class,
            communes,
            origin,
            sent,
        } => (
            "alert",
            json!({"id": id, "msg_type": msg_type, "status": status, "hazard": hazard,
                "risk_level": risk_level, "class": class, "communes": communes, "origin": origin,
                "sent": sent}),
        ),
        Change::Receipt {
            alert_id,
            receiver_id,
            commune,
            status,
            reason,
            at,
        } => (
            "receipt",
            json!({"alert_id": alert_id, "receiver_id": receiver_id, "commune": commune,
                "status": status, "reason": reason, "at": at}),
        ),
        Change::Audit {
            id,
            actor,
            action,
            target,
            at,
        } => (
            "action",
            json!({"audit_id": id, "actor": actor, "action": action, "target": target, "at": at}),
        ),
        Change::Prewarning {
            id,
            hazard,
            commune,
            level,
            at,
        } => (
            "prewarning",
            json!({"id": id, "hazard": hazard, "commune": commune, "level": level, "at": at}),
        ),
        Change::Reading(e) => (
            "reading",
            json!({"id": e.id, "status": e.status, "station": e.station, "parameter": e.parameter,
                "observed_at": e.observed_at, "value": e.value, "quality": e.quality, "reason": e.reason,
                "at": e.at}),
        ),
    }
}

/// Reads new rows every `every` and publishes them, until `stop` resolves.
pub async fn run_feed(store: Store, hub: Hub, every: Duration, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let stop = async {
        (&mut stop).await;
        hub.close();
    };
    tokio::pin!(stop);
    let mut cursor = loop {
        match store.change_heads().await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "event feed: cannot read where the tables end; retrying");
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep(every) => {}
                }
            }
        }
    };
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(every) => {}
        }
        match store.changes_after(cursor, 500).await {
            Ok((changes, next, skipped)) => {
                cursor = next;
                for why in skipped {
                    tracing::warn!(error = %why, "event feed: a row could not be read; skipped");
                }
                for c in changes {
                    let (kind, data) = event_of(c);
                    hub.publish(kind, data);
                }
            }
            Err(e) => tracing::warn!(error = %e, "event feed: read failed; retrying"),
        }
    }
}

fn sse(hub: &Hub, ev: &Ev) -> Event {
    Event::default()
        .id(hub.event_id(ev.seq))
        .event(ev.kind)
        .data(ev.data.to_string())
}

/// `GET /api/v1/events` (`Accept: text/event-stream`), for any token.
#[utoipa::path(get, path = "/api/v1/events", tag = "monitoring", security(("bearer" = [])), params(("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")), responses((status = 200, description = "Server-Sent Events: hello, alert, receipt, action, prewarning, reading, reset", content_type = "text/event-stream")))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let last = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .map(str::trim)
                .filter(|s| {
                    !s.is_empty()
                        && s.len() <= 64
                        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
                .ok_or_else(|| {
                    ApiError::bad_request("Last-Event-ID", "Last-Event-ID must be an event id this API gave")
                })?
                .to_owned(),
        ),
    };
    let slot = state.events.open_stream(&caller.label).ok_or_else(|| {
        ApiError::too_many(format!(
            "at most {MAX_STREAMS_PER_CALLER} event streams per token and {MAX_STREAMS} in all are open at once"
        ))
        .retry_after(Duration::from_secs(5))
    })?;
    let hub = state.events.clone();
    let (rx, missed) = hub.subscribe(last.as_deref());
    let first: Vec<Event> = match missed {
        Some(missed) => {
            let mut first = vec![
                Event::default()
                    .event("hello")
                    .data(json!({"resumed": last.is_some()}).to_string()),
            ];
            first.extend(missed.iter().map(|e| sse(&hub, e)));
            first
        }
        None => vec![
            Event::default().event("reset").data(
                json!({"reason": "events since Last-Event-ID are no longer kept; read the views again"})
                    .to_string(),
            ),
        ],
    };
    let closing = state.events.closing.subscribe();
    // The slot goes with the stream: it is given back when the client goes away.
    let live = stream::unfold(
        (rx, closing, hub, slot),
        |(mut rx, mut closing, hub, slot)| async move {
            let got = tokio::select! {
                got = rx.recv() => got,
                _ = closing.wait_for(|c| *c) => return None,
            };
            let ev = match got {
            Ok(ev) => sse(&hub, &ev),
            // A client too slow to keep up is told to re-read, then goes on.
            Err(broadcast::error::RecvError::Lagged(n)) => Event::default().event("reset").data(
                json!({"reason": format!("{n} events were dropped for this slow client; read the views again")})
                    .to_string(),
            ),
            Err(broadcast::error::RecvError::Closed) => return None,
        };
            Some((Ok(ev), (rx, closing, hub, slot)))
        },
    );
    let stream = stream::iter(first.into_iter().map(Ok)).chain(live);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Event streams one token may hold open at once (a console per desk, a few tabs).
pub const MAX_STREAMS_PER_CALLER: usize = 8;
/// Event streams open at once in all.
pub const MAX_STREAMS: usize = 256;

/// An open event stream's place in the counts, given back when dropped.
pub struct StreamSlot {
    streams: Arc<Mutex<(usize, std::collections::HashMap<String, usize>)>>,
    caller: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut s = self
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.0 = s.0.saturating_sub(1);
        if let Some(n) = s.1.get_mut(&self.caller) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.1.remove(&self.caller);
            }
        }
    }
}

impl Hub {
    /// A place for one more stream of `caller`, if it and the whole are under their limits.
    pub fn open_stream(&self, caller: &str) -> Option<StreamSlot> {
        let mut s = self
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mine = s.1.get(caller).copied().unwrap_or(0);
        if s.0 >= MAX_STREAMS || mine >= MAX_STREAMS_PER_CALLER {
            return None;
        }
        s.0 += 1;
        s.1.insert(caller.to_owned(), mine + 1);
        Some(StreamSlot {
            streams: self.streams.clone(),
            caller: caller.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_streams_are_limited_per_caller_and_in_all_and_given_back() {
        let hub = Hub::new();
        let mine: Vec<_> = (0..MAX_STREAMS_PER_CALLER)
            .map(|_| hub.open_stream("user:a").unwrap())
            .collect();
        assert!(hub.open_stream("user:a").is_none(), "one token's limit");
        assert!(
            hub.open_stream("user:b").is_some(),
            "another token is not held up"
        );
        drop(mine);
        assert!(
            hub.open_stream("user:a").is_some(),
            "closed streams give their place back"
        );
        let all: Vec<_> = (0..MAX_STREAMS)
            .filter_map(|i| hub.open_stream(&format!("key:{}", i / MAX_STREAMS_PER_CALLER)))
            .collect();
        assert_eq!(all.len(), MAX_STREAMS);
        assert!(hub.open_stream("user:c").is_none(), "the limit in all");
    }

    #[test]
    fn a_reconnecting_client_gets_what_it_missed_or_a_reset() {
        let hub = Hub::new();
        for i in 0..(RING as u64 + 10) {
            hub.publish("alert", json!({ "n": i }));
        }
        let (_, missed) = hub.subscribe(Some(&hub.event_id(RING as u64 + 5)));
        let seqs: Vec<u64> = missed.unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (RING as u64 + 6..=RING as u64 + 10).collect::<Vec<_>>());
        // Event 3 fell out of the ring: the client must re-read.
        assert!(hub.subscribe(Some(&hub.event_id(3))).1.is_none());
        // An id from the future, or garbage, too.
        assert!(hub.subscribe(Some(&hub.event_id(99_999))).1.is_none());
        assert!(hub.subscribe(Some("x-y")).1.is_none());
        // An id of another start (or instance), even a small one, is not ours.
        let other = Hub::new();
        other.publish("alert", json!({}));
        assert!(hub.subscribe(Some(&other.event_id(RING as u64 + 5))).1.is_none());
        assert_eq!(hub.subscribe(None).1.unwrap().len(), 0);
    }
}
