//! The scenarios of `canhbao-bench`, each measured against a baseline in the same run
//! (`BENCHMARKS.md`): [`rules`] (parse and rules over a synthetic year, and the follower's
//! timer in [`timer`]), [`dispatch`] (issue to receipt for simulated receivers against a
//! raw publish), [`receipts`], [`api`], [`footprint`], [`soak`], [`sms`] (through Kannel
//! against plain `sendsms` loops); and the bounded faults [`kill`] and [`outage`], with
//! the process helpers they share in [`faults`].

pub mod api;
pub mod dispatch;
pub mod faults;
pub mod footprint;
pub mod kill;
pub mod outage;
pub mod receipts;
pub mod rules;
pub mod sms;
pub mod soak;
pub mod timer;
