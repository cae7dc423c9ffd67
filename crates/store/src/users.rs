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

    /// Sets a new password hash, lifts a lockout, and revokes the user's tokens; false if
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
        revoke_user_tokens(&mut tx, username, now).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Counts a failed login; with `lock_until`, the account stays locked until then.
    pub async fn login_failed(&self, user_id: i64, lock_until: Option<DateTime<Utc>>) -> Result<()> {
        sqlx::query(
            "UPDATE users SET failed_logins = failed_logins + 1,
                locked_until_ms = COALESCE($1, locked_until_ms) WHERE id = $2",
        )
        .bind(lock_until.map(ms))
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A successful login: clears the failure count and stores the login's token.
    pub async fn login_succeeded(
        &self,
        user: &UserRecord,
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
