//! One database for one test, on each engine the store supports: a SQLite file in a
//! directory of its own always, and a PostgreSQL database of its own when
//! `CANHBAO_TEST_POSTGRES_URL` is set. [`on_both_backends!`](crate::on_both_backends)
//! runs a test on both.

use crate::postgres::PgDatabase;

/// A test's database.
#[derive(Debug)]
pub enum TestDb {
    /// The directory lives as long as the test: its file is the database.
    Sqlite(tempfile::TempDir, String),
    Postgres(PgDatabase),
}

impl TestDb {
    /// A SQLite file in a fresh directory.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        Self::Sqlite(dir, url)
    }

    pub fn url(&self) -> &str {
        match self {
            Self::Sqlite(_, url) => url,
            Self::Postgres(pg) => &pg.url,
        }
    }

    /// A second, fresh database on the same engine.
    pub async fn another(&self) -> Self {
        match self {
            Self::Sqlite(..) => Self::sqlite(),
            Self::Postgres(_) => Self::Postgres(
                PgDatabase::from_env()
                    .await
                    .expect("a PostgreSQL test runs with its variable set"),
            ),
        }
    }
}

/// Runs each named test, an `async fn NAME(db: TestDb)` of the calling module, on SQLite
/// always (`sqlite::NAME`), and on PostgreSQL (`postgres::NAME`) when
/// `CANHBAO_TEST_POSTGRES_URL` is set (CI sets it), each on a fresh database.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::db::TestDb::sqlite()).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    match $crate::postgres::PgDatabase::from_env().await {
                        Some(pg) => super::$name($crate::db::TestDb::Postgres(pg)).await,
                        // Said by `from_env`; a failure instead under CI.
                        None => {}
                    }
                }
            )*
        }
    };
}
