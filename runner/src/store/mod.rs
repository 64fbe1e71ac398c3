//! Every SQL statement of the runner lives under this module.
//!
//! One [`Store`] serves two databases: SQLite (the embedded default, one runner process)
//! and PostgreSQL (several runner replicas sharing one database). Statements are written
//! once, with `$N` parameters that both drivers bind; where the two dialects differ, the
//! statements are written out in `sqlite` and `postgres`, and chosen by [`Backend`] here
//! (the functions of this module and its children match on it). Nothing outside this
//! module knows which database it talks to: it asks the store in the runner's own words
//! (record a batch, claim a job, take a lock, does the database wake the workers).
//!
//! A closed enum rather than a trait: there are two dialects, known at compile time, and a
//! `Store` is cloned into every task; a trait object would box every async statement, and
//! a type parameter would spread over every module that holds a store.

pub mod artifacts;
pub mod deliveries;
pub mod deployments;
pub mod jobs;
pub mod locks;
pub mod logs;
pub mod notify;
mod postgres;
pub mod previews;
pub mod reports;
pub mod sessions;
mod sqlite;
pub mod stale_pushes;
pub mod steps;
mod values;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::AnyConnectOptions;
use sqlx::{Any, AnyPool, Transaction};

pub use values::{Flag, Values};

/// Each database's migrations (migrations/sqlite, migrations/postgres), applied by [`open`].
pub use postgres::MIGRATOR as POSTGRES_MIGRATOR;
pub use sqlite::MIGRATOR as SQLITE_MIGRATOR;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid database URL {url:?}: {source}")]
    Url { url: String, source: sqlx::Error },
    #[error("cannot create the database directory {path}: {source}")]
    Directory { path: String, source: std::io::Error },
    #[error("cannot open the database {url:?}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("cannot apply migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Query(#[from] sqlx::Error),
    #[error("the database holds a value this runner does not understand: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// The database could not be reached (down, restarting, refusing connections): the
    /// caller may try again later; nothing was written.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Open { .. } => true,
            Self::Query(error) => {
                matches!(
                    error,
                    sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_)
                ) || matches!(error, sqlx::Error::Database(db) if db.code().is_some_and(|code| {
                    // admin_shutdown, crash_shutdown, cannot_connect_now
                    matches!(code.as_ref(), "57P01" | "57P02" | "57P03")
                }))
            }
            _ => false,
        }
    }
}

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn of_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::Url {
                url: crate::secrets::redact_url(url),
                source: sqlx::Error::Configuration("expected a sqlite: or postgres:// URL".into()),
            })
        }
    }

    /// A condition that `column` is one of the strings in the JSON array bound as `param`.
    fn in_json_list(self, column: &str, param: &str) -> String {
        match self {
            Self::Sqlite => sqlite::in_json_list(column, param),
            Self::Postgres => postgres::in_json_list(column, param),
        }
    }

    /// The JSON array of `[first, second]` string pairs bound as `param`, as a table with the
    /// columns `first` and `second` (to join on, so that an index on the pair is used).
    fn json_pairs(self, param: &str) -> String {
        match self {
            Self::Sqlite => sqlite::json_pairs(param),
            Self::Postgres => postgres::json_pairs(param),
        }
    }

    /// Packs the rows of `rows` (a subquery with `columns`) into one JSON array of arrays.
    fn json_rows(self, columns: &str, rows: &str) -> String {
        match self {
            Self::Sqlite => sqlite::json_rows(columns, rows),
            Self::Postgres => postgres::json_rows(columns, rows),
        }
    }
}

/// The runner's database: a pool of connections to one SQLite file or one PostgreSQL
/// database, and which of the two it is.
#[derive(Clone)]
pub struct Store {
    db: AnyPool,
    backend: Backend,
    /// For the connections of its own that a lock, a listener or the ingest needs.
    url: std::sync::Arc<str>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .field("url", &crate::secrets::redact_url(&self.url))
            .finish_non_exhaustive()
    }
}

impl Store {
    /// The connection pool, for running statements.
    pub fn db(&self) -> &AnyPool {
        &self.db
    }

    fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a transaction that reads before it writes: it holds the database's write
    /// lock from its first statement, so what it read is still true when it writes.
    pub async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        match self.backend {
            Backend::Sqlite => sqlite::begin_write(&self.db).await,
            Backend::Postgres => postgres::begin_write(&self.db).await,
        }
    }

    /// A connection of its own (the ingest writer's), set up as the pool's are.
    async fn connect(&self) -> Result<sqlx::AnyConnection, StoreError> {
        use sqlx::ConnectOptions as _;
        let mut conn = any_options(&self.url)?
            .connect()
            .await
            .map_err(|source| StoreError::Open {
                url: crate::secrets::redact_url(&self.url),
                source,
            })?;
        match self.backend {
            Backend::Sqlite => sqlite::set_up(&mut conn).await?,
            Backend::Postgres => {}
        }
        Ok(conn)
    }

    pub async fn close(&self) {
        self.db.close().await;
    }
}

fn any_options(database_url: &str) -> Result<AnyConnectOptions, StoreError> {
    sqlx::any::install_default_drivers();
    AnyConnectOptions::from_str(database_url).map_err(|source| StoreError::Url {
        url: crate::secrets::redact_url(database_url),
        source,
    })
}

/// Opens and migrates the database; for SQLite, creates the file and its directory
/// first, readable by the runner's user only.
pub async fn open(database_url: &str) -> Result<Store, StoreError> {
    let backend = Backend::of_url(database_url)?;
    let options = any_options(database_url)?;
    let pool = match backend {
        Backend::Sqlite => sqlite::pool_options(database_url)?,
        Backend::Postgres => postgres::pool_options(),
    };
    let db = pool.connect_with(options).await.map_err(|source| StoreError::Open {
        url: crate::secrets::redact_url(database_url),
        source,
    })?;
    match backend {
        Backend::Sqlite => sqlite::MIGRATOR.run(&db).await?,
        Backend::Postgres => postgres::MIGRATOR.run(&db).await?,
    }
    Ok(Store {
        db,
        backend,
        url: database_url.into(),
    })
}

/// Copies committed WAL frames into the database file without blocking writers; run
/// periodically so the WAL stays small and no request ever pays for a checkpoint.
/// PostgreSQL checkpoints by itself.
pub async fn checkpoint(store: &Store) -> Result<(), StoreError> {
    match store.backend {
        Backend::Sqlite => sqlite::checkpoint(&store.db).await,
        Backend::Postgres => Ok(()),
    }
}

/// Milliseconds since the Unix epoch on the system clock: for what runs outside the
/// application (the CLI, tests); the application asks its [`crate::clock::Clock`].
pub fn now_ms() -> i64 {
    use crate::clock::Clock;
    crate::clock::SystemClock.now_ms()
}

pub fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A page of rows, newest first, and the cursor for the next one.
#[derive(Debug, serde::Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `before` to get the next (older) page; absent on the last page.
    pub next_before: Option<i64>,
}

impl<T> Page<T> {
    pub fn from_rows(mut rows: Vec<T>, limit: usize, id: impl Fn(&T) -> i64) -> Self {
        let next_before = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(&id)
        } else {
            None
        };
        Self {
            items: rows,
            next_before,
        }
    }
}
