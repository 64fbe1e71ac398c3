//! Readable artifacts of a job, such as the text of its terraform plan.

use super::Store;
use serde::Serialize;

use super::StoreError;

/// The readable text of a job's terraform plan, secrets masked: what an admin reads before
/// approving it.
pub const PLAN: &str = "plan.txt";

/// The SHA-256 of an artifact's content as stored, in hex: an approval names the plan it
/// approves by the digest of the text its approver was shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ContentDigest(String);

impl ContentDigest {
    pub fn of(content: &str) -> Self {
        use sha2::Digest as _;
        Self(hex::encode(sha2::Sha256::digest(content.as_bytes())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `given` (as a client sent it, any case) names this digest.
    pub fn matches(&self, given: &str) -> bool {
        self.0.eq_ignore_ascii_case(given.trim())
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Artifact {
    pub name: String,
    pub content_type: String,
    pub content: String,
    pub created_at: i64,
}

pub async fn put(
    pool: &Store,
    job_id: i64,
    name: &str,
    content_type: &str,
    content: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO job_artifacts (job_id, name, content_type, content, created_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (job_id, name) DO UPDATE SET content_type = excluded.content_type,
             content = excluded.content, created_at = excluded.created_at",
    )
    .bind(job_id)
    .bind(name)
    .bind(content_type)
    .bind(content)
    .bind(now)
    .execute(pool.db())
    .await?;
    Ok(())
}

impl Artifact {
    pub fn digest(&self) -> ContentDigest {
        ContentDigest::of(&self.content)
    }
}

pub async fn get(pool: &Store, job_id: i64, name: &str) -> Result<Option<Artifact>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT name, content_type, content, created_at FROM job_artifacts WHERE job_id = $1 AND name = $2",
    )
    .bind(job_id)
    .bind(name)
    .fetch_optional(pool.db())
    .await?)
}
