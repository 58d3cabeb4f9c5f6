-- portico schema v6 (SQLite): bulk `$export` jobs and their files.
--
-- A job is claimed by one worker at a time through a lease (`lease_owner`,
-- `lease_expires_ms`); a worker that dies simply lets its lease lapse and another takes
-- the job over from `checkpoint` (JSON: the unit being exported, its paging cursor and
-- every file's byte offset and line count at the last committed batch). Times are Unix
-- milliseconds; lists and parameters are JSON text.
CREATE TABLE export_jobs (
    id TEXT PRIMARY KEY,
    requester_kind TEXT NOT NULL,
    grant_id TEXT,
    user_id TEXT,
    client_id TEXT NOT NULL,
    principal TEXT NOT NULL,
    level TEXT NOT NULL,
    patient TEXT NOT NULL,
    patients TEXT NOT NULL,
    request_url TEXT NOT NULL,
    params TEXT NOT NULL,
    permit_print TEXT NOT NULL,
    state TEXT NOT NULL,
    progress TEXT NOT NULL,
    lease_owner TEXT,
    lease_expires_ms INTEGER NOT NULL,
    checkpoint TEXT NOT NULL,
    transaction_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    error TEXT,
    stop_reason TEXT
);
CREATE INDEX export_jobs_state ON export_jobs (state, lease_expires_ms);
CREATE INDEX export_jobs_client ON export_jobs (client_id, state);
CREATE INDEX export_jobs_patient ON export_jobs (patient, state);

CREATE TABLE export_files (
    job_id TEXT NOT NULL,
    name TEXT NOT NULL,
    res_type TEXT NOT NULL,
    sensitive INTEGER NOT NULL,
    path TEXT NOT NULL,
    line_count INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    sha256 TEXT,
    complete INTEGER NOT NULL,
    PRIMARY KEY (job_id, name)
);
