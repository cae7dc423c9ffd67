//! The outbox: deliveries claimed under a lease, sent outside any transaction, and
//! their outcome recorded.

use chrono::{DateTime, Duration, Utc};
use sqlx::Row;

use crate::alerts::SignedPayload;
use crate::{Result, Store, from_ms, from_ms_opt, ms};

/// A delivery claimed by a worker, with everything needed to publish it.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub alert_id: String,
    pub commune: String,
    pub topic: String,
    pub attempts: i64,
    pub priority: i64,
    pub expires: DateTime<Utc>,
    pub signed: SignedPayload,
}

/// A delivery's state, for operators.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub id: i64,
    pub alert_id: String,
    pub commune: String,
    pub topic: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt: DateTime<Utc>,
    pub last_error: Option<String>,
    pub published: Option<DateTime<Utc>>,
}

impl Store {
    /// Claims up to `limit` due deliveries for `lease`: emergency first, then oldest.
    /// A claimed row is invisible to other workers until its lease runs out, so a worker
    /// that dies mid-send is replaced once the lease expires.
    pub async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<ClaimedDelivery>> {
        let mut tx = self.begin_claim().await?;
        let ids: Vec<i64> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE deliveries SET lease_until_ms = $1, attempts = attempts + 1
             WHERE id IN (
                SELECT id FROM deliveries
                WHERE state = 'queued' AND next_attempt_ms <= $2
                  AND (lease_until_ms IS NULL OR lease_until_ms <= $2)
                  AND NOT EXISTS (SELECT 1 FROM alert_refs x WHERE x.refers_to = deliveries.alert_id)
                ORDER BY priority DESC, next_attempt_ms, id LIMIT $3 {})
             RETURNING id",
            self.backend.skip_locked()
        )))
        .bind(ms(now + lease))
        .bind(ms(now))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<Result<_, _>>()?;
        let mut claimed = Vec::with_capacity(ids.len());
        for id in ids {
            let row = sqlx::query(
                "SELECT d.id, d.alert_id, d.commune, d.topic, d.attempts, d.priority, a.expires_ms, a.payload, a.key_id, a.sig
                 FROM deliveries d JOIN alerts a ON a.id = d.alert_id WHERE d.id = $1",
            )
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            claimed.push(ClaimedDelivery {
                id: row.try_get("id")?,
                alert_id: row.try_get("alert_id")?,
                commune: row.try_get("commune")?,
                topic: row.try_get("topic")?,
                attempts: row.try_get("attempts")?,
                priority: row.try_get("priority")?,
                expires: from_ms(row.try_get("expires_ms")?)?,
                signed: SignedPayload {
                    payload: row.try_get("payload")?,
                    key_id: row.try_get("key_id")?,
                    sig: row.try_get("sig")?,
                },
            });
        }
        tx.commit().await?;
        // RETURNING gives no order: serve the most urgent first within the batch too.
        claimed.sort_by_key(|d| (std::cmp::Reverse(d.priority), d.id));
        Ok(claimed)
    }

    /// Records a publication, and marks the commune's registered receivers as sent, in
    /// one transaction.
    pub async fn mark_published(&self, id: i64, now: DateTime<Utc>) -> Result<()> {
        self.mark_published_all(&[(id, now)]).await
    }

    /// Records publications (each delivery with the time it was published), and marks
    /// their communes' registered receivers as sent, all in one transaction: one disk
    /// sync for a whole claimed batch rather than one per commune.
    pub async fn mark_published_all(&self, published: &[(i64, DateTime<Utc>)]) -> Result<()> {
        let mut tx = self.begin().await?;
        for &(id, at) in published {
            let row = sqlx::query(
                "UPDATE deliveries SET state = 'published', published_ms = $1, lease_until_ms = NULL,
                    last_error = NULL WHERE id = $2 RETURNING alert_id, commune",
            )
            .bind(ms(at))
            .bind(id)
            .fetch_optional(&mut *tx.tx)
            .await?;
            if let Some(row) = row {
                let alert_id: String = row.try_get("alert_id")?;
                let commune: String = row.try_get("commune")?;
                tx.mark_receivers_sent(&alert_id, &commune, at).await?;
            }
        }
        tx.commit().await
    }

    /// Puts a delivery back in the queue after a failed attempt.
    pub async fn mark_retry(&self, id: i64, error: &str, next_attempt: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "UPDATE deliveries SET next_attempt_ms = $1, last_error = $2, lease_until_ms = NULL WHERE id = $3",
        )
        .bind(ms(next_attempt))
        .bind(error)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Gives up on a delivery whose alert expired before it could be published.
    pub async fn mark_expired(&self, id: i64) -> Result<()> {
        sqlx::query(
            "UPDATE deliveries SET state = 'expired', lease_until_ms = NULL,
                last_error = 'the alert expired before it could be published' WHERE id = $1",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Re-queues every published delivery of an alert still live at `now` (not expired,
    /// and not replaced by an Update or Cancel: what was replaced is never broadcast
    /// again), so that a broker that lost its retained messages (an embedded one,
    /// restarted) gets them back. Returns how many rows were re-queued.
    pub async fn requeue_live(&self, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE deliveries SET state = 'queued', next_attempt_ms = $1, lease_until_ms = NULL
             WHERE state = 'published'
               AND alert_id IN (SELECT id FROM alerts WHERE expires_ms > $1
                                AND NOT EXISTS (SELECT 1 FROM alert_refs x WHERE x.refers_to = alerts.id))",
        )
        .bind(ms(now))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Re-queues the published delivery of `alert_id` to `commune` if the alert is still
    /// live at `now` (as [`Store::requeue_live`] decides): its retained copy was cleared
    /// by someone else. Returns whether it was re-queued.
    pub async fn requeue_live_delivery(
        &self,
        alert_id: &str,
        commune: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE deliveries SET state = 'queued', next_attempt_ms = $1, lease_until_ms = NULL
             WHERE state = 'published' AND alert_id = $2 AND commune = $3
               AND alert_id IN (SELECT id FROM alerts WHERE expires_ms > $1
                                AND NOT EXISTS (SELECT 1 FROM alert_refs x WHERE x.refers_to = alerts.id))",
        )
        .bind(ms(now))
        .bind(alert_id)
        .bind(commune)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Makes due at `now` every queued delivery that was tried and is waiting out its
    /// back-off (the broker is back). Returns how many.
    pub async fn retry_queued_now(&self, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE deliveries SET next_attempt_ms = $1
             WHERE state = 'queued' AND attempts > 0 AND next_attempt_ms > $1",
        )
        .bind(ms(now))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// When the next queued delivery falls due, if any is queued.
    pub async fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        let row = sqlx::query(
            "SELECT MIN(CASE WHEN next_attempt_ms > COALESCE(lease_until_ms, 0)
                        THEN next_attempt_ms ELSE COALESCE(lease_until_ms, 0) END) AS due
             FROM deliveries WHERE state = 'queued'",
        )
        .fetch_one(&self.pool)
        .await?;
        from_ms_opt(row.try_get("due")?)
    }

    pub async fn deliveries_for_alert(&self, alert_id: &str) -> Result<Vec<DeliveryRecord>> {
        let rows = sqlx::query(
            "SELECT id, alert_id, commune, topic, state, attempts, next_attempt_ms, last_error, published_ms
             FROM deliveries WHERE alert_id = $1 ORDER BY commune",
        )
        .bind(alert_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeliveryRecord {
                    id: r.try_get("id")?,
                    alert_id: r.try_get("alert_id")?,
                    commune: r.try_get("commune")?,
                    topic: r.try_get("topic")?,
                    state: r.try_get("state")?,
                    attempts: r.try_get("attempts")?,
                    next_attempt: from_ms(r.try_get("next_attempt_ms")?)?,
                    last_error: r.try_get("last_error")?,
                    published: from_ms_opt(r.try_get("published_ms")?)?,
                })
            })
            .collect()
    }
}
