-- A pull request's preview environment (`pr-<number>`): which seat of the project's
-- preview ports it holds, what serves there, and what GitHub has been told of it.
-- `version` counts the changes people are told of (the pull request comment, the GitHub
-- deployment going inactive); `told_version` is how many of them were told.
CREATE TABLE previews (
    id                   INTEGER PRIMARY KEY,
    project              TEXT    NOT NULL,
    number               INTEGER NOT NULL CHECK (number > 0),
    seat                 INTEGER NOT NULL CHECK (seat >= 0),
    state                TEXT    NOT NULL CHECK (state IN ('deploying', 'live', 'removing', 'removed')),
    url                  TEXT    NOT NULL,
    sha                  TEXT    CHECK (sha IS NULL OR length(sha) = 40),
    image                TEXT,
    job_id               INTEGER REFERENCES jobs (id),
    removal              TEXT    CHECK (removal IN ('closed', 'merged', 'expired', 'evicted', 'removed', 'failed')),
    created_at           INTEGER NOT NULL,
    pushed_at            INTEGER NOT NULL,
    removed_at           INTEGER,
    version              INTEGER NOT NULL DEFAULT 1,
    told_version         INTEGER NOT NULL DEFAULT 0,
    comment_id           INTEGER,
    github_deployment_id INTEGER,
    tell_attempts        INTEGER NOT NULL DEFAULT 0,
    next_tell_at         INTEGER NOT NULL DEFAULT 0,
    CHECK (state <> 'live' OR (sha IS NOT NULL AND image IS NOT NULL)),
    CHECK (state NOT IN ('removing', 'removed') OR removal IS NOT NULL)
);
CREATE UNIQUE INDEX previews_open_per_pull_request ON previews (project, number) WHERE state <> 'removed';
CREATE UNIQUE INDEX previews_open_per_seat ON previews (project, seat) WHERE state <> 'removed';
CREATE INDEX previews_untold ON previews (next_tell_at) WHERE told_version < version;
