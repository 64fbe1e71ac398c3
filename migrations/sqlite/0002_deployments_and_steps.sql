-- What went live where, and the steps each job ran.

CREATE TABLE deployments (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id          INTEGER NOT NULL REFERENCES jobs (id),
    project         TEXT    NOT NULL,
    environment     TEXT    NOT NULL,
    sha             TEXT    NOT NULL CHECK (length(sha) = 40),
    image_ref       TEXT    NOT NULL,
    image_digest    TEXT,
    trigger         TEXT    NOT NULL CHECK (trigger IN ('push', 'redeploy', 'rollback', 'reconcile', 'replay')),
    status          TEXT    NOT NULL DEFAULT 'in_progress'
                            CHECK (status IN ('in_progress', 'live', 'failed', 'rolled_back')),
    -- The deployment that was live when this one started (what a failure falls back to).
    replaced_id     INTEGER REFERENCES deployments (id),
    url             TEXT,
    error           TEXT,
    started_at      INTEGER NOT NULL,
    finished_at     INTEGER
);

CREATE INDEX deployments_environment ON deployments (project, environment, status, id);
CREATE UNIQUE INDEX deployments_job ON deployments (job_id);

-- A rollback job names the deployment whose image it puts back.
ALTER TABLE jobs ADD COLUMN rollback_of INTEGER REFERENCES deployments (id);

CREATE TABLE job_steps (
    job_id      INTEGER NOT NULL REFERENCES jobs (id),
    position    INTEGER NOT NULL,
    name        TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'skipped', 'cancelled')),
    started_at  INTEGER,
    finished_at INTEGER,
    error       TEXT,
    PRIMARY KEY (job_id, position)
) WITHOUT ROWID;
