//! Pure decisions of the SMS channel: the state of one SMS from what the gateway answered
//! and the delivery reports that came back (in any order), and when a commune's officials
//! get the SMS fallback because its loudspeakers have not played an alert.

use chrono::{DateTime, Duration, Utc};
use domain::MessageClass;

use crate::sms_gateway::DlrStatus;

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
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Delivered | Self::Failed)
    }

    /// Progress order for reports that arrive out of order: a report never moves an SMS
    /// back (Kannel often sends "delivered" before "SMSC accepted").
    fn rank(self) -> u8 {
        match self {
            Self::Queued => 0,
            Self::Sending => 1,
            Self::Submitted => 2,
            Self::Buffered => 3,
            Self::SmscAccepted => 4,
            Self::Delivered | Self::Failed => 5,
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
}
