-- What a job's commit is compared with to know which files it changed: a push's `before`,
-- a pull request's base (its commit and branch).
ALTER TABLE jobs ADD COLUMN base_sha TEXT;
ALTER TABLE jobs ADD COLUMN base_branch TEXT;
