//! Receipts and heartbeats from receivers, and inputs refused at the edges.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::{Result, Store, Tx, from_ms, ms};

/// Rows written by one multi-row statement, largest first: far below both engines' limits
/// on bound values, and large enough that a burst of receipts costs a few statements, not
/// one or more per receipt. A batch is cut into these sizes only, so that each kind of
/// statement has four texts, each prepared once per connection and kept in its cache
/// (with every size from 1 to 100, PostgreSQL prepared statements over and over).
const STATEMENT_ROWS: [usize; 4] = [100, 25, 5, 1];

/// `items` cut into runs of [`STATEMENT_ROWS`] sizes, greedily, in order.
pub(crate) fn statement_chunks<T>(mut items: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let size = STATEMENT_ROWS.into_iter().find(|&n| n <= items.len())?;
        let (chunk, rest) = items.split_at(size);
        items = rest;
        Some(chunk)
    })
}

/// `($first, …), (…)`: `rows` groups of `width` placeholders, numbered on from `first`.
pub(crate) fn values_list(rows: usize, width: usize, first: usize) -> String {
    (0..rows)
        .map(|r| {
            let cols: Vec<String> = (0..width)
                .map(|c| format!("${}", first + r * width + c))
                .collect();
            format!("({})", cols.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a receiver was heard to say, for [`Tx::touch_receivers`].
#[derive(Debug, Clone, Copy)]
pub struct ReceiverTouch<'a> {
    pub receiver_id: &'a str,
    pub commune: Option<&'a str>,
    pub online: bool,
    /// A heartbeat's text; `None` keeps the last one.
    pub detail: Option<&'a str>,
    /// A heartbeat's clock against the service's (receiver minus service, ms); `None`
    /// keeps the last one.
    pub clock_offset_ms: Option<i64>,
}

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
        Ok(self.record_receipts(std::slice::from_ref(r), now).await?[0])
    }

    /// Records receipts, as [`Tx::record_receipt`] each, up to a hundred to a statement. Says,
    /// for each, whether it was new (a repeat, also within `receipts`, is not).
    pub async fn record_receipts(
        &mut self,
        receipts: &[NewReceipt<'_>],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>> {
        let mut new = vec![false; receipts.len()];
        let mut base = 0;
        for chunk in statement_chunks(receipts) {
            let sql = format!(
                "INSERT INTO receipts (alert_id, receiver_id, commune, status, reason, reason_code, receiver_ms, recorded_ms)
                 VALUES {} ON CONFLICT DO NOTHING RETURNING alert_id, receiver_id, status, reason_code",
                values_list(chunk.len(), 8, 1)
            );
            let mut q = self.backend.multi_row(sql);
            for r in chunk {
                q = q
                    .bind(r.alert_id)
                    .bind(r.receiver_id)
                    .bind(r.commune)
                    .bind(r.status)
                    .bind(r.reason)
                    .bind(reason_code(r.status, r.reason))
                    .bind(ms(r.receiver_at))
                    .bind(ms(now));
            }
            let inserted = q.fetch_all(&mut *self.tx).await?;
            // Each inserted row marks the first receipt of the chunk it stands for.
            for row in &inserted {
                let (a, v, s, code): (String, String, String, String) = (
                    row.try_get("alert_id")?,
                    row.try_get("receiver_id")?,
                    row.try_get("status")?,
                    row.try_get("reason_code")?,
                );
                let first = chunk.iter().enumerate().position(|(i, r)| {
                    !new[base + i]
                        && r.alert_id == a
                        && r.receiver_id == v
                        && r.status == s
                        && reason_code(r.status, r.reason) == code
                });
                if let Some(i) = first {
                    new[base + i] = true;
                }
            }
            base += chunk.len();
        }
        Ok(new)
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
        self.touch_receivers(
            &[ReceiverTouch {
                receiver_id,
                commune,
                online,
                detail,
                clock_offset_ms: None,
            }],
            now,
        )
        .await
    }

    /// Notes that receivers were heard from: the same as [`Tx::touch_receiver`] for each in
    /// turn, written as one row per receiver, up to a hundred to a statement.
    pub async fn touch_receivers(&mut self, touches: &[ReceiverTouch<'_>], now: DateTime<Utc>) -> Result<()> {
        // What one upsert after another would leave: the last state, and the last commune
        // and detail that were given.
        let mut folded: Vec<ReceiverTouch<'_>> = Vec::new();
        let mut at: HashMap<&str, usize> = HashMap::new();
        for t in touches {
            match at.get(t.receiver_id) {
                Some(&i) => {
                    let f = &mut folded[i];
                    f.commune = t.commune.or(f.commune);
                    f.online = t.online;
                    f.detail = t.detail.or(f.detail);
                    f.clock_offset_ms = t.clock_offset_ms.or(f.clock_offset_ms);
                }
                None => {
                    at.insert(t.receiver_id, folded.len());
                    folded.push(*t);
                }
            }
        }
        for chunk in statement_chunks(&folded) {
            let sql = format!(
                "INSERT INTO receivers (receiver_id, commune, online, last_seen_ms, detail, clock_offset_ms) VALUES {}
                 ON CONFLICT (receiver_id) DO UPDATE SET commune = COALESCE(excluded.commune, receivers.commune),
                    online = excluded.online, last_seen_ms = excluded.last_seen_ms,
                    detail = COALESCE(excluded.detail, receivers.detail),
                    clock_offset_ms = COALESCE(excluded.clock_offset_ms, receivers.clock_offset_ms)",
                values_list(chunk.len(), 6, 1)
            );
            let mut q = self.backend.multi_row(sql);
            for t in chunk {
                q = q
                    .bind(t.receiver_id)
                    .bind(t.commune)
                    .bind(i64::from(t.online))
                    .bind(ms(now))
                    .bind(t.detail)
                    .bind(t.clock_offset_ms);
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Records an input that was refused, so that operators can see it. The source and the
    /// reason are cut ([`domain::cut`], [`domain::TEXT_CHARS`]): a hostile input never
    /// fills a row.
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
            .bind(domain::cut(source).as_ref())
            .bind(domain::cut_to(reason, domain::TEXT_CHARS).as_ref())
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
