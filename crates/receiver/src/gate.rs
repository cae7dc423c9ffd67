//! The gate between a verified alert and the loudspeakers (`docs/receiver-protocol.md`
//! §4a and §8): an alert plays only once the commune state the receiver trusts says it is
//! live. Pure: the agent passes what arrived.
//!
//! After every (re)connection a receiver trusts only a state that the broker gives it as
//! retained (the newest the service published), or one newer than that. A state that
//! arrives without the retain flag before it may be old (queued in the receiver's session
//! while it was away): the receiver subscribes to the state topic again, and the broker
//! sends the retained one. So whatever order the broker delivers queued messages, retained
//! messages and resends in, an alert whose Update or Cancel is also waiting never plays:
//! the trusted state lists it as replaced.

use chrono::{DateTime, Utc};
use dispatch::wire::CommuneStateWire;

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
    resubscribed: bool,
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

    /// Takes a verified state that arrived with (or without) the retain flag.
    pub fn on_state(&mut self, state: CommuneStateWire, retained: bool) -> StateOutcome {
        self.retained_seen |= retained;
        if self.newest.as_ref().is_none_or(|n| state.seq >= n.seq) {
            self.newest = Some(state);
        }
        if !self.retained_seen && !self.resubscribed {
            self.resubscribed = true;
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
    use dispatch::wire::{LiveWire, ReplacedWire};

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
        assert_eq!(
            g.on_state(state(1, &["a"], &[]), false),
            StateOutcome::Resubscribe
        );
        assert_eq!(g.verdict("a"), Verdict::Wait, "an unretained state may be old");
        assert_eq!(
            g.on_state(state(2, &["u"], &[("a", "u")]), false),
            StateOutcome::Taken
        );
        assert_eq!(g.verdict("a"), Verdict::Wait);
        g.on_state(state(2, &["u"], &[("a", "u")]), true);
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
                g.on_state(s, retained);
            }
            assert!(matches!(g.verdict("a"), Verdict::Replaced { .. }), "{order:?}");
        }
    }

    #[test]
    fn a_new_connection_trusts_nothing_until_its_retained_state() {
        let mut g = Gate::default();
        g.on_connection(1);
        g.on_state(state(5, &["a"], &[]), true);
        assert_eq!(g.verdict("a"), Verdict::Accept);
        g.on_connection(2);
        assert_eq!(g.verdict("a"), Verdict::Wait);
        // A newer state after the retained one counts at once.
        g.on_state(state(5, &["a"], &[]), true);
        g.on_state(state(6, &["a", "b"], &[]), false);
        assert_eq!(g.verdict("b"), Verdict::Accept);
    }
}
