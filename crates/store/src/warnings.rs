//! Duty officers' warnings (draft, pending approval, issued, discarded), the people to
//! notify, and dismissed pre-warnings. Every state change is a guarded `UPDATE ... WHERE
//! state = ?`: of two racing approvals, one changes the row and the other changes nothing.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::{Result, Store, Tx, from_ms, from_ms_opt, ms};

#[derive(Debug, Clone, PartialEq)]
pub struct WarningRecord {
    pub id: String,
    pub state: String,
    pub author: String,
    pub updates: Option<String>,
    pub prewarning_id: Option<i64>,
    /// The validated draft, as JSON.
    pub draft: String,
    pub needs_approval: bool,
    pub approval_reason: Option<String>,
    pub override_reason: Option<String>,
    pub submitted: Option<DateTime<Utc>>,
    pub reviewed_by: Option<String>,
    pub reviewed: Option<DateTime<Utc>>,
    pub review_note: Option<String>,
    pub alert_id: Option<String>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    /// Bumped by every change.
    pub version: i64,
}

/// A warning as first written.
#[derive(Debug, Clone)]
pub struct NewWarning<'a> {
    pub id: &'a str,
    pub author: &'a str,
    pub updates: Option<&'a str>,
    pub prewarning_id: Option<i64>,
    pub draft: &'a str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NotificationRecord {
    pub id: i64,
    pub recipient: String,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub warning_id: Option<String>,
    pub alert_id: Option<String>,
    pub text: String,
}

const COLUMNS: &str = "id, state, author, updates, prewarning_id, draft, needs_approval, approval_reason,
    override_reason, submitted_ms, reviewed_by, reviewed_ms, review_note, alert_id, created_ms, updated_ms, version";

fn record(r: &sqlx::any::AnyRow) -> Result<WarningRecord> {
    Ok(WarningRecord {
        id: r.try_get("id")?,
        state: r.try_get("state")?,
        author: r.try_get("author")?,
        updates: r.try_get("updates")?,
        prewarning_id: r.try_get("prewarning_id")?,
        draft: r.try_get("draft")?,
        needs_approval: r.try_get::<i64, _>("needs_approval")? != 0,
        approval_reason: r.try_get("approval_reason")?,
        override_reason: r.try_get("override_reason")?,
        submitted: from_ms_opt(r.try_get("submitted_ms")?)?,
        reviewed_by: r.try_get("reviewed_by")?,
        reviewed: from_ms_opt(r.try_get("reviewed_ms")?)?,
        review_note: r.try_get("review_note")?,
        alert_id: r.try_get("alert_id")?,
        created: from_ms(r.try_get("created_ms")?)?,
        updated: from_ms(r.try_get("updated_ms")?)?,
        version: r.try_get("version")?,
    })
}

impl Tx<'_> {
    /// Writes a new draft. False if a warning already confirms the same pre-warning.
    pub async fn insert_warning(&mut self, w: &NewWarning<'_>, now: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO warnings (id, state, author, updates, prewarning_id, draft, created_ms, updated_ms)
             VALUES ($1, 'draft', $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(w.id)
        .bind(w.author)
        .bind(w.updates)
        .bind(w.prewarning_id)
        .bind(w.draft)
        .bind(ms(now))
        .bind(ms(now))
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The warning, read inside the transaction.
    pub async fn warning(&mut self, id: &str) -> Result<Option<WarningRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM warnings WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(record).transpose()
    }

    /// Replaces a draft's content while it is still a draft. False if it is not.
    pub async fn edit_warning(&mut self, id: &str, draft: &str, now: DateTime<Utc>) -> Result<bool> {
        let done =
            sqlx::query("UPDATE warnings SET draft = $1, updated_ms = $2, version = version + 1 WHERE id = $3 AND state = 'draft'")
                .bind(draft)
                .bind(ms(now))
                .bind(id)
                .execute(&mut *self.tx)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// draft -> pending: waits for a second person. False if it was not a draft of
    /// `version`.
    pub async fn submit_warning(
        &mut self,
        id: &str,
        version: i64,
        approval_reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE warnings SET state = 'pending', needs_approval = 1, approval_reason = $1,
                 submitted_ms = $2, updated_ms = $3, reviewed_by = NULL, reviewed_ms = NULL, review_note = NULL,
                 version = version + 1
             WHERE id = $4 AND state = 'draft' AND version = $5",
        )
        .bind(approval_reason)
        .bind(ms(now))
        .bind(ms(now))
        .bind(id)
        .bind(version)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// `from` -> issued as `alert_id`. `reviewer` is the approver (None when the rule did
    /// not apply or was overridden). False if the warning was not in `from` at `version`.
    #[allow(clippy::too_many_arguments)]
    pub async fn issue_warning(
        &mut self,
        id: &str,
        from: &str,
        version: i64,
        alert_id: &str,
        reviewer: Option<(&str, &str)>,
        needs_approval: Option<&str>,
        override_reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE warnings SET state = 'issued', alert_id = $1,
                 needs_approval = CASE WHEN $2 IS NULL THEN needs_approval ELSE 1 END,
                 approval_reason = COALESCE($3, approval_reason),
                 override_reason = $4,
                 submitted_ms = COALESCE(submitted_ms, $5),
                 reviewed_by = $6, reviewed_ms = CASE WHEN $7 IS NULL THEN NULL ELSE $8 END,
                 review_note = $9, updated_ms = $10, version = version + 1
             WHERE id = $11 AND state = $12 AND version = $13",
        )
        .bind(alert_id)
        .bind(needs_approval)
        .bind(needs_approval)
        .bind(override_reason)
        .bind(ms(now))
        .bind(reviewer.map(|r| r.0))
        .bind(reviewer.map(|r| r.0))
        .bind(ms(now))
        .bind(reviewer.map(|r| r.1).filter(|n| !n.is_empty()))
        .bind(ms(now))
        .bind(id)
        .bind(from)
        .bind(version)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// pending -> draft, back to its author with why. False if it was not pending.
    pub async fn return_warning(
        &mut self,
        id: &str,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE warnings SET state = 'draft', reviewed_by = $1, reviewed_ms = $2, review_note = $3,
                 updated_ms = $4, version = version + 1
             WHERE id = $5 AND state = 'pending'",
        )
        .bind(by)
        .bind(ms(now))
        .bind(reason)
        .bind(ms(now))
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// draft -> discarded. False if it was not a draft.
    pub async fn discard_warning(&mut self, id: &str, now: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE warnings SET state = 'discarded', updated_ms = $1, version = version + 1
             WHERE id = $2 AND state = 'draft'",
        )
        .bind(ms(now))
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Tells `recipient` something.
    pub async fn notify(
        &mut self,
        recipient: &str,
        kind: &str,
        warning_id: Option<&str>,
        alert_id: Option<&str>,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO notifications (recipient, at_ms, kind, warning_id, alert_id, text)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(recipient)
        .bind(ms(now))
        .bind(kind)
        .bind(warning_id)
        .bind(alert_id)
        .bind(text)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Records a dismissed pre-warning. False if it was already dismissed.
    pub async fn dismiss_prewarning(
        &mut self,
        assessment_id: i64,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO prewarning_dismissals (assessment_id, by, at_ms, reason) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        )
        .bind(assessment_id)
        .bind(by)
        .bind(ms(now))
        .bind(reason)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether a pre-warning was dismissed or confirmed already: the warning or dismissal.
    pub async fn prewarning_decided(&mut self, assessment_id: i64) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT 'confirmed as warning ' || id AS d FROM warnings
             WHERE prewarning_id = $1 AND state <> 'discarded'
             UNION ALL
             SELECT 'dismissed by ' || by || ': ' || reason FROM prewarning_dismissals WHERE assessment_id = $1",
        )
        .bind(assessment_id)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| r.try_get("d")).transpose().map_err(Into::into)
    }

    /// The newest message that references `alert_id` (an Update or Cancel of it, or of a
    /// later version); `None` if `alert_id` is the latest of its incident.
    pub async fn superseded_by(&mut self, alert_id: &str) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT r.alert_id FROM alert_refs r JOIN alerts a ON a.id = r.alert_id
             WHERE r.refers_to = $1 ORDER BY a.sent_ms DESC, a.id LIMIT 1",
        )
        .bind(alert_id)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| r.try_get("alert_id")).transpose().map_err(Into::into)
    }
}

impl Store {
    pub async fn get_warning(&self, id: &str) -> Result<Option<WarningRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM warnings WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record).transpose()
    }

    /// The warning that issued `alert_id`, if one did.
    pub async fn warning_for_alert(&self, alert_id: &str) -> Result<Option<WarningRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM warnings WHERE alert_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(alert_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record).transpose()
    }

    /// Warnings, most recently changed first, optionally in one state.
    pub async fn list_warnings(&self, state: Option<&str>, limit: i64) -> Result<Vec<WarningRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM warnings WHERE ($1 IS NULL OR state = $1)
             ORDER BY updated_ms DESC, id LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(state)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(record).collect()
    }

    /// The newest notifications of `recipient`.
    pub async fn notifications(&self, recipient: &str, limit: i64) -> Result<Vec<NotificationRecord>> {
        let rows = sqlx::query(
            "SELECT id, recipient, at_ms, kind, warning_id, alert_id, text FROM notifications
             WHERE recipient = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(recipient)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NotificationRecord {
                    id: r.try_get("id")?,
                    recipient: r.try_get("recipient")?,
                    at: from_ms(r.try_get("at_ms")?)?,
                    kind: r.try_get("kind")?,
                    warning_id: r.try_get("warning_id")?,
                    alert_id: r.try_get("alert_id")?,
                    text: r.try_get("text")?,
                })
            })
            .collect()
    }

    /// How many warnings are in `state`.
    pub async fn count_warnings(&self, state: &str) -> Result<i64> {
        let r = sqlx::query("SELECT COUNT(*) AS n FROM warnings WHERE state = $1")
            .bind(state)
            .fetch_one(&self.pool)
            .await?;
        Ok(r.try_get("n")?)
    }

    /// Who must be told of an override: every enabled user who may approve.
    pub async fn approvers(&self) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT username FROM users WHERE role IN ('approver', 'admin') AND disabled_ms IS NULL
             ORDER BY username",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(format!("user:{}", r.try_get::<String, _>("username")?)))
            .collect()
    }
}
