-- What GitHub has been told about each job: the reporter sends a job's current state
-- until reported_state catches up with state, retrying with backoff.

ALTER TABLE jobs ADD COLUMN reported_state TEXT;
ALTER TABLE jobs ADD COLUMN report_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN report_next_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN report_error TEXT;
-- The GitHub deployment a deploy job reports to.
ALTER TABLE jobs ADD COLUMN github_deployment_id INTEGER;

-- Jobs from before reporting existed are not reported after the fact.
UPDATE jobs SET reported_state = state;

CREATE INDEX jobs_unreported ON jobs (report_next_at, id) WHERE reported_state IS NOT state;
