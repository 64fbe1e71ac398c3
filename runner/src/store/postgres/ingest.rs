//! Recording a batch of deliveries on PostgreSQL (see `deliveries::Recorder::record_batch`).

use std::collections::{HashMap, HashSet};

use sqlx::{AnyConnection, Executor as _, Row as _};

use super::ENVIRONMENT_LOCK;
use crate::store::deliveries::{
    Action, NewDelivery, Written, batch_time, deliveries_insert, earlier_copies, expect_rows, flagged, queued_jobs,
    screen_stale,
};
use crate::store::jobs::{self, NewJob};
use crate::store::stale_pushes::{self, EnvironmentKey};
use crate::store::{Backend, StoreError, Values};

/// PostgreSQL, shared by replicas: the insert decides copies. What the unique indexes (on
/// the delivery id, and on the body's digest) already hold is skipped and only those (rare)
/// earlier copies are read back; a copy that another replica is recording right now makes
/// the insert wait for that transaction. No lock of the whole database is held, and
/// deliveries are inserted in the order of their body's digest (a redelivery has the same
/// body as its original) so that two batches do not wait for each other; only pushes to one
/// environment take turns (see [`lock_environments`] and the superseding trigger). Job ids
/// are drawn from their sequence first, in batch order, so each delivery row is written
/// once, already naming its job.
pub(in crate::store) async fn write<'b>(
    conn: &mut AnyConnection,
    batch: &[(&'b NewDelivery, &'b Action)],
    first_in_batch: &[bool],
) -> Result<Written<'b>, StoreError> {
    let backend = Backend::Postgres;
    let wanted: usize = flagged(batch, first_in_batch)
        .iter()
        .map(|(_, action)| queued_jobs(action).len())
        .sum();
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
    // Whether a first copy is new is only known once inserted; a stale check of one that
    // turns out to be a copy changes nothing, as its row is not written.
    let actions = screen_stale(conn, backend, batch, first_in_batch).await?;
    let firsts: Vec<(&'b NewDelivery, &Action)> = batch
        .iter()
        .zip(&actions)
        .zip(first_in_batch)
        .filter(|(_, first)| **first)
        .map(|(((delivery, _), action), _)| (*delivery, action.as_ref()))
        .collect();
    // Ids drawn for stale deploys stay unused: gaps in the sequence, as for copies.
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
    sorted.sort_unstable_by(|(a, _), (b, _)| {
        (a.body_key(), a.delivery_id.as_str()).cmp(&(b.body_key(), b.delivery_id.as_str()))
    });
    let mut insert = deliveries_insert(backend, &sorted, &job_ids);
    // Any unique index: the delivery id or the body's digest.
    insert.push(" ON CONFLICT DO NOTHING RETURNING delivery_id");
    let inserted: HashSet<String> = insert
        .build_scalar()
        .persistent(false)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
    let recorded_before: Vec<&NewDelivery> = firsts
        .iter()
        .map(|(d, _)| *d)
        .filter(|d| !inserted.contains(&d.delivery_id))
        .collect();
    let earlier = if recorded_before.is_empty() {
        vec![None; batch.len()]
    } else {
        earlier_copies(conn, backend, "", &recorded_before)
            .await?
            .of_batch(batch, first_in_batch)
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
    // A first copy not inserted has an earlier copy (the insert skipped it for one).
    let earlier = earlier
        .into_iter()
        .zip(batch)
        .zip(first_in_batch)
        .map(|((earlier, (delivery, _)), first)| {
            (*first && !inserted.contains(&delivery.delivery_id)).then(|| earlier.flatten())
        })
        .collect();
    Ok(Written {
        earlier,
        actions,
        job_ids,
    })
}

/// Takes the per-environment locks that the superseding trigger takes (same class, same
/// key, same order, so no two transactions wait for each other in a circle), before the
/// deliveries are written: what `stale_pushes::newest` reads next stays true until commit,
/// whichever replica records a push for the same environment. The trigger later finds
/// them held.
pub(in crate::store) async fn lock_environments(
    conn: &mut AnyConnection,
    environments: &[EnvironmentKey],
) -> Result<(), StoreError> {
    // `pg_advisory_xact_lock` returns void, which the driver does not read: count it.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM (SELECT pg_advisory_xact_lock({ENVIRONMENT_LOCK}, hashtext(first || '/' || second)) \
         FROM (SELECT DISTINCT first, second FROM {} AS pairs ORDER BY first, second) AS environments) AS held",
        super::json_pairs("$1")
    )))
    .bind(stale_pushes::environments_json(environments)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
