//! Session advisory locks on a connection of their own, released by the server when the
//! holder's connection ends: a replica that dies frees what it held.

use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use crate::store::StoreError;

pub(in crate::store) struct SessionLock(PgConnection);

impl SessionLock {
    /// Waits for the lock `key` (`wait`), or takes it only if nobody holds it.
    pub(in crate::store) async fn take(database_url: &str, key: i64, wait: bool) -> Result<Option<Self>, StoreError> {
        let mut conn = PgConnection::connect(database_url).await?;
        if wait {
            sqlx::query("SELECT count(*) FROM (SELECT pg_advisory_lock($1)) AS held")
                .bind(key)
                .execute(&mut conn)
                .await?;
            Ok(Some(Self(conn)))
        } else {
            let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(key)
                .fetch_one(&mut conn)
                .await?;
            Ok(taken.then_some(Self(conn)))
        }
    }

    /// Whether its connection still answers: a lock whose connection dropped was released
    /// by the server.
    pub(in crate::store) async fn is_held(&mut self) -> bool {
        self.0.ping().await.is_ok()
    }

    pub(in crate::store) async fn release(self) {
        let _ = self.0.close().await;
    }
}
