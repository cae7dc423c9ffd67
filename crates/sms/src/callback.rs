//! Delivery reports, whatever gateway sends them back: the states a message reaches, the
//! report as canhbao reads it, why a callback is refused, and the two helpers every
//! callback parser needs: the secret compared in constant time, and form decoding. Pure;
//! each gateway's own parser is beside its protocol ([`crate::kannel::parse_dlr_query`],
//! [`crate::jasmin`], [`crate::webhook`]).

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::message::MessageRef;

/// Kannel's delivery-report types (`%d`, dlr.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DlrStatus {
    /// 1: delivered to the handset.
    Delivered,
    /// 2: not delivered to the handset.
    Failed,
    /// 4: buffered at the SMSC (the handset is not reachable yet).
    Buffered,
    /// 8: the SMSC accepted the message.
    SmscAccepted,
    /// 16: the SMSC rejected the message.
    SmscRejected,
}

impl DlrStatus {
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::Delivered,
            2 => Self::Failed,
            4 => Self::Buffered,
            8 => Self::SmscAccepted,
            16 => Self::SmscRejected,
            _ => return None,
        })
    }

    pub fn code(self) -> u8 {
        match self {
            Self::Delivered => 1,
            Self::Failed => 2,
            Self::Buffered => 4,
            Self::SmscAccepted => 8,
            Self::SmscRejected => 16,
        }
    }

    /// No later report changes the outcome.
    pub fn is_final(self) -> bool {
        match self {
            Self::Delivered | Self::Failed | Self::SmscRejected => true,
            Self::Buffered | Self::SmscAccepted => false,
        }
    }
}

/// One delivery report, authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    pub message_ref: MessageRef,
    pub status: DlrStatus,
    /// Kannel's time for the report (`%T`), when it gave one.
    pub at: Option<DateTime<Utc>>,
    /// The SMSC's reply (`%A`): `ACK/`, `NACK/<reason>`, or an SMPP receipt text.
    pub reason: String,
    /// The SMSC's message id (`%F`), when it gave one.
    pub smsc_message_id: Option<String>,
    /// Kannel's smsc-id of the link (`%i`).
    pub smsc: Option<String>,
    /// The recipient (`%p`).
    pub to: Option<String>,
}

/// Why a delivery-report callback is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DlrError {
    #[error("no dlr secret is configured for this gateway")]
    NoSecretConfigured,
    #[error("the delivery report has no secret")]
    MissingSecret,
    #[error("the delivery report's secret is wrong")]
    WrongSecret,
    #[error("the delivery report repeats {0:?}")]
    Duplicate(&'static str),
    #[error("the delivery report has no {0:?}")]
    Missing(&'static str),
    #[error("the delivery report's reference {0:?} is not one of ours")]
    BadRef(String),
    #[error("the delivery report's status {0:?} is not 1, 2, 4, 8 or 16")]
    BadStatus(String),
    #[error("the delivery report's time {0:?} is not a Unix time")]
    BadTime(String),
    /// A status word the gateway is not known to send (Jasmin's `message_status`, or a
    /// webhook status missing from its `status_map`).
    #[error("the delivery report's status {0:?} is not one this gateway is known to send")]
    UnknownStatus(String),
    #[error("the delivery report's level {0:?} is not 1, 2 or 3")]
    BadLevel(String),
    #[error("the delivery report's body is not JSON: {0}")]
    NotJson(String),
    #[error("the delivery report's body has no status (a string or a number) at {0:?}")]
    NoStatusAt(String),
}

/// Compares SHA-256 digests in constant time (`subtle`), so neither the content nor the
/// length of the expected secret leaks through timing.
pub(crate) fn same_secret(given: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
}

/// `application/x-www-form-urlencoded` decoding of one key or value: `+` is a space,
/// `%XX` a byte (the `percent-encoding` crate); a broken escape is kept as it is, and
/// bytes that are not UTF-8 become U+FFFD.
pub(crate) fn form_decode(value: &str) -> String {
    percent_encoding::percent_decode_str(&value.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}
