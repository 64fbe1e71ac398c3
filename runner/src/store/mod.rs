//! Every SQL statement of the runner lives under this module.
//!
//! One [`Store`] serves two backends: SQLite (the embedded default, one runner process)
//! and PostgreSQL (several runner replicas sharing one database). Statements are written
//! once, with `$N` parameters that both drivers bind; where the two dialects differ the
//! difference is named in [`Backend`], and written out nowhere else.

pub mod artifacts;
pub mod deliveries;
pub mod deployments;
pub mod jobs;
pub mod locks;
pub mod logs;
pub mod notify;
pub mod reports;
pub mod sessions;
pub mod stale_pushes;
pub mod steps;
mod values;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AnyPool, Transaction};

pub use values::{Flag, Values};

pub static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");
pub static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("../migrations/postgres");

/// The database-wide advisory lock that PostgreSQL write transactions which read before
/// they write take first: the same one-writer-at-a-time rule SQLite's `BEGIN IMMEDIATE`
/// gives, across every replica. Claims and heartbeats do not take it.
const WRITE_LOCK: i64 = 0x7275_6e6e_6572; // "runner"

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

/// Which database engine a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }

    /// A condition that `column` is one of the strings in the JSON array bound as `param`.
    pub fn in_json_list(self, column: &str, param: &str) -> String {
        match self {
            Self::Sqlite => format!("{column} IN (SELECT value FROM json_each({param}))"),
            Self::Postgres => format!("{column} IN (SELECT json_array_elements_text(CAST({param} AS json)))"),
        }
    }

    /// The JSON array of `[first, second]` string pairs bound as `param`, as a table with the
    /// columns `first` and `second` (to join on, so that an index on the pair is used).
    pub fn json_pairs(self, param: &str) -> String {
        match self {
            Self::Sqlite => format!(
                "(SELECT json_extract(value, '$[0]') AS first, json_extract(value, '$[1]') AS second \
                 FROM json_each({param}))"
            ),
            Self::Postgres => {
                format!("(SELECT e->>0 AS first, e->>1 AS second FROM json_array_elements(CAST({param} AS json)) AS e)")
            }
        }
    }

    /// Packs the rows of `rows` (a subquery with `columns`) into one JSON array of arrays.
    pub fn json_rows(self, columns: &str, rows: &str) -> String {
        match self {
            Self::Sqlite => {
                format!("SELECT coalesce(json_group_array(json_array({columns})), '[]') FROM ({rows}) AS packed")
            }
            Self::Postgres => format!(
                "SELECT coalesce(CAST(json_agg(json_build_array({columns})) AS text), '[]') FROM ({rows}) AS packed"
            ),
        }
    }
}

/// The runner's database: a pool of connections to one SQLite file or one PostgreSQL
/// database, and which of the two it is.
#[derive(Clone)]
pub struct Store {
    db: AnyPool,
    backend: Backend,
    /// For the connections of its own that a lock or a listener needs.
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
    /// The database's URL, credentials and all: for connections of the runner's own.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The connection pool, for running statements.
    pub fn db(&self) -> &AnyPool {
        &self.db
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a transaction that reads before it writes: it holds the database's write
    /// lock from its first statement, so what it read is still true when it writes.
    pub async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        match self.backend {
            Backend::Sqlite => Ok(self.db.begin_with("BEGIN IMMEDIATE").await?),
            Backend::Postgres => {
                let mut tx = self.db.begin().await?;
                take_write_lock(&mut tx).await?;
                Ok(tx)
            }
        }
    }

    pub async fn close(&self) {
        self.db.close().await;
    }
}

async fn take_write_lock(conn: &mut sqlx::AnyConnection) -> Result<(), StoreError> {
    // `pg_advisory_xact_lock` returns void, which the driver does not read: count it.
    sqlx::query("SELECT count(*) FROM (SELECT pg_advisory_xact_lock($1)) AS held")
        .bind(WRITE_LOCK)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Per-connection settings for SQLite: WAL so readers never block the writer, a busy
/// timeout instead of instant `SQLITE_BUSY`, and full synchronous commits so an
/// acknowledged delivery survives a power cut. Checkpoints run in the background (see
/// `checkpoint`), never inside a commit on the webhook's path.
const SQLITE_SETTINGS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000; \
     PRAGMA foreign_keys = ON; PRAGMA temp_store = memory; PRAGMA wal_autocheckpoint = 0;";

/// A single connection of its own (the ingest writer's), set up as the pool's are.
pub async fn connect(database_url: &str) -> Result<sqlx::AnyConnection, StoreError> {
    use sqlx::{ConnectOptions as _, Executor as _};
    let backend = backend_of(database_url)?;
    let mut conn = any_options(database_url)?
        .connect()
        .await
        .map_err(|source| StoreError::Open {
            url: crate::secrets::redact_url(database_url),
            source,
        })?;
    if backend == Backend::Sqlite {
        conn.execute(SQLITE_SETTINGS).await?;
    }
    Ok(conn)
}

fn backend_of(database_url: &str) -> Result<Backend, StoreError> {
    Backend::of_url(database_url).ok_or_else(|| StoreError::Url {
        url: crate::secrets::redact_url(database_url),
        source: sqlx::Error::Configuration("expected a sqlite: or postgres:// URL".into()),
    })
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
    let backend = backend_of(database_url)?;
    let options = any_options(database_url)?;
    let mut pool = AnyPoolOptions::new();
    match backend {
        Backend::Sqlite => {
            let in_memory = prepare_sqlite_file(database_url)?;
            pool = pool
                .max_connections(if in_memory { 1 } else { 8 })
                .min_connections(1)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        use sqlx::Executor as _;
                        conn.execute(SQLITE_SETTINGS).await.map(|_| ())
                    })
                });
            if in_memory {
                // Every new connection to `:memory:` is a new, empty database.
                pool = pool.idle_timeout(None).max_lifetime(None);
            }
        }
        Backend::Postgres => {
            pool = pool
                .max_connections(16)
                .min_connections(1)
                .acquire_timeout(Duration::from_secs(5));
        }
    }
    let db = pool.connect_with(options).await.map_err(|source| StoreError::Open {
        url: crate::secrets::redact_url(database_url),
        source,
    })?;
    match backend {
        Backend::Sqlite => SQLITE_MIGRATOR.run(&db).await?,
        Backend::Postgres => POSTGRES_MIGRATOR.run(&db).await?,
    }
    Ok(Store {
        db,
        backend,
        url: database_url.into(),
    })
}

/// Returns whether the URL names an in-memory database.
fn prepare_sqlite_file(database_url: &str) -> Result<bool, StoreError> {
    let options = SqliteConnectOptions::from_str(database_url).map_err(|source| StoreError::Url {
        url: database_url.to_owned(),
        source,
    })?;
    let filename = options.get_filename();
    if filename == Path::new(":memory:") || filename.to_string_lossy().starts_with("file:sqlx-in-memory") {
        return Ok(true);
    }
    if let Some(dir) = filename.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::secrets::create_private_dir(dir).map_err(|source| StoreError::Directory {
            path: dir.display().to_string(),
            source,
        })?;
    }
    if !filename.exists() {
        // The database holds logs and plans: only the runner's user reads it, from the
        // start (SQLite gives its -wal and -shm files the database file's mode).
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(filename)
            .map_err(|source| StoreError::Directory {
                path: filename.display().to_string(),
                source,
            })?;
    }
    Ok(false)
}

/// Copies committed WAL frames into the database file without blocking writers; run
/// periodically so the WAL stays small and no request ever pays for a checkpoint.
/// PostgreSQL checkpoints by itself.
pub async fn checkpoint(store: &Store) -> Result<(), StoreError> {
    if store.backend == Backend::Sqlite {
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&store.db).await?;
    }
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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
