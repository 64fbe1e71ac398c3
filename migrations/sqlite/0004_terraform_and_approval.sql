-- Terraform plans, approvals and outputs.

-- What the job's terraform plan would do: {"add","change","destroy","resources":[...]}.
ALTER TABLE jobs ADD COLUMN plan_summary TEXT;
-- The answer to the job's request for approval of its plan, while it waits or after.
ALTER TABLE jobs ADD COLUMN approval TEXT CHECK (approval IN ('approved', 'rejected'));

-- Readable artifacts of a job (the plan's text); binary plan files stay on disk.
CREATE TABLE job_artifacts (
    job_id       INTEGER NOT NULL REFERENCES jobs (id),
    name         TEXT    NOT NULL,
    content_type TEXT    NOT NULL,
    content      TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (job_id, name)
) WITHOUT ROWID;

-- Terraform outputs after the apply that put a deployment live (JSON object).
ALTER TABLE deployments ADD COLUMN outputs TEXT;
