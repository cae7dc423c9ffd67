//! Intake: what comes in from outside, parsed and checked, then handed to the desk
//! ([`desk::Pipeline`]). The one HTTP poller ([`poller`]) with its feed and station
//! parsers ([`cap`] with XML signatures in [`dsig`], [`feed`], [`nws`], [`openmeteo`],
//! [`usgs`], [`station`]), official bulletins read as levels ([`bulletin`]), MQTT
//! telemetry from stations ([`telemetry`]), history files for replay ([`history`]), the
//! SMS contact directory's CSV and its import ([`contacts`], [`directory`]), and the
//! demo feed ([`demo`]).
//!
//! Ingest decides nothing and sends nothing: it never depends on a channel crate.

pub mod bulletin;
pub mod cap;
pub mod contacts;
pub mod demo;
pub mod directory;
pub mod dsig;
pub mod feed;
#[cfg(test)]
mod fuzz_props;
pub mod history;
pub mod hydromet;
pub mod nws;
pub mod openmeteo;
pub mod poller;
pub mod station;
pub mod telemetry;
pub mod usgs;
