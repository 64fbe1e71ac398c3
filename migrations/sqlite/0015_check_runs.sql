-- A job reported as a GitHub check run: the check run's id, and how many of its
-- annotations (one per failing test) GitHub has taken, since it takes 50 per request.
ALTER TABLE jobs ADD COLUMN check_run_id INTEGER;
ALTER TABLE jobs ADD COLUMN check_annotations_sent INTEGER NOT NULL DEFAULT 0;
-- The failing tests of a step's report (a JSON list), for the check run's annotations.
ALTER TABLE job_steps ADD COLUMN failures TEXT;
