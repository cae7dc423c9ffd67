//! The loudspeaker channel, dissemination over MQTT: the receiver contract's wire format and signatures
//! ([`wire`], [`topics`], from the `protocol` crate that receivers share) over the `mqtt`
//! link, the outbox worker ([`worker`]) and the consumer of receipts and
//! heartbeats ([`inbound`]).
//!
//! Dispatch sends what the store holds; it never writes alerts. Its long-running parts
//! are plain async functions taking a shutdown token (`mqtt::MqttDriver::run`,
//! [`worker::run_outbox`], [`inbound::run_inbound`]); the binary decides where they run.

pub mod inbound;
pub mod worker;

pub use protocol::{Signer, Topics, TrustedKeys, topics, wire};
