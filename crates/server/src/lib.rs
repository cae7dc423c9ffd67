//! The `canhbao` service as a library: settings ([`config`]), the province's places
//! ([`places`]), secrets ([`secrets`]), the embedded broker, Mosquitto's password file and
//! ACL ([`mosquitto`]), the command lines' shared settings ([`cli`]), and the wiring that
//! starts and stops everything ([`app::App`]). The binary in `main.rs` only parses arguments,
//! sets up telemetry and signals, and calls into here, so that tests drive the same
//! wiring in-process.

pub mod app;
#[cfg(feature = "embedded-broker")]
pub mod broker;
pub mod cli;
pub mod config;
pub mod http;
pub mod keyring;
pub mod keyset;
pub mod mosquitto;
pub mod places;
pub mod retention;
pub mod secrets;
pub mod sms_config;
pub mod tools;
pub mod users;

pub use app::App;
pub use config::{Settings, Sources};
