//! Communes and hydrological stations, as the province's configuration describes them.

use crate::{AlarmLevel, CommuneCode, StationId, Tagged};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommuneKind {
    Commune,
    Ward,
}

/// A commune or ward of the 2025 list.
#[derive(Debug, Clone, PartialEq)]
pub struct Commune {
    pub code: CommuneCode,
    pub name: String,
    pub kind: CommuneKind,
}

/// A hydrological station with its flood alarm levels and the communes its floods affect.
///
/// Every level carries its provenance tag; a level that no source gives is `None`, never
/// a guess. The impact mapping is province configuration, and says whether it is provisional.
#[derive(Debug, Clone, PartialEq)]
pub struct Station {
    pub id: StationId,
    pub name: String,
    pub river: String,
    pub basin: String,
    /// The station's area class (1 to 4) of Decision 18/2021 Art. 45, if the province has
    /// set it; no source gives it for Lạng Sơn's stations.
    pub area_class: Option<u8>,
    pub bd1_m: Option<Tagged<f64>>,
    pub bd2_m: Option<Tagged<f64>>,
    pub bd3_m: Option<Tagged<f64>>,
    pub historic_m: Option<Tagged<f64>>,
    pub communes: Vec<CommuneCode>,
    /// Why the station-to-commune mapping is provisional, or `None` if the province confirmed it.
    pub communes_provisional: Option<String>,
}

impl Station {
    /// The alarm level's threshold, if a source gives it.
    pub fn alarm(&self, level: AlarmLevel) -> Option<Tagged<f64>> {
        match level {
            AlarmLevel::Bd1 => self.bd1_m,
            AlarmLevel::Bd2 => self.bd2_m,
            AlarmLevel::Bd3 => self.bd3_m,
        }
    }
}
