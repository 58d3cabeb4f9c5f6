-- portico schema v6 (PostgreSQL): bulk `$export` jobs and their files.
--
-- A job is claimed by one worker at a time through a lease (`lease_owner`,
-- `lease_expires_ms`); a worker that dies simply lets its lease lapse and another takes
-- the job over from `checkpoint` (JSON: the unit being exported, its paging cursor and
-- every file's byte offset and line count at the last committed batch). Times are Unix
-- milliseconds; lists and parameters are JSON text.
CREATE TABLE export_jobs (
    id TEXT COLLATE "C" PRIMARY KEY,
    requester_kind TEXT COLLATE "C" NOT NULL,
    grant_id TEXT COLLATE "C",
    user_id TEXT COLLATE "C",
    client_id TEXT COLLATE "C" NOT NULL,
    principal TEXT COLLATE "C" NOT NULL,
    level TEXT COLLATE "C" NOT NULL,
    patient TEXT COLLATE "C" NOT NULL,
    patients TEXT COLLATE "C" NOT NULL,
    request_url TEXT COLLATE "C" NOT NULL,
    params TEXT COLLATE "C" NOT NULL,
    permit_print TEXT COLLATE "C" NOT NULL,
    state TEXT COLLATE "C" NOT NULL,
    progress TEXT COLLATE "C" NOT NULL,
    lease_owner TEXT COLLATE "C",
    lease_expires_ms BIGINT NOT NULL,
    checkpoint TEXT COLLATE "C" NOT NULL,
    transaction_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    error TEXT COLLATE "C",
    stop_reason TEXT COLLATE "C"
);
CREATE INDEX export_jobs_state ON export_jobs (state, lease_expires_ms);
CREATE INDEX export_jobs_client ON export_jobs (client_id, state);
CREATE INDEX export_jobs_patient ON export_jobs (patient, state);

CREATE TABLE export_files (
    job_id TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    res_type TEXT COLLATE "C" NOT NULL,
    sensitive BIGINT NOT NULL,
    path TEXT COLLATE "C" NOT NULL,
    line_count BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    sha256 TEXT COLLATE "C",
    complete BIGINT NOT NULL,
    PRIMARY KEY (job_id, name)
);
