-- A pull request from a fork runs nothing until an admin approves it. Its verify job is
-- queued in state 'awaiting_approval' with held_for = 'fork' and no lease: no worker
-- claims it. Approval moves it to 'queued' (held_for cleared, approval 'approved');
-- rejection or a closed pull request cancels it.
ALTER TABLE jobs ADD COLUMN held_for TEXT CHECK (held_for IN ('fork'));
