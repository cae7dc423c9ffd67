//! What an official bulletin changes: the levels a CAP message from an authoritative
//! sender states, as `ingest::bulletin` reads them, for [`crate::Pipeline::accept_bulletin`].

use domain::AlertStatus;
use rules::eval::Bulletin;

/// What one CAP message does.
#[derive(Debug, Clone, PartialEq)]
pub struct BulletinChange {
    pub identifier: String,
    pub status: AlertStatus,
    /// Whether its channel (and signature) vouches for its sender (`ingest::bulletin::vouch`); `false`
    /// until the caller, which knows the channel, says so.
    pub authoritative: bool,
    /// New bulletins (none for a Cancel).
    pub bulletins: Vec<Bulletin>,
    /// Identifiers of earlier bulletins that this Update or Cancel replaces.
    pub replaces: Vec<String>,
}
