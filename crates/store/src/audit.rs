//! The audit log: every action appended to a hash chain, and its verification.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::{Result, Store, from_ms, ms};

/// The hash before the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// JSON.
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// Whether the chain holds: every row's hash is right and links to the row before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditVerdict {
    pub rows: i64,
    /// The first row that does not hold, if any.
    pub broken_at: Option<i64>,
}

/// The hash of one row: SHA-256 over the previous hash and the row's fields, each on a
/// line of its own (a field cannot hold a line break that moves another: the detail is
/// JSON, whose strings escape them; the others are checked by the callers' types).
pub fn audit_hash(
    prev: &str,
    id: i64,
    at_ms: i64,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [
        prev,
        &id.to_string(),
        &at_ms.to_string(),
        actor,
        action,
        target,
        detail,
    ] {
        h.update(part.len().to_string().as_bytes());
        h.update(b":");
        h.update(part.as_bytes());
        h.update(b"\n");
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn record(r: &sqlx::any::AnyRow) -> Result<AuditRecord> {
    Ok(AuditRecord {
        id: r.try_get("id")?,
        at: from_ms(r.try_get("at_ms")?)?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        detail: r.try_get("detail")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

impl crate::Tx<'_> {
    /// Appends one action to the chain inside this transaction, so that the action and
    /// its record commit together (the write lock is held, so rows never interleave).
    pub async fn append_audit(
        &mut self,
        actor: &str,
        action: &str,
        target: &str,
        detail: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<AuditRecord> {
        let last = sqlx::query("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")
            .fetch_optional(&mut *self.tx)
            .await?;
        let (prev_id, prev_hash) = match last {
            Some(r) => (r.try_get::<i64, _>("id")?, r.try_get::<String, _>("hash")?),
            None => (0, GENESIS.to_owned()),
        };
        let id = prev_id + 1;
        let detail = detail.to_string();
        let at_ms = ms(now);
        let hash = audit_hash(&prev_hash, id, at_ms, actor, action, target, &detail);
        sqlx::query(
            "INSERT INTO audit_log (id, at_ms, actor, action, target, detail, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(at_ms)
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(&detail)
        .bind(&prev_hash)
        .bind(&hash)
        .execute(&mut *self.tx)
        .await?;
        Ok(AuditRecord {
            id,
            at: now,
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail,
            prev_hash,
            hash,
        })
    }
}

impl Store {
    /// Appends one action to the chain in a transaction of its own.
    pub async fn append_audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<AuditRecord> {
        let mut tx = self.begin().await?;
        let record = tx.append_audit(actor, action, target, detail, now).await?;
        tx.commit().await?;
        Ok(record)
    }

    /// Whether row `id` still has `hash` (an anchor taken from [`Store::audit_head`]
    /// earlier): `holds`, `differs` (rewritten) or `missing` (cut off). Catches what the
    /// chain alone cannot: a chain cut short, or rewritten consistently from some row on.
    pub async fn check_audit_anchor(&self, id: i64, hash: &str) -> Result<&'static str> {
        Ok(match self.audit_row(id).await? {
            None => "missing",
            Some(r) if r.hash.eq_ignore_ascii_case(hash) => "holds",
            Some(_) => "differs",
        })
    }

    /// Row `id`, if it exists.
    pub async fn audit_row(&self, id: i64) -> Result<Option<AuditRecord>> {
        let row = sqlx::query(
            "SELECT id, at_ms, actor, action, target, detail, prev_hash, hash FROM audit_log WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(record).transpose()
    }

    /// The newest row: its id and hash, copied out of the database (printed, sent to an
    /// archive), are an anchor that a rewrite of the whole chain cannot match.
    pub async fn audit_head(&self) -> Result<Option<AuditRecord>> {
        let row = sqlx::query(
            "SELECT id, at_ms, actor, action, target, detail, prev_hash, hash FROM audit_log
             ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(record).transpose()
    }

    /// The newest `limit` rows, newest first.
    pub async fn list_audit(&self, limit: i64) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT id, at_ms, actor, action, target, detail, prev_hash, hash FROM audit_log
             ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record).collect()
    }

    /// Walks the whole chain from its start.
    pub async fn verify_audit(&self) -> Result<AuditVerdict> {
        let rows = sqlx::query(
            "SELECT id, at_ms, actor, action, target, detail, prev_hash, hash FROM audit_log ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut prev = (0i64, GENESIS.to_owned());
        for r in &rows {
            let a = record(r)?;
            let at_ms: i64 = r.try_get("at_ms")?;
            let expected = audit_hash(&prev.1, a.id, at_ms, &a.actor, &a.action, &a.target, &a.detail);
            if a.id != prev.0 + 1 || a.prev_hash != prev.1 || a.hash != expected {
                return Ok(AuditVerdict {
                    rows: i64::try_from(rows.len()).unwrap_or(i64::MAX),
                    broken_at: Some(a.id),
                });
            }
            prev = (a.id, a.hash);
        }
        Ok(AuditVerdict {
            rows: i64::try_from(rows.len()).unwrap_or(i64::MAX),
            broken_at: None,
        })
    }
}
