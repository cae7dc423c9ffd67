//! Health of polled sources: validators for conditional GET, successes, failures with
//! their cause, counts, and the next poll.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::{Result, Store, from_ms_opt, ms};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceHealth {
    pub id: String,
    pub url: String,
    pub format: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub last_success: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub consecutive_failures: i64,
    pub accepted: i64,
    pub rejected: i64,
    pub next_poll: Option<DateTime<Utc>>,
}

fn from_row(r: &sqlx::any::AnyRow) -> Result<SourceHealth> {
    Ok(SourceHealth {
        id: r.try_get("id")?,
        url: r.try_get("url")?,
        format: r.try_get("format")?,
        etag: r.try_get("etag")?,
        last_modified: r.try_get("last_modified")?,
        last_success: from_ms_opt(r.try_get("last_success_ms")?)?,
        last_error: r.try_get("last_error")?,
        last_error_at: from_ms_opt(r.try_get("last_error_ms")?)?,
        consecutive_failures: r.try_get("consecutive_failures")?,
        accepted: r.try_get("accepted")?,
        rejected: r.try_get("rejected")?,
        next_poll: from_ms_opt(r.try_get("next_poll_ms")?)?,
    })
}

impl Store {
    /// The source's health, created empty if it was never polled.
    pub async fn source_health(&self, id: &str, url: &str, format: &str) -> Result<SourceHealth> {
        sqlx::query("INSERT INTO sources (id, url, format) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET url = excluded.url, format = excluded.format")
            .bind(id)
            .bind(url)
            .bind(format)
            .execute(&self.pool)
            .await?;
        let row = sqlx::query("SELECT * FROM sources WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        from_row(&row)
    }

    /// Records a successful poll (or a 304) with its validators and counts.
    #[allow(clippy::too_many_arguments)]
    pub async fn source_succeeded(
        &self,
        id: &str,
        etag: Option<&str>,
        last_modified: Option<&str>,
        accepted: i64,
        rejected: i64,
        now: DateTime<Utc>,
        next_poll: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE sources SET etag = COALESCE($1, etag), last_modified = COALESCE($2, last_modified),
                last_success_ms = $3, consecutive_failures = 0, accepted = accepted + $4, rejected = rejected + $5,
                next_poll_ms = $6 WHERE id = $7",
        )
        .bind(etag)
        .bind(last_modified)
        .bind(ms(now))
        .bind(accepted)
        .bind(rejected)
        .bind(ms(next_poll))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a failed poll with its specific cause.
    pub async fn source_failed(
        &self,
        id: &str,
        error: &str,
        rejected: i64,
        now: DateTime<Utc>,
        next_poll: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE sources SET last_error = $1, last_error_ms = $2, consecutive_failures = consecutive_failures + 1,
                rejected = rejected + $3, next_poll_ms = $4 WHERE id = $5",
        )
        .bind(error)
        .bind(ms(now))
        .bind(rejected)
        .bind(ms(next_poll))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn list_sources(&self) -> Result<Vec<SourceHealth>> {
        let rows = sqlx::query("SELECT * FROM sources ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }
}
