-- portico schema v2 (PostgreSQL): the audit trail. Every append locks the single
-- `audit_head` row (`SELECT … FOR UPDATE`) for the rest of its transaction, so appends from
-- any number of server processes form one chain and never fork. `record` holds the
-- canonical text the hash covers; the other columns of `audit_log` and the rows of
-- `audit_subjects` are indexes derived from it, which `audit verify` checks.
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    ts BIGINT NOT NULL,
    interaction TEXT COLLATE "C" NOT NULL,
    action TEXT COLLATE "C" NOT NULL,
    outcome TEXT COLLATE "C" NOT NULL,
    actor TEXT COLLATE "C" NOT NULL,
    client TEXT COLLATE "C" NOT NULL,
    record TEXT COLLATE "C" NOT NULL,
    hash TEXT COLLATE "C" NOT NULL,
    mac TEXT COLLATE "C" NOT NULL
);
CREATE INDEX audit_log_ts ON audit_log (ts, seq);
CREATE INDEX audit_log_actor ON audit_log (actor, seq);

-- One row per (patient, data category) a record concerns: the patient's access log and
-- AuditEvent?patient= are served from here.
CREATE TABLE audit_subjects (
    seq BIGINT NOT NULL,
    patient TEXT COLLATE "C" NOT NULL,
    category TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (patient, category, seq)
);
CREATE INDEX audit_subjects_seq ON audit_subjects (seq, patient, category);

-- The chain's head: the last record's number and hash (32 zero bytes before the first).
CREATE TABLE audit_head (id BIGINT PRIMARY KEY, seq BIGINT NOT NULL, hash TEXT COLLATE "C" NOT NULL);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Signed heads and pruning checkpoints (kind 'head' or 'checkpoint').
CREATE TABLE audit_heads (
    kind TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    hash TEXT COLLATE "C" NOT NULL,
    signed_ms BIGINT NOT NULL,
    key_id TEXT COLLATE "C" NOT NULL,
    signature TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (kind, seq)
);
