//! Webhook deliveries: recorded once per `X-GitHub-Delivery`, with the job they queued.

use futures_util::TryStreamExt as _;
use serde::Serialize;
use sqlx::{AnyConnection, Either, Executor as _, Row as _};

use std::collections::{HashMap, HashSet};

use super::jobs::{self, NewJob};
use super::{Backend, Flag, Page, Store, StoreError, Values};

/// What the ingest decided to do with a verified, parsed delivery.
#[derive(Debug, Clone)]
pub enum Action {
    /// One job per environment the delivery feeds (a pull request: one verify job).
    Queue(Vec<NewJob>),
    Ignore {
        reason: String,
    },
    CancelPullRequest {
        project: String,
        number: i64,
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
    pub received_at: i64,
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

/// Records a batch of deliveries and what they trigger in one write transaction of its
/// own: all are committed, or none (then it is rolled back before the error returns).
///
/// Round trips, and rows sent back, are what a batch costs: three in the common case on
/// either backend (see `write_on_sqlite` and `write_on_postgres` for how each decides
/// duplicates), then `COMMIT`. Between copies inside one batch the first wins. Triggers
/// (migrations/) supersede older queued deploys: row by row in batch order on SQLite, once
/// per statement on PostgreSQL, to the same effect.
pub async fn record_batch(
    conn: &mut AnyConnection,
    backend: Backend,
    batch: &[(&NewDelivery, &Action)],
) -> Result<Vec<Recorded>, StoreError> {
    let recorded = record_in_transaction(conn, backend, batch).await;
    if recorded.is_err() {
        // Fails harmlessly when BEGIN itself was what failed.
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    }
    recorded
}

async fn record_in_transaction(
    conn: &mut AnyConnection,
    backend: Backend,
    batch: &[(&NewDelivery, &Action)],
) -> Result<Vec<Recorded>, StoreError> {
    // In batch order, the first copy of each id in this batch (a later copy is a duplicate).
    let mut seen = HashSet::new();
    let first_in_batch: Vec<bool> = batch
        .iter()
        .map(|(delivery, _)| seen.insert(delivery.delivery_id.as_str()))
        .collect();
    let written = match backend {
        Backend::Sqlite => write_on_sqlite(conn, batch, &first_in_batch).await?,
        Backend::Postgres => write_on_postgres(conn, batch, &first_in_batch).await?,
    };

    let mut results = Vec::with_capacity(batch.len());
    for ((delivery, action), new) in batch.iter().zip(written.is_new) {
        let recorded = if !new {
            // A copy of one recorded earlier, or of one first seen in this same batch.
            let job_id = match written.earlier.get(&delivery.delivery_id) {
                Some(job_id) => *job_id,
                None => written.job_ids.get(delivery.delivery_id.as_str()).copied(),
            };
            Recorded::Duplicate { job_id }
        } else {
            match action {
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
                Action::CancelPullRequest { project, number } => {
                    let cancelled =
                        jobs::cancel_queued_pull_request(conn, project, *number, delivery.received_at).await?;
                    let reason = format!(
                        "pull request #{number} closed; cancelled {} queued verify job(s)",
                        cancelled.len()
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

/// What a batch's inserts did, inside its still open transaction.
struct Written<'b> {
    /// Per delivery of the batch: recorded now (else a duplicate).
    is_new: Vec<bool>,
    /// Ids recorded by an earlier batch, with the job each queued.
    earlier: HashMap<String, Option<i64>>,
    /// The job each new delivery queued (the first, when it queued several).
    job_ids: HashMap<&'b str, i64>,
}

fn queued_jobs(action: &Action) -> &[NewJob] {
    match action {
        Action::Queue(jobs) => jobs,
        _ => &[],
    }
}

/// SQLite, one writer: `BEGIN IMMEDIATE` with a read that finds no earlier copies, then
/// one multi-row insert for the deliveries followed by one for their jobs and the read of
/// the last id, in one round trip. Holding the write lock from the start is what makes the
/// read decide duplicates; the unique index on `delivery_id` still backs it. A trigger
/// links each job to its delivery.
async fn write_on_sqlite<'b>(
    conn: &mut AnyConnection,
    batch: &[(&'b NewDelivery, &'b Action)],
    first_in_batch: &[bool],
) -> Result<Written<'b>, StoreError> {
    let backend = Backend::Sqlite;
    // One round trip: the write lock and the read together. Holding the lock from the start
    // is what makes the read decide.
    let ids: Vec<&str> = batch.iter().map(|(d, _)| d.delivery_id.as_str()).collect();
    let earlier = earlier_copies(conn, backend, "BEGIN IMMEDIATE; ", &ids).await?;
    let is_new = new_in_batch(batch, first_in_batch, |id| !earlier.contains_key(id));
    let new_deliveries = flagged(batch, &is_new);
    let new_jobs: Vec<&NewJob> = new_deliveries
        .iter()
        .flat_map(|(_, action)| queued_jobs(action))
        .collect();

    let mut job_ids = HashMap::new();
    if !new_deliveries.is_empty() {
        // The deliveries come first, as the job trigger that links them expects.
        let mut insert = deliveries_insert(backend, &new_deliveries, &HashMap::new());
        if !new_jobs.is_empty() {
            insert.push("; ");
            jobs::push_insert(&mut insert, new_jobs.iter().copied(), batch_time(batch));
        }
        insert.push("; SELECT last_insert_rowid()");
        let mut inserted = 0;
        let mut last_id = None;
        let mut results = conn.fetch_many(insert.build().persistent(false));
        while let Some(result) = results.try_next().await? {
            match result {
                // What SQLite counts for the closing SELECT is the insert's count again.
                Either::Left(done) if last_id.is_none() => inserted += done.rows_affected(),
                Either::Left(_) => {}
                Either::Right(row) => last_id = Some(row.try_get::<i64, _>(0)?),
            }
        }
        drop(results);
        expect_rows(inserted, new_deliveries.len() + new_jobs.len())?;
        // One statement's rows take consecutive AUTOINCREMENT ids in VALUES order (a
        // failing row fails the whole statement), so the last id names them all.
        if let Some(last) = last_id.filter(|_| !new_jobs.is_empty()) {
            let first = last - i64::try_from(new_jobs.len()).unwrap_or(i64::MAX) + 1;
            for (offset, job) in (0_i64..).zip(&new_jobs) {
                if let Some(delivery) = job.delivery_id.as_deref() {
                    job_ids.entry(delivery).or_insert(first + offset);
                }
            }
        }
    }
    Ok(Written {
        is_new,
        earlier,
        job_ids,
    })
}

/// PostgreSQL, shared by replicas: the insert decides duplicates. What the unique index
/// already holds is skipped and only those (rare) earlier copies are read back; a copy that
/// another replica is recording right now makes the insert wait for that transaction. No
/// lock of the whole database is held, and ids are inserted in sorted order so that two
/// batches never wait for each other; only superseding takes turns, per environment (see
/// the trigger). Job ids are drawn from their sequence first, in batch order, so each
/// delivery row is written once, already naming its job.
async fn write_on_postgres<'b>(
    conn: &mut AnyConnection,
    batch: &[(&'b NewDelivery, &'b Action)],
    first_in_batch: &[bool],
) -> Result<Written<'b>, StoreError> {
    let backend = Backend::Postgres;
    let firsts = flagged(batch, first_in_batch);
    let wanted: usize = firsts.iter().map(|(_, action)| queued_jobs(action).len()).sum();
    let mut drawn: Vec<i64> = if wanted == 0 {
        conn.execute("BEGIN").await?;
        Vec::new()
    } else {
        // One round trip; a count is no way in for text.
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "BEGIN; SELECT nextval(pg_get_serial_sequence('jobs', 'id')) FROM generate_series(1, {wanted})"
        )))
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|row| row.try_get::<i64, _>(0))
            .collect::<Result<_, _>>()?
    };
    drawn.sort_unstable();
    if drawn.len() != wanted {
        return Err(StoreError::Corrupt(format!(
            "the jobs' id sequence gave {} ids instead of {wanted}",
            drawn.len()
        )));
    }
    let mut drawn = drawn.into_iter();
    let mut numbered: Vec<(&str, i64, &NewJob)> = Vec::with_capacity(wanted);
    let mut job_ids: HashMap<&'b str, i64> = HashMap::new();
    for (delivery, action) in &firsts {
        for job in queued_jobs(action) {
            let id = drawn.next().unwrap_or_default();
            job_ids.entry(delivery.delivery_id.as_str()).or_insert(id);
            numbered.push((delivery.delivery_id.as_str(), id, job));
        }
    }

    let mut sorted = firsts.clone();
    sorted.sort_unstable_by(|(a, _), (b, _)| a.delivery_id.cmp(&b.delivery_id));
    let mut insert = deliveries_insert(backend, &sorted, &job_ids);
    insert.push(" ON CONFLICT (delivery_id) DO NOTHING RETURNING delivery_id");
    let inserted: HashSet<String> = insert
        .build_scalar()
        .persistent(false)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
    let is_new = new_in_batch(batch, first_in_batch, |id| inserted.contains(id));
    let recorded_before: Vec<&str> = firsts
        .iter()
        .map(|(d, _)| d.delivery_id.as_str())
        .filter(|id| !inserted.contains(*id))
        .collect();
    let earlier = if recorded_before.is_empty() {
        HashMap::new()
    } else {
        earlier_copies(conn, backend, "", &recorded_before).await?
    };
    // Ids drawn for a delivery recorded before stay unused: a gap in the sequence.
    job_ids.retain(|delivery, _| inserted.contains(*delivery));
    let new_jobs: Vec<(i64, &NewJob)> = numbered
        .into_iter()
        .filter(|(delivery, _, _)| inserted.contains(*delivery))
        .map(|(_, id, job)| (id, job))
        .collect();
    if !new_jobs.is_empty() {
        let mut insert = Values::on(backend, "");
        jobs::push_insert_numbered(&mut insert, new_jobs.iter().copied(), batch_time(batch));
        let done = insert.build().persistent(false).execute(&mut *conn).await?;
        expect_rows(done.rows_affected(), new_jobs.len())?;
    }
    Ok(Written {
        is_new,
        earlier,
        job_ids,
    })
}

fn batch_time(batch: &[(&NewDelivery, &Action)]) -> i64 {
    batch.first().map_or(0, |(d, _)| d.received_at)
}

/// Per delivery of the batch: whether it is the first copy in the batch of an id that this
/// batch records (`recorded_now`); every other copy is a duplicate.
fn new_in_batch(
    batch: &[(&NewDelivery, &Action)],
    first_in_batch: &[bool],
    recorded_now: impl Fn(&str) -> bool,
) -> Vec<bool> {
    batch
        .iter()
        .zip(first_in_batch)
        .map(|((delivery, _), first)| *first && recorded_now(&delivery.delivery_id))
        .collect()
}

/// The items whose flag is set, in order.
fn flagged<'a, T>(items: &'a [T], flags: &[bool]) -> Vec<&'a T> {
    items
        .iter()
        .zip(flags)
        .filter(|(_, flag)| **flag)
        .map(|(item, _)| item)
        .collect()
}

/// Which of `ids` earlier batches recorded, with the job each queued; `prefix` runs first
/// in the same round trip.
async fn earlier_copies(
    conn: &mut AnyConnection,
    backend: Backend,
    prefix: &str,
    ids: &[&str],
) -> Result<HashMap<String, Option<i64>>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{prefix}SELECT delivery_id, job_id FROM deliveries WHERE {}",
        backend.in_json_list("delivery_id", "$1")
    )))
    .bind(json_ids(ids)?)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect())
}

fn json_ids(ids: &[&str]) -> Result<String, StoreError> {
    serde_json::to_string(ids).map_err(|e| StoreError::Corrupt(format!("delivery ids do not serialize: {e}")))
}

/// `INSERT INTO deliveries ... VALUES` with one row per delivery, as the action decided,
/// naming the job it queued where `job_ids` knows it (else a trigger links it).
fn deliveries_insert(
    backend: Backend,
    deliveries: &[&(&NewDelivery, &Action)],
    job_ids: &HashMap<&str, i64>,
) -> Values {
    let mut insert = Values::on(
        backend,
        "INSERT INTO deliveries (delivery_id, event, action, project, repository, git_ref, sha, hook_id, outcome, \
         reason, content_type, body, body_encoding, body_bytes, received_at, job_id) ",
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
            .bind(delivery.received_at)
            .bind(job_ids.get(delivery.delivery_id.as_str()).copied());
    });
    insert
}

fn expect_rows(inserted: u64, expected: usize) -> Result<(), StoreError> {
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
