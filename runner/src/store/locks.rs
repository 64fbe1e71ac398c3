//! Locks that hold across replicas: on PostgreSQL, session advisory locks on a connection
//! of their own, released by the server when the holder's connection ends (a replica that
//! dies frees what it held). On SQLite one process runs everything, and a lock is free.

use super::postgres::locks::SessionLock;
use super::{Backend, Store, StoreError};

/// A held lock; dropping it (or the process ending) releases it.
pub struct HeldLock {
    /// The lock across replicas; `None` where one process runs everything.
    session: Option<SessionLock>,
}

impl HeldLock {
    /// Whether the lock is still held: its connection still answers. A lock whose
    /// connection dropped was released by the server, and someone else may hold it now.
    pub async fn is_held(&mut self) -> bool {
        match &mut self.session {
            Some(session) => session.is_held().await,
            None => true,
        }
    }

    pub async fn release(self) {
        if let Some(session) = self.session {
            session.release().await;
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
            .map(|held| held.unwrap_or(HeldLock { session: None }))
    }

    /// Takes the lock if nobody holds it; `None` if someone does.
    pub async fn try_lock(&self, kind: LockKind, name: &str) -> Result<Option<HeldLock>, StoreError> {
        self.lock_with(kind, name, false).await
    }

    async fn lock_with(&self, kind: LockKind, name: &str, wait: bool) -> Result<Option<HeldLock>, StoreError> {
        match self.backend {
            Backend::Sqlite => Ok(Some(HeldLock { session: None })),
            Backend::Postgres => Ok(SessionLock::take(&self.url, key(kind, name), wait)
                .await?
                .map(|session| HeldLock { session: Some(session) })),
        }
    }
}
