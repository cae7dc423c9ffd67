//! The vocabulary of canhbao: ids and codes, measured values, hazards and levels,
//! observations, stations, communes, alerts and deliveries.
//!
//! Every value that comes from outside is built through a validating constructor,
//! so that code holding a `CommuneCode` or an `Observation` never checks it again.
//! This crate does no I/O, reads no clock (the time is always an argument) and
//! depends on nothing async. Entry points: [`Observation::new`], [`Station`],
//! [`Alert`], and the id types in [`ids`].

pub mod alert;
pub mod ids;
pub mod level;
pub mod observation;
pub mod phone;
pub mod place;
pub mod provenance;
pub mod units;

pub use alert::{
    Alert, AlertError, AlertOrigin, AlertSpec, AlertStatus, CapGrade, FollowKind, MsgType, Repeat,
    SignedPayload, Translation,
};
pub use ids::{AlertId, CommuneCode, IdError, ProvinceCode, ReceiverId, StationId};
pub use level::{AlarmLevel, Hazard, MessageClass, RiskLevel};
pub use observation::{Forecast, Observation, ObservationError, Parameter};
pub use phone::{PhoneError, PhoneNumber};
pub use place::{Commune, CommuneKind, Station};
pub use provenance::{Tag, Tagged};

/// Longest part of an outside value quoted back in an answer, a record or a log line.
pub const QUOTE_CHARS: usize = 200;

/// `value` as it may be quoted back: whole if short, else its first [`QUOTE_CHARS`]
/// characters and its full length, so that a hostile megabyte is never echoed whole.
pub fn cut(value: &str) -> std::borrow::Cow<'_, str> {
    cut_to(value, QUOTE_CHARS)
}

/// `text` cut to its first `max_chars` characters and its full length, if longer: for
/// texts that quote values already cut (a refusal's reason), as a last bound.
pub fn cut_to(text: &str, max_chars: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        None => std::borrow::Cow::Borrowed(text),
        Some((at, _)) => std::borrow::Cow::Owned(format!("{}… ({} bytes in all)", &text[..at], text.len())),
    }
}

/// Longest reason, detail or log line built around quoted values.
pub const TEXT_CHARS: usize = 2000;

/// [`cut`], in quotes (as `{:?}` would quote it).
pub fn quote(value: &str) -> String {
    match value.char_indices().nth(QUOTE_CHARS) {
        None => format!("{value:?}"),
        Some((at, _)) => format!("{:?}… ({} bytes in all)", &value[..at], value.len()),
    }
}

#[cfg(test)]
mod quote_tests {
    #[test]
    fn long_values_are_cut_with_their_length_and_short_ones_kept() {
        assert_eq!(super::quote("HUULUNG"), "\"HUULUNG\"");
        let long = "ă".repeat(450_000);
        let q = super::quote(&long);
        assert!(q.chars().count() < 260, "{}", q.len());
        assert!(q.ends_with("… (900000 bytes in all)"), "{q}");
        assert_eq!(super::cut("x"), "x");
    }
}

/// Delivery and receipt vocabulary shared by dispatch, store and the receiver.
pub mod delivery;
pub use delivery::{CommuneState, PublishState, ReceiptStatus};
