//! Recording a batch of deliveries on SQLite (see `deliveries::Recorder::record_batch`).

use std::collections::HashMap;

use futures_util::TryStreamExt as _;
use sqlx::{AnyConnection, Either, Executor as _, Row as _};

use crate::store::deliveries::{
    Action, NewDelivery, Written, batch_time, deliveries_insert, earlier_copies, expect_rows, flagged, queued_jobs,
    screen_stale,
};
use crate::store::jobs::{self, NewJob};
use crate::store::{Backend, StoreError};

/// SQLite, one writer: `BEGIN IMMEDIATE` with a read that finds no earlier copies, then
/// one multi-row insert for the deliveries followed by one for their jobs and the read of
/// the last id, in one round trip. Holding the write lock from the start is what makes the
/// reads decide copies and stale pushes; the unique indexes on `delivery_id` and on the
/// body's digest still back them. A trigger links each job to its delivery.
pub(in crate::store) async fn write<'b>(
    conn: &mut AnyConnection,
    batch: &[(&'b NewDelivery, &'b Action)],
    first_in_batch: &[bool],
) -> Result<Written<'b>, StoreError> {
    let backend = Backend::Sqlite;
    // One round trip: the write lock and the read together. Holding the lock from the start
    // is what makes the read decide.
    let firsts: Vec<&NewDelivery> = flagged(batch, first_in_batch).into_iter().map(|(d, _)| *d).collect();
    let copies = earlier_copies(conn, backend, "BEGIN IMMEDIATE; ", &firsts).await?;
    let earlier = copies.of_batch(batch, first_in_batch);
    let is_new: Vec<bool> = earlier
        .iter()
        .zip(first_in_batch)
        .map(|(earlier, first)| *first && earlier.is_none())
        .collect();
    let actions = screen_stale(conn, backend, batch, &is_new).await?;
    let new_deliveries: Vec<(&'b NewDelivery, &Action)> = batch
        .iter()
        .zip(&actions)
        .zip(&is_new)
        .filter(|(_, new)| **new)
        .map(|(((delivery, _), action), _)| (*delivery, action.as_ref()))
        .collect();
    // Each job with the id of the delivery that queued it.
    let new_jobs: Vec<(&'b str, &NewJob)> = new_deliveries
        .iter()
        .flat_map(|(delivery, action)| {
            queued_jobs(action)
                .iter()
                .map(|job| (delivery.delivery_id.as_str(), job))
        })
        .collect();

    let mut job_ids = HashMap::new();
    if !new_deliveries.is_empty() {
        // The deliveries come first, as the job trigger that links them expects.
        let mut insert = deliveries_insert(backend, &new_deliveries, &HashMap::new());
        if !new_jobs.is_empty() {
            insert.push("; ");
            jobs::push_insert(&mut insert, new_jobs.iter().map(|(_, job)| *job), batch_time(batch));
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
            for (offset, (delivery, _)) in (0_i64..).zip(&new_jobs) {
                job_ids.entry(*delivery).or_insert(first + offset);
            }
        }
    }
    Ok(Written {
        earlier,
        actions,
        job_ids,
    })
}
