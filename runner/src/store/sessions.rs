//! Dashboard sessions. The cookie holds a random token; the table holds only its hash.

use super::Store;

use super::StoreError;

pub async fn create(pool: &Store, token_hash: &str, now: i64, expires_at: i64) -> Result<(), StoreError> {
    // Logging in is rare; it is a fine moment to forget sessions that ran out.
    sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
        .bind(now)
        .execute(pool.db())
        .await?;
    sqlx::query("INSERT INTO sessions (token_hash, created_at, expires_at) VALUES ($1, $2, $3)")
        .bind(token_hash)
        .bind(now)
        .bind(expires_at)
        .execute(pool.db())
        .await?;
    Ok(())
}

pub async fn is_valid(pool: &Store, token_hash: &str, now: i64) -> Result<bool, StoreError> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM sessions WHERE token_hash = $1 AND expires_at > $2")
        .bind(token_hash)
        .bind(now)
        .fetch_optional(pool.db())
        .await?;
    Ok(found.is_some())
}

pub async fn delete(pool: &Store, token_hash: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
        .bind(token_hash)
        .execute(pool.db())
        .await?;
    Ok(())
}
