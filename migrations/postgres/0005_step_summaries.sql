-- What a step's test report said ("212 passed, 2 failed"), beside its state and error.
ALTER TABLE job_steps ADD COLUMN summary TEXT;
