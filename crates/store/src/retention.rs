//! Retention: what is kept how long, pruned in small batches so that no prune holds the
//! write lock for long. Alerts, their deliveries and receipts' summaries, the audit log
//! and the registry are never pruned here: the yearly report and the audit chain need
//! them.

use chrono::{DateTime, Utc};

use crate::{Result, Store, ms};

/// A kind of record with a retention of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Station readings (by when they were observed).
    Observations,
    /// Forecast values (by the hour they are for).
    Forecasts,
    /// Receivers' receipts (by when they were recorded).
    Receipts,
    /// Refused inputs (`/api/v1/rejections`).
    Rejections,
    /// Rules' assessments.
    Assessments,
    /// SMS delivery reports.
    SmsReports,
    /// Counts of messages from unregistered receivers (by their last message).
    Unregistered,
    /// Failed logins, once their hold-off is over.
    LoginFailures,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Observations,
        Kind::Forecasts,
        Kind::Receipts,
        Kind::Rejections,
        Kind::Assessments,
        Kind::SmsReports,
        Kind::Unregistered,
        Kind::LoginFailures,
    ];

    /// Its name in `[retention]` (`{code}_days`).
    pub fn code(self) -> &'static str {
        match self {
            Kind::Observations => "observations",
            Kind::Forecasts => "forecasts",
            Kind::Receipts => "receipts",
            Kind::Rejections => "rejections",
            Kind::Assessments => "assessments",
            Kind::SmsReports => "sms_reports",
            Kind::Unregistered => "unregistered",
            Kind::LoginFailures => "login_failures",
        }
    }

    /// The statement that deletes up to `$2` rows older than `$1`: its table, the column
    /// that dates a row, and the key that picks rows (only fixed text, no input).
    fn delete_sql(self) -> &'static str {
        match self {
            Kind::Observations => {
                "DELETE FROM observations WHERE id IN (SELECT id FROM observations WHERE observed_ms < $1 ORDER BY id LIMIT $2)"
            }
            Kind::Forecasts => {
                "DELETE FROM forecasts WHERE (status, station, parameter, valid_ms) IN
                   (SELECT status, station, parameter, valid_ms FROM forecasts WHERE valid_ms < $1 LIMIT $2)"
            }
            Kind::Receipts => {
                "DELETE FROM receipts WHERE id IN (SELECT id FROM receipts WHERE recorded_ms < $1 ORDER BY id LIMIT $2)"
            }
            Kind::Rejections => {
                "DELETE FROM rejections WHERE id IN (SELECT id FROM rejections WHERE at_ms < $1 ORDER BY id LIMIT $2)"
            }
            Kind::Assessments => {
                "DELETE FROM assessments WHERE id IN (SELECT id FROM assessments WHERE at_ms < $1 ORDER BY id LIMIT $2)"
            }
            Kind::SmsReports => {
                "DELETE FROM sms_reports WHERE id IN (SELECT id FROM sms_reports WHERE recorded_ms < $1 ORDER BY id LIMIT $2)"
            }
            Kind::Unregistered => {
                "DELETE FROM unregistered_receivers WHERE receiver_id IN
                   (SELECT receiver_id FROM unregistered_receivers WHERE last_ms < $1 LIMIT $2)"
            }
            Kind::LoginFailures => {
                "DELETE FROM login_failures WHERE (username, address) IN
                   (SELECT username, address FROM login_failures WHERE last_ms < $1 AND blocked_until_ms < $1 LIMIT $2)"
            }
        }
    }
}

impl Store {
    /// Deletes up to `batch` rows of `kind` dated before `before`, in one short
    /// transaction; returns how many. Call it again until it returns less than `batch`.
    pub async fn prune_batch(&self, kind: Kind, before: DateTime<Utc>, batch: i64) -> Result<u64> {
        let done = sqlx::query(kind.delete_sql())
            .bind(ms(before))
            .bind(batch)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
