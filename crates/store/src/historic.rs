//! Stations' historic flood levels raised from their own readings: the candidates duty
//! officers were told of, and the levels an administrator confirmed.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::{Result, Store, Tx, from_ms, ms};

/// A historic flood level confirmed from a stored reading.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoricRecord {
    pub station: String,
    pub value_m: f64,
    pub observed_at: DateTime<Utc>,
    pub confirmed_by: String,
    pub confirmed_at: DateTime<Utc>,
    pub reason: String,
}

/// The highest reading above a station's historic level that officers were told of.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoricCandidate {
    pub station: String,
    pub value_m: f64,
    pub observed_at: DateTime<Utc>,
    pub noticed_at: DateTime<Utc>,
}

fn record(r: &sqlx::any::AnyRow) -> Result<HistoricRecord> {
    Ok(HistoricRecord {
        station: r.try_get("station")?,
        value_m: r.try_get("value_m")?,
        observed_at: from_ms(r.try_get("observed_ms")?)?,
        confirmed_by: r.try_get("confirmed_by")?,
        confirmed_at: from_ms(r.try_get("confirmed_ms")?)?,
        reason: r.try_get("reason")?,
    })
}

async fn historic_levels<'e, E>(ex: E) -> Result<Vec<HistoricRecord>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let rows = sqlx::query(
        "SELECT station, value_m, observed_ms, confirmed_by, confirmed_ms, reason FROM station_historic ORDER BY station",
    )
    .fetch_all(ex)
    .await?;
    rows.iter().map(record).collect()
}

impl Tx<'_> {
    /// Every confirmed historic level.
    pub async fn historic_levels(&mut self) -> Result<Vec<HistoricRecord>> {
        historic_levels(&mut *self.tx).await
    }

    /// The highest reading above `station`'s historic level noted so far: (value, when).
    pub async fn historic_candidate(&mut self, station: &str) -> Result<Option<(f64, DateTime<Utc>)>> {
        let row = sqlx::query("SELECT value_m, observed_ms FROM historic_candidates WHERE station = $1")
            .bind(station)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map(|r| Ok((r.try_get("value_m")?, from_ms(r.try_get("observed_ms")?)?)))
            .transpose()
    }

    /// Notes `value` (observed at `observed_at`) as above `station`'s historic level,
    /// keeping the highest. True when it is higher than any noted before.
    pub async fn note_historic_candidate(
        &mut self,
        station: &str,
        value: f64,
        observed_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO historic_candidates (station, value_m, observed_ms, noticed_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (station) DO UPDATE SET value_m = excluded.value_m, observed_ms = excluded.observed_ms,
               noticed_ms = excluded.noticed_ms
             WHERE historic_candidates.value_m < excluded.value_m",
        )
        .bind(station)
        .bind(value)
        .bind(ms(observed_at))
        .bind(ms(now))
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records `value`, read at `station` at `observed_at`, as its historic flood level.
    pub async fn confirm_historic(&mut self, r: &HistoricRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO station_historic (station, value_m, observed_ms, confirmed_by, confirmed_ms, reason)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (station) DO UPDATE SET value_m = excluded.value_m, observed_ms = excluded.observed_ms,
               confirmed_by = excluded.confirmed_by, confirmed_ms = excluded.confirmed_ms, reason = excluded.reason",
        )
        .bind(&r.station)
        .bind(r.value_m)
        .bind(ms(r.observed_at))
        .bind(&r.confirmed_by)
        .bind(ms(r.confirmed_at))
        .bind(&r.reason)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// The `ok` reading of `parameter` at `station` in the series `status` observed at
    /// exactly `at`, if there is one.
    pub async fn ok_reading_at(
        &mut self,
        station: &str,
        parameter: &str,
        status: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<f64>> {
        let row = sqlx::query(
            "SELECT value FROM observations WHERE station = $1 AND parameter = $2 AND status = $3
               AND observed_ms = $4 AND quality = 'ok'",
        )
        .bind(station)
        .bind(parameter)
        .bind(status)
        .bind(ms(at))
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| r.try_get("value")).transpose().map_err(Into::into)
    }
}

impl Store {
    /// Every confirmed historic level.
    pub async fn historic_levels(&self) -> Result<Vec<HistoricRecord>> {
        historic_levels(&self.pool).await
    }

    /// Every candidate officers were told of.
    pub async fn historic_candidates(&self) -> Result<Vec<HistoricCandidate>> {
        let rows = sqlx::query(
            "SELECT station, value_m, observed_ms, noticed_ms FROM historic_candidates ORDER BY station",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(HistoricCandidate {
                    station: r.try_get("station")?,
                    value_m: r.try_get("value_m")?,
                    observed_at: from_ms(r.try_get("observed_ms")?)?,
                    noticed_at: from_ms(r.try_get("noticed_ms")?)?,
                })
            })
            .collect()
    }
}
