-- no-transaction
-- A promotion puts the image live in one environment live in another (trigger
-- 'promote'); its job names the source deployment in rollback_of, as a rollback does.
-- SQLite cannot widen a CHECK constraint in place: both tables are rebuilt with foreign
-- keys off (outside a transaction, as 0008 explains), with their indexes and triggers.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

CREATE TABLE jobs_rebuilt (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    project          TEXT    NOT NULL,
    environment      TEXT    NOT NULL,
    kind             TEXT    NOT NULL CHECK (kind IN ('deploy', 'verify')),
    trigger          TEXT    NOT NULL CHECK (trigger IN ('push', 'pull_request', 'redeploy', 'rollback', 'reconcile',
                                                         'replay', 'promote')),
    state            TEXT    NOT NULL DEFAULT 'queued'
                             CHECK (state IN ('queued', 'running', 'awaiting_approval', 'succeeded', 'failed', 'cancelled', 'superseded')),
    git_ref          TEXT    NOT NULL,
    sha              TEXT    NOT NULL CHECK (length(sha) = 40),
    pull_request     INTEGER,
    -- Orders deploys of one environment: GitHub's push time when known, else the queue time.
    ordering_key     INTEGER NOT NULL,
    delivery_id      TEXT,
    commit_message   TEXT,
    commit_author    TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    superseded_by    INTEGER REFERENCES jobs (id),
    error            TEXT,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    updated_at       INTEGER NOT NULL,
    -- For a rollback or a promotion: the deployment whose image goes live.
    rollback_of      INTEGER REFERENCES deployments (id),
    plan_summary     TEXT,
    approval         TEXT CHECK (approval IN ('approved', 'rejected')),
    reported_state   TEXT,
    report_attempts  INTEGER NOT NULL DEFAULT 0,
    report_next_at   INTEGER NOT NULL DEFAULT 0,
    report_error     TEXT,
    github_deployment_id INTEGER,
    held_for         TEXT CHECK (held_for IN ('fork')),
    CHECK (kind = 'verify' OR pull_request IS NULL),
    CHECK (state <> 'running' OR (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);

INSERT INTO jobs_rebuilt (id, project, environment, kind, trigger, state, git_ref, sha, pull_request, ordering_key,
                          delivery_id, commit_message, commit_author, attempts, lease_owner, lease_expires_at,
                          cancel_requested, superseded_by, error, created_at, started_at, finished_at, updated_at,
                          rollback_of, plan_summary, approval, reported_state, report_attempts, report_next_at,
                          report_error, github_deployment_id, held_for)
SELECT id, project, environment, kind, trigger, state, git_ref, sha, pull_request, ordering_key,
       delivery_id, commit_message, commit_author, attempts, lease_owner, lease_expires_at,
       cancel_requested, superseded_by, error, created_at, started_at, finished_at, updated_at,
       rollback_of, plan_summary, approval, reported_state, report_attempts, report_next_at,
       report_error, github_deployment_id, held_for
FROM jobs ORDER BY id;

DROP TABLE jobs;
ALTER TABLE jobs_rebuilt RENAME TO jobs;

CREATE INDEX jobs_live ON jobs (state, id) WHERE state IN ('queued', 'running', 'awaiting_approval');
CREATE INDEX jobs_environment ON jobs (project, environment, kind, state);
CREATE INDEX jobs_pull_request ON jobs (project, pull_request) WHERE pull_request IS NOT NULL;
CREATE INDEX jobs_unreported ON jobs (report_next_at, id) WHERE reported_state IS NOT state;

CREATE TRIGGER jobs_supersede_older_deploys AFTER INSERT ON jobs
WHEN NEW.kind = 'deploy' AND NEW.state = 'queued'
BEGIN
    UPDATE jobs
    SET state = 'superseded',
        superseded_by = (SELECT newest.id FROM jobs AS newest
                         WHERE newest.project = NEW.project AND newest.environment = NEW.environment
                           AND newest.kind = 'deploy' AND newest.state = 'queued'
                         ORDER BY newest.ordering_key DESC, newest.id DESC LIMIT 1),
        finished_at = NEW.created_at,
        updated_at = NEW.created_at
    WHERE project = NEW.project AND environment = NEW.environment AND kind = 'deploy' AND state = 'queued'
      AND id <> (SELECT newest.id FROM jobs AS newest
                 WHERE newest.project = NEW.project AND newest.environment = NEW.environment
                   AND newest.kind = 'deploy' AND newest.state = 'queued'
                 ORDER BY newest.ordering_key DESC, newest.id DESC LIMIT 1);
END;

CREATE TRIGGER jobs_link_delivery AFTER INSERT ON jobs
WHEN NEW.delivery_id IS NOT NULL
BEGIN
    UPDATE deliveries SET job_id = NEW.id WHERE delivery_id = NEW.delivery_id AND job_id IS NULL;
END;

CREATE TABLE deployments_rebuilt (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id          INTEGER NOT NULL REFERENCES jobs (id),
    project         TEXT    NOT NULL,
    environment     TEXT    NOT NULL,
    sha             TEXT    NOT NULL CHECK (length(sha) = 40),
    -- Empty for an attempt that never built an image.
    image_ref       TEXT    NOT NULL,
    image_digest    TEXT,
    trigger         TEXT    NOT NULL CHECK (trigger IN ('push', 'redeploy', 'rollback', 'reconcile', 'replay', 'promote')),
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

INSERT INTO deployments_rebuilt (id, job_id, project, environment, sha, image_ref, image_digest, trigger, status,
                                 replaced_id, url, error, started_at, finished_at, outputs, replaced_by)
SELECT id, job_id, project, environment, sha, image_ref, image_digest, trigger, status,
       replaced_id, url, error, started_at, finished_at, outputs, replaced_by
FROM deployments ORDER BY id;

DROP TABLE deployments;
ALTER TABLE deployments_rebuilt RENAME TO deployments;

CREATE INDEX deployments_environment ON deployments (project, environment, status, id);
CREATE UNIQUE INDEX deployments_job ON deployments (job_id);
CREATE UNIQUE INDEX deployments_one_live ON deployments (project, environment) WHERE status = 'live';
CREATE INDEX deployments_status ON deployments (status, id);
CREATE INDEX deployments_env ON deployments (environment, id);

CREATE TRIGGER deployments_record_attempt AFTER UPDATE OF state ON jobs
WHEN NEW.kind = 'deploy' AND NEW.state IN ('failed', 'cancelled') AND OLD.state <> NEW.state
     AND NOT EXISTS (SELECT 1 FROM deployments WHERE job_id = NEW.id)
BEGIN
    INSERT INTO deployments (job_id, project, environment, sha, image_ref, trigger, status, error,
                             started_at, finished_at)
    VALUES (NEW.id, NEW.project, NEW.environment, NEW.sha, '', NEW.trigger, NEW.state, NEW.error,
            coalesce(NEW.started_at, NEW.created_at), coalesce(NEW.finished_at, NEW.updated_at));
END;

COMMIT;
PRAGMA foreign_keys = ON;
