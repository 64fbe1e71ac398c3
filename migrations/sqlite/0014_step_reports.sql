-- A job's step statuses go to the forge as the steps change, not only when the job's state
-- does: each change of a repository step bumps steps_version; the reporter records the
-- version it told (steps_reported). The reporter's index covers both reasons to report.
ALTER TABLE jobs ADD COLUMN steps_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN steps_reported INTEGER NOT NULL DEFAULT 0;
DROP INDEX jobs_unreported;
CREATE INDEX jobs_unreported ON jobs (report_next_at, id)
    WHERE reported_state IS DISTINCT FROM state OR steps_version <> steps_reported;
