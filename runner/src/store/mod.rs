//! Every SQL statement of the runner lives under this module.

pub mod artifacts;
pub mod deliveries;
pub mod deployments;
pub mod jobs;
pub mod logs;
pub mod reports;
pub mod sessions;
pub mod steps;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

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

/// Connection settings shared by the pool and the ingest writer: WAL so readers never
/// block the writer, a busy timeout instead of instant `SQLITE_BUSY`, and full
/// synchronous commits so an acknowledged delivery survives a power cut.
pub fn connect_options(database_url: &str) -> Result<SqliteConnectOptions, StoreError> {
    let options = SqliteConnectOptions::from_str(database_url).map_err(|source| StoreError::Url {
        url: database_url.to_owned(),
        source,
    })?;
    Ok(options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        .pragma("temp_store", "memory")
        // Checkpoints run in the background (see `checkpoint`), never inside a commit
        // on the webhook's path.
        .pragma("wal_autocheckpoint", "0"))
}

/// Opens (creating the file and its directory if needed) and migrates the database.
pub async fn open(database_url: &str) -> Result<SqlitePool, StoreError> {
    let options = connect_options(database_url)?;
    let filename = options.get_filename();
    if filename != Path::new(":memory:")
        && let Some(dir) = filename.parent().filter(|d| !d.as_os_str().is_empty())
    {
        crate::secrets::create_private_dir(dir).map_err(|source| StoreError::Directory {
            path: dir.display().to_string(),
            source,
        })?;
    }
    if filename != Path::new(":memory:") && !filename.exists() {
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
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .min_connections(1)
        .connect_with(options)
        .await
        .map_err(|source| StoreError::Open {
            url: database_url.to_owned(),
            source,
        })?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// Copies committed WAL frames into the database file without blocking writers; run
/// periodically so the WAL stays small and no request ever pays for a checkpoint.
pub async fn checkpoint(pool: &SqlitePool) -> Result<(), StoreError> {
    sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(pool).await?;
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
