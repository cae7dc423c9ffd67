//! The receiver protocol (`docs/receiver-protocol.md`), shared by the service and the
//! loudspeaker receivers: the wire format and its signatures ([`wire`]), the topic layout
//! ([`topics`]), what arrives from the broker ([`InboundMessage`]) and local times
//! ([`time`]). Pure: no async runtime, no network, no database. The MQTT link that
//! carries it is the `mqtt` crate.

pub mod time;
pub mod topics;
pub mod wire;

pub use topics::Topics;
pub use wire::{Signer, TrustedKeys};

/// An inbound PUBLISH, as received.
#[derive(Debug, Clone)]
pub struct InboundMessage {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    /// Which connection it came on (the `mqtt` crate's `Connected::count` then): a receiver keeps what it
    /// learns of the broker's retained messages per connection.
    pub connection: u64,
}
