//! States of a delivery and of a receiver's receipt, and what a commune has live.

use chrono::{DateTime, Utc};

/// Where one alert's publication to one commune topic stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishState {
    /// Waiting for a worker (first try or a retry after a failure).
    Queued,
    /// Handed to the broker. Not proof of delivery: only receipts are.
    Published,
    /// Given up on: the alert expired before it could be published.
    Expired,
    /// Never published: an Update or Cancel replaced the alert first.
    Superseded,
}

impl PublishState {
    pub fn code(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Published => "published",
            Self::Expired => "expired",
            Self::Superseded => "superseded",
        }
    }
    pub fn from_code(code: &str) -> Option<Self> {
        [Self::Queued, Self::Published, Self::Expired, Self::Superseded]
            .into_iter()
            .find(|s| s.code() == code)
    }
}

/// What a receiver reports about one alert version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReceiptStatus {
    /// Verified and accepted.
    Received,
    /// Played on the loudspeakers.
    Played,
    /// Dropped: bad signature, unknown key, expired, replayed or malformed.
    Rejected,
    /// Accepted but could not be played.
    Failed,
    /// Accepted and deliberately not played: a renewal of an alert this receiver played
    /// (protocol §8).
    Acknowledged,
}

impl ReceiptStatus {
    pub const ALL: [ReceiptStatus; 5] = [
        Self::Received,
        Self::Played,
        Self::Rejected,
        Self::Failed,
        Self::Acknowledged,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Played => "played",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::Acknowledged => "acknowledged",
        }
    }
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }
}

/// What one commune has (protocol §4a): the messages live now, and the
/// replaced ones still worth remembering.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommuneState {
    /// The newest alert of the commune, as a number that only grows (its row order).
    pub seq: i64,
    /// (id, expires) of every message not expired that nothing replaced.
    pub live: Vec<(String, DateTime<Utc>)>,
    /// (id, replaced by, until): every message an Update or Cancel replaced, until the
    /// later of its own and its replacement's expiry.
    pub replaced: Vec<(String, String, DateTime<Utc>)>,
    /// When the newest message it lists was issued (`None` when it lists none): the same
    /// state always has the same content, and so the same signed bytes.
    pub newest_sent: Option<DateTime<Utc>>,
}
