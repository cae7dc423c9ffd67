//! Persistence: observations, alerts with their outbox of deliveries, receipts,
//! receivers, API tokens and refused inputs, on SQLite (the embedded default).
//!
//! Only this crate uses sqlx. It holds no business rules: callers decide what an alert
//! says and when a delivery is due; the store makes each write atomic and each claim
//! exclusive. Entry points: [`Store::open`], [`Store::begin`] for a write that must be
//! all-or-nothing, and the outbox methods [`Store::claim_due`], [`Store::mark_published`],
//! [`Store::mark_retry`].

mod alerts;
mod audit;
mod changes;
mod contacts;
mod forecasts;
mod idempotency;
mod levels;
mod metrics;
mod outbox;
mod receipts;
mod registry;
mod sms;
mod sources;
mod tokens;
mod users;
mod warnings;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyPool, Executor, Transaction};

pub use alerts::{AlertFilter, AlertRecord, NewDelivery, SignedPayload};
pub use audit::{AuditRecord, AuditVerdict, audit_hash};
pub use changes::{Change, ChangeCursor};
pub use contacts::ContactRecord;
pub use forecasts::ForecastRecord;
pub use idempotency::IdempotencyBegin;
pub use levels::{AssessmentRecord, BulletinRecord, NewAssessment, StoredReading};
pub use metrics::{Histogram, LATENCY_BUCKETS_S};
pub use outbox::{ClaimedDelivery, DeliveryRecord};
pub use receipts::{NewReceipt, ReceiptRecord, ReceiverRecord, RejectionRecord};
pub use registry::{FleetRecord, ReceiverDeliveryRecord, RegisteredReceiver};
pub use sms::{
    FallbackCandidate, FallbackRecord, IncomingReport, NewSms, OverdueSms, ReportDecision, SmsClaim,
    SmsOutcome, SmsRecord, SmsReportApplied,
};
pub use sources::SourceHealth;
pub use tokens::TokenRecord;
pub use users::UserRecord;
pub use warnings::{NewWarning, NotificationRecord, WarningRecord};

/// A store failure. Each variant says what an operator needs to act.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {url:?}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A receiver heard from within this long, whose last word was not `offline`, is online
/// (the fleet view's stale window, and the SMS fallback's "online when issued").
pub const ONLINE_WITHIN: chrono::Duration = chrono::Duration::minutes(3);

/// The database, behind a connection pool.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
}

/// An open write transaction. Dropping it without [`Tx::commit`] rolls everything back.
pub struct Tx<'a> {
    tx: Transaction<'a, Any>,
}

impl Tx<'_> {
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

fn migrator() -> Migrator {
    let sql = |s: &'static str| sqlx::SqlSafeStr::into_sql_str(s);
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            "init".into(),
            MigrationType::Simple,
            sql(include_str!("../migrations/sqlite/0001_init.sql")),
            false,
        ),
        Migration::new(
            2,
            "assessments".into(),
            MigrationType::Simple,
            sql(include_str!("../migrations/sqlite/0002_assessments.sql")),
            false,
        ),
        Migration::new(
            3,
            "bulletins".into(),
            MigrationType::Simple,
            sql(include_str!("../migrations/sqlite/0003_bulletins.sql")),
            false,
        ),
        Migration::new(
            4,
            "token stations".into(),
            MigrationType::Simple,
            sql(include_str!("../migrations/sqlite/0004_token_stations.sql")),
            false,
        ),
        Migration::new(
            5,
            "sources".into(),
            MigrationType::Simple,
            sql(include_str!("../migrations/sqlite/0005_sources.sql")),
            false,
        ),
        Migration::new(
            6,
            "forecasts".into(),
            MigrationType::Simple,
            sql(include_str!("../migrations/sqlite/0006_forecasts.sql")),
            false,
        ),
        Migration::new(
            7,
            "receiver registry".into(),
            MigrationType::Simple,
            sql(include_str!("../migrations/sqlite/0007_registry.sql")),
            false,
        ),
        Migration::new(
            8,
            "receipt reasons".into(),
            MigrationType::Simple,
            sql(include_str!("../migrations/sqlite/0008_receipt_reasons.sql")),
            false,
        ),
        Migration::new(
            9,
            "contacts".into(),
            MigrationType::Simple,
            sql(include_str!("../migrations/sqlite/0009_contacts.sql")),
            false,
        ),
        Migration::new(
            10,
            "sms".into(),
            MigrationType::Simple,
            sql(include_str!("../migrations/sqlite/0010_sms.sql")),
            false,
        ),
        Migration::new(
            11,
            "users".into(),
            MigrationType::Simple,
            sql(include_str!("../migrations/sqlite/0011_users.sql")),
            false,
        ),
        Migration::new(
            12,
            "audit".into(),
            MigrationType::Simple,
            sql(include_str!("../migrations/sqlite/0012_audit.sql")),
            false,
        ),
        Migration::new(
            13,
            "warnings".into(),
            MigrationType::Simple,
            sql(include_str!("../migrations/sqlite/0013_warnings.sql")),
            false,
        ),
    ])
}

/// A pool on `url` (`sqlite://PATH`, created if missing, or `sqlite::memory:`), each
/// connection in WAL mode with full sync, foreign keys and a 5 s busy timeout.
async fn connect(url: &str, max: u32) -> Result<AnyPool> {
    install_default_drivers();
    let url = if url.starts_with("sqlite:") && !url.contains("mode=") && !url.contains(":memory:") {
        format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
    } else {
        url.to_owned()
    };
    AnyPoolOptions::new()
        .max_connections(max)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
                )
                .await?;
                Ok(())
            })
        })
        .connect(&url)
        .await
        .map_err(|source| StoreError::Open {
            url: redact(&url),
            source,
        })
}

impl Store {
    /// Opens (creating if missing) an SQLite database in WAL mode and applies migrations.
    /// `url` is `sqlite://PATH` or `sqlite::memory:`.
    pub async fn open(url: &str) -> Result<Self> {
        // An in-memory database exists once per connection: keep exactly one.
        let max = if url.contains(":memory:") { 1 } else { 8 };
        let pool = connect(url, max).await?;
        migrator().run(&pool).await?;
        Ok(Self { pool })
    }

    /// The newest schema version this build migrates to.
    pub fn schema_version() -> i64 {
        migrator().iter().map(|m| m.version).max().unwrap_or(0)
    }

    /// Opens a database migrated only up to `version`: an earlier release's schema, for
    /// upgrade tests. Nothing but a test should call it.
    #[doc(hidden)]
    pub async fn open_at_schema(url: &str, version: i64) -> Result<AnyPool> {
        let pool = connect(url, 1).await?;
        let older: Vec<Migration> = migrator()
            .iter()
            .filter(|m| m.version <= version)
            .cloned()
            .collect();
        Migrator::with_migrations(older).run(&pool).await?;
        Ok(pool)
    }

    /// The durability settings of a pooled connection: (journal mode, synchronous, foreign
    /// keys), for a test to check that every connection gets them.
    #[doc(hidden)]
    pub async fn pragmas(&self) -> Result<(String, i64, i64)> {
        use sqlx::Row;
        let mut conn = self.pool.acquire().await?;
        let journal: String = sqlx::query("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
        let sync: i64 = sqlx::query("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
        let fk: i64 = sqlx::query("PRAGMA foreign_keys")
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
        Ok((journal, sync, fk))
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn begin(&self) -> Result<Tx<'static>> {
        // BEGIN IMMEDIATE takes the write lock up front, so two writers never deadlock
        // on a read-then-write upgrade.
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(Tx { tx })
    }

    /// A transaction for reads (a deferred BEGIN: it takes no write lock).
    pub async fn begin_read(&self) -> Result<Tx<'static>> {
        let tx = self.pool.begin().await?;
        Ok(Tx { tx })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A database URL with any password replaced, fit for errors and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(ms: i64) -> Result<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms} ms is out of range")))
}

pub(crate) fn from_ms_opt(ms: Option<i64>) -> Result<Option<DateTime<Utc>>> {
    ms.map(from_ms).transpose()
}

pub(crate) fn json_list(values: impl IntoIterator<Item = impl ToString>) -> String {
    serde_json::Value::Array(values.into_iter().map(|v| v.to_string().into()).collect()).to_string()
}

pub(crate) fn parse_json_list(column: &str, text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_an_error_message() {
        assert_eq!(
            super::redact("postgres://u:hunter2@db:5432/x"),
            "postgres://***@db:5432/x"
        );
        assert_eq!(
            super::redact("sqlite://./var/canhbao.db"),
            "sqlite://./var/canhbao.db"
        );
    }
}
