//! A fresh PostgreSQL database per test, on the server `CANHBAO_TEST_POSTGRES_URL` names,
//! dropped when the test ends (also when it fails), or, for one kept for a whole run, by
//! the next run.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use sqlx::{Connection, Executor, PgConnection};

/// The variable that names the PostgreSQL server tests may use.
pub const ENV: &str = "CANHBAO_TEST_POSTGRES_URL";

/// A database of its own for one test.
#[derive(Debug)]
pub struct PgDatabase {
    admin_url: String,
    name: String,
    /// The URL of the new, empty database.
    pub url: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl PgDatabase {
    /// A new database on the server `CANHBAO_TEST_POSTGRES_URL` names, or `None` when the
    /// variable is not set (the caller then says it skipped).
    pub async fn from_env() -> Option<Self> {
        let base = crate::service(ENV)?;
        Some(Self::create(&base).await)
    }

    /// A new database on the server of `admin_url` (a URL of any database there).
    pub async fn create(admin_url: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "canhbao_t_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("{ENV}: cannot connect: {e}"));
        if !SWEPT.swap(true, Ordering::Relaxed) {
            drop_orphans(&mut conn).await;
        }
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        let _ = conn.close().await;
        let url = with_database(admin_url, &name);
        Self {
            admin_url: admin_url.to_owned(),
            name,
            url,
        }
    }
}

impl PgDatabase {
    /// The server's `host:port`, as the URL names it (port 5432 if it names none).
    pub fn server(&self) -> String {
        let (_, host_port, _) = split_authority(&self.url);
        let host = host_port.rsplit_once('@').map_or(host_port, |(_, h)| h);
        if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            host.to_owned()
        } else {
            format!("{host}:5432")
        }
    }

    /// This database's URL with its server replaced by `addr` (a proxy in front of it).
    pub fn url_via(&self, addr: std::net::SocketAddr) -> String {
        let (scheme, authority, rest) = split_authority(&self.url);
        let user = authority.rsplit_once('@').map_or("", |(u, _)| u);
        let at = if user.is_empty() { "" } else { "@" };
        format!("{scheme}{user}{at}{addr}{rest}")
    }
}

/// `url` as (scheme with `://`, authority, path and query).
fn split_authority(url: &str) -> (&str, &str, &str) {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find(['/', '?']).map_or(url.len(), |i| start + i);
    (&url[..start], &url[start..end], &url[end..])
}

static SWEPT: AtomicBool = AtomicBool::new(false);

/// Drops the test databases of processes that no longer run (a test binary killed, or
/// databases kept for a whole run): their names carry their process id.
async fn drop_orphans(conn: &mut PgConnection) {
    let Ok(names) = sqlx::query_scalar::<_, String>(
        "SELECT datname FROM pg_database WHERE datname LIKE 'canhbao\\_t\\_%'",
    )
    .fetch_all(&mut *conn)
    .await
    else {
        return;
    };
    for name in names {
        let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = conn
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .await;
        }
    }
}

/// `url` with its database (the path) replaced by `name`, keeping any query.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    format!("{}/{name}{query}", &base[..host_end])
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop may run inside a runtime: do the blocking work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&admin)
                    .await
                    .map_err(std::io::Error::other)?;
                conn.execute(sqlx::AssertSqlSafe(sql))
                    .await
                    .map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(())
            })
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_database_name_replaces_the_path_and_keeps_the_query() {
        assert_eq!(
            super::with_database("postgres://u@127.0.0.1:5432/test?sslmode=disable", "x"),
            "postgres://u@127.0.0.1:5432/x?sslmode=disable"
        );
        assert_eq!(super::with_database("postgres://h", "x"), "postgres://h/x");
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn the_server_is_found_and_replaced_keeping_the_user_database_and_query() {
        let db = |url: &str| super::PgDatabase {
            admin_url: String::new(),
            name: String::new(),
            url: url.to_owned(),
        };
        let proxy: std::net::SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let a = db("postgres://u:p@127.0.0.1:5433/x?sslmode=disable");
        assert_eq!(a.server(), "127.0.0.1:5433");
        assert_eq!(
            a.url_via(proxy),
            "postgres://u:p@127.0.0.1:4000/x?sslmode=disable"
        );
        let b = db("postgres://localhost/x");
        assert_eq!(b.server(), "localhost:5432");
        assert_eq!(b.url_via(proxy), "postgres://127.0.0.1:4000/x");
        // A test database that is never created is never dropped.
        for d in [a, b] {
            std::mem::forget(d);
        }
    }
}
