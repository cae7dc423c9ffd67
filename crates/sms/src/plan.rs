//! Pure decisions of the SMS channel: the state of one SMS from what the gateway answered
//! and the delivery reports that came back (in any order), which gateway a message moves
//! to, and when a commune's officials get the SMS fallback because its loudspeakers have
//! not played an alert.

use chrono::{DateTime, Duration, Utc};
use domain::MessageClass;
use sha2::{Digest, Sha256};
use store::SmsOutcome;

use crate::callback::DlrStatus;
use crate::link::GatewayError;
use crate::message::{MessageRef, SendOutcome};

/// Where one SMS to one number stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SmsState {
    /// Written, not yet handed to a gateway.
    Queued,
    /// Being handed over: if the process dies now, the gateway may or may not have it.
    Sending,
    /// The gateway took it (Kannel `0: Accepted` or `3: Queued`).
    Submitted,
    /// The SMSC holds it: the handset is not reachable yet.
    Buffered,
    /// The SMSC accepted it.
    SmscAccepted,
    /// Final: the handset has it.
    Delivered,
    /// Final: the SMSC or the network refused it.
    Failed,
    /// The gateway may have it: its answer never came (a timeout, or the sender stopped
    /// mid-call). It is not sent again unless its report deadline passes.
    Unconfirmed,
    /// No report came by the deadline and no other gateway was left to try.
    Unreported,
    /// An update or cancel came before it was sent: never sent.
    Superseded,
    /// The alert ended before it could be sent.
    Expired,
}

impl SmsState {
    pub fn code(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Submitted => "submitted",
            Self::Buffered => "buffered",
            Self::SmscAccepted => "smsc_accepted",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Unconfirmed => "unconfirmed",
            Self::Unreported => "unreported",
            Self::Superseded => "superseded",
            Self::Expired => "expired",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Sending,
            Self::Submitted,
            Self::Buffered,
            Self::SmscAccepted,
            Self::Delivered,
            Self::Failed,
            Self::Unconfirmed,
            Self::Unreported,
            Self::Superseded,
            Self::Expired,
        ]
        .into_iter()
        .find(|s| s.code() == code)
    }

    /// No report changes it.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Delivered | Self::Failed | Self::Superseded | Self::Expired
        )
    }

    /// Progress order for reports that arrive out of order: a report never moves an SMS
    /// back (Kannel often sends "delivered" before "SMSC accepted").
    fn rank(self) -> u8 {
        match self {
            Self::Queued => 0,
            Self::Sending => 1,
            Self::Submitted | Self::Unconfirmed | Self::Unreported => 2,
            Self::Buffered => 3,
            Self::SmscAccepted => 4,
            Self::Delivered | Self::Failed | Self::Superseded | Self::Expired => 5,
        }
    }
}

/// The state after a delivery report, whatever order reports arrive in: a final state is
/// never left, and an intermediate report never undoes a later one.
pub fn apply_report(current: SmsState, report: DlrStatus) -> SmsState {
    let next = match report {
        DlrStatus::Delivered => SmsState::Delivered,
        DlrStatus::Failed | DlrStatus::SmscRejected => SmsState::Failed,
        DlrStatus::Buffered => SmsState::Buffered,
        DlrStatus::SmscAccepted => SmsState::SmscAccepted,
    };
    if current.is_final() || next.rank() <= current.rank() {
        current
    } else {
        next
    }
}

/// Our reference for the SMS of `alert_id` to `phone`: the same every time it is computed,
/// so a message written twice (two instances deciding at once) is one row.
pub fn message_ref(alert_id: &str, phone: &str) -> MessageRef {
    let digest = Sha256::digest(format!("{alert_id}\n{phone}").as_bytes());
    let hex: String = digest.iter().take(15).map(|b| format!("{b:02x}")).collect();
    // 31 characters of [a-z0-9]: always a valid reference.
    MessageRef::new(&format!("s{hex}")).unwrap_or_else(|_| unreachable!("hex is a valid reference"))
}

/// Where a message stands among the gateways: the one that has it or will (`gateway`),
/// those it moved away from that may have it (`tried`: never used again, a second copy
/// could follow), and those that refused it for good (`refused`), in failover `order`.
#[derive(Debug, Clone, Copy)]
pub struct Route<'a> {
    pub gateway: &'a str,
    pub tried: &'a [String],
    pub refused: &'a [String],
    pub order: &'a [String],
}

impl<'a> Route<'a> {
    fn usable(&self, g: &str) -> bool {
        !self.tried.iter().any(|t| t == g) && !self.refused.iter().any(|r| r == g)
    }

    /// The first usable gateway other than the current one.
    pub fn next_untried(&self) -> Option<&'a str> {
        self.order
            .iter()
            .map(String::as_str)
            .find(|g| *g != self.gateway && self.usable(g))
    }

    /// The usable gateway after the current one, wrapping round (the current one if it is
    /// the only one left).
    fn next_in_turn(&self) -> &'a str {
        let usable: Vec<&'a str> = self
            .order
            .iter()
            .map(String::as_str)
            .filter(|g| self.usable(g))
            .collect();
        match usable.iter().position(|g| *g == self.gateway) {
            Some(i) => usable[(i + 1) % usable.len()],
            None => usable.first().copied().unwrap_or(self.gateway),
        }
    }

    /// Whether a gateway the message left may have it: then it must never end as `failed`.
    fn may_be_out(&self) -> bool {
        !self.tried.is_empty()
    }
}

/// How long to wait and retry when no gateway would take a message for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmsTiming {
    /// How long a gateway has to send a delivery report before the message moves on.
    pub report_deadline: Duration,
    /// First delay once every gateway refused for now; doubles per attempt up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
}

impl SmsTiming {
    /// The backoff before attempt `n + 1` of a round of refusals; never overflows.
    fn backoff(&self, n: i64) -> Duration {
        let exp = u32::try_from(n.saturating_sub(1)).unwrap_or(u32::MAX).min(30);
        self.retry_base
            .checked_mul(1i32 << exp)
            .map_or(self.retry_max, |d| d.min(self.retry_max))
    }
}

/// What becomes of a message after `route.gateway` answered (or did not).
///
/// - Taken (`0: Accepted`, `3: Queued`): submitted, with a report deadline.
/// - No answer after the request left (a timeout, a broken connection, an unreadable
///   2xx): the gateway may have it, so it is not resent; it waits for a report.
/// - Refused for now (5xx, 429, unreachable): the next usable gateway at once; once each
///   has had its turn, again after a backoff that grows.
/// - Refused for good (4xx): the next usable gateway; with none left, failed, or
///   unreported if a gateway it left may have it.
/// - A message no gateway can send (a bad number, an empty text): failed.
///
/// `None`: the send was called off before anything left (the message was superseded,
/// expired or taken by another sender); nothing is to be recorded.
pub fn after_send(
    answer: Result<&SendOutcome, &GatewayError>,
    route: &Route<'_>,
    attempts: i64,
    now: DateTime<Utc>,
    timing: &SmsTiming,
) -> Option<SmsOutcome> {
    let gateway = route.gateway;
    let transient = |error: String| {
        let next = route.next_in_turn();
        let usable = route.order.iter().filter(|g| route.usable(g)).count();
        let turns = i64::try_from(usable.max(1)).unwrap_or(1);
        let delay = if attempts < turns {
            Duration::zero()
        } else {
            timing.backoff(attempts - turns + 1)
        };
        SmsOutcome::Retry {
            error,
            gateway: next.to_owned(),
            next_attempt: now + delay,
            refused_for_good: false,
        }
    };
    let given_up = |error: String| match route.next_untried() {
        Some(next) => SmsOutcome::Retry {
            error,
            gateway: next.to_owned(),
            next_attempt: now,
            refused_for_good: true,
        },
        None if route.may_be_out() => SmsOutcome::Unreported {
            error: format!(
                "{error}; a gateway it left ({}) may have sent it",
                route.tried.join(", ")
            ),
        },
        None => SmsOutcome::Failed { error },
    };
    Some(match answer {
        Ok(SendOutcome::Accepted | SendOutcome::Queued) => SmsOutcome::Submitted {
            report_deadline: now + timing.report_deadline,
        },
        Ok(SendOutcome::Rejected { status, reason, kind }) => {
            let error = format!("{gateway} refused it: {status} {reason}");
            match kind {
                crate::message::RejectKind::Transient => transient(error),
                crate::message::RejectKind::Permanent => given_up(error),
            }
        }
        Err(GatewayError::CalledOff(_)) => return None,
        Err(e) if e.may_have_sent() => SmsOutcome::Unconfirmed {
            error: format!("{gateway}: {e}"),
            report_deadline: now + timing.report_deadline,
        },
        Err(e @ (GatewayError::Message(_) | GatewayError::Config(_))) => given_up(format!("{gateway}: {e}")),
        Err(e) => transient(format!("{gateway}: {e}")),
    })
}

/// What a delivery report does to its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportEffect {
    Keep,
    Set(SmsState),
    /// The SMSC refused it (no copy was made): send it through this gateway now.
    MoveTo(String),
}

/// Applies a report from `reporter` to a message in `current` state on `route`. Reports
/// from the message's gateway follow [`apply_report`]; a gateway it left (one that may
/// have it) can only say it was delivered after all, which then wins even over a failure
/// elsewhere; any other gateway's report changes nothing. An SMSC rejection moves the
/// message to the next usable gateway.
pub fn after_report(current: SmsState, report: DlrStatus, reporter: &str, route: &Route<'_>) -> ReportEffect {
    if reporter != route.gateway {
        let left_it = route.tried.iter().any(|t| t == reporter);
        return if left_it
            && report == DlrStatus::Delivered
            && !matches!(
                current,
                SmsState::Delivered | SmsState::Superseded | SmsState::Expired
            ) {
            ReportEffect::Set(SmsState::Delivered)
        } else {
            ReportEffect::Keep
        };
    }
    if current.is_final() {
        return ReportEffect::Keep;
    }
    if report == DlrStatus::SmscRejected
        && let Some(next) = route.next_untried()
    {
        return ReportEffect::MoveTo(next.to_owned());
    }
    let next = apply_report(current, report);
    if next == current {
        ReportEffect::Keep
    } else {
        ReportEffect::Set(next)
    }
}

/// How long a commune's loudspeakers have to play an alert before its officials get it by
/// SMS, per message class (Circular 39/2020 classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FallbackAfter {
    pub emergency: Duration,
    pub priority: Duration,
    pub normal: Duration,
}

impl FallbackAfter {
    pub fn for_class(&self, class: MessageClass) -> Duration {
        match class {
            MessageClass::Emergency => self.emergency,
            MessageClass::Priority => self.priority,
            MessageClass::Normal => self.normal,
        }
    }
}

/// What the loudspeakers of one commune did with one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommuneLoudspeakers {
    /// Registered receivers of the commune.
    pub registered: usize,
    /// How many were online when the alert was issued.
    pub online_at_issue: usize,
    /// How many reported `played`.
    pub played: usize,
}

/// Why a commune's officials get the alert by SMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FallbackReason {
    NoReceiver,
    NoneOnlineAtIssue,
    NotPlayedInTime {
        after: Duration,
        played: usize,
        registered: usize,
    },
}

impl std::fmt::Display for FallbackReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoReceiver => f.write_str("the commune has no registered loudspeaker receiver"),
            Self::NoneOnlineAtIssue => {
                f.write_str("no loudspeaker receiver of the commune was online when the alert was issued")
            }
            Self::NotPlayedInTime {
                after,
                played,
                registered,
            } => write!(
                f,
                "{played} of {registered} loudspeaker receivers reported played within {} s",
                after.num_seconds()
            ),
        }
    }
}

/// Whether the officials of a commune get an alert by SMS at `now`: at once if no
/// receiver could hear it, or once `fallback_after` for its class has passed without
/// every registered receiver reporting `played`.
pub fn fallback(
    class: MessageClass,
    issued: DateTime<Utc>,
    now: DateTime<Utc>,
    speakers: CommuneLoudspeakers,
    after: &FallbackAfter,
) -> Option<FallbackReason> {
    if speakers.registered == 0 {
        return Some(FallbackReason::NoReceiver);
    }
    if speakers.online_at_issue == 0 {
        return Some(FallbackReason::NoneOnlineAtIssue);
    }
    let wait = after.for_class(class);
    (now - issued >= wait && speakers.played < speakers.registered).then_some(
        FallbackReason::NotPlayedInTime {
            after: wait,
            played: speakers.played,
            registered: speakers.registered,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_in_any_order_end_in_the_same_state() {
        use DlrStatus::*;
        let orders = [
            vec![SmscAccepted, Delivered],
            vec![Delivered, SmscAccepted],
            vec![Buffered, Delivered, SmscAccepted],
            vec![Delivered, Buffered],
        ];
        for reports in orders {
            let end = reports
                .iter()
                .fold(SmsState::Submitted, |s, r| apply_report(s, *r));
            assert_eq!(end, SmsState::Delivered, "{reports:?}");
        }
        assert_eq!(
            apply_report(SmsState::Failed, Delivered),
            SmsState::Failed,
            "final stays final"
        );
        assert_eq!(apply_report(SmsState::Submitted, SmscRejected), SmsState::Failed);
        assert_eq!(
            apply_report(SmsState::SmscAccepted, Buffered),
            SmsState::SmscAccepted
        );
    }

    #[test]
    fn officials_get_sms_when_no_loudspeaker_can_or_did_play() {
        let issued: DateTime<Utc> = "2026-10-09T02:00:00Z".parse().unwrap();
        let after = FallbackAfter {
            emergency: Duration::minutes(2),
            priority: Duration::minutes(10),
            normal: Duration::minutes(30),
        };
        let s = |registered, online_at_issue, played| CommuneLoudspeakers {
            registered,
            online_at_issue,
            played,
        };
        let e = MessageClass::Emergency;
        assert_eq!(
            fallback(e, issued, issued, s(0, 0, 0), &after),
            Some(FallbackReason::NoReceiver)
        );
        assert_eq!(
            fallback(e, issued, issued, s(2, 0, 0), &after),
            Some(FallbackReason::NoneOnlineAtIssue)
        );
        assert_eq!(
            fallback(e, issued, issued + Duration::seconds(119), s(2, 2, 1), &after),
            None
        );
        let late = fallback(e, issued, issued + Duration::minutes(2), s(2, 2, 1), &after).unwrap();
        assert_eq!(
            late.to_string(),
            "1 of 2 loudspeaker receivers reported played within 120 s"
        );
        assert_eq!(
            fallback(e, issued, issued + Duration::hours(1), s(2, 2, 2), &after),
            None
        );
        let n = MessageClass::Normal;
        assert_eq!(
            fallback(n, issued, issued + Duration::minutes(5), s(2, 2, 0), &after),
            None
        );
    }

    fn order() -> Vec<String> {
        vec!["a".to_owned(), "b".to_owned()]
    }

    fn timing() -> SmsTiming {
        SmsTiming {
            report_deadline: Duration::seconds(300),
            retry_base: Duration::seconds(1),
            retry_max: Duration::seconds(60),
        }
    }

    fn route<'a>(
        gateway: &'a str,
        tried: &'a [String],
        refused: &'a [String],
        order: &'a [String],
    ) -> Route<'a> {
        Route {
            gateway,
            tried,
            refused,
            order,
        }
    }

    #[test]
    fn a_message_moves_to_another_gateway_only_when_no_copy_can_be_out() {
        use crate::message::RejectKind;
        let now: DateTime<Utc> = "2026-10-09T02:00:00Z".parse().unwrap();
        let o = order();
        let a = ["a".to_owned()];
        let none: [String; 0] = [];
        let send = |answer: Result<&SendOutcome, &GatewayError>, r: Route<'_>, attempts| {
            after_send(answer, &r, attempts, now, &timing()).unwrap()
        };
        assert_eq!(
            send(Ok(&SendOutcome::Queued), route("a", &none, &none, &o), 1),
            SmsOutcome::Submitted {
                report_deadline: now + Duration::seconds(300)
            }
        );
        let busy = SendOutcome::Rejected {
            status: 503,
            reason: "Temporal failure, try again later.".into(),
            kind: RejectKind::Transient,
        };
        // The first refusal for now goes straight to the other gateway...
        let SmsOutcome::Retry {
            gateway,
            next_attempt,
            refused_for_good,
            ..
        } = send(Ok(&busy), route("a", &none, &none, &o), 1)
        else {
            panic!("not a retry");
        };
        assert_eq!(
            (gateway.as_str(), next_attempt, refused_for_good),
            ("b", now, false)
        );
        // ...and once each had its turn, round again after a backoff that grows.
        let SmsOutcome::Retry {
            gateway,
            next_attempt,
            ..
        } = send(Ok(&busy), route("b", &none, &none, &o), 4)
        else {
            panic!("not a retry");
        };
        assert_eq!(
            (gateway.as_str(), next_attempt),
            ("a", now + Duration::seconds(4))
        );
        // A gateway that may have it (it was moved away from after a silent deadline) is
        // never used again, however busy the other one is.
        let SmsOutcome::Retry { gateway, .. } = send(Ok(&busy), route("b", &a, &none, &o), 9) else {
            panic!("not a retry");
        };
        assert_eq!(gateway, "b");
        let refused = SendOutcome::Rejected {
            status: 403,
            reason: "Not routable. Do not try again.".into(),
            kind: RejectKind::Permanent,
        };
        assert!(matches!(
            send(Ok(&refused), route("a", &none, &none, &o), 1),
            SmsOutcome::Retry { gateway, refused_for_good: true, .. } if gateway == "b"
        ));
        let SmsOutcome::Failed { error } = send(Ok(&refused), route("b", &none, &a, &o), 2) else {
            panic!("not failed");
        };
        assert_eq!(error, "b refused it: 403 Not routable. Do not try again.");
        // Refused for good at b, but a may have sent it: unreported, never failed.
        assert!(matches!(
            send(Ok(&refused), route("b", &a, &none, &o), 2),
            SmsOutcome::Unreported { .. }
        ));
        // No answer after the request left: maybe sent, so never resent at once.
        let timeout = GatewayError::Timeout {
            endpoint: "http://a".into(),
            timeout: std::time::Duration::from_secs(10),
        };
        assert!(matches!(
            send(Err(&timeout), route("a", &none, &none, &o), 1),
            SmsOutcome::Unconfirmed { .. }
        ));
        let bad = GatewayError::Message(crate::message::MessageError::EmptyText);
        assert!(matches!(
            send(Err(&bad), route("b", &none, &a, &o), 1),
            SmsOutcome::Failed { .. }
        ));
        assert!(matches!(
            send(Err(&GatewayError::Closed), route("a", &none, &none, &o), 1),
            SmsOutcome::Retry { gateway, .. } if gateway == "b"
        ));
        // Called off before anything left: nothing to record.
        let off = GatewayError::CalledOff("superseded".into());
        assert_eq!(
            after_send(Err(&off), &route("a", &none, &none, &o), 1, now, &timing()),
            None
        );
        // A huge base never overflows the backoff.
        let t = SmsTiming {
            retry_base: Duration::days(1),
            ..timing()
        };
        assert_eq!(t.backoff(60), t.retry_max);
    }

    #[test]
    fn reports_count_only_from_the_gateway_that_has_it_or_one_that_may() {
        use DlrStatus::*;
        let o = order();
        let a = ["a".to_owned()];
        let none: [String; 0] = [];
        let r = |gateway, tried| route(gateway, tried, &none, &o);
        assert_eq!(
            after_report(SmsState::Submitted, SmscAccepted, "a", &r("a", &none)),
            ReportEffect::Set(SmsState::SmscAccepted)
        );
        assert_eq!(
            after_report(SmsState::Queued, Failed, "a", &r("b", &a)),
            ReportEffect::Keep,
            "a late failure from the old gateway must not end the new attempt"
        );
        assert_eq!(
            after_report(SmsState::Submitted, Delivered, "a", &r("b", &a)),
            ReportEffect::Set(SmsState::Delivered)
        );
        assert_eq!(
            after_report(SmsState::Failed, Delivered, "a", &r("b", &a)),
            ReportEffect::Set(SmsState::Delivered),
            "a copy the old gateway delivered wins over a refusal at the new one"
        );
        assert_eq!(
            after_report(SmsState::Submitted, Delivered, "b", &r("a", &none)),
            ReportEffect::Keep,
            "a gateway that never had it cannot say it delivered it"
        );
        assert_eq!(
            after_report(SmsState::Submitted, SmscRejected, "a", &r("a", &none)),
            ReportEffect::MoveTo("b".into()),
            "an SMSC rejection made no copy: the next gateway gets it"
        );
        assert_eq!(
            after_report(SmsState::Submitted, SmscRejected, "b", &r("b", &a)),
            ReportEffect::Set(SmsState::Failed)
        );
        assert_eq!(
            after_report(SmsState::Unconfirmed, Delivered, "a", &r("a", &none)),
            ReportEffect::Set(SmsState::Delivered)
        );
        assert_eq!(
            after_report(SmsState::Superseded, Delivered, "a", &r("a", &none)),
            ReportEffect::Keep
        );
        for s in [SmsState::Unreported, SmsState::Expired, SmsState::SmscAccepted] {
            assert_eq!(SmsState::from_code(s.code()), Some(s));
        }
    }

    #[test]
    fn references_are_stable_valid_and_distinct() {
        let a = message_ref("canhbao-20-flood-1", "+84912345678");
        assert_eq!(a, message_ref("canhbao-20-flood-1", "+84912345678"));
        assert_ne!(a, message_ref("canhbao-20-flood-1", "+84912345679"));
        assert_ne!(a, message_ref("canhbao-20-flood-2", "+84912345678"));
        assert_eq!(a.as_str().len(), 31);
        let o = order();
        let a = ["a".to_owned()];
        assert_eq!(route("a", &[], &[], &o).next_untried(), Some("b"));
        assert_eq!(route("b", &a, &[], &o).next_untried(), None);
        assert_eq!(route("b", &[], &a, &o).next_untried(), None);
    }
}
