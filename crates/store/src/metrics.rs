//! Counts behind `/metrics`, each one query over the shared tables (so every instance
//! reports the same figures).

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::{Result, Store, ms};

/// Upper bounds, in seconds, of the receipt latency histogram's buckets.
pub const LATENCY_BUCKETS_S: [i64; 10] = [1, 2, 5, 10, 30, 60, 120, 300, 600, 1800];

/// A cumulative histogram: per bucket of [`LATENCY_BUCKETS_S`], how many were at or
/// under it; then the count and the sum in seconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<i64>,
    pub count: i64,
    pub sum_s: f64,
}

impl Store {
    /// Alerts by CAP status and state (scheduled, live, expired, updated, cancelled) at `now`.
    pub async fn alert_states(&self, now: DateTime<Utc>) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT status, CASE
                 WHEN EXISTS (SELECT 1 FROM alert_refs r JOIN alerts c ON c.id = r.alert_id
                              WHERE r.refers_to = a.id AND c.msg_type = 'Cancel') THEN 'cancelled'
                 WHEN EXISTS (SELECT 1 FROM alert_refs r WHERE r.refers_to = a.id) THEN 'updated'
                 WHEN a.expires_ms <= $1 THEN 'expired'
                 WHEN a.effective_ms > $1 THEN 'scheduled' ELSE 'live' END AS state,
                 COUNT(*) AS n
             FROM alerts a GROUP BY 1, 2 ORDER BY 1, 2",
        )
        .bind(ms(now))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("state")?, r.try_get("n")?)))
            .collect()
    }

    /// Deliveries by channel (`topic`: a commune's MQTT topic; `receiver`: one
    /// loudspeaker receiver; `sms`: one SMS) and state.
    pub async fn delivery_states(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT 'topic' AS channel, state, COUNT(*) AS n FROM deliveries GROUP BY state
             UNION ALL SELECT 'receiver', state, COUNT(*) FROM receiver_deliveries GROUP BY state
             UNION ALL SELECT 'sms', state, COUNT(*) FROM sms_messages GROUP BY state
             ORDER BY 1, 2",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("channel")?, r.try_get("state")?, r.try_get("n")?)))
            .collect()
    }

    /// From an alert's `sent` to each receiver's `received` and `played`.
    pub async fn receipt_latency(&self) -> Result<Vec<(&'static str, Histogram)>> {
        let mut out = Vec::new();
        for (name, column) in [("received", "received_ms"), ("played", "played_ms")] {
            let buckets: Vec<String> = LATENCY_BUCKETS_S
                .iter()
                .map(|b| {
                    format!(
                        "CAST(COALESCE(SUM(CASE WHEN lat <= {} THEN 1 ELSE 0 END), 0) AS BIGINT) AS b{b}",
                        b * 1000
                    )
                })
                .collect();
            let sql = format!(
                "SELECT {}, COUNT(*) AS n, CAST(COALESCE(SUM(lat), 0) AS BIGINT) AS total FROM (
                     SELECT CASE WHEN d.{column} > a.sent_ms THEN d.{column} - a.sent_ms ELSE 0 END AS lat
                     FROM receiver_deliveries d
                     JOIN alerts a ON a.id = d.alert_id WHERE d.{column} IS NOT NULL) AS latencies",
                buckets.join(", ")
            );
            let r = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_one(&self.pool)
                .await?;
            let mut h = Histogram {
                count: r.try_get("n")?,
                sum_s: r.try_get::<i64, _>("total")? as f64 / 1000.0,
                ..Default::default()
            };
            for b in LATENCY_BUCKETS_S {
                h.buckets.push(r.try_get(format!("b{b}").as_str())?);
            }
            out.push((name, h));
        }
        Ok(out)
    }
}
