//! Pushes that would move an environment backwards are not queued (invariant 11).
//!
//! A push's deploy is stale when the environment already has a deploy from a later push
//! (or an admin's later action) queued, running, waiting for approval or live: GitHub's
//! push time (`ordering_key`) says which is later. Ingest decides it inside the transaction
//! that records the delivery, after the environments' locks on PostgreSQL and under SQLite's
//! write lock, so two deliveries can never both pass against the same state. Admin actions
//! (redeploy, rollback, promotion, replay) queue their jobs elsewhere and are never screened.

use std::borrow::Cow;
use std::collections::HashMap;

use sqlx::AnyConnection;

use super::deliveries::{Action, NewDelivery};
use super::jobs::NewJob;
use super::{Backend, StoreError};
use crate::job::JobKind;

/// GitHub's push time has second resolution, admin actions millisecond keys: a push is
/// only older than a deploy when its whole second is, so a push in the same second as an
/// admin's action (or as another push) keeps arrival order, as superseding does.
const PUSH_TIME_RESOLUTION_MS: i64 = 1_000;

/// The newest deploy an environment has queued, running or live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Newest {
    pub ordering_key: i64,
    pub sha: String,
}

/// `(project, environment)`.
pub type EnvironmentKey = (String, String);

/// The environments the batch's first copies queue deploys for, sorted, each once.
pub fn environments(batch: &[(&NewDelivery, &Action)], firsts: &[bool]) -> Vec<EnvironmentKey> {
    let mut environments: Vec<EnvironmentKey> = batch
        .iter()
        .zip(firsts)
        .filter(|(_, first)| **first)
        .flat_map(|((_, action), _)| deploys(action))
        .map(|job| (job.project.to_string(), job.environment.to_string()))
        .collect();
    environments.sort_unstable();
    environments.dedup();
    environments
}

fn deploys(action: &Action) -> impl Iterator<Item = &NewJob> {
    let jobs: &[NewJob] = match action {
        Action::Queue(jobs) => jobs,
        _ => &[],
    };
    jobs.iter().filter(|job| job.kind == JobKind::Deploy)
}

pub(in crate::store) fn environments_json(environments: &[EnvironmentKey]) -> Result<String, StoreError> {
    serde_json::to_string(environments)
        .map_err(|e| StoreError::Corrupt(format!("environment names do not serialize: {e}")))
}

/// Per environment, the deploy with the latest ordering key among those queued, running,
/// waiting for approval, and the one whose deployment is live. Superseded, finished and
/// replaced deploys do not count: only what is or will be live.
pub(in crate::store) async fn newest(
    conn: &mut AnyConnection,
    backend: Backend,
    environments: &[EnvironmentKey],
) -> Result<HashMap<EnvironmentKey, Newest>, StoreError> {
    let rows: Vec<(String, String, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT j.project, j.environment, j.ordering_key, j.sha FROM {} AS env \
         JOIN jobs AS j ON j.project = env.first AND j.environment = env.second \
         WHERE j.kind = 'deploy' AND j.state IN ('queued', 'running', 'awaiting_approval') \
         UNION ALL \
         SELECT j.project, j.environment, j.ordering_key, j.sha FROM {} AS env \
         JOIN deployments AS d ON d.project = env.first AND d.environment = env.second AND d.status = 'live' \
         JOIN jobs AS j ON j.id = d.job_id",
        backend.json_pairs("$1"),
        backend.json_pairs("$2")
    )))
    .bind(environments_json(environments)?)
    .bind(environments_json(environments)?)
    .fetch_all(&mut *conn)
    .await?;
    let mut newest = HashMap::new();
    for (project, environment, ordering_key, sha) in rows {
        raise(&mut newest, (project, environment), ordering_key, &sha);
    }
    Ok(newest)
}

fn raise(newest: &mut HashMap<EnvironmentKey, Newest>, key: EnvironmentKey, ordering_key: i64, sha: &str) {
    let entry = newest.entry(key).or_insert_with(|| Newest {
        ordering_key,
        sha: sha.to_owned(),
    });
    if ordering_key > entry.ordering_key {
        *entry = Newest {
            ordering_key,
            sha: sha.to_owned(),
        };
    }
}

/// What each of the batch's first copies will do once stale deploys are taken out, in
/// batch order: a delivery all of whose deploys are stale is ignored with the reason; one
/// that feeds several environments keeps the deploys that are not. A deploy that stays
/// counts for the deliveries after it in the batch, as it would in a later batch.
pub fn screen<'b>(
    batch: &[(&'b NewDelivery, &'b Action)],
    firsts: &[bool],
    mut newest: HashMap<EnvironmentKey, Newest>,
) -> Vec<Cow<'b, Action>> {
    batch
        .iter()
        .zip(firsts)
        .map(|((_, action), first)| {
            let Action::Queue(jobs) = action else {
                return Cow::Borrowed(*action);
            };
            if !*first {
                return Cow::Borrowed(*action);
            }
            let mut kept = Vec::with_capacity(jobs.len());
            let mut reasons = Vec::new();
            for job in jobs {
                if job.kind != JobKind::Deploy {
                    kept.push(job);
                    continue;
                }
                let key = (job.project.to_string(), job.environment.to_string());
                match newest.get(&key) {
                    Some(later) if job.ordering_key + PUSH_TIME_RESOLUTION_MS <= later.ordering_key => {
                        reasons.push(stale_reason(job, later));
                    }
                    _ => {
                        raise(&mut newest, key, job.ordering_key, job.sha.as_str());
                        kept.push(job);
                    }
                }
            }
            if reasons.is_empty() {
                Cow::Borrowed(*action)
            } else if kept.is_empty() {
                Cow::Owned(Action::Ignore {
                    reason: format!("stale push: {}", reasons.join("; ")),
                })
            } else {
                tracing::info!(stale = %reasons.join("; "), "a push's deploys to some environments are stale");
                Cow::Owned(Action::Queue(kept.into_iter().cloned().collect()))
            }
        })
        .collect()
}

fn stale_reason(job: &NewJob, later: &Newest) -> String {
    format!(
        "{} was pushed at {}, but {}/{} already has {} from {} queued or live (only an admin's rollback goes back)",
        short(job.sha.as_str()),
        crate::domain::format_ms(job.ordering_key),
        job.project,
        job.environment,
        short(&later.sha),
        crate::domain::format_ms(later.ordering_key),
    )
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CommitSha, GitRef, Name};
    use crate::job::Trigger;

    fn delivery(id: &str) -> NewDelivery {
        NewDelivery::push_for_test(id, "hello")
    }

    fn deploy(environment: &str, sha: char, pushed_secs: i64) -> NewJob {
        NewJob::deploy(
            Name::parse("hello").expect("name"),
            Name::parse(environment).expect("name"),
            Trigger::Push,
            GitRef::parse("refs/heads/master").expect("ref"),
            CommitSha::parse(&sha.to_string().repeat(40)).expect("sha"),
            pushed_secs * 1000,
        )
    }

    fn live(environment: &str, ordering_key: i64) -> HashMap<EnvironmentKey, Newest> {
        HashMap::from([(
            ("hello".to_owned(), environment.to_owned()),
            Newest {
                ordering_key,
                sha: "f".repeat(40),
            },
        )])
    }

    #[test]
    fn a_push_older_than_what_is_live_is_ignored_and_names_the_newer_commit() {
        let (d, a) = (delivery("1"), Action::Queue(vec![deploy("production", 'a', 100)]));
        let screened = screen(&[(&d, &a)], &[true], live("production", 101_000));
        let Action::Ignore { reason } = screened[0].as_ref() else {
            panic!("queued: {screened:?}");
        };
        assert!(reason.starts_with("stale push: aaaaaaaaaaaa was pushed at"), "{reason}");
        assert!(reason.contains("hello/production already has ffffffffffff"), "{reason}");
    }

    #[test]
    fn a_push_in_the_same_second_or_later_is_queued() {
        let (d, a) = (delivery("1"), Action::Queue(vec![deploy("production", 'a', 100)]));
        // An admin's action at 100.5 s: the push's second is not wholly before it.
        let screened = screen(&[(&d, &a)], &[true], live("production", 100_500));
        assert!(matches!(screened[0], Cow::Borrowed(Action::Queue(_))), "{screened:?}");
        let screened = screen(&[(&d, &a)], &[true], live("staging", 900_000));
        assert!(matches!(screened[0], Cow::Borrowed(Action::Queue(_))), "{screened:?}");
    }

    #[test]
    fn within_a_batch_a_newer_push_makes_a_later_older_one_stale_but_not_the_reverse() {
        let (d1, newer) = (delivery("1"), Action::Queue(vec![deploy("production", 'b', 200)]));
        let (d2, older) = (delivery("2"), Action::Queue(vec![deploy("production", 'a', 100)]));
        let screened = screen(&[(&d1, &newer), (&d2, &older)], &[true, true], HashMap::new());
        assert!(matches!(screened[0].as_ref(), Action::Queue(_)));
        assert!(matches!(screened[1].as_ref(), Action::Ignore { .. }), "{screened:?}");
        // Older first: both queue, and superseding leaves the newer one.
        let screened = screen(&[(&d2, &older), (&d1, &newer)], &[true, true], HashMap::new());
        assert!(
            screened.iter().all(|a| matches!(a.as_ref(), Action::Queue(_))),
            "{screened:?}"
        );
    }

    #[test]
    fn only_the_stale_environments_of_a_push_are_left_out() {
        let (d, a) = (
            delivery("1"),
            Action::Queue(vec![deploy("staging", 'a', 100), deploy("production", 'a', 100)]),
        );
        let screened = screen(&[(&d, &a)], &[true], live("production", 200_000));
        let Action::Queue(kept) = screened[0].as_ref() else {
            panic!("{screened:?}");
        };
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].environment.as_str(), "staging");
    }
}
