//! The loudspeaker programme: which accepted alert plays now, which wait, and which an
//! emergency interrupts (Circular 39/2020, `docs/receiver-protocol.md` §8).
//!
//! This is pure: no I/O, no clock (time is an argument) and no alert text. The agent
//! tells it what arrived and when a playback ended, and carries out the [`Action`]s it
//! returns, in order.

use chrono::{DateTime, Utc};
use domain::MessageClass;

/// What the programme needs to know of an accepted alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub id: String,
    pub class: MessageClass,
    /// Never played from this time on.
    pub expires: DateTime<Utc>,
    /// Alerts that this Update or Cancel replaces: they stop and leave the queue.
    pub references: Vec<String>,
}

/// What the agent must do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start, or resume after an interruption, playing this alert.
    Play(String),
    /// Stop the alert that is playing; the reason says whether it comes back.
    Stop { id: String, reason: StopReason },
    /// Take this alert out of the queue without playing it.
    Drop { id: String, reason: DropReason },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// An emergency pre-empted it; it waits at the head of its class to resume.
    Interrupted { by: String },
    /// An Update or Cancel replaced it; it does not come back.
    Superseded { by: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// Its `expires` passed while it waited.
    Expired,
    /// An Update or Cancel replaced it before it played.
    Superseded { by: String },
}

/// Whether an alert of class `incoming` interrupts one of class `playing`: only an
/// emergency does, and never another emergency (that one waits its turn).
pub fn interrupts(incoming: MessageClass, playing: MessageClass) -> bool {
    incoming == MessageClass::Emergency && playing != MessageClass::Emergency
}

#[derive(Debug, Clone)]
struct Entry {
    slot: Slot,
    /// Arrival order, kept across an interruption so that a resumed alert goes first
    /// within its class.
    seq: u64,
}

/// The alert playing and those waiting. Waiting alerts play by class (emergency, then
/// priority, then normal), and in order of arrival within a class.
#[derive(Debug, Default)]
pub struct Programme {
    playing: Option<Entry>,
    queue: Vec<Entry>,
    next_seq: u64,
}

impl Programme {
    /// The alert playing, if any.
    pub fn playing(&self) -> Option<&str> {
        self.playing.as_ref().map(|e| e.slot.id.as_str())
    }

    /// The waiting alerts, in the order they would play (ignoring expiry).
    pub fn queued(&self) -> Vec<&str> {
        let mut q: Vec<&Entry> = self.queue.iter().collect();
        q.sort_by_key(|e| rank(e));
        q.into_iter().map(|e| e.slot.id.as_str()).collect()
    }

    /// An accepted alert arrives at `now`.
    pub fn arrive(&mut self, slot: Slot, now: DateTime<Utc>) -> Vec<Action> {
        let mut actions = Vec::new();
        // An Update or Cancel first removes what it replaces, playing or waiting.
        for r in &slot.references {
            if self.playing.as_ref().is_some_and(|p| &p.slot.id == r) {
                self.playing = None;
                actions.push(Action::Stop {
                    id: r.clone(),
                    reason: StopReason::Superseded { by: slot.id.clone() },
                });
            }
            if let Some(i) = self.queue.iter().position(|e| &e.slot.id == r) {
                self.queue.remove(i);
                actions.push(Action::Drop {
                    id: r.clone(),
                    reason: DropReason::Superseded { by: slot.id.clone() },
                });
            }
        }
        let entry = Entry {
            slot,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        match self.playing.take() {
            Some(p) if interrupts(entry.slot.class, p.slot.class) => {
                actions.push(Action::Stop {
                    id: p.slot.id.clone(),
                    reason: StopReason::Interrupted {
                        by: entry.slot.id.clone(),
                    },
                });
                self.queue.push(p);
                actions.push(Action::Play(entry.slot.id.clone()));
                self.playing = Some(entry);
            }
            Some(p) => {
                self.playing = Some(p);
                self.queue.push(entry);
            }
            None => {
                self.queue.push(entry);
                self.pick(now, &mut actions);
            }
        }
        actions
    }

    /// The alert playing ended on its own at `now` (all its renditions, a failure, or its
    /// expiry): the next one starts.
    pub fn finished(&mut self, now: DateTime<Utc>) -> Vec<Action> {
        self.playing = None;
        let mut actions = Vec::new();
        self.pick(now, &mut actions);
        actions
    }

    /// Drops what expired while waiting, then starts the first of the rest.
    fn pick(&mut self, now: DateTime<Utc>, actions: &mut Vec<Action>) {
        let mut expired = Vec::new();
        self.queue.retain(|e| {
            let live = now < e.slot.expires;
            if !live {
                expired.push(e.clone());
            }
            live
        });
        expired.sort_by_key(|e| e.seq);
        actions.extend(expired.into_iter().map(|e| Action::Drop {
            id: e.slot.id,
            reason: DropReason::Expired,
        }));
        let best = self
            .queue
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| rank(e))
            .map(|(i, _)| i);
        if let Some(i) = best {
            let e = self.queue.remove(i);
            actions.push(Action::Play(e.slot.id.clone()));
            self.playing = Some(e);
        }
    }
}

/// Sort key: higher class first, then earlier arrival.
fn rank(e: &Entry) -> (std::cmp::Reverse<MessageClass>, u64) {
    (std::cmp::Reverse(e.slot.class), e.seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use MessageClass::{Emergency, Normal, Priority};

    fn t(min: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::minutes(min)
    }

    fn slot(id: &str, class: MessageClass) -> Slot {
        Slot {
            id: id.into(),
            class,
            expires: t(60),
            references: vec![],
        }
    }

    fn play(id: &str) -> Action {
        Action::Play(id.into())
    }

    #[test]
    fn only_an_emergency_interrupts_and_never_another_emergency() {
        let cases = [
            (Emergency, Normal, true),
            (Emergency, Priority, true),
            (Emergency, Emergency, false),
            (Priority, Normal, false),
            (Normal, Normal, false),
            (Normal, Emergency, false),
            (Priority, Emergency, false),
        ];
        for (incoming, playing, expected) in cases {
            assert_eq!(
                interrupts(incoming, playing),
                expected,
                "{incoming:?} over {playing:?}"
            );
        }
    }

    /// One step of a scenario: what happens, and the actions expected.
    enum Step {
        Arrive(Slot, i64),
        Finish(i64),
    }

    fn check(steps: Vec<(Step, Vec<Action>)>, playing: Option<&str>, queued: &[&str]) {
        let mut p = Programme::default();
        for (i, (step, expected)) in steps.into_iter().enumerate() {
            let got = match step {
                Step::Arrive(s, at) => p.arrive(s, t(at)),
                Step::Finish(at) => p.finished(t(at)),
            };
            assert_eq!(got, expected, "step {i}");
        }
        assert_eq!(p.playing(), playing);
        assert_eq!(p.queued(), queued);
    }

    #[test]
    fn an_alert_plays_at_once_when_nothing_else_does() {
        check(
            vec![(Step::Arrive(slot("n", Normal), 0), vec![play("n")])],
            Some("n"),
            &[],
        );
    }

    #[test]
    fn an_emergency_interrupts_a_normal_alert_which_resumes_after_it() {
        check(
            vec![
                (Step::Arrive(slot("n", Normal), 0), vec![play("n")]),
                (
                    Step::Arrive(slot("e", Emergency), 1),
                    vec![
                        Action::Stop {
                            id: "n".into(),
                            reason: StopReason::Interrupted { by: "e".into() },
                        },
                        play("e"),
                    ],
                ),
                (Step::Finish(2), vec![play("n")]),
            ],
            Some("n"),
            &[],
        );
    }

    #[test]
    fn waiting_alerts_play_emergency_then_priority_then_normal_in_arrival_order() {
        check(
            vec![
                (Step::Arrive(slot("e1", Emergency), 0), vec![play("e1")]),
                (Step::Arrive(slot("n1", Normal), 0), vec![]),
                (Step::Arrive(slot("p1", Priority), 0), vec![]),
                (Step::Arrive(slot("e2", Emergency), 0), vec![]),
                (Step::Arrive(slot("n2", Normal), 0), vec![]),
                (Step::Arrive(slot("p2", Priority), 0), vec![]),
            ],
            Some("e1"),
            &["e2", "p1", "p2", "n1", "n2"],
        );
        check(
            vec![
                (Step::Arrive(slot("p1", Priority), 0), vec![play("p1")]),
                (Step::Arrive(slot("n1", Normal), 0), vec![]),
                (Step::Arrive(slot("p2", Priority), 0), vec![]),
                (Step::Finish(1), vec![play("p2")]),
                (Step::Finish(2), vec![play("n1")]),
                (Step::Finish(3), vec![]),
            ],
            None,
            &[],
        );
    }

    #[test]
    fn an_interrupted_alert_resumes_before_others_of_its_class() {
        check(
            vec![
                (Step::Arrive(slot("n1", Normal), 0), vec![play("n1")]),
                (Step::Arrive(slot("n2", Normal), 0), vec![]),
                (
                    Step::Arrive(slot("e", Emergency), 1),
                    vec![
                        Action::Stop {
                            id: "n1".into(),
                            reason: StopReason::Interrupted { by: "e".into() },
                        },
                        play("e"),
                    ],
                ),
            ],
            Some("e"),
            &["n1", "n2"],
        );
    }

    #[test]
    fn an_alert_that_expired_while_waiting_is_dropped_not_played() {
        let mut short = slot("n-short", Normal);
        short.expires = t(5);
        check(
            vec![
                (Step::Arrive(slot("e", Emergency), 0), vec![play("e")]),
                (Step::Arrive(short, 1), vec![]),
                (Step::Arrive(slot("n", Normal), 2), vec![]),
                (
                    Step::Finish(5),
                    vec![
                        Action::Drop {
                            id: "n-short".into(),
                            reason: DropReason::Expired,
                        },
                        play("n"),
                    ],
                ),
            ],
            Some("n"),
            &[],
        );
    }

    #[test]
    fn an_update_stops_and_removes_the_alerts_it_replaces() {
        let mut update = slot("u", Normal);
        update.references = vec!["n1".into(), "n2".into(), "gone".into()];
        check(
            vec![
                (Step::Arrive(slot("n1", Normal), 0), vec![play("n1")]),
                (Step::Arrive(slot("n2", Normal), 0), vec![]),
                (Step::Arrive(slot("p", Priority), 0), vec![]),
                (
                    Step::Arrive(update, 1),
                    vec![
                        Action::Stop {
                            id: "n1".into(),
                            reason: StopReason::Superseded { by: "u".into() },
                        },
                        Action::Drop {
                            id: "n2".into(),
                            reason: DropReason::Superseded { by: "u".into() },
                        },
                        // The priority alert that was waiting goes before the update.
                        play("p"),
                    ],
                ),
            ],
            Some("p"),
            &["u"],
        );
    }

    #[test]
    fn an_emergency_cancel_of_the_playing_alert_plays_at_once() {
        let mut cancel = slot("c", Emergency);
        cancel.references = vec!["e".into()];
        check(
            vec![
                (Step::Arrive(slot("e", Emergency), 0), vec![play("e")]),
                (Step::Arrive(slot("n", Normal), 0), vec![]),
                (
                    Step::Arrive(cancel, 1),
                    vec![
                        Action::Stop {
                            id: "e".into(),
                            reason: StopReason::Superseded { by: "c".into() },
                        },
                        play("c"),
                    ],
                ),
            ],
            Some("c"),
            &["n"],
        );
    }
}
