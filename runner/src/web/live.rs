//! Live job logs over Server-Sent Events.
//!
//! Each log line is an event whose id is the line's number, so a reconnecting browser
//! resumes exactly after the last line it showed. `job` events carry the job's state and
//! steps whenever they change; `end` says the job is over and every line was sent.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::json;
use tokio::sync::broadcast;

use crate::domain::JobId;
use crate::store::{self, jobs, logs};
use crate::web::AppState;

/// Lines sent per database read; a long backlog goes out in chunks of this size.
const CHUNK: usize = 1_000;
/// Without a wake-up, the stream still looks for news this often (a line written by
/// another process, a state change that wrote no line).
const IDLE_RECHECK: Duration = Duration::from_secs(1);

struct Follow {
    state: AppState,
    job: JobId,
    after: i64,
    last_snapshot: String,
    pending: VecDeque<Event>,
    events: broadcast::Receiver<JobId>,
    finished: bool,
}

pub fn follow(state: AppState, job: JobId, after: i64) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = state.log_events.subscribe();
    let follow = Follow {
        state,
        job,
        after,
        last_snapshot: String::new(),
        pending: VecDeque::new(),
        events,
        finished: false,
    };
    let stream = futures_util::stream::unfold(follow, |mut follow| async move {
        loop {
            if let Some(event) = follow.pending.pop_front() {
                return Some((Ok(event), follow));
            }
            if follow.finished {
                return None;
            }
            match follow.refresh().await {
                Ok(true) => {}
                Ok(false) => follow.wait().await,
                Err(error) => {
                    tracing::warn!(job_id = %follow.job, %error, "live log stream stopped");
                    return None;
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

impl Follow {
    /// Queues whatever is new; says whether there was anything.
    async fn refresh(&mut self) -> Result<bool, store::StoreError> {
        // The state is read before the lines: a job's last line is stored before it is
        // marked finished, so a finished job's lines read afterwards are all of them.
        let Some(job) = jobs::get(&self.state.pool, self.job).await? else {
            self.finished = true;
            return Ok(true);
        };
        let steps = store::steps::list(&self.state.pool, self.job.get()).await?;
        let snapshot = json!({
            "state": job.state,
            "error": job.error,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "steps": steps,
        })
        .to_string();
        let mut news = false;
        if snapshot != self.last_snapshot {
            self.pending
                .push_back(Event::default().event("job").data(snapshot.clone()));
            self.last_snapshot = snapshot;
            news = true;
        }
        let lines = logs::read(&self.state.pool, self.job, self.after, CHUNK).await?;
        let drained = lines.len() < CHUNK;
        for line in lines {
            self.after = line.seq;
            let data = serde_json::to_string(&line).unwrap_or_default();
            self.pending
                .push_back(Event::default().id(line.seq.to_string()).data(data));
            news = true;
        }
        if drained && job.state.is_terminal() {
            self.pending
                .push_back(Event::default().event("end").data(job.state.as_str()));
            self.finished = true;
            news = true;
        }
        Ok(news)
    }

    /// Until this job stores something, or the idle recheck is due.
    async fn wait(&mut self) {
        let job = self.job;
        let events = &mut self.events;
        let _ = tokio::time::timeout(IDLE_RECHECK, async {
            loop {
                match events.recv().await {
                    Ok(id) if id == job => return,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        })
        .await;
    }
}
