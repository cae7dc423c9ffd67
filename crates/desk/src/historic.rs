//! A station's historic flood level, raised from its own readings.
//!
//! By Decision 18/2021 Art. 5 the historic flood is the highest flood peak of the record,
//! so a reading above the level the area file gives makes that reading the historic
//! flood. canhbao does not raise it on its own (a reading can be wrong in ways quality
//! control cannot see): duty officers are told once per new height, and an administrator
//! confirms the reading, audited. The confirmed level then replaces the area file's for
//! the rules, on every instance (it is read from the store at each evaluation).

use chrono::{DateTime, Utc};
use domain::{Parameter, Station, StationId, Tag, Tagged};
use store::{HistoricRecord, Tx};

use crate::{DeskError, Pipeline};

/// Why a historic level was not confirmed.
#[derive(Debug, thiserror::Error)]
pub enum HistoricError {
    #[error("station {0:?} is not configured")]
    UnknownStation(String),
    #[error("a reason is required: say how the reading was checked")]
    NoReason,
    #[error(
        "station {0} has no known historic flood level: the record a reading would have to exceed is not known, \
         so set it in the area file with its source"
    )]
    NoHistoric(StationId),
    #[error("station {station} has no good water level reading at {at} in the Actual series")]
    NoReading { station: StationId, at: DateTime<Utc> },
    #[error("the reading of {value:.2} m does not exceed the historic flood level of {historic:.2} m")]
    NotAbove { value: f64, historic: f64 },
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// Applies confirmed levels to `stations`: a confirmed level replaces a lower one. The
/// tag of a level derived from the station's own record is D.
pub fn apply(stations: &mut [Station], confirmed: &[HistoricRecord]) {
    for h in confirmed {
        if let Some(s) = stations.iter_mut().find(|s| s.id.as_str() == h.station)
            && s.historic_m.as_ref().is_none_or(|c| c.value < h.value_m)
        {
            s.historic_m = Some(Tagged::new(h.value_m, Tag::D));
        }
    }
}

/// The historic flood level in force at `station`: the confirmed one, or the area file's.
pub fn in_force(station: &Station, confirmed: &[HistoricRecord]) -> Option<f64> {
    let mut s = station.clone();
    apply(std::slice::from_mut(&mut s), confirmed);
    s.historic_m.map(|h| h.value)
}

/// The officers' notice of a reading above the historic flood.
pub fn notice_text(station: &Station, value: f64, at: DateTime<Utc>, historic: f64) -> String {
    format!(
        "MỰC NƯỚC VƯỢT LŨ LỊCH SỬ: trạm {} ({}) {} m lúc {}, cao hơn mức lũ lịch sử {} m. \
         Quản trị viên kiểm tra số liệu và xác nhận mức lũ lịch sử mới (POST /api/v1/stations/{}/historic).",
        station.name,
        station.id,
        crate::render::metres_vi(value),
        crate::render::local_time_vi(at),
        crate::render::metres_vi(historic),
        station.id,
    )
}

impl Pipeline {
    /// Tells duty officers of an `ok` Actual reading above the historic flood level in
    /// force at `station`: once each time the river goes above it.
    pub(crate) async fn notice_historic(
        &self,
        tx: &mut Tx<'_>,
        station: &StationId,
        value: f64,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), DeskError> {
        let Some(s) = self.station(station) else {
            return Ok(());
        };
        let Some(historic) = in_force(s, &tx.historic_levels().await?) else {
            return Ok(());
        };
        if value <= historic {
            return Ok(());
        }
        // Told once per time the river goes above the level in force (a rising river
        // beats its own candidate at every reading; the highest is kept, quietly).
        let told = tx
            .historic_candidate(station.as_str())
            .await?
            .is_some_and(|(v, _)| v > historic);
        if !tx
            .note_historic_candidate(station.as_str(), value, at, now)
            .await?
            || told
        {
            return Ok(());
        }
        tracing::warn!(station = %station, value, historic, observed_at = %at,
            "a reading exceeds the historic flood level; an administrator may confirm it");
        let text = notice_text(s, value, at, historic);
        for user in tx.duty_users().await? {
            tx.notify(&user, "station.historic-exceeded", None, None, &text, now)
                .await?;
        }
        Ok(())
    }

    /// Confirms the `ok` Actual water level read at `station` at `observed_at` as its
    /// historic flood level, for `by` (an administrator), with `reason`; audited, and told
    /// to duty officers. The rules use it from their next evaluation.
    pub async fn confirm_historic(
        &self,
        station: &str,
        observed_at: DateTime<Utc>,
        reason: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<HistoricRecord, HistoricError> {
        let s = StationId::new(station)
            .ok()
            .and_then(|id| self.station(&id))
            .ok_or_else(|| HistoricError::UnknownStation(station.to_owned()))?;
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(HistoricError::NoReason);
        }
        let mut tx = self.store.begin().await?;
        let confirmed = tx.historic_levels().await?;
        let historic = in_force(s, &confirmed).ok_or_else(|| HistoricError::NoHistoric(s.id.clone()))?;
        let value = tx
            .ok_reading_at(s.id.as_str(), Parameter::WaterLevel.code(), "Actual", observed_at)
            .await?
            .ok_or_else(|| HistoricError::NoReading {
                station: s.id.clone(),
                at: observed_at,
            })?;
        if value <= historic {
            return Err(HistoricError::NotAbove { value, historic });
        }
        let record = HistoricRecord {
            station: s.id.to_string(),
            value_m: value,
            observed_at,
            confirmed_by: by.to_owned(),
            confirmed_at: now,
            reason: reason.to_owned(),
        };
        tx.confirm_historic(&record).await?;
        tx.append_audit(
            by,
            "station.historic",
            s.id.as_str(),
            &serde_json::json!({"value_m": value, "observed_at": observed_at, "previous_m": historic, "reason": reason}),
            now,
        )
        .await?;
        let text = format!(
            "LŨ LỊCH SỬ MỚI: trạm {} ({}) {} m lúc {} (trước đây {} m), do {} xác nhận: {reason}.",
            s.name,
            s.id,
            crate::render::metres_vi(value),
            crate::render::local_time_vi(observed_at),
            crate::render::metres_vi(historic),
            by,
        );
        for user in tx.duty_users().await? {
            tx.notify(&user, "station.historic", None, None, &text, now)
                .await?;
        }
        tx.commit().await?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::CommuneCode;

    fn station(historic: Option<f64>) -> Station {
        Station {
            id: StationId::new("HUULUNG").unwrap(),
            name: "Hữu Lũng".into(),
            river: "Trung".into(),
            basin: "Thương".into(),
            area_class: None,
            bd1_m: Some(Tagged::new(17.0, Tag::D)),
            bd2_m: Some(Tagged::new(18.0, Tag::M)),
            bd3_m: Some(Tagged::new(19.0, Tag::D)),
            historic_m: historic.map(|h| Tagged::new(h, Tag::V)),
            communes: vec![CommuneCode::new("06385").unwrap()],
            communes_provisional: None,
        }
    }

    fn confirmed(value: f64) -> HistoricRecord {
        HistoricRecord {
            station: "HUULUNG".into(),
            value_m: value,
            observed_at: "2026-10-09T01:00:00Z".parse().unwrap(),
            confirmed_by: "admin".into(),
            confirmed_at: "2026-10-09T03:00:00Z".parse().unwrap(),
            reason: "checked".into(),
        }
    }

    #[test]
    fn a_confirmed_level_raises_the_historic_flood_and_never_lowers_it() {
        assert_eq!(in_force(&station(Some(23.96)), &[]), Some(23.96));
        let mut s = [station(Some(23.96))];
        apply(&mut s, &[confirmed(24.3)]);
        assert_eq!(s[0].historic_m, Some(Tagged::new(24.3, Tag::D)));
        // The area file raised above a confirmed level wins.
        assert_eq!(in_force(&station(Some(25.0)), &[confirmed(24.3)]), Some(25.0));
        assert_eq!(in_force(&station(None), &[]), None);
    }
}
