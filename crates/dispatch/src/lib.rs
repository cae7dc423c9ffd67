//! Dissemination over MQTT: the receiver contract's wire format and signatures
//! ([`wire`], [`topics`], from the `protocol` crate that receivers share), SMS encoding
//! and parts in [`sms_text`], the MQTT owner task
//! ([`mqtt`]), the outbox worker ([`worker`]) and the consumer of receipts and
//! heartbeats ([`inbound`]).
//!
//! Dispatch sends what the store holds; it never writes alerts. Its long-running parts
//! are plain async functions taking a shutdown token ([`mqtt::MqttDriver::run`],
//! [`worker::run_outbox`], [`inbound::run_inbound`]); the binary decides where they run.

pub mod inbound;
pub mod sms_gateway;
pub mod sms_gateways;
pub mod sms_jasmin;
pub mod sms_plan;
pub mod sms_text;
pub mod sms_webhook;
pub mod sms_worker;
pub mod worker;

pub use protocol::{Signer, Topics, TrustedKeys, mqtt, topics, wire};
