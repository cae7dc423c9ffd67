//! Persistence: observations, alerts with their outbox of deliveries, receipts,
//! receivers, API tokens and refused inputs, on SQLite (the embedded default, one
//! process) or PostgreSQL (several instances), chosen by the URL ([`Backend`]).
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
mod follow;
mod forecasts;
mod historic;
mod idempotency;
mod levels;
mod metrics;
mod outbox;
mod receipts;
mod registry;
pub mod retention;
mod sms;
mod sources;
mod tokens;
mod users;
mod warnings;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyConnection, AnyPool, Connection, Executor, Transaction};

pub use alerts::{AlertCounts, AlertFilter, AlertRecord, NewDelivery, SignedPayload};
pub use audit::{AuditRecord, AuditVerdict, audit_hash};
pub use changes::{Change, ChangeCursor};
pub use contacts::ContactRecord;
pub use follow::{CommuneState, FlaggedReading, IncidentHead, QualityEvent};
pub use forecasts::ForecastRecord;
pub use historic::{HistoricCandidate, HistoricRecord};
pub use idempotency::{CLAIM, Claim, IdempotencyBegin, LEASE, LEASE_RENEWAL};
pub use levels::{AssessmentRecord, BulletinRecord, NewAssessment, StoredReading};
pub use metrics::{Histogram, LATENCY_BUCKETS_S};
pub use outbox::{ClaimedDelivery, DeliveryRecord};
pub use receipts::{NewReceipt, ReceiptRecord, ReceiverRecord, ReceiverTouch, RejectionRecord};
pub use registry::{
    DeliveryAdvance, FleetRecord, MAX_UNREGISTERED, ReceiverDeliveryRecord, RegisteredReceiver,
};
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
    #[error(
        "the database's schema is version {found}, newer than this build's {known}: a later \
         release migrated it. Run that release, or restore the backup taken before the upgrade; \
         nothing was changed"
    )]
    NewerSchema { found: i64, known: i64 },
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// Whether another writer held the database past the wait (SQLite: SQLITE_BUSY,
    /// SQLITE_LOCKED and their extended codes; PostgreSQL: lock_not_available, or the
    /// statement timeout).
    pub fn is_locked(&self) -> bool {
        match self {
            Self::Db(sqlx::Error::Database(e)) => {
                let code = e.code().unwrap_or_default();
                code.parse::<i64>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
                    || matches!(code.as_ref(), "55P03" | "57014")
            }
            _ => false,
        }
    }

    /// Whether the database is locked or cannot be reached for now: nothing was written,
    /// and the operation may succeed if tried again shortly.
    pub fn is_unavailable(&self) -> bool {
        self.is_locked()
            || matches!(
                self,
                Self::Open { .. }
                    | Self::Db(
                        sqlx::Error::Io(_)
                            | sqlx::Error::PoolTimedOut
                            | sqlx::Error::PoolClosed
                            | sqlx::Error::Tls(_)
                    )
            )
            || matches!(self, Self::Db(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("57P01" | "57P03")))
    }
}

/// A receiver heard from within this long, whose last word was not `offline`, is online
/// (the fleet view's stale window, and the SMS fallback's "online when issued").
pub const ONLINE_WITHIN: chrono::Duration = chrono::Duration::minutes(3);

/// The database, behind a connection pool.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// For connections of their own (advisory locks held for a task's life).
    url: std::sync::Arc<str>,
}

/// An open write transaction. Dropping it without [`Tx::commit`] rolls everything back.
pub struct Tx<'a> {
    tx: Transaction<'a, Any>,
    backend: Backend,
}

impl Tx<'_> {
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

/// Each backend's migration history: (version, description, SQL), from files of the same
/// name under `migrations/sqlite/` and `migrations/postgres/`. The two histories have the
/// same versions, and after version N the same tables and columns.
macro_rules! migrations {
    ($($version:literal, $description:literal, $file:literal;)*) => {
        const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
            $(($version, $description, include_str!(concat!("../migrations/sqlite/", $file, ".sql"))),)*
        ];
        const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
            $(($version, $description, include_str!(concat!("../migrations/postgres/", $file, ".sql"))),)*
        ];
    };
}

migrations! {
    1, "init", "0001_init";
    2, "assessments", "0002_assessments";
    3, "bulletins", "0003_bulletins";
    4, "token stations", "0004_token_stations";
    5, "sources", "0005_sources";
    6, "forecasts", "0006_forecasts";
    7, "receiver registry", "0007_registry";
    8, "receipt reasons", "0008_receipt_reasons";
    9, "contacts", "0009_contacts";
    10, "sms", "0010_sms";
    11, "users", "0011_users";
    12, "audit", "0012_audit";
    13, "warnings", "0013_warnings";
    14, "follow", "0014_follow";
    15, "art46 one hazard", "0015_art46_one_hazard";
    16, "station historic", "0016_station_historic";
    17, "emergency hold", "0017_emergency_hold";
    18, "login back-off", "0018_login_backoff";
    19, "idempotency lease", "0019_idempotency_lease";
}

fn migrator(backend: Backend, up_to: i64) -> Migrator {
    let list = match backend {
        Backend::Sqlite => SQLITE_MIGRATIONS,
        Backend::Postgres => POSTGRES_MIGRATIONS,
    };
    Migrator::with_migrations(
        list.iter()
            .filter(|(version, ..)| *version <= up_to)
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sqlx::SqlSafeStr::into_sql_str(sql),
                    false,
                )
            })
            .collect(),
    )
}

/// The database engine behind a [`Store`], chosen by the URL's scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite://PATH` or `sqlite::memory:`: the embedded default, one process.
    Sqlite,
    /// `postgres://` or `postgresql://`: production, shared by several instances.
    Postgres,
}

impl Backend {
    /// A multi-row statement of one of a few sizes ([`receipts::statement_chunks`]),
    /// kept prepared on SQLite, where preparing costs more than running it. On PostgreSQL
    /// it is planned on each run instead: a kept statement soon runs a generic plan, and
    /// one made while the tables were small scanned the whole registry for a lookup of a
    /// hundred receivers (60 ms each, against about 1 ms planned with the values).
    pub(crate) fn multi_row(
        self,
        sql: String,
    ) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
        sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(self == Backend::Sqlite)
    }

    /// `expr`, written so that SQLite's planner does not pick an index on it (unary `+`);
    /// PostgreSQL's planner needs no such hint.
    pub(crate) fn unindexed(self, expr: &str) -> String {
        match self {
            Self::Sqlite => format!("+{expr}"),
            Self::Postgres => expr.to_owned(),
        }
    }

    /// `list` (a JSON array in a TEXT column) with `value` (a text expression) appended,
    /// as TEXT.
    pub(crate) fn json_append(self, list: &str, value: &str) -> String {
        match self {
            Backend::Sqlite => format!("json_insert({list}, '$[#]', {value})"),
            Backend::Postgres => format!("(({list})::jsonb || jsonb_build_array({value}))::text"),
        }
    }

    /// The elements of a JSON array held in a TEXT column, as a table `alias` with one
    /// column `value`.
    pub(crate) fn json_each(self, expr: &str, alias: &str) -> String {
        match self {
            Backend::Sqlite => format!("json_each({expr}) AS {alias}"),
            Backend::Postgres => format!("jsonb_array_elements_text(({expr})::jsonb) AS {alias}(value)"),
        }
    }

    /// `FOR UPDATE SKIP LOCKED` on PostgreSQL, nothing on SQLite (whose write lock is
    /// already exclusive).
    pub(crate) fn skip_locked(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        }
    }

    pub fn of_url(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::Open {
                url: redact(url),
                source: sqlx::Error::Configuration(
                    "the database URL must start with sqlite:, postgres:// or postgresql://".into(),
                ),
            })
        }
    }
}

/// The advisory lock every PostgreSQL write transaction takes first (see [`Store::begin`]).
const PG_WRITE_LOCK: i64 = 0x6361_6e68_6261_6f01;

/// How long a query waits for a pooled connection (a free one, or a new one while the
/// server refuses them: sqlx retries a refused connection until then) before it fails
/// with `PoolTimedOut`, which [`StoreError::is_unavailable`]. While PostgreSQL is away a
/// request is refused in seconds rather than after sqlx's default 30 s; the same wait as
/// SQLite's busy timeout.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A pool on `url`. SQLite (`sqlite://PATH`, created if missing, or `sqlite::memory:`):
/// each connection in WAL mode with full sync, foreign keys and a 5 s busy timeout.
/// PostgreSQL: each connection's session in UTC, with a statement timeout, so a stuck
/// lock shows as an error rather than a hang.
async fn connect(url: &str, max: u32) -> Result<(AnyPool, Backend)> {
    install_default_drivers();
    let backend = Backend::of_url(url)?;
    let url = if backend == Backend::Sqlite && !url.contains("mode=") && !url.contains(":memory:") {
        format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
    } else {
        url.to_owned()
    };
    let setup = match backend {
        Backend::Sqlite => {
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;"
        }
        Backend::Postgres => "SET TIME ZONE 'UTC'; SET statement_timeout = '30s';",
    };
    let pool = AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                conn.execute(setup).await?;
                Ok(())
            })
        })
        .connect(&url)
        .await
        .map_err(|source| StoreError::Open {
            url: redact(&url),
            source,
        })?;
    Ok((pool, backend))
}

/// Refuses a database that a later release migrated (its newest applied migration is one
/// this build does not know), before anything is written: an older binary must not run
/// on a newer schema, and sqlx's own refusal ("previously applied but is missing") does
/// not say what to do.
async fn refuse_newer_schema(pool: &AnyPool) -> Result<()> {
    use sqlx::Row;
    // No history table yet: a new database.
    let Ok(row) = sqlx::query("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(pool)
        .await
    else {
        return Ok(());
    };
    let found: Option<i64> = row.try_get(0)?;
    let known = Store::schema_version();
    match found {
        Some(found) if found > known => Err(StoreError::NewerSchema { found, known }),
        _ => Ok(()),
    }
}

impl Store {
    /// Opens the database at `url` and applies migrations: `sqlite://PATH` (created if
    /// missing) or `sqlite::memory:`, or `postgres://USER@HOST/DB`.
    pub async fn open(url: &str) -> Result<Self> {
        // An in-memory database exists once per connection: keep exactly one.
        let max = if url.contains(":memory:") { 1 } else { 8 };
        let (pool, backend) = connect(url, max).await?;
        refuse_newer_schema(&pool).await?;
        migrator(backend, i64::MAX).run(&pool).await?;
        Ok(Self {
            pool,
            backend,
            url: url.into(),
        })
    }

    /// The newest schema version this build migrates to.
    pub fn schema_version() -> i64 {
        SQLITE_MIGRATIONS.iter().map(|m| m.0).max().unwrap_or(0)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Opens a database migrated only up to `version`: an earlier release's schema, for
    /// upgrade tests. Nothing but a test should call it.
    #[doc(hidden)]
    pub async fn open_at_schema(url: &str, version: i64) -> Result<AnyPool> {
        let (pool, backend) = connect(url, 1).await?;
        migrator(backend, version).run(&pool).await?;
        Ok(pool)
    }

    /// The durability settings of a pooled SQLite connection: (journal mode, synchronous,
    /// foreign keys), for a test to check that every connection gets them.
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

    /// Checks that the database answers, and on SQLite that it can be written now: on a
    /// connection of its own (so that no pooled connection's settings change, even if the
    /// check is abandoned midway), a write lock is taken and given back at once, waiting
    /// at most 250 ms. In WAL mode a reader is never blocked, so a plain read would not
    /// notice a writer holding the lock.
    pub async fn ping(&self) -> Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            return Ok(());
        }
        let mut conn = AnyConnection::connect(&self.url)
            .await
            .map_err(|source| StoreError::Open {
                url: redact(&self.url),
                source,
            })?;
        let probe = async {
            conn.execute("PRAGMA busy_timeout = 250").await?;
            conn.execute("BEGIN IMMEDIATE").await?;
            conn.execute("ROLLBACK").await?;
            Ok::<_, sqlx::Error>(())
        }
        .await;
        let _ = conn.close().await;
        Ok(probe?)
    }

    /// A write transaction. Writers take turns, on both engines: SQLite's `BEGIN
    /// IMMEDIATE` takes the write lock up front (so two writers never deadlock on a
    /// read-then-write upgrade), and on PostgreSQL every write transaction first takes one
    /// transaction-scoped advisory lock. Each write then reads what the writer before it
    /// committed, as the store's checks (versions, the audit chain's head, outbox states)
    /// expect. Outbox claims do not take it: they lock their rows with `SKIP LOCKED`.
    pub async fn begin(&self) -> Result<Tx<'static>> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(PG_WRITE_LOCK)
                    .execute(&mut *tx)
                    .await?;
                tx
            }
        };
        Ok(Tx {
            tx,
            backend: self.backend,
        })
    }

    /// A transaction for claiming outbox rows: on SQLite the write lock, on PostgreSQL a
    /// plain transaction whose `SELECT … FOR UPDATE SKIP LOCKED` locks only its rows.
    pub(crate) async fn begin_claim(&self) -> Result<Transaction<'static, Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// A transaction for reads (a deferred BEGIN: it takes no write lock).
    pub async fn begin_read(&self) -> Result<Tx<'static>> {
        let tx = self.pool.begin().await?;
        Ok(Tx {
            tx,
            backend: self.backend,
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Takes the instance-wide lock named `name` (one poller per source, among all
    /// instances on this PostgreSQL database), or `None` while another session holds it.
    /// It is a session advisory lock on a connection of its own, outside the pool: a
    /// process that dies loses its connection, and PostgreSQL frees the lock at once.
    /// On SQLite (one process) the answer is always `Some`: the caller's own local lock
    /// is all there is.
    pub async fn try_singleton(&self, name: &str) -> Result<Option<SingletonLock>> {
        if self.backend == Backend::Sqlite {
            return Ok(Some(SingletonLock { conn: None }));
        }
        let mut conn = AnyConnection::connect(&self.url)
            .await
            .map_err(|source| StoreError::Open {
                url: redact(&self.url),
                source,
            })?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(singleton_key(name))
            .fetch_one(&mut conn)
            .await?;
        if got {
            Ok(Some(SingletonLock { conn: Some(conn) }))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }
}

/// The PostgreSQL notification channel on which a new alert's commit wakes the outbox
/// workers of every instance.
pub const OUTBOX_CHANNEL: &str = "canhbao_outbox";

impl Store {
    /// Calls `wake` whenever any instance commits a new alert, until the future is
    /// dropped. PostgreSQL only (LISTEN/NOTIFY); on SQLite it returns at once, since one
    /// process wakes its own workers. A broken connection is retried every second, and
    /// `wake` is called after each reconnect, since notifications sent meanwhile are lost.
    pub async fn listen_for_alerts(&self, wake: impl Fn()) {
        if self.backend != Backend::Postgres {
            return;
        }
        loop {
            let listener = async {
                let mut l = sqlx::postgres::PgListener::connect(&self.url).await?;
                l.listen(OUTBOX_CHANNEL).await?;
                Ok::<_, sqlx::Error>(l)
            };
            match listener.await {
                Ok(mut l) => {
                    wake();
                    loop {
                        match l.try_recv().await {
                            Ok(Some(_)) => wake(),
                            // The connection dropped; it reconnects on the next call.
                            Ok(None) => wake(),
                            Err(e) => {
                                tracing::warn!(error = %e, "listening for new alerts");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot listen for new alerts"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
}

/// Scratch databases for benchmarks (`canhbao bench` on PostgreSQL): a new, empty
/// database beside the one `admin_url` names, and its removal.
#[doc(hidden)]
pub mod scratch {
    use sqlx::{Connection, Executor, PgConnection};

    /// Creates database `name` on the server of `admin_url`; returns its URL.
    pub async fn create(admin_url: &str, name: &str) -> crate::Result<String> {
        check_name(name)?;
        let mut conn = PgConnection::connect(admin_url).await?;
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await?;
        let _ = conn.close().await;
        let (base, query) = match admin_url.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (admin_url, String::new()),
        };
        let after_scheme = base.find("://").map_or(0, |i| i + 3);
        let host_end = base[after_scheme..]
            .find('/')
            .map_or(base.len(), |i| after_scheme + i);
        Ok(format!("{}/{name}{query}", &base[..host_end]))
    }

    /// Drops database `name` on the server of `admin_url`, closing its sessions.
    pub async fn drop(admin_url: &str, name: &str) -> crate::Result<()> {
        check_name(name)?;
        let mut conn = PgConnection::connect(admin_url).await?;
        conn.execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .await?;
        let _ = conn.close().await;
        Ok(())
    }

    fn check_name(name: &str) -> crate::Result<()> {
        if !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            Ok(())
        } else {
            Err(crate::StoreError::Corrupt(format!(
                "scratch database name {name:?}"
            )))
        }
    }
}

#[cfg(feature = "bench")]
impl Store {
    /// The baseline of `canhbao-bench receipts`: `rows` (alert, receiver, commune, status,
    /// receiver ms) inserted plainly into `receipts`, `batch` rows per write transaction.
    /// Only with the `bench` feature, which the `bench` crate turns on and the service
    /// never does.
    pub async fn bench_insert_receipts_raw(
        &self,
        rows: &[(String, String, String, String, i64)],
        batch: usize,
        now: DateTime<Utc>,
    ) -> Result<()> {
        for chunk in rows.chunks(batch.max(1)) {
            let mut tx = self.begin().await?;
            // Multi-row statements of the same sizes as the inbound path's.
            for part in receipts::statement_chunks(chunk) {
                let sql = format!(
                    "INSERT INTO receipts (alert_id, receiver_id, commune, status, reason_code, receiver_ms, recorded_ms)
                     VALUES {}",
                    receipts::values_list(part.len(), 7, 1)
                );
                let mut q = self.backend.multi_row(sql);
                for (alert, receiver, commune, status, at) in part {
                    q = q
                        .bind(alert)
                        .bind(receiver)
                        .bind(commune)
                        .bind(status)
                        .bind("")
                        .bind(*at)
                        .bind(ms(now));
                }
                q.execute(&mut *tx.tx).await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }
}

/// A held [`Store::try_singleton`] lock; dropping it closes its connection, which frees it.
pub struct SingletonLock {
    conn: Option<AnyConnection>,
}

impl std::fmt::Debug for SingletonLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingletonLock")
            .field("shared", &self.conn.is_some())
            .finish()
    }
}

impl SingletonLock {
    /// Whether the lock is still held: its connection still answers. A lock whose
    /// connection broke (the database restarted) is gone, and another instance may
    /// have it: the holder must stop and take it again.
    pub async fn still_held(&mut self) -> bool {
        match &mut self.conn {
            None => true,
            Some(conn) => conn.ping().await.is_ok(),
        }
    }
}

/// The advisory lock key of a singleton's name: the first 8 bytes of its SHA-256.
fn singleton_key(name: &str) -> i64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("canhbao:{name}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
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
