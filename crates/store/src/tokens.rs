//! API bearer tokens, stored only as SHA-256 hashes.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::{Result, Store, from_ms, ms};

#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub id: i64,
    pub role: String,
    pub label: String,
    pub created: DateTime<Utc>,
    /// For a station token, the stations it may write for; `None`: any.
    pub stations: Option<Vec<String>>,
    /// The person it belongs to (a login's token); `None` for an API key.
    pub user_id: Option<i64>,
    /// What an API key may do; `None`: its role's default.
    pub scopes: Option<Vec<String>>,
}

impl Store {
    /// Stores a token by its hash (hex SHA-256 of the secret; the secret is never stored).
    pub async fn insert_token(
        &self,
        token_sha256: &str,
        role: &str,
        label: &str,
        stations: Option<&[String]>,
        scopes: Option<&[String]>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_tokens (token_sha256, role, label, stations, created_ms, scopes)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token_sha256)
        .bind(role)
        .bind(label)
        .bind(stations.map(crate::json_list))
        .bind(ms(now))
        .bind(scopes.map(crate::json_list))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The live token with this hash at `now`: not revoked, not expired, and, for a
    /// login's token, of a user who is not disabled.
    pub async fn find_token(&self, token_sha256: &str, now: DateTime<Utc>) -> Result<Option<TokenRecord>> {
        let row = sqlx::query(
            "SELECT t.id, t.role, t.label, t.created_ms, t.stations, t.user_id, t.scopes FROM api_tokens t
             LEFT JOIN users u ON u.id = t.user_id
             WHERE t.token_sha256 = $1 AND t.revoked_ms IS NULL
               AND (t.expires_ms IS NULL OR t.expires_ms > $2)
               AND (t.user_id IS NULL OR (u.id IS NOT NULL AND u.disabled_ms IS NULL))",
        )
        .bind(token_sha256)
        .bind(ms(now))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(TokenRecord {
                id: r.try_get("id")?,
                role: r.try_get("role")?,
                label: r.try_get("label")?,
                created: from_ms(r.try_get("created_ms")?)?,
                stations: r
                    .try_get::<Option<String>, _>("stations")?
                    .map(|s| crate::parse_json_list("stations", &s))
                    .transpose()?,
                user_id: r.try_get("user_id")?,
                scopes: r
                    .try_get::<Option<String>, _>("scopes")?
                    .map(|s| crate::parse_json_list("scopes", &s))
                    .transpose()?,
            })
        })
        .transpose()
    }

    /// How many live tokens have `role`.
    pub async fn count_tokens(&self, role: &str) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM api_tokens WHERE role = $1 AND revoked_ms IS NULL")
            .bind(role)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }
}
