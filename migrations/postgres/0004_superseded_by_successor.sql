-- A superseded deploy names the deploy that replaced it when it arrived, as on SQLite,
-- however ingest grouped deliveries into transactions. 0002 pointed every deploy a
-- statement superseded at the newest one queued by that statement, so the same pushes left
-- different records depending on whether they were committed together or apart (across
-- statements it already named the successor). What names the successor is a fact of the
-- moment it was superseded, never rewritten; following the links reaches the one that runs.
--
-- Still once per statement and under the environments' locks (0002): a statement's queued
-- deploys are taken in id order (the order they were drawn from the sequence in, which is
-- the order of the batch), each as if inserted alone, so that the statement's later rows do
-- not count yet when an earlier one arrives.
CREATE OR REPLACE FUNCTION jobs_supersede_older_deploys() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    arrived RECORD;
    newest BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock(1701738089, hashtext(environments.project || '/' || environments.environment))
    FROM (SELECT DISTINCT project, environment FROM inserted WHERE kind = 'deploy' AND state = 'queued'
          ORDER BY project, environment) AS environments;
    FOR arrived IN
        SELECT id, project, environment, created_at FROM inserted
        WHERE kind = 'deploy' AND state = 'queued'
        ORDER BY id
    LOOP
        SELECT queued.id INTO newest FROM jobs AS queued
        WHERE queued.project = arrived.project AND queued.environment = arrived.environment
          AND queued.kind = 'deploy' AND queued.state = 'queued'
          AND NOT EXISTS (SELECT 1 FROM inserted AS later WHERE later.id = queued.id AND later.id > arrived.id)
        ORDER BY queued.ordering_key DESC, queued.id DESC
        LIMIT 1;
        UPDATE jobs
        SET state = 'superseded', superseded_by = newest, finished_at = arrived.created_at,
            updated_at = arrived.created_at
        WHERE jobs.project = arrived.project AND jobs.environment = arrived.environment
          AND jobs.kind = 'deploy' AND jobs.state = 'queued' AND jobs.id <> newest
          AND NOT EXISTS (SELECT 1 FROM inserted AS later WHERE later.id = jobs.id AND later.id > arrived.id);
    END LOOP;
    RETURN NULL;
END;
$$;
