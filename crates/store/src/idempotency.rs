//! `Idempotency-Key`: the first request with a key runs; its response is kept and given
//! again to every retry with the same key and the same request. The claim is one
//! `INSERT`, so of two racing requests exactly one runs.

use chrono::{DateTime, Duration, Utc};
use sqlx::Row;

use crate::{Result, Store, ms};

/// What a request with an `Idempotency-Key` should do.
#[derive(Debug, Clone, PartialEq)]
pub enum IdempotencyBegin {
    /// It is the first (or the earlier one was abandoned before it sent anything): run it.
    Run,
    /// The earlier one's instance died after it sent `alert_id`: answer with that alert,
    /// send nothing again.
    Resume { alert_id: String },
    /// Another request with this key is running (`same`: with the same request).
    Running { same: bool },
    /// It ran: give its response again (`same`: the request was the same).
    Done {
        same: bool,
        status: u16,
        content_type: Option<String>,
        body: Vec<u8>,
    },
}

/// A running claim whose lease was not renewed for this long belonged to an instance that
/// died: a retry takes it over. The instance running a request renews its lease every
/// [`LEASE_RENEWAL`], so a request that takes long is never run twice.
pub const LEASE: Duration = Duration::seconds(15);

/// The `Idempotency-Key` claim of the request a task runs: an alert inserted while it is
/// set is recorded on the claim, in the same transaction (see [`IdempotencyBegin::Resume`]).
#[derive(Debug, Clone)]
pub struct Claim {
    pub scope: String,
    pub key: String,
}

tokio::task_local! {
    /// The claim of the request the current task runs, if it has one.
    pub static CLAIM: Claim;
}

/// How often the instance running a request renews its claim's lease.
pub const LEASE_RENEWAL: std::time::Duration = std::time::Duration::from_secs(5);

impl Store {
    /// Claims `key` for `scope` and the request whose SHA-256 is `request`.
    pub async fn idempotency_begin(
        &self,
        scope: &str,
        key: &str,
        request: &str,
        now: DateTime<Utc>,
    ) -> Result<IdempotencyBegin> {
        let mut tx = self.begin().await?;
        // A running claim of the same request whose lease ran out belonged to an instance
        // that died: take it over, keeping what it sent.
        let taken = sqlx::query(
            "UPDATE idempotency_keys SET lease_ms = $1
             WHERE scope = $2 AND key = $3 AND request_sha256 = $4 AND state = 'running'
               AND COALESCE(lease_ms, created_ms) < $5
             RETURNING alert_id",
        )
        .bind(ms(now))
        .bind(scope)
        .bind(key)
        .bind(request)
        .bind(ms(now - LEASE))
        .fetch_optional(&mut *tx.tx)
        .await?;
        if let Some(row) = taken {
            tx.commit().await?;
            return Ok(match row.try_get::<Option<String>, _>("alert_id")? {
                Some(alert_id) => IdempotencyBegin::Resume { alert_id },
                None => IdempotencyBegin::Run,
            });
        }
        // One of another request whose lease ran out is dropped.
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND state = 'running'
               AND COALESCE(lease_ms, created_ms) < $3",
        )
        .bind(scope)
        .bind(key)
        .bind(ms(now - LEASE))
        .execute(&mut *tx.tx)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, request_sha256, state, created_ms, lease_ms)
             VALUES ($1, $2, $3, 'running', $4, $4) ON CONFLICT DO NOTHING",
        )
        .bind(scope)
        .bind(key)
        .bind(request)
        .bind(ms(now))
        .execute(&mut *tx.tx)
        .await?;
        let answer = if inserted.rows_affected() == 1 {
            IdempotencyBegin::Run
        } else {
            let r = sqlx::query(
                "SELECT request_sha256, state, status, content_type, body FROM idempotency_keys
                 WHERE scope = $1 AND key = $2",
            )
            .bind(scope)
            .bind(key)
            .fetch_one(&mut *tx.tx)
            .await?;
            let same = r.try_get::<String, _>("request_sha256")? == request;
            if r.try_get::<String, _>("state")? == "running" {
                IdempotencyBegin::Running { same }
            } else {
                IdempotencyBegin::Done {
                    same,
                    status: u16::try_from(r.try_get::<i64, _>("status")?).unwrap_or(500),
                    content_type: r.try_get("content_type")?,
                    body: r.try_get("body")?,
                }
            }
        };
        tx.commit().await?;
        Ok(answer)
    }

    /// Where `key` stands, read only (for a retry waiting on the first request): `None`
    /// if nobody holds it.
    pub async fn idempotency_peek(
        &self,
        scope: &str,
        key: &str,
        request: &str,
    ) -> Result<Option<IdempotencyBegin>> {
        let r = sqlx::query(
            "SELECT request_sha256, state, status, content_type, body FROM idempotency_keys
             WHERE scope = $1 AND key = $2",
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        r.map(|r| {
            let same = r.try_get::<String, _>("request_sha256")? == request;
            Ok(if r.try_get::<String, _>("state")? == "running" {
                IdempotencyBegin::Running { same }
            } else {
                IdempotencyBegin::Done {
                    same,
                    status: u16::try_from(r.try_get::<i64, _>("status")?).unwrap_or(500),
                    content_type: r.try_get("content_type")?,
                    body: r.try_get("body")?,
                }
            })
        })
        .transpose()
    }

    /// Names `alert_id` as what the running claim on `key` sent, in the transaction that
    /// inserts the alert.
    pub(crate) async fn idempotency_sent(
        tx: &mut crate::Tx<'_>,
        claim: &Claim,
        alert_id: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE idempotency_keys SET alert_id = $1 WHERE scope = $2 AND key = $3 AND state = 'running'",
        )
        .bind(alert_id)
        .bind(&claim.scope)
        .bind(&claim.key)
        .execute(&mut *tx.tx)
        .await?;
        Ok(())
    }

    /// Renews the lease of the running claim on `key` (the instance running it is alive).
    pub async fn idempotency_renew(&self, scope: &str, key: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "UPDATE idempotency_keys SET lease_ms = $1 WHERE scope = $2 AND key = $3 AND state = 'running'",
        )
        .bind(ms(now))
        .bind(scope)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Keeps the response of the request that holds `key`.
    pub async fn idempotency_finish(
        &self,
        scope: &str,
        key: &str,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<()> {
        sqlx::query(
            "UPDATE idempotency_keys SET state = 'done', status = $1, content_type = $2, body = $3
             WHERE scope = $4 AND key = $5 AND state = 'running'",
        )
        .bind(i64::from(status))
        .bind(content_type)
        .bind(body)
        .bind(scope)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Lets go of `key` without a response to keep (the request failed before it acted),
    /// so that a retry runs.
    pub async fn idempotency_abandon(&self, scope: &str, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND state = 'running'")
            .bind(scope)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets keys older than `before` (kept a day: a retry comes within minutes).
    pub async fn idempotency_prune(&self, before: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_ms < $1 AND state = 'done'")
            .bind(ms(before))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
