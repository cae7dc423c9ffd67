//! The gate between a verified alert and the loudspeakers (`docs/receiver-protocol.md`
//! §4a and §8): an alert plays only once the commune state the receiver trusts says it is
//! live. Pure: the agent passes what arrived.
//!
//! After every (re)connection a receiver trusts only a state that the broker gives it as
//! retained (the newest the service published), or one newer than that. A state that
//! arrives without the retain flag before it may be old (queued in the receiver's session
//! while it was away): the receiver subscribes to the state topic again (at most once a
//! second while it has no retained state), and the broker sends the retained one. So whatever order the broker delivers queued messages, retained
//! messages and resends in, an alert whose Update or Cancel is also waiting never plays:
//! the trusted state lists it as replaced.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use protocol::wire::CommuneStateWire;

/// The least time between two subscriptions to the state topic asked for by the gate.
pub const RESUBSCRIBE_EVERY: Duration = Duration::from_secs(1);

/// What to do with a verified alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The trusted state lists it as live: accept it.
    Accept,
    /// The trusted state lists it as replaced by `by`: never play it; remember that until
    /// `until`.
    Replaced { by: String, until: DateTime<Utc> },
    /// No trusted state knows it yet: wait for one.
    Wait,
}

/// What a new state asks of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateOutcome {
    /// Nothing more.
    Taken,
    /// Subscribe to the state topic again: the broker will send its retained state.
    Resubscribe,
}

/// The commune state a receiver trusts on its current connection.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    connection: u64,
    /// The broker gave the retained state on this connection.
    retained_seen: bool,
    /// The newest state received on this connection.
    newest: Option<CommuneStateWire>,
    /// When the gate last asked to subscribe again.
    resubscribed: Option<Instant>,
}

impl Gate {
    /// Notes the connection a message came on: a new one forgets what the last taught.
    pub fn on_connection(&mut self, connection: u64) {
        if connection != self.connection {
            *self = Self {
                connection,
                ..Self::default()
            };
        }
    }

    /// Takes a verified state that arrived (at `now`, a monotonic time) with or without the
    /// retain flag.
    pub fn on_state(&mut self, state: CommuneStateWire, retained: bool, now: Instant) -> StateOutcome {
        self.retained_seen |= retained;
        if self.newest.as_ref().is_none_or(|n| state.seq >= n.seq) {
            self.newest = Some(state);
        }
        // A subscription can race a broker that only now got its state (one that came back
        // empty): ask again, now and then, until a retained state comes.
        let due = self
            .resubscribed
            .is_none_or(|at| now.saturating_duration_since(at) >= RESUBSCRIBE_EVERY);
        if !self.retained_seen && due {
            self.resubscribed = Some(now);
            return StateOutcome::Resubscribe;
        }
        StateOutcome::Taken
    }

    /// The state the receiver trusts, if it has one on this connection.
    pub fn trusted(&self) -> Option<&CommuneStateWire> {
        self.newest.as_ref().filter(|_| self.retained_seen)
    }

    /// What to do with the verified alert `id`.
    pub fn verdict(&self, id: &str) -> Verdict {
        let Some(state) = self.trusted() else {
            return Verdict::Wait;
        };
        if state.is_live(id) {
            return Verdict::Accept;
        }
        match state.replaced(id) {
            Some(r) => Verdict::Replaced {
                by: r.by.clone(),
                until: r.until.parse().unwrap_or(DateTime::<Utc>::MAX_UTC),
            },
            None => Verdict::Wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::wire::{LiveWire, ReplacedWire};

    fn state(seq: i64, live: &[&str], replaced: &[(&str, &str)]) -> CommuneStateWire {
        CommuneStateWire {
            v: 1,
            kind: "commune_state".into(),
            province: "20".into(),
            commune: "06385".into(),
            seq,
            as_of: "2026-10-09T01:00:00Z".into(),
            live: live
                .iter()
                .map(|id| LiveWire {
                    id: (*id).into(),
                    expires: "2026-10-09T07:00:00Z".into(),
                })
                .collect(),
            replaced: replaced
                .iter()
                .map(|(id, by)| ReplacedWire {
                    id: (*id).into(),
                    by: (*by).into(),
                    until: "2026-10-09T07:00:00Z".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_queued_old_state_never_lets_a_replaced_alert_play() {
        // Back online: the session's queue gives the alert and the state made with it,
        // then the Update and its state; then the retained state.
        let mut g = Gate::default();
        g.on_connection(2);
        let t = Instant::now();
        assert_eq!(
            g.on_state(state(1, &["a"], &[]), false, t),
            StateOutcome::Resubscribe
        );
        assert_eq!(g.verdict("a"), Verdict::Wait, "an unretained state may be old");
        assert_eq!(
            g.on_state(state(2, &["u"], &[("a", "u")]), false, t),
            StateOutcome::Taken
        );
        assert_eq!(g.verdict("a"), Verdict::Wait);
        g.on_state(state(2, &["u"], &[("a", "u")]), true, t);
        assert!(matches!(g.verdict("a"), Verdict::Replaced { by, .. } if by == "u"));
        assert_eq!(g.verdict("u"), Verdict::Accept);
    }

    #[test]
    fn whatever_the_order_the_retained_state_decides() {
        let orders: [&[(i64, bool)]; 3] = [
            &[(2, true), (1, false)],
            &[(1, false), (2, true)],
            &[(2, false), (2, true), (1, false)],
        ];
        for order in orders {
            let mut g = Gate::default();
            g.on_connection(1);
            for &(seq, retained) in order {
                let s = if seq == 1 {
                    state(1, &["a"], &[])
                } else {
                    state(2, &["u"], &[("a", "u")])
                };
                g.on_state(s, retained, Instant::now());
            }
            assert!(matches!(g.verdict("a"), Verdict::Replaced { .. }), "{order:?}");
        }
    }

    #[test]
    fn a_new_connection_trusts_nothing_until_its_retained_state() {
        let mut g = Gate::default();
        g.on_connection(1);
        let t = Instant::now();
        g.on_state(state(5, &["a"], &[]), true, t);
        assert_eq!(g.verdict("a"), Verdict::Accept);
        g.on_connection(2);
        assert_eq!(g.verdict("a"), Verdict::Wait);
        // A newer state after the retained one counts at once.
        g.on_state(state(5, &["a"], &[]), true, t);
        g.on_state(state(6, &["a", "b"], &[]), false, t);
        assert_eq!(g.verdict("b"), Verdict::Accept);
    }

    #[test]
    fn without_a_retained_state_it_asks_again_now_and_then() {
        let mut g = Gate::default();
        g.on_connection(1);
        let t = Instant::now();
        let s = || state(3, &["a"], &[]);
        assert_eq!(g.on_state(s(), false, t), StateOutcome::Resubscribe);
        assert_eq!(
            g.on_state(s(), false, t + Duration::from_millis(300)),
            StateOutcome::Taken
        );
        assert_eq!(
            g.on_state(s(), false, t + RESUBSCRIBE_EVERY),
            StateOutcome::Resubscribe
        );
        assert_eq!(
            g.on_state(s(), true, t + RESUBSCRIBE_EVERY * 3),
            StateOutcome::Taken
        );
        assert_eq!(
            g.on_state(s(), false, t + RESUBSCRIBE_EVERY * 9),
            StateOutcome::Taken
        );
    }
}
