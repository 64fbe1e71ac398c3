-- Webhook deliveries and the jobs they queue.
-- Times are Unix epoch milliseconds (UTC).

CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    project          TEXT    NOT NULL,
    environment      TEXT    NOT NULL,
    kind             TEXT    NOT NULL CHECK (kind IN ('deploy', 'verify')),
    trigger          TEXT    NOT NULL CHECK (trigger IN ('push', 'pull_request', 'redeploy', 'rollback', 'reconcile', 'replay')),
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
    CHECK (kind = 'verify' OR pull_request IS NULL),
    CHECK (state <> 'running' OR (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);

-- The claim query scans only live jobs.
CREATE INDEX jobs_live ON jobs (state, id) WHERE state IN ('queued', 'running', 'awaiting_approval');
CREATE INDEX jobs_environment ON jobs (project, environment, kind, state);
CREATE INDEX jobs_pull_request ON jobs (project, pull_request) WHERE pull_request IS NOT NULL;

CREATE TABLE deliveries (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    -- X-GitHub-Delivery: GitHub keeps it on redelivery, so it is the idempotency key.
    delivery_id   TEXT    NOT NULL UNIQUE,
    event         TEXT    NOT NULL,
    action        TEXT,
    project       TEXT,
    repository    TEXT,
    git_ref       TEXT,
    sha           TEXT,
    hook_id       INTEGER,
    outcome       TEXT    NOT NULL CHECK (outcome IN ('queued', 'ignored', 'cancelled')),
    reason        TEXT,
    job_id        INTEGER REFERENCES jobs (id),
    content_type  TEXT    NOT NULL,
    body          BLOB,
    body_bytes    INTEGER NOT NULL,
    received_at   INTEGER NOT NULL
);

CREATE INDEX deliveries_received ON deliveries (received_at) WHERE body IS NOT NULL;

-- queued -> superseded: a deploy queued for an environment leaves only the newest queued
-- deploy of that environment (by GitHub's push time, then id); the others point at it.
-- In a trigger so that queueing a job is one statement on the ingest hot path.
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

-- A delivery names the job it queued.
CREATE TRIGGER jobs_link_delivery AFTER INSERT ON jobs
WHEN NEW.delivery_id IS NOT NULL
BEGIN
    UPDATE deliveries SET job_id = NEW.id WHERE delivery_id = NEW.delivery_id AND job_id IS NULL;
END;

CREATE TABLE job_logs (
    job_id  INTEGER NOT NULL REFERENCES jobs (id),
    seq     INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    stream  TEXT    NOT NULL CHECK (stream IN ('system', 'stdout', 'stderr')),
    line    TEXT    NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
