//! Test-only helpers shared by the test suites of several crates: real outside systems
//! started on free loopback ports, a TCP proxy a test can cut, and the bare HTTP/1.1 and
//! form helpers their fake servers use. Never a dependency of a product crate.

pub mod db;
pub mod http;
pub mod kannel;
pub mod nats;
pub mod postgres;
pub mod proxy;
