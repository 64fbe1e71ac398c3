//! SQLite, the embedded default: one runner process owns the file. What is written only
//! for it: how its connections are set up, its one write lock, its JSON functions, and the
//! ingest and claim statements shaped for one writer (see `ingest` and `claim`).

pub(super) mod claim;
pub(super) mod ingest;

use std::path::Path;
use std::str::FromStr;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AnyPool, Executor as _, Transaction};

use super::StoreError;

pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");

/// Per-connection settings: WAL so readers never block the writer, a busy timeout instead
/// of instant `SQLITE_BUSY`, and full synchronous commits so an acknowledged delivery
/// survives a power cut. Checkpoints run in the background (see [`checkpoint`]), never
/// inside a commit on the webhook's path.
const SETTINGS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000; \
     PRAGMA foreign_keys = ON; PRAGMA temp_store = memory; PRAGMA wal_autocheckpoint = 0;";

/// Sets up a connection of the runner's own as the pool's are.
pub(super) async fn set_up(conn: &mut sqlx::AnyConnection) -> Result<(), StoreError> {
    conn.execute(SETTINGS).await?;
    Ok(())
}

/// The pool for the file (created first, with its directory) or in-memory database.
pub(super) fn pool_options(database_url: &str) -> Result<AnyPoolOptions, StoreError> {
    let in_memory = prepare_file(database_url)?;
    let mut pool = AnyPoolOptions::new()
        .max_connections(if in_memory { 1 } else { 8 })
        .min_connections(1)
        .after_connect(|conn, _| Box::pin(async move { conn.execute(SETTINGS).await.map(|_| ()) }));
    if in_memory {
        // Every new connection to `:memory:` is a new, empty database.
        pool = pool.idle_timeout(None).max_lifetime(None);
    }
    Ok(pool)
}

/// Returns whether the URL names an in-memory database.
fn prepare_file(database_url: &str) -> Result<bool, StoreError> {
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

/// `BEGIN IMMEDIATE`: the database's one write lock, held from the first statement.
pub(super) async fn begin_write(db: &AnyPool) -> Result<Transaction<'static, Any>, StoreError> {
    Ok(db.begin_with("BEGIN IMMEDIATE").await?)
}

/// Copies committed WAL frames into the database file without blocking writers.
pub(super) async fn checkpoint(db: &AnyPool) -> Result<(), StoreError> {
    sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(db).await?;
    Ok(())
}

pub(super) fn in_json_list(column: &str, param: &str) -> String {
    format!("{column} IN (SELECT value FROM json_each({param}))")
}

pub(super) fn json_pairs(param: &str) -> String {
    format!(
        "(SELECT json_extract(value, '$[0]') AS first, json_extract(value, '$[1]') AS second \
         FROM json_each({param}))"
    )
}

pub(super) fn json_rows(columns: &str, rows: &str) -> String {
    format!("SELECT coalesce(json_group_array(json_array({columns})), '[]') FROM ({rows}) AS packed")
}
