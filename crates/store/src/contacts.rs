//! The SMS contact directory.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::{Result, Store, Tx, from_ms, ms};

/// A directory entry in storage form (the phone already E.164).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRecord {
    pub phone: String,
    pub name: String,
    pub commune: String,
    pub role: String,
    pub language: String,
    pub opted_out: bool,
    pub updated: DateTime<Utc>,
}

impl Tx<'_> {
    /// Adds or replaces the entry for its phone number. Returns true if it was new.
    pub async fn upsert_contact(&mut self, c: &ContactRecord) -> Result<bool> {
        let existed = sqlx::query("SELECT 1 FROM contacts WHERE phone = $1")
            .bind(&c.phone)
            .fetch_optional(&mut *self.tx)
            .await?
            .is_some();
        sqlx::query(
            "INSERT INTO contacts (phone, name, commune, role, language, opted_out, updated_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (phone) DO UPDATE SET name = excluded.name, commune = excluded.commune,
                role = excluded.role, language = excluded.language, opted_out = excluded.opted_out,
                updated_ms = excluded.updated_ms",
        )
        .bind(&c.phone)
        .bind(&c.name)
        .bind(&c.commune)
        .bind(&c.role)
        .bind(&c.language)
        .bind(i64::from(c.opted_out))
        .bind(ms(c.updated))
        .execute(&mut *self.tx)
        .await?;
        Ok(!existed)
    }
}

impl Store {
    /// The directory, by commune and name, optionally for one commune.
    pub async fn list_contacts(&self, commune: Option<&str>, limit: i64) -> Result<Vec<ContactRecord>> {
        let rows = sqlx::query(
            "SELECT phone, name, commune, role, language, opted_out, updated_ms FROM contacts
             WHERE ($1 IS NULL OR commune = $2) ORDER BY commune, name LIMIT $3",
        )
        .bind(commune)
        .bind(commune)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ContactRecord {
                    phone: r.try_get("phone")?,
                    name: r.try_get("name")?,
                    commune: r.try_get("commune")?,
                    role: r.try_get("role")?,
                    language: r.try_get("language")?,
                    opted_out: r.try_get::<i64, _>("opted_out")? != 0,
                    updated: from_ms(r.try_get("updated_ms")?)?,
                })
            })
            .collect()
    }
}
