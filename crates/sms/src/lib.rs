//! The SMS channel, the safety net behind the loudspeakers (`docs/sms.md`): who gets an
//! SMS and when ([`plan`]), its text, encoding and parts ([`text`]), the gateways it goes
//! through ([`gateways`]: [`kannel`], [`jasmin`] and a templated JSON [`webhook`], over the
//! shared HTTP [`link`] with its rate limit), the vocabulary they share ([`message`]:
//! message references and outcomes; [`callback`]: delivery reports), and the worker that
//! sends the outbox and applies delivery reports ([`worker`]).
//!
//! Like the MQTT channel, SMS sends what the store holds and never writes alerts.

pub mod callback;
pub mod gateways;
pub mod jasmin;
pub mod kannel;
pub mod link;
pub mod message;
pub mod plan;
pub mod text;
pub mod webhook;
pub mod worker;
