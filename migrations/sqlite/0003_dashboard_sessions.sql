-- Dashboard logins, and the indexes its filters use.

-- Only a hash of the session token is stored: a copy of the database logs nobody in.
CREATE TABLE sessions (
    token_hash  TEXT    PRIMARY KEY,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE INDEX deployments_status ON deployments (status, id);
CREATE INDEX deployments_env ON deployments (environment, id);
