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

CREATE TABLE job_logs (
    job_id  INTEGER NOT NULL REFERENCES jobs (id),
    seq     INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    stream  TEXT    NOT NULL CHECK (stream IN ('system', 'stdout', 'stderr')),
    line    TEXT    NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
