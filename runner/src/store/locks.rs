//! Locks that hold across replicas: on PostgreSQL, session advisory locks on a connection
//! of their own, released by the server when the holder's connection ends (a replica that
//! dies frees what it held). On SQLite one process runs everything, and a lock is free.

use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use super::{Backend, Store, StoreError};

/// A held lock; dropping it (or the process ending) releases it.
pub struct HeldLock {
    /// The lock lives as long as this connection; `None` on SQLite.
    conn: Option<PgConnection>,
}

impl HeldLock {
    /// Whether the lock is still held: its connection still answers. A lock whose
    /// connection dropped was released by the server, and someone else may hold it now.
    pub async fn is_held(&mut self) -> bool {
        match &mut self.conn {
            Some(conn) => conn.ping().await.is_ok(),
            None => true,
        }
    }

    pub async fn release(self) {
        if let Some(conn) = self.conn {
            let _ = conn.close().await;
        }
    }
}

/// Namespaces, so that keys of different kinds never collide.
#[derive(Debug, Clone, Copy)]
pub enum LockKind {
    /// One terraform operation per (project, workspace).
    Terraform = 1,
    /// One reconciler pass at a time.
    Reconciler = 2,
    /// One replica reports to the forge.
    Reporter = 3,
}

fn key(kind: LockKind, name: &str) -> i64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{}:{name}", kind as u8).as_bytes());
    i64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]))
}

impl Store {
    /// Waits for the lock `name` of `kind`.
    pub async fn lock(&self, kind: LockKind, name: &str) -> Result<HeldLock, StoreError> {
        self.lock_with(kind, name, true)
            .await
            .map(|held| held.unwrap_or(HeldLock { conn: None }))
    }

    /// Takes the lock if nobody holds it; `None` if someone does.
    pub async fn try_lock(&self, kind: LockKind, name: &str) -> Result<Option<HeldLock>, StoreError> {
        self.lock_with(kind, name, false).await
    }

    async fn lock_with(&self, kind: LockKind, name: &str, wait: bool) -> Result<Option<HeldLock>, StoreError> {
        let Some(url) = self.postgres_url() else {
            return Ok(Some(HeldLock { conn: None }));
        };
        let mut conn = PgConnection::connect(url).await?;
        let key = key(kind, name);
        if wait {
            sqlx::query("SELECT count(*) FROM (SELECT pg_advisory_lock($1)) AS held")
                .bind(key)
                .execute(&mut conn)
                .await?;
            Ok(Some(HeldLock { conn: Some(conn) }))
        } else {
            let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(key)
                .fetch_one(&mut conn)
                .await?;
            Ok(taken.then_some(HeldLock { conn: Some(conn) }))
        }
    }

    fn postgres_url(&self) -> Option<&str> {
        match self.backend {
            Backend::Postgres => Some(&self.url),
            Backend::Sqlite => None,
        }
    }
}
