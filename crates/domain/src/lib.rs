//! The vocabulary of canhbao: ids and codes, measured values, hazards and levels,
//! observations, stations, communes, alerts and deliveries.
//!
//! Every value that comes from outside is built through a validating constructor,
//! so that code holding a `CommuneCode` or an `Observation` never checks it again.
//! This crate does no I/O, reads no clock (the time is always an argument) and
//! depends on nothing async. Entry points: [`Observation::new`], [`Station`],
//! [`Alert`], and the id types in [`ids`].

pub mod alert;
pub mod ids;
pub mod level;
pub mod observation;
pub mod phone;
pub mod place;
pub mod provenance;
pub mod units;

pub use alert::{
    Alert, AlertError, AlertOrigin, AlertSpec, AlertStatus, CapGrade, FollowKind, MsgType, Repeat,
    SignedPayload, Translation,
};
pub use ids::{AlertId, CommuneCode, IdError, ProvinceCode, ReceiverId, StationId};
pub use level::{AlarmLevel, Hazard, MessageClass, RiskLevel};
pub use observation::{Forecast, Observation, ObservationError, Parameter};
pub use phone::{PhoneError, PhoneNumber};
pub use place::{Commune, CommuneKind, Station};
pub use provenance::{Tag, Tagged};

/// Delivery and receipt vocabulary shared by dispatch, store and the receiver.
pub mod delivery;
pub use delivery::{CommuneState, PublishState, ReceiptStatus};
