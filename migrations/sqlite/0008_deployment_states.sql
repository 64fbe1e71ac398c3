-- no-transaction
-- Deployment states that say what is true: a deployment that was live and has since
-- been replaced (by a newer deploy, a rollback or a promotion) is 'replaced' and points
-- at what replaced it; exactly one 'live' row per environment (a partial unique index);
-- a deploy job that failed or was cancelled before its rollout leaves an attempt row.
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt, with foreign
-- keys off for the rebuild (which has to happen outside a transaction) and checked after.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

CREATE TABLE deployments_rebuilt (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id          INTEGER NOT NULL REFERENCES jobs (id),
    project         TEXT    NOT NULL,
    environment     TEXT    NOT NULL,
    sha             TEXT    NOT NULL CHECK (length(sha) = 40),
    -- Empty for an attempt that never built an image.
    image_ref       TEXT    NOT NULL,
    image_digest    TEXT,
    trigger         TEXT    NOT NULL CHECK (trigger IN ('push', 'redeploy', 'rollback', 'reconcile', 'replay')),
    status          TEXT    NOT NULL DEFAULT 'in_progress'
                            CHECK (status IN ('in_progress', 'live', 'replaced', 'failed', 'rolled_back', 'cancelled')),
    -- The deployment that was live when this one started (what a failure falls back to).
    replaced_id     INTEGER REFERENCES deployments (id),
    url             TEXT,
    error           TEXT,
    started_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    outputs         TEXT,
    -- The deployment that took over from this one.
    replaced_by     INTEGER REFERENCES deployments (id),
    CHECK (status <> 'replaced' OR replaced_by IS NOT NULL)
);

-- Of the rows marked live, the newest of each environment is the one serving; each older
-- one was replaced by the next newer one that went live.
INSERT INTO deployments_rebuilt (id, job_id, project, environment, sha, image_ref, image_digest, trigger, status,
                                 replaced_id, url, error, started_at, finished_at, outputs, replaced_by)
SELECT d.id, d.job_id, d.project, d.environment, d.sha, d.image_ref, d.image_digest, d.trigger,
       CASE WHEN d.status = 'live' AND newer.id IS NOT NULL THEN 'replaced' ELSE d.status END,
       d.replaced_id, d.url, d.error, d.started_at, d.finished_at, d.outputs,
       CASE WHEN d.status = 'live' THEN newer.id END
FROM deployments AS d
LEFT JOIN deployments AS newer ON newer.id = (
    SELECT min(n.id) FROM deployments AS n
    WHERE n.project = d.project AND n.environment = d.environment AND n.status = 'live' AND n.id > d.id);

DROP TABLE deployments;
ALTER TABLE deployments_rebuilt RENAME TO deployments;

CREATE INDEX deployments_environment ON deployments (project, environment, status, id);
CREATE UNIQUE INDEX deployments_job ON deployments (job_id);
CREATE UNIQUE INDEX deployments_one_live ON deployments (project, environment) WHERE status = 'live';

-- A deploy job that ends failed or cancelled without a deployment (it stopped before its
-- rollout) is recorded as an attempt, whichever way it ended (worker, sweep, cancel).
CREATE TRIGGER deployments_record_attempt AFTER UPDATE OF state ON jobs
WHEN NEW.kind = 'deploy' AND NEW.state IN ('failed', 'cancelled') AND OLD.state <> NEW.state
     AND NOT EXISTS (SELECT 1 FROM deployments WHERE job_id = NEW.id)
BEGIN
    INSERT INTO deployments (job_id, project, environment, sha, image_ref, trigger, status, error,
                             started_at, finished_at)
    VALUES (NEW.id, NEW.project, NEW.environment, NEW.sha, '', NEW.trigger, NEW.state, NEW.error,
            coalesce(NEW.started_at, NEW.created_at), coalesce(NEW.finished_at, NEW.updated_at));
END;

-- Deploy jobs that ended that way before this migration get their attempt rows too.
INSERT INTO deployments (job_id, project, environment, sha, image_ref, trigger, status, error, started_at, finished_at)
SELECT j.id, j.project, j.environment, j.sha, '', j.trigger, j.state, j.error,
       coalesce(j.started_at, j.created_at), coalesce(j.finished_at, j.updated_at)
FROM jobs AS j
WHERE j.kind = 'deploy' AND j.state IN ('failed', 'cancelled')
  AND NOT EXISTS (SELECT 1 FROM deployments WHERE job_id = j.id)
ORDER BY j.id;

COMMIT;
PRAGMA foreign_keys = ON;
