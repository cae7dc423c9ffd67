//! The change feed behind `GET /api/v1/events`: rows added since a cursor, read from the
//! tables every instance writes (alerts, receipts, the audit log, pre-warnings), so that
//! an operator connected to one instance sees what another did.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::{Result, Store, from_ms, parse_json_list};

/// The newest row seen of each table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeCursor {
    pub alert: i64,
    pub receipt: i64,
    pub audit: i64,
    pub assessment: i64,
    pub quality: i64,
}

/// One added row.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Alert {
        id: String,
        msg_type: String,
        status: String,
        hazard: String,
        risk_level: Option<i64>,
        class: String,
        communes: Vec<String>,
        origin: String,
        sent: DateTime<Utc>,
    },
    Receipt {
        alert_id: String,
        receiver_id: String,
        commune: Option<String>,
        status: String,
        reason: Option<String>,
        at: DateTime<Utc>,
    },
    Audit {
        id: i64,
        actor: String,
        action: String,
        target: String,
        at: DateTime<Utc>,
    },
    Prewarning {
        id: i64,
        hazard: String,
        commune: String,
        level: Option<i64>,
        at: DateTime<Utc>,
    },
    /// A reading flagged by quality control, or a flagged one confirmed.
    Reading(crate::QualityEvent),
}

impl Store {
    /// Where the tables end now: a feed started here shows only what comes next.
    pub async fn change_heads(&self) -> Result<ChangeCursor> {
        let r = sqlx::query(
            "SELECT (SELECT COALESCE(MAX(rowid), 0) FROM alerts) AS alert,
                    (SELECT COALESCE(MAX(id), 0) FROM receipts) AS receipt,
                    (SELECT COALESCE(MAX(id), 0) FROM audit_log) AS audit,
                    (SELECT COALESCE(MAX(id), 0) FROM assessments) AS assessment,
                    (SELECT COALESCE(MAX(id), 0) FROM quality_events) AS quality",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(ChangeCursor {
            alert: r.try_get("alert")?,
            receipt: r.try_get("receipt")?,
            audit: r.try_get("audit")?,
            assessment: r.try_get("assessment")?,
            quality: r.try_get("quality")?,
        })
    }

    /// Rows added after `cursor`, at most `limit` of each kind, the cursor past them, and
    /// why any row was skipped (one bad row never stops the feed).
    pub async fn changes_after(
        &self,
        cursor: ChangeCursor,
        limit: i64,
    ) -> Result<(Vec<Change>, ChangeCursor, Vec<String>)> {
        let mut next = cursor;
        let mut out = Vec::new();
        let mut skipped = Vec::new();
        let rows = sqlx::query(
            "SELECT rowid, id, msg_type, status, hazard, risk_level, class, communes, origin_kind, sent_ms
             FROM alerts WHERE rowid > $1 ORDER BY rowid LIMIT $2",
        )
        .bind(cursor.alert)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        for r in &rows {
            next.alert = r.try_get("rowid")?;
            match (|| -> Result<Change> {
                Ok(Change::Alert {
                    id: r.try_get("id")?,
                    msg_type: r.try_get("msg_type")?,
                    status: r.try_get("status")?,
                    hazard: r.try_get("hazard")?,
                    risk_level: r.try_get("risk_level")?,
                    class: r.try_get("class")?,
                    communes: parse_json_list("communes", r.try_get("communes")?)?,
                    origin: r.try_get("origin_kind")?,
                    sent: from_ms(r.try_get("sent_ms")?)?,
                })
            })() {
                Ok(c) => out.push(c),
                Err(e) => skipped.push(e.to_string()),
            }
        }
        let rows = sqlx::query(
            "SELECT id, alert_id, receiver_id, commune, status, reason, receiver_ms FROM receipts
             WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(cursor.receipt)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        for r in &rows {
            next.receipt = r.try_get("id")?;
            match (|| -> Result<Change> {
                Ok(Change::Receipt {
                    alert_id: r.try_get("alert_id")?,
                    receiver_id: r.try_get("receiver_id")?,
                    commune: r.try_get("commune")?,
                    status: r.try_get("status")?,
                    reason: r.try_get("reason")?,
                    at: from_ms(r.try_get("receiver_ms")?)?,
                })
            })() {
                Ok(c) => out.push(c),
                Err(e) => skipped.push(e.to_string()),
            }
        }
        let rows = sqlx::query(
            "SELECT id, actor, action, target, at_ms FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(cursor.audit)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        for r in &rows {
            next.audit = r.try_get("id")?;
            match (|| -> Result<Change> {
                Ok(Change::Audit {
                    id: r.try_get("id")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    at: from_ms(r.try_get("at_ms")?)?,
                })
            })() {
                Ok(c) => out.push(c),
                Err(e) => skipped.push(e.to_string()),
            }
        }
        let rows = sqlx::query(
            "SELECT id, hazard, commune, level, at_ms, action FROM assessments WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(cursor.assessment)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        for r in &rows {
            next.assessment = r.try_get("id")?;
            if r.try_get::<String, _>("action")? == "pre-warning" {
                match (|| -> Result<Change> {
                    Ok(Change::Prewarning {
                        id: r.try_get("id")?,
                        hazard: r.try_get("hazard")?,
                        commune: r.try_get("commune")?,
                        level: r.try_get("level")?,
                        at: from_ms(r.try_get("at_ms")?)?,
                    })
                })() {
                    Ok(c) => out.push(c),
                    Err(e) => skipped.push(e.to_string()),
                }
            }
        }
        for e in self.quality_events_after(cursor.quality, limit).await? {
            next.quality = e.id;
            out.push(Change::Reading(e));
        }
        Ok((out, next, skipped))
    }
}
