//! Storage: the database behind the control plane, through sqlx, on SQLite (default) or
//! PostgreSQL.
//!
//! Each backend has its own native pool and its own migration tree; queries are written once
//! with `$N` placeholders and run on either through [`on_conn!`]. Repositories are free
//! functions per table taking a [`Conn`], which is either a pooled connection or a transaction,
//! so several writes can share one transaction.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool, Transaction};

pub mod egress;
pub mod events;
pub mod hosts;
pub mod logins;
pub mod recordings;
pub mod ssh_keys;
pub mod tasks;
pub mod tokens;
pub mod users;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write; the string names the constraint (PostgreSQL) or
    /// holds the database's message naming the columns (SQLite).
    #[error("already exists")]
    Conflict(String),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "DATABASE_URL `{0}` is not supported: expected sqlite://PATH or postgres://USER@HOST/DB"
    )]
    UnsupportedUrl(String),
    /// A sealed secret could not be sealed or opened (its key is missing, or it was altered).
    #[error(transparent)]
    Sealing(#[from] crate::keys::KeyError),
    /// A stored value does not read back as what was written.
    #[error("a stored value cannot be read: {0}")]
    Decode(String),
    #[error("cannot prepare data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e
            && db.is_unique_violation()
        {
            // PostgreSQL names the constraint; SQLite names the columns in its message.
            return StoreError::Conflict(
                db.constraint()
                    .map(str::to_string)
                    .unwrap_or_else(|| db.message().to_string()),
            );
        }
        StoreError::Database(e)
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The connection pool, cheap to clone, with the keys that seal stored secrets.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    keys: std::sync::Arc<crate::keys::Keyring>,
}

/// A connection to run queries on: from the pool, or inside a transaction.
pub enum Conn<'a> {
    Sqlite(&'a mut SqliteConnection),
    Postgres(&'a mut PgConnection),
}

impl Conn<'_> {
    /// The same connection, borrowed again, for one more query before a last one.
    pub fn reborrow(&mut self) -> Conn<'_> {
        match self {
            Conn::Sqlite(c) => Conn::Sqlite(c),
            Conn::Postgres(c) => Conn::Postgres(c),
        }
    }
}

/// Runs `$body` with `$c` bound to the backend's native connection; the body is compiled
/// once per backend.
#[macro_export]
macro_rules! on_conn {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::store::Conn::Sqlite($c) => $body,
            $crate::store::Conn::Postgres($c) => $body,
        }
    };
}

/// A pooled connection.
pub enum Handle {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

impl Handle {
    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            Handle::Sqlite(c) => Conn::Sqlite(c),
            Handle::Postgres(c) => Conn::Postgres(c),
        }
    }
}

/// An open transaction; dropped without [`Tx::commit`], it rolls back.
pub enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl Tx {
    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            Tx::Sqlite(t) => Conn::Sqlite(t),
            Tx::Postgres(t) => Conn::Postgres(t),
        }
    }

    pub async fn commit(self) -> Result<()> {
        match self {
            Tx::Sqlite(t) => t.commit().await?,
            Tx::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }
}

impl Store {
    /// Connects to `url` and applies the backend's migrations. A SQLite file is created if
    /// missing, with WAL journaling, foreign keys enforced, and deleted content overwritten
    /// (`secure_delete`, so a value replaced by its sealed form leaves no copy in free pages).
    /// `keys` seal and open the secrets stored.
    pub async fn connect(url: &str, keys: std::sync::Arc<crate::keys::Keyring>) -> Result<Self> {
        let pool = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .foreign_keys(true)
                .pragma("secure_delete", "on")
                .busy_timeout(Duration::from_secs(10));
            if let Some(parent) = opts.get_filename().parent()
                && !parent.as_os_str().is_empty()
            {
                create_dir(parent)?;
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            SQLITE_MIGRATIONS.run(&pool).await?;
            Pool::Sqlite(pool)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let opts = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            POSTGRES_MIGRATIONS.run(&pool).await?;
            Pool::Postgres(pool)
        } else {
            return Err(StoreError::UnsupportedUrl(redact_url(url)));
        };
        Ok(Store { pool, keys })
    }

    /// Moves SQLite's write-ahead log into the database file and empties it (nothing on
    /// PostgreSQL).
    pub async fn checkpoint(&self) -> Result<()> {
        if let Pool::Sqlite(p) = &self.pool {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(p)
                .await?;
        }
        Ok(())
    }

    /// The keys that seal and open stored secrets.
    pub fn keys(&self) -> &crate::keys::Keyring {
        &self.keys
    }

    /// Looks at a database without changing it (no file made, no migration run): `None` for a
    /// SQLite file that does not exist yet, else how many migrations it still lacks.
    pub async fn probe(url: &str) -> Result<Option<usize>> {
        use sqlx::Connection;
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?.read_only(true);
            if !opts.get_filename().exists() {
                return Ok(None);
            }
            let mut c = SqliteConnection::connect_with(&opts).await?;
            let applied = applied_migrations(Conn::Sqlite(&mut c)).await;
            Ok(Some(
                SQLITE_MIGRATIONS.iter().count().saturating_sub(applied),
            ))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let mut c = PgConnection::connect_with(&PgConnectOptions::from_str(url)?).await?;
            let applied = applied_migrations(Conn::Postgres(&mut c)).await;
            Ok(Some(
                POSTGRES_MIGRATIONS.iter().count().saturating_sub(applied),
            ))
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(url)))
        }
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// A connection from the pool.
    pub async fn acquire(&self) -> Result<Handle> {
        Ok(match &self.pool {
            Pool::Sqlite(p) => Handle::Sqlite(p.acquire().await?),
            Pool::Postgres(p) => Handle::Postgres(p.acquire().await?),
        })
    }

    /// Begins a transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`), so
    /// two writers queue on the busy timeout instead of failing on a lock upgrade.
    pub async fn begin(&self) -> Result<Tx> {
        Ok(match &self.pool {
            Pool::Sqlite(p) => Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
            Pool::Postgres(p) => Tx::Postgres(p.begin().await?),
        })
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        let mut h = self.acquire().await?;
        on_conn!(h.conn(), |c| sqlx::query("SELECT 1")
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}

fn create_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|source| StoreError::DataDir {
        path: path.display().to_string(),
        source,
    })
}

/// The URL with any password replaced, for error messages and logs.
pub fn redact_url(url: &str) -> String {
    match url_password(url) {
        Some(pw) => format!("{}***{}", &url[..pw.start], &url[pw.end..]),
        None => url.to_string(),
    }
}

/// Where the password is in a `scheme://user:password@host/...` URL, as written (still
/// percent-encoded), if it has one.
pub fn url_password(url: &str) -> Option<std::ops::Range<usize>> {
    let scheme_end = url.find("://")? + 3;
    let at = url.rfind('@').filter(|&at| at >= scheme_end)?;
    let colon = url[scheme_end..at].find(':')? + scheme_end;
    Some(colon + 1..at)
}

/// How many migrations a database has applied (0 when it has none, or no table for them).
async fn applied_migrations(c: Conn<'_>) -> usize {
    on_conn!(c, |c| sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM _sqlx_migrations WHERE success"
    )
    .fetch_one(&mut *c)
    .await)
    .map_or(0, |n| n.max(0) as usize)
}

/// A page of a list: 1-based page number and page size.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub page: u32,
    pub per_page: u32,
}

impl PageRequest {
    pub fn offset(&self) -> i64 {
        i64::from(self.page.saturating_sub(1)) * i64::from(self.per_page)
    }
    pub fn limit(&self) -> i64 {
        i64::from(self.per_page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://sluice:hunter22@db:5432/sluice"),
            "postgres://sluice:***@db:5432/sluice"
        );
        assert_eq!(
            redact_url("sqlite://data/sluice.db"),
            "sqlite://data/sluice.db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
