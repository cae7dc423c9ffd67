//! Test-only helpers shared by the test suites of several crates: real outside systems
//! started on free loopback ports. Never a dependency of a product crate.

pub mod kannel;
