//! People who log in, and the tokens their logins get. Hashes and lockout times are
//! stored; the policy (how many failures lock, for how long) is the caller's.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::{Result, Store, from_ms, from_ms_opt, ms};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: i64,
    pub username: String,
    pub role: String,
    /// argon2id PHC string.
    pub password_hash: String,
    pub created: DateTime<Utc>,
    pub disabled: Option<DateTime<Utc>>,
    pub failed_logins: i64,
    pub locked_until: Option<DateTime<Utc>>,
    pub last_login: Option<DateTime<Utc>>,
}

const USER_COLUMNS: &str = "id, username, role, password_hash, created_ms, disabled_ms, failed_logins, locked_until_ms, last_login_ms";

fn user(r: &sqlx::any::AnyRow) -> Result<UserRecord> {
    Ok(UserRecord {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        role: r.try_get("role")?,
        password_hash: r.try_get("password_hash")?,
        created: from_ms(r.try_get("created_ms")?)?,
        disabled: from_ms_opt(r.try_get("disabled_ms")?)?,
        failed_logins: r.try_get("failed_logins")?,
        locked_until: from_ms_opt(r.try_get("locked_until_ms")?)?,
        last_login: from_ms_opt(r.try_get("last_login_ms")?)?,
    })
}

impl Store {
    /// Adds a user; false if the name is taken.
    pub async fn create_user(
        &self,
        username: &str,
        role: &str,
        password_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO users (username, role, password_hash, created_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (username) DO NOTHING",
        )
        .bind(username)
        .bind(role)
        .bind(password_hash)
        .bind(ms(now))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user).transpose()
    }

    pub async fn list_users(&self) -> Result<Vec<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY username");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(user).collect()
    }

    /// Disables a user and revokes every token of theirs; false if there is no such user.
    pub async fn disable_user(&self, username: &str, now: DateTime<Utc>) -> Result<bool> {
        let mut tx = self.begin().await?;
        let done =
            sqlx::query("UPDATE users SET disabled_ms = COALESCE(disabled_ms, $1) WHERE username = $2")
                .bind(ms(now))
                .bind(username)
                .execute(&mut *tx.tx)
                .await?;
        revoke_user_tokens(&mut tx, username, now).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets a new password hash, lifts every hold-off on the name, and revokes the user's tokens; false if
    /// there is no such user.
    pub async fn set_password(
        &self,
        username: &str,
        password_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE users SET password_hash = $1, failed_logins = 0, locked_until_ms = NULL WHERE username = $2",
        )
        .bind(password_hash)
        .bind(username)
        .execute(&mut *tx.tx)
        .await?;
        sqlx::query("DELETE FROM login_failures WHERE username = $1")
            .bind(username)
            .execute(&mut *tx.tx)
            .await?;
        revoke_user_tokens(&mut tx, username, now).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Until when logins for `username` (as typed) from `address` are held off, if they are.
    pub async fn login_blocked_until(&self, username: &str, address: &str) -> Result<Option<DateTime<Utc>>> {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT blocked_until_ms FROM login_failures WHERE username = $1 AND address = $2",
        )
        .bind(username)
        .bind(address)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(t,)| from_ms(t)).transpose()
    }

    /// Counts a failed login for `username` (as typed, known or not) from `address`, in one
    /// transaction, so that concurrent failures are each counted: the count starts again
    /// at 1 when the last failure is older than `forget_before`. `hold_off` turns the
    /// count into a time until which that name is refused from that address (it never
    /// shortens one already set). A known user's own count of failures goes up too.
    /// Returns the count.
    pub async fn login_failed(
        &self,
        username: &str,
        address: &str,
        user_id: Option<i64>,
        now: DateTime<Utc>,
        forget_before: DateTime<Utc>,
        hold_off: impl FnOnce(i64) -> Option<DateTime<Utc>>,
    ) -> Result<i64> {
        let mut tx = self.begin().await?;
        let (failures,): (i64,) = sqlx::query_as(
            "INSERT INTO login_failures (username, address, failures, last_ms, blocked_until_ms)
             VALUES ($1, $2, 1, $3, 0)
             ON CONFLICT (username, address) DO UPDATE SET
                failures = CASE WHEN login_failures.last_ms < $4 THEN 1 ELSE login_failures.failures + 1 END,
                last_ms = $3
             RETURNING failures",
        )
        .bind(username)
        .bind(address)
        .bind(ms(now))
        .bind(ms(forget_before))
        .fetch_one(&mut *tx.tx)
        .await?;
        if let Some(until) = hold_off(failures) {
            sqlx::query(
                "UPDATE login_failures SET blocked_until_ms =
                    CASE WHEN blocked_until_ms < $1 THEN $1 ELSE blocked_until_ms END
                 WHERE username = $2 AND address = $3",
            )
            .bind(ms(until))
            .bind(username)
            .bind(address)
            .execute(&mut *tx.tx)
            .await?;
        }
        if let Some(id) = user_id {
            sqlx::query("UPDATE users SET failed_logins = failed_logins + 1 WHERE id = $1")
                .bind(id)
                .execute(&mut *tx.tx)
                .await?;
        }
        tx.commit().await?;
        Ok(failures)
    }

    /// A successful login from `address`: clears the failure counts (the user's, and the
    /// name's from that address) and stores the login's token.
    pub async fn login_succeeded(
        &self,
        user: &UserRecord,
        address: &str,
        token_sha256: &str,
        expires: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE users SET failed_logins = 0, locked_until_ms = NULL, last_login_ms = $1 WHERE id = $2",
        )
        .bind(ms(now))
        .bind(user.id)
        .execute(&mut *tx.tx)
        .await?;
        sqlx::query("DELETE FROM login_failures WHERE username = $1 AND address = $2")
            .bind(&user.username)
            .bind(address)
            .execute(&mut *tx.tx)
            .await?;
        sqlx::query(
            "INSERT INTO api_tokens (token_sha256, role, label, created_ms, user_id, expires_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token_sha256)
        .bind(&user.role)
        .bind(format!("user:{}", user.username))
        .bind(ms(now))
        .bind(user.id)
        .bind(ms(expires))
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await
    }

    /// Revokes one token by its hash; false if it was not live.
    pub async fn revoke_token(&self, token_sha256: &str, now: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_ms = $1 WHERE token_sha256 = $2 AND revoked_ms IS NULL",
        )
        .bind(ms(now))
        .bind(token_sha256)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Once an enabled admin user exists, revokes the bootstrap admin token (labelled
    /// `label`). Returns how many tokens were revoked.
    pub async fn retire_bootstrap_token(&self, label: &str, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_ms = $1
             WHERE label = $2 AND user_id IS NULL AND revoked_ms IS NULL
               AND EXISTS (SELECT 1 FROM users WHERE role = 'admin' AND disabled_ms IS NULL)",
        )
        .bind(ms(now))
        .bind(label)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

async fn revoke_user_tokens(tx: &mut crate::Tx<'_>, username: &str, now: DateTime<Utc>) -> Result<()> {
    sqlx::query(
        "UPDATE api_tokens SET revoked_ms = $1 WHERE revoked_ms IS NULL
           AND user_id = (SELECT id FROM users WHERE username = $2)",
    )
    .bind(ms(now))
    .bind(username)
    .execute(&mut *tx.tx)
    .await?;
    Ok(())
}
