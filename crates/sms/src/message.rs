//! What every gateway shares: our reference for one message, the message itself, what a
//! gateway answered to it, and the refusals that are safe to retry. Pure.

use std::fmt;

use crate::text::Encoding;

/// Our reference for one SMS (one alert version to one number), echoed back in its
/// delivery reports: 1 to 64 characters of `A-Z a-z 0-9 . _ : -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageRef(String);

impl MessageRef {
    pub const MAX_CHARS: usize = 64;

    pub fn new(value: &str) -> Result<Self, MessageError> {
        let ok = !value.is_empty()
            && value.len() <= Self::MAX_CHARS
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(MessageError::BadRef(value.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One SMS to one number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsMessage {
    /// E.164, for example `+84912345678`.
    pub to: String,
    /// The text as it is to arrive (already GSM-7-safe when `encoding` is GSM-7).
    pub text: String,
    pub encoding: Encoding,
    pub message_ref: MessageRef,
}

/// Why a message cannot be sent at all (nothing was sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("recipient {0:?} is not an E.164 number (+ and 8 to 15 digits)")]
    BadNumber(String),
    #[error("the text is empty")]
    EmptyText,
    #[error("the text has characters outside the GSM-7 alphabet but the encoding is GSM-7")]
    NotGsm7,
    #[error("message reference {0:?} is not 1 to 64 characters of A-Z a-z 0-9 . _ : -")]
    BadRef(String),
}

/// `+`, a non-zero digit, then 7 to 14 more digits.
pub(crate) fn is_e164(number: &str) -> bool {
    match number.strip_prefix('+') {
        Some(digits) => {
            (8..=15).contains(&digits.len())
                && digits.bytes().all(|b| b.is_ascii_digit())
                && !digits.starts_with('0')
        }
        None => false,
    }
}

/// What Kannel said to one sendsms request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// `0: Accepted for delivery`: handed to an SMSC link.
    Accepted,
    /// `3: Queued for later delivery`: stored by bearerbox while no SMSC link can take it;
    /// Kannel sends it when one comes back.
    Queued,
    /// Kannel took nothing.
    Rejected {
        status: u16,
        reason: String,
        kind: RejectKind,
    },
}

/// Whether the same request could succeed later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    /// 5xx, 408, 429: Kannel is overloaded or has no route for now. Retry with backoff,
    /// or move the message to another gateway.
    Transient,
    /// Any other answer: bad credentials, a bad request, not routable. This gateway will
    /// never take it as it is; another gateway may.
    Permanent,
}

/// A 2xx that is neither of Kannel's two success answers: Kannel may have taken the
/// message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the gateway answered {status} with the unexpected body {body:?}")]
pub struct UnexpectedAnswer {
    pub status: u16,
    /// The first 200 characters.
    pub body: String,
}

/// A refusal (nothing taken): transient for 5xx, 408 and 429, or when the gateway's own
/// answer says it will pass (`passing`); permanent otherwise. Keeps 200 characters.
pub(crate) fn rejected(status: u16, text: &str, passing: bool) -> SendOutcome {
    let kind = if status >= 500 || status == 408 || status == 429 || passing {
        RejectKind::Transient
    } else {
        RejectKind::Permanent
    };
    SendOutcome::Rejected {
        status,
        reason: text.chars().take(200).collect(),
        kind,
    }
}
