-- The reconciler asks whether a commit's push was received at all (a delivery it ignored,
-- `[skip ci]` say, is not a missed one).
CREATE INDEX deliveries_project_sha ON deliveries (project, sha);
