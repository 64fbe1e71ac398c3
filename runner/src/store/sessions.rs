//! Dashboard sessions. The cookie holds a random token; the table holds only its hash.

use sqlx::SqlitePool;

use super::StoreError;

pub async fn create(pool: &SqlitePool, token_hash: &str, now: i64, expires_at: i64) -> Result<(), StoreError> {
    // Logging in is rare; it is a fine moment to forget sessions that ran out.
    sqlx::query("DELETE FROM sessions WHERE expires_at <= ?")
        .bind(now)
        .execute(pool)
        .await?;
    sqlx::query("INSERT INTO sessions (token_hash, created_at, expires_at) VALUES (?, ?, ?)")
        .bind(token_hash)
        .bind(now)
        .bind(expires_at)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn is_valid(pool: &SqlitePool, token_hash: &str, now: i64) -> Result<bool, StoreError> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM sessions WHERE token_hash = ? AND expires_at > ?")
        .bind(token_hash)
        .bind(now)
        .fetch_optional(pool)
        .await?;
    Ok(found.is_some())
}

pub async fn delete(pool: &SqlitePool, token_hash: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM sessions WHERE token_hash = ?")
        .bind(token_hash)
        .execute(pool)
        .await?;
    Ok(())
}
