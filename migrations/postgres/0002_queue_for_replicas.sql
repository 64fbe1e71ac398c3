-- Queuing, shaped for several replicas writing at once and for batches of dozens of jobs.
--
-- Superseding runs once per statement, not once per job, and no longer relies on the
-- runner's write lock being held (0001's header): it takes a lock of its own per
-- environment, so ingest batches of several replicas commit side by side and only those
-- queuing deploys for one environment take turns. What it leaves is what the row trigger
-- left, with one refinement: every deploy a batch supersedes points at the environment's
-- newest queued deploy (the one that runs), not at whichever row followed it.

DROP TRIGGER jobs_supersede_older_deploys ON jobs;
DROP FUNCTION jobs_supersede_older_deploys();
DROP TRIGGER jobs_link_delivery ON jobs;
DROP FUNCTION jobs_link_delivery();

-- queued -> superseded: for each environment a statement queued a deploy for, only the
-- newest queued deploy (by GitHub's push time, then id) stays queued; the others point at it.
-- The environment's lock (an advisory transaction lock of class 1701738089, "envi", taken
-- in name order so two statements cannot deadlock) makes the search below see every deploy
-- queued by a transaction that committed first; its statements read afresh once it is held.
CREATE FUNCTION jobs_supersede_older_deploys() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1701738089, hashtext(environments.project || '/' || environments.environment))
    FROM (SELECT DISTINCT project, environment FROM inserted WHERE kind = 'deploy' AND state = 'queued'
          ORDER BY project, environment) AS environments;
    UPDATE jobs
    SET state = 'superseded', superseded_by = newest.id, finished_at = newest.queued_at,
        updated_at = newest.queued_at
    FROM (
        SELECT DISTINCT ON (queued.project, queued.environment)
               queued.project, queued.environment, queued.id, arrived.queued_at
        FROM (SELECT project, environment, max(created_at) AS queued_at
              FROM inserted WHERE kind = 'deploy' AND state = 'queued'
              GROUP BY project, environment) AS arrived
        JOIN jobs AS queued ON queued.project = arrived.project AND queued.environment = arrived.environment
        WHERE queued.kind = 'deploy' AND queued.state = 'queued'
        ORDER BY queued.project, queued.environment, queued.ordering_key DESC, queued.id DESC
    ) AS newest
    WHERE jobs.project = newest.project AND jobs.environment = newest.environment
      AND jobs.kind = 'deploy' AND jobs.state = 'queued' AND jobs.id <> newest.id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_supersede_older_deploys AFTER INSERT ON jobs
REFERENCING NEW TABLE AS inserted
FOR EACH STATEMENT EXECUTE FUNCTION jobs_supersede_older_deploys();

-- A delivery names the job it queued (the first, when it queued several): ingest, the one
-- writer of jobs that come from deliveries, writes each delivery row once, already naming
-- its job by an id drawn from the jobs' sequence before either row exists, so no trigger
-- links them afterwards (which rewrote every delivery row, body and all). The reference is
-- checked when the transaction commits.
ALTER TABLE deliveries ALTER CONSTRAINT deliveries_job_id_fkey DEFERRABLE INITIALLY DEFERRED;

-- The queue table is rewritten row by row all day (superseded, claimed, heartbeats), and
-- every job that stops being live leaves an entry in the live-job indexes that claims walk
-- past until vacuum clears it: vacuum after a small share of changes, not the default fifth.
ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
