//! Receipts and heartbeats from receivers, and inputs refused at the edges.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::{Result, Store, Tx, from_ms, ms};

/// A receipt as reported by a receiver (already checked against its topic).
#[derive(Debug, Clone)]
pub struct NewReceipt<'a> {
    pub alert_id: &'a str,
    pub receiver_id: &'a str,
    pub commune: Option<&'a str>,
    pub status: &'a str,
    pub reason: Option<&'a str>,
    pub receiver_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct ReceiptRecord {
    pub alert_id: String,
    pub receiver_id: String,
    pub commune: Option<String>,
    pub status: String,
    pub reason: Option<String>,
    pub receiver_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct ReceiverRecord {
    pub receiver_id: String,
    pub commune: Option<String>,
    pub online: bool,
    pub last_seen: DateTime<Utc>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RejectionRecord {
    pub at: DateTime<Utc>,
    pub channel: String,
    pub source: String,
    pub reason: String,
}

/// The rejection codes of the receiver protocol (§5); any other reason counts as `other`,
/// so that a receiver cannot make the table grow with invented codes.
const REASON_CODES: [&str; 8] = [
    "malformed",
    "unknown_key",
    "bad_signature",
    "unsupported_version",
    "id_mismatch",
    "wrong_commune",
    "expired",
    "replayed",
];

/// The code that keeps a rejected or failed receipt apart from others of its alert.
fn reason_code(status: &str, reason: Option<&str>) -> &'static str {
    match status {
        "rejected" | "failed" => {
            let head = reason.and_then(|r| r.split(':').next()).unwrap_or("").trim();
            REASON_CODES.into_iter().find(|c| *c == head).unwrap_or("other")
        }
        _ => "",
    }
}

impl Tx<'_> {
    /// Records a receipt. Idempotent: the same status (and, for a refusal, the same reason
    /// code) from the same receiver for the same alert is stored once, and `false` is
    /// returned for a repeat.
    pub async fn record_receipt(&mut self, r: &NewReceipt<'_>, now: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO receipts (alert_id, receiver_id, commune, status, reason, reason_code, receiver_ms, recorded_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(r.alert_id)
        .bind(r.receiver_id)
        .bind(r.commune)
        .bind(r.status)
        .bind(r.reason)
        .bind(reason_code(r.status, r.reason))
        .bind(ms(r.receiver_at))
        .bind(ms(now))
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Notes that a receiver was heard from (heartbeat or status).
    pub async fn touch_receiver(
        &mut self,
        receiver_id: &str,
        commune: Option<&str>,
        online: bool,
        detail: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO receivers (receiver_id, commune, online, last_seen_ms, detail) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (receiver_id) DO UPDATE SET commune = COALESCE(excluded.commune, receivers.commune),
                online = excluded.online, last_seen_ms = excluded.last_seen_ms,
                detail = COALESCE(excluded.detail, receivers.detail)",
        )
        .bind(receiver_id)
        .bind(commune)
        .bind(i64::from(online))
        .bind(ms(now))
        .bind(detail)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Records an input that was refused, so that operators can see it.
    pub async fn record_rejection(
        &mut self,
        channel: &str,
        source: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query("INSERT INTO rejections (at_ms, channel, source, reason) VALUES ($1, $2, $3, $4)")
            .bind(ms(now))
            .bind(channel)
            .bind(source)
            .bind(reason)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}

impl Store {
    /// [`Tx::record_receipt`] in a transaction of its own.
    pub async fn record_receipt(&self, r: &NewReceipt<'_>, now: DateTime<Utc>) -> Result<bool> {
        let mut tx = self.begin().await?;
        let new = tx.record_receipt(r, now).await?;
        tx.commit().await?;
        Ok(new)
    }

    /// [`Tx::touch_receiver`] in a transaction of its own.
    pub async fn touch_receiver(
        &self,
        receiver_id: &str,
        commune: Option<&str>,
        online: bool,
        detail: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.touch_receiver(receiver_id, commune, online, detail, now)
            .await?;
        tx.commit().await
    }

    /// [`Tx::record_rejection`] in a transaction of its own.
    pub async fn record_rejection(
        &self,
        channel: &str,
        source: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.record_rejection(channel, source, reason, now).await?;
        tx.commit().await
    }

    pub async fn receipts_for_alert(&self, alert_id: &str) -> Result<Vec<ReceiptRecord>> {
        let rows = sqlx::query(
            "SELECT alert_id, receiver_id, commune, status, reason, receiver_ms, recorded_ms
             FROM receipts WHERE alert_id = $1 ORDER BY receiver_id, recorded_ms, id",
        )
        .bind(alert_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ReceiptRecord {
                    alert_id: r.try_get("alert_id")?,
                    receiver_id: r.try_get("receiver_id")?,
                    commune: r.try_get("commune")?,
                    status: r.try_get("status")?,
                    reason: r.try_get("reason")?,
                    receiver_at: from_ms(r.try_get("receiver_ms")?)?,
                    recorded_at: from_ms(r.try_get("recorded_ms")?)?,
                })
            })
            .collect()
    }

    pub async fn list_receivers(&self) -> Result<Vec<ReceiverRecord>> {
        let rows = sqlx::query(
            "SELECT receiver_id, commune, online, last_seen_ms, detail FROM receivers ORDER BY receiver_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ReceiverRecord {
                    receiver_id: r.try_get("receiver_id")?,
                    commune: r.try_get("commune")?,
                    online: r.try_get::<i64, _>("online")? != 0,
                    last_seen: from_ms(r.try_get("last_seen_ms")?)?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    /// The most recent refused inputs, newest first.
    pub async fn list_rejections(&self, limit: i64) -> Result<Vec<RejectionRecord>> {
        let rows =
            sqlx::query("SELECT at_ms, channel, source, reason FROM rejections ORDER BY id DESC LIMIT $1")
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(RejectionRecord {
                    at: from_ms(r.try_get("at_ms")?)?,
                    channel: r.try_get("channel")?,
                    source: r.try_get("source")?,
                    reason: r.try_get("reason")?,
                })
            })
            .collect()
    }
}
