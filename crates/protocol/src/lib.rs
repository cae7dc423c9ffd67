//! The receiver protocol (`docs/receiver-protocol.md`), shared by the service and the
//! loudspeaker receivers: the wire format and its signatures ([`wire`]), the topic layout
//! ([`topics`]), the MQTT connection owner ([`mqtt`]) and local times ([`time`]).
//!
//! It carries none of the service's weight (no database, no HTTP client): a receiver
//! depends on this crate, not on `dispatch`.

pub mod mqtt;
pub mod time;
pub mod topics;
pub mod wire;

pub use topics::Topics;
pub use wire::{Signer, TrustedKeys};
