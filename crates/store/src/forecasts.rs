//! Forecast values: one per station, parameter and valid hour, the newest issue winning.

use chrono::{DateTime, Utc};
use domain::Forecast;
use sqlx::Row;

use crate::{Result, Store, StoredReading, Tx, from_ms, ms};

/// A stored forecast value, for operators.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastRecord {
    pub station: String,
    pub parameter: String,
    pub valid_at: DateTime<Utc>,
    pub value: f64,
    pub issued_at: DateTime<Utc>,
    pub source: String,
}

impl Tx<'_> {
    /// Stores a forecast value unless one issued later is already stored for the same
    /// hour. Returns whether the stored value changed (a repeat of the same issue is not).
    pub async fn upsert_forecast(
        &mut self,
        f: &Forecast,
        source: &str,
        status: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO forecasts (status, station, parameter, valid_ms, value, issued_ms, received_ms, source)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (status, station, parameter, valid_ms) DO UPDATE SET
                value = excluded.value, issued_ms = excluded.issued_ms,
                received_ms = excluded.received_ms, source = excluded.source
             WHERE excluded.issued_ms > forecasts.issued_ms
                OR (excluded.issued_ms = forecasts.issued_ms AND excluded.value <> forecasts.value)",
        )
        .bind(status)
        .bind(f.station().as_str())
        .bind(f.parameter().code())
        .bind(ms(f.valid_at()))
        .bind(f.value())
        .bind(ms(f.issued_at()))
        .bind(ms(now))
        .bind(source)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Forecast values of the series `status` valid after `after` and up to `until`.
    pub async fn forecasts_between(
        &mut self,
        status: &str,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<StoredReading>> {
        let rows = sqlx::query(
            "SELECT station, parameter, valid_ms, value FROM forecasts
             WHERE status = $1 AND valid_ms > $2 AND valid_ms <= $3 ORDER BY valid_ms",
        )
        .bind(status)
        .bind(ms(after))
        .bind(ms(until))
        .fetch_all(&mut *self.tx)
        .await?;
        crate::levels::readings(&rows, "valid_ms")
    }
}

impl Store {
    /// Forecast values valid at or after `from`, soonest first, optionally for one station.
    pub async fn list_forecasts(
        &self,
        station: Option<&str>,
        from: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<ForecastRecord>> {
        let rows = sqlx::query(
            "SELECT station, parameter, valid_ms, value, issued_ms, source FROM forecasts
             WHERE status = 'Actual' AND valid_ms >= $1 AND ($2 IS NULL OR station = $3)
             ORDER BY valid_ms, station, parameter LIMIT $4",
        )
        .bind(ms(from))
        .bind(station)
        .bind(station)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ForecastRecord {
                    station: r.try_get("station")?,
                    parameter: r.try_get("parameter")?,
                    valid_at: from_ms(r.try_get("valid_ms")?)?,
                    value: r.try_get("value")?,
                    issued_at: from_ms(r.try_get("issued_ms")?)?,
                    source: r.try_get("source")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::StationId;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn a_newer_issue_replaces_an_older_one_and_never_the_reverse() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let st = StationId::new("HUULUNG").unwrap();
        let valid = at("2026-10-09T06:00:00Z");
        let f =
            |v: f64, issued: &str| Forecast::new(st.clone(), "rainfall", v, "mm", valid, at(issued)).unwrap();
        let now = at("2026-10-09T00:00:00Z");
        let mut tx = store.begin().await.unwrap();
        assert!(
            tx.upsert_forecast(&f(10.0, "2026-10-09T00:00:00Z"), "a", "Actual", now)
                .await
                .unwrap()
        );
        assert!(
            !tx.upsert_forecast(&f(10.0, "2026-10-09T00:00:00Z"), "a", "Actual", now)
                .await
                .unwrap()
        );
        assert!(
            tx.upsert_forecast(&f(30.0, "2026-10-09T01:00:00Z"), "a", "Actual", now)
                .await
                .unwrap()
        );
        assert!(
            !tx.upsert_forecast(&f(5.0, "2026-10-08T23:00:00Z"), "b", "Actual", now)
                .await
                .unwrap()
        );
        let got = tx
            .forecasts_between("Actual", now, now + chrono::Duration::days(1))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].value, 30.0);
        let listed = store.list_forecasts(Some("HUULUNG"), now, 10).await.unwrap();
        assert_eq!((listed[0].value, listed[0].source.as_str()), (30.0, "a"));
        assert!(
            store
                .list_forecasts(Some("LANGSON"), now, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
