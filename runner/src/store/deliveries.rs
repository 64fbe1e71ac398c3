//! Webhook deliveries: recorded once per `X-GitHub-Delivery` and once per body, with the
//! job they queued.

use serde::Serialize;
use sqlx::AnyConnection;

use std::borrow::Cow;
use std::collections::HashMap;

use super::jobs::{self, NewJob};
use super::{Backend, Flag, Page, Store, StoreError, Values, postgres, sqlite, stale_pushes};

/// What the ingest decided to do with a verified, parsed delivery.
#[derive(Debug, Clone)]
pub enum Action {
    /// One job per environment the delivery feeds (a pull request: one verify job).
    Queue(Vec<NewJob>),
    Ignore {
        reason: String,
    },
    /// A pull request closed: its queued verify jobs are cancelled and its preview (if
    /// any) is removed.
    CancelPullRequest {
        project: String,
        number: i64,
        merged: bool,
    },
}

#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub delivery_id: String,
    pub event: String,
    pub action: Option<String>,
    pub project: Option<String>,
    pub repository: Option<String>,
    pub git_ref: Option<String>,
    pub sha: Option<String>,
    pub hook_id: Option<i64>,
    pub content_type: String,
    pub body: StoredBody,
    /// What a copy of the same body under another delivery id is found by.
    pub body_digest: BodyDigest,
    pub received_at: i64,
}

impl NewDelivery {
    /// A push delivery of `project` whose body is its own id (unit tests).
    #[cfg(test)]
    pub(crate) fn push_for_test(id: &str, project: &str) -> Self {
        Self {
            delivery_id: id.to_owned(),
            event: "push".to_owned(),
            action: None,
            project: Some(project.to_owned()),
            repository: None,
            git_ref: None,
            sha: None,
            hook_id: None,
            content_type: "application/json".to_owned(),
            body: StoredBody::compress(id.as_bytes()),
            body_digest: BodyDigest::of(id.as_bytes()),
            received_at: 0,
        }
    }

    /// A body is the same delivery again only within one project.
    pub(in crate::store) fn body_key(&self) -> (Option<&str>, &str) {
        (self.project.as_deref(), self.body_digest.as_str())
    }
}

/// The SHA-256 of a delivery's raw body, as it was signed, in hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyDigest(String);

impl BodyDigest {
    pub fn of(raw: &[u8]) -> Self {
        use sha2::Digest as _;
        Self(hex::encode(sha2::Sha256::digest(raw)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A raw delivery body as kept on disk. Bodies are compressed in the request handler,
/// off the ingest writer's path; one that would not shrink is kept as it came.
#[derive(Debug, Clone)]
pub struct StoredBody {
    encoding: &'static str,
    bytes: Vec<u8>,
    raw_len: usize,
}

/// Fast level: JSON payloads already shrink about fivefold, and the CPU goes to requests.
const BODY_ZSTD_LEVEL: i32 = 1;

impl StoredBody {
    pub fn compress(raw: &[u8]) -> Self {
        thread_local! {
            // Making a zstd context allocates and clears its tables, which costs more than
            // compressing a whole push payload; each runtime thread keeps one.
            static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
                const { std::cell::RefCell::new(None) };
        }
        let compressed = COMPRESSOR.with_borrow_mut(|slot| {
            let compressor = match slot {
                Some(compressor) => compressor,
                None => slot.insert(zstd::bulk::Compressor::new(BODY_ZSTD_LEVEL)?),
            };
            compressor.compress(raw)
        });
        match compressed {
            Ok(compressed) if compressed.len() < raw.len() => Self {
                encoding: "zstd",
                bytes: compressed,
                raw_len: raw.len(),
            },
            _ => Self {
                encoding: "identity",
                bytes: raw.to_vec(),
                raw_len: raw.len(),
            },
        }
    }

    fn decode(encoding: &str, bytes: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        match encoding {
            "identity" => Ok(bytes),
            "zstd" => zstd::stream::decode_all(bytes.as_slice())
                .map_err(|e| StoreError::Corrupt(format!("a stored delivery body does not decompress: {e}"))),
            other => Err(StoreError::Corrupt(format!("unknown delivery body encoding {other:?}"))),
        }
    }
}

/// The result of recording a delivery, as the webhook answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Queued {
        job_id: i64,
    },
    Ignored {
        reason: String,
    },
    Cancelled {
        jobs: Vec<i64>,
    },
    /// This delivery id was recorded before; nothing changed.
    Duplicate {
        job_id: Option<i64>,
    },
}

/// The ingest writer's connection of its own, on which batches of deliveries are recorded
/// (see [`Recorder::record_batch`]).
pub struct Recorder {
    conn: AnyConnection,
    backend: Backend,
}

impl Store {
    /// Opens a connection of its own for recording deliveries: the ingest writer's.
    pub async fn recorder(&self) -> Result<Recorder, StoreError> {
        Ok(Recorder {
            conn: self.connect().await?,
            backend: self.backend,
        })
    }
}

impl Recorder {
    /// Records a batch of deliveries and what they trigger in one write transaction of its
    /// own: all are committed, or none (then it is rolled back before the error returns).
    ///
    /// A delivery is a copy (answered as a duplicate, nothing changes) when its delivery id or
    /// its body (by digest, within its project) was recorded before: the header is not signed,
    /// the body is. Between copies inside one batch the first wins. A push whose deploys are
    /// all older than what their environment has queued or live is recorded as ignored (see
    /// `stale_pushes`).
    ///
    /// Round trips, and rows sent back, are what a batch costs: three in the common case on
    /// either database (see `sqlite::ingest` and `postgres::ingest` for how each decides
    /// copies), one more on SQLite and two more on PostgreSQL for a batch that queues deploys
    /// (the stale-push check), then `COMMIT`. Triggers (migrations/) supersede older queued
    /// deploys: row by row in batch order on SQLite, once per statement on PostgreSQL (which
    /// takes the statement's deploys in batch order), to the same effect, as if each delivery
    /// had been committed alone: a superseded deploy names the one that replaced it.
    pub async fn record_batch(&mut self, batch: &[(&NewDelivery, &Action)]) -> Result<Vec<Recorded>, StoreError> {
        let recorded = record_in_transaction(&mut self.conn, self.backend, batch).await;
        if recorded.is_err() {
            // Fails harmlessly when BEGIN itself was what failed.
            let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
        }
        recorded
    }
}

async fn record_in_transaction(
    conn: &mut AnyConnection,
    backend: Backend,
    batch: &[(&NewDelivery, &Action)],
) -> Result<Vec<Recorded>, StoreError> {
    let originals = in_batch_originals(batch);
    let first_in_batch: Vec<bool> = originals.iter().map(Option::is_none).collect();
    let written = match backend {
        Backend::Sqlite => sqlite::ingest::write(conn, batch, &first_in_batch).await?,
        Backend::Postgres => postgres::ingest::write(conn, batch, &first_in_batch).await?,
    };

    let mut results: Vec<Recorded> = Vec::with_capacity(batch.len());
    for (index, (delivery, _)) in batch.iter().enumerate() {
        let recorded = if let Some(original) = originals[index] {
            // A copy of one first seen in this same batch: answered with what that one queued.
            Recorded::Duplicate {
                job_id: results[original].job_id(),
            }
        } else if let Some(job_id) = written.earlier[index] {
            // A copy of one recorded earlier.
            Recorded::Duplicate { job_id }
        } else {
            match written.actions[index].as_ref() {
                Action::Queue(_) => Recorded::Queued {
                    job_id: written
                        .job_ids
                        .get(delivery.delivery_id.as_str())
                        .copied()
                        .ok_or_else(|| {
                            StoreError::Corrupt(format!("no job recorded for delivery {}", delivery.delivery_id))
                        })?,
                },
                Action::Ignore { reason } => Recorded::Ignored { reason: reason.clone() },
                Action::CancelPullRequest {
                    project,
                    number,
                    merged,
                } => {
                    let cancelled =
                        jobs::cancel_queued_pull_request(conn, project, *number, delivery.received_at).await?;
                    let why = if *merged {
                        crate::job::Removal::Merged
                    } else {
                        crate::job::Removal::Closed
                    };
                    let preview = super::previews::close_in(conn, project, *number, why, delivery.received_at).await?;
                    let reason = format!(
                        "pull request #{number} closed; cancelled {} queued verify job(s){}",
                        cancelled.len(),
                        if preview { "; its preview is removed" } else { "" }
                    );
                    sqlx::query("UPDATE deliveries SET reason = $1 WHERE delivery_id = $2")
                        .bind(&reason)
                        .bind(&delivery.delivery_id)
                        .execute(&mut *conn)
                        .await?;
                    Recorded::Cancelled { jobs: cancelled }
                }
            }
        };
        results.push(recorded);
    }
    sqlx::query("COMMIT").execute(&mut *conn).await?;
    Ok(results)
}

impl Recorded {
    /// The job a copy of this delivery is answered with.
    fn job_id(&self) -> Option<i64> {
        match self {
            Self::Queued { job_id } => Some(*job_id),
            Self::Duplicate { job_id } => *job_id,
            Self::Ignored { .. } | Self::Cancelled { .. } => None,
        }
    }
}

/// Per delivery of the batch: the earlier delivery of the batch it copies (same delivery
/// id, or same body in the same project), if any.
fn in_batch_originals(batch: &[(&NewDelivery, &Action)]) -> Vec<Option<usize>> {
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    let mut by_body: HashMap<(Option<&str>, &str), usize> = HashMap::new();
    batch
        .iter()
        .enumerate()
        .map(|(index, (delivery, _))| {
            let original = by_id
                .get(delivery.delivery_id.as_str())
                .or_else(|| by_body.get(&delivery.body_key()))
                .copied();
            if original.is_none() {
                by_id.insert(delivery.delivery_id.as_str(), index);
                by_body.insert(delivery.body_key(), index);
            }
            original
        })
        .collect()
}

/// What a batch's inserts did, inside its still open transaction.
pub(in crate::store) struct Written<'b> {
    /// Per delivery of the batch: the job of the earlier recorded delivery it copies
    /// (`Some(None)`: a copy of one that queued nothing); `None` for one recorded now or a
    /// copy of one earlier in the batch.
    pub(in crate::store) earlier: Vec<Option<Option<i64>>>,
    /// Per delivery of the batch: what it does, stale deploys taken out.
    pub(in crate::store) actions: Vec<Cow<'b, Action>>,
    /// The job each new delivery queued (the first, when it queued several).
    pub(in crate::store) job_ids: HashMap<&'b str, i64>,
}

pub(in crate::store) fn queued_jobs(action: &Action) -> &[NewJob] {
    match action {
        Action::Queue(jobs) => jobs,
        _ => &[],
    }
}

/// What each of the batch's first copies does once stale deploys are taken out. The
/// caller holds the locks that keep what this reads true until commit.
pub(in crate::store) async fn screen_stale<'b>(
    conn: &mut AnyConnection,
    backend: Backend,
    batch: &[(&'b NewDelivery, &'b Action)],
    firsts: &[bool],
) -> Result<Vec<Cow<'b, Action>>, StoreError> {
    let environments = stale_pushes::environments(batch, firsts);
    if environments.is_empty() {
        return Ok(batch.iter().map(|(_, action)| Cow::Borrowed(*action)).collect());
    }
    match backend {
        // `BEGIN IMMEDIATE` already holds the one write lock.
        Backend::Sqlite => {}
        Backend::Postgres => postgres::ingest::lock_environments(conn, &environments).await?,
    }
    let newest = stale_pushes::newest(conn, backend, &environments).await?;
    Ok(stale_pushes::screen(batch, firsts, newest))
}

pub(in crate::store) fn batch_time(batch: &[(&NewDelivery, &Action)]) -> i64 {
    batch.first().map_or(0, |(d, _)| d.received_at)
}

/// The items whose flag is set, in order.
pub(in crate::store) fn flagged<'a, T>(items: &'a [T], flags: &[bool]) -> Vec<&'a T> {
    items
        .iter()
        .zip(flags)
        .filter(|(_, flag)| **flag)
        .map(|(item, _)| item)
        .collect()
}

/// Deliveries recorded by earlier batches that share a delivery id, or a body within a
/// project, with some of this batch's.
pub(in crate::store) struct EarlierCopies {
    by_id: HashMap<String, Option<i64>>,
    by_body: HashMap<(Option<String>, String), Option<i64>>,
}

impl EarlierCopies {
    /// Per delivery of the batch: the job of the earlier copy of a first copy, if any.
    pub(in crate::store) fn of_batch(
        &self,
        batch: &[(&NewDelivery, &Action)],
        first_in_batch: &[bool],
    ) -> Vec<Option<Option<i64>>> {
        batch
            .iter()
            .zip(first_in_batch)
            .map(|((delivery, _), first)| {
                if !*first {
                    return None;
                }
                self.by_id.get(&delivery.delivery_id).copied().or_else(|| {
                    let (project, digest) = delivery.body_key();
                    self.by_body
                        .get(&(project.map(str::to_owned), digest.to_owned()))
                        .copied()
                })
            })
            .collect()
    }
}

/// Which of `deliveries` earlier batches recorded (by id, or by body within the project),
/// with the job each queued; `prefix` runs first in the same round trip.
pub(in crate::store) async fn earlier_copies(
    conn: &mut AnyConnection,
    backend: Backend,
    prefix: &str,
    deliveries: &[&NewDelivery],
) -> Result<EarlierCopies, StoreError> {
    let ids: Vec<&str> = deliveries.iter().map(|d| d.delivery_id.as_str()).collect();
    let bodies: Vec<(Option<&str>, &str)> = deliveries.iter().map(|d| d.body_key()).collect();
    // delivery id, project, body digest, job
    type Row = (String, Option<String>, Option<String>, Option<i64>);
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{prefix}SELECT delivery_id, project, body_digest, job_id FROM deliveries WHERE {} \
             UNION ALL \
             SELECT d.delivery_id, d.project, d.body_digest, d.job_id FROM {} AS copy \
             JOIN deliveries AS d ON d.project = copy.first AND d.body_digest = copy.second",
        backend.in_json_list("delivery_id", "$1"),
        backend.json_pairs("$2")
    )))
    .bind(json_ids(&ids)?)
    .bind(serde_json::to_string(&bodies).map_err(|e| StoreError::Corrupt(format!("digests do not serialize: {e}")))?)
    .fetch_all(&mut *conn)
    .await?;
    let mut copies = EarlierCopies {
        by_id: HashMap::new(),
        by_body: HashMap::new(),
    };
    for (delivery_id, project, digest, job_id) in rows {
        if let Some(digest) = digest {
            copies.by_body.insert((project, digest), job_id);
        }
        copies.by_id.insert(delivery_id, job_id);
    }
    Ok(copies)
}

fn json_ids(ids: &[&str]) -> Result<String, StoreError> {
    serde_json::to_string(ids).map_err(|e| StoreError::Corrupt(format!("delivery ids do not serialize: {e}")))
}

/// `INSERT INTO deliveries ... VALUES` with one row per delivery, as the action decided,
/// naming the job it queued where `job_ids` knows it (else a trigger links it).
pub(in crate::store) fn deliveries_insert(
    backend: Backend,
    deliveries: &[(&NewDelivery, &Action)],
    job_ids: &HashMap<&str, i64>,
) -> Values {
    let mut insert = Values::on(
        backend,
        "INSERT INTO deliveries (delivery_id, event, action, project, repository, git_ref, sha, hook_id, outcome, \
         reason, content_type, body, body_encoding, body_bytes, body_digest, received_at, job_id) ",
    );
    insert.rows(deliveries, |row, (delivery, action)| {
        let (outcome, reason) = match action {
            Action::Queue(_) => ("queued", None),
            Action::Ignore { reason } => ("ignored", Some(reason.clone())),
            Action::CancelPullRequest { number, .. } => ("cancelled", Some(format!("pull request #{number} closed"))),
        };
        row.bind(delivery.delivery_id.clone())
            .bind(delivery.event.clone())
            .bind(delivery.action.clone())
            .bind(delivery.project.clone())
            .bind(delivery.repository.clone())
            .bind(delivery.git_ref.clone())
            .bind(delivery.sha.clone())
            .bind(delivery.hook_id)
            .bind(outcome)
            .bind(reason)
            .bind(delivery.content_type.clone())
            .bind(delivery.body.bytes.clone())
            .bind(delivery.body.encoding)
            .bind(i64::try_from(delivery.body.raw_len).unwrap_or(i64::MAX))
            .bind(delivery.body_digest.as_str().to_owned())
            .bind(delivery.received_at)
            .bind(job_ids.get(delivery.delivery_id.as_str()).copied());
    });
    insert
}

pub(in crate::store) fn expect_rows(inserted: u64, expected: usize) -> Result<(), StoreError> {
    if usize::try_from(inserted).ok() == Some(expected) {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!(
            "recording a batch inserted {inserted} rows instead of {expected}"
        )))
    }
}

/// A delivery as listed by the API (without its body).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Delivery {
    pub id: i64,
    pub delivery_id: String,
    pub event: String,
    pub action: Option<String>,
    pub project: Option<String>,
    pub repository: Option<String>,
    pub git_ref: Option<String>,
    pub sha: Option<String>,
    pub hook_id: Option<i64>,
    pub outcome: String,
    pub reason: Option<String>,
    pub job_id: Option<i64>,
    pub content_type: String,
    pub body_bytes: i64,
    #[sqlx(try_from = "Flag")]
    pub body_kept: bool,
    pub received_at: i64,
}

const DELIVERY_COLUMNS: &str = "id, delivery_id, event, action, project, repository, git_ref, sha, hook_id, outcome, \
     reason, job_id, content_type, body_bytes, body IS NOT NULL AS body_kept, received_at";

pub async fn list(pool: &Store, before: Option<i64>, limit: usize) -> Result<Page<Delivery>, StoreError> {
    let rows: Vec<Delivery> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id < $1 ORDER BY id DESC LIMIT $2"
    )))
    .bind(before.unwrap_or(i64::MAX))
    .bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
    .fetch_all(pool.db())
    .await?;
    Ok(Page::from_rows(rows, limit, |d| d.id))
}

pub async fn get(pool: &Store, delivery_id: &str) -> Result<Option<Delivery>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE delivery_id = $1"
    )))
    .bind(delivery_id)
    .fetch_optional(pool.db())
    .await?)
}

/// The raw body exactly as it arrived, and its content type, while retention keeps it.
pub async fn body(pool: &Store, delivery_id: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
    let row: Option<(String, String, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT content_type, body_encoding, body FROM deliveries WHERE delivery_id = $1")
            .bind(delivery_id)
            .fetch_optional(pool.db())
            .await?;
    let Some((content_type, encoding, Some(stored))) = row else {
        return Ok(None);
    };
    Ok(Some((content_type, StoredBody::decode(&encoding, stored)?)))
}

/// Drops raw bodies received before `cutoff`; the delivery rows themselves stay.
pub async fn prune_bodies(pool: &Store, cutoff: i64) -> Result<u64, StoreError> {
    Ok(
        sqlx::query("UPDATE deliveries SET body = NULL WHERE body IS NOT NULL AND received_at < $1")
            .bind(cutoff)
            .execute(pool.db())
            .await?
            .rows_affected(),
    )
}

pub async fn count(pool: &Store) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM deliveries")
        .fetch_one(pool.db())
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_come_back_exactly_as_they_arrived() {
        let push = include_bytes!("../../tests/fixtures/github-webhooks/push.payload.json");
        let kept = StoredBody::compress(push);
        assert_eq!(kept.encoding, "zstd");
        assert!(kept.bytes.len() * 3 < push.len());
        assert_eq!(StoredBody::decode(kept.encoding, kept.bytes).expect("decodes"), push);

        // Too small to shrink: kept as it came.
        let tiny = StoredBody::compress(b"{}");
        assert_eq!(tiny.encoding, "identity");
        assert_eq!(StoredBody::decode(tiny.encoding, tiny.bytes).expect("decodes"), b"{}");
    }

    #[test]
    fn a_damaged_body_is_reported_not_returned() {
        let error = StoredBody::decode("zstd", b"not zstd at all".to_vec()).expect_err("damaged");
        assert!(error.to_string().contains("does not decompress"), "{error}");
        assert!(StoredBody::decode("brotli", Vec::new()).is_err());
    }
}
