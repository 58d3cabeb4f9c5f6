-- portico schema v2 (SQLite): the audit trail. Records are appended under the single
-- `audit_head` row (BEGIN IMMEDIATE serialises writers), so the chain never forks.
-- `record` holds the canonical text the hash covers; the other columns of `audit_log`
-- and the rows of `audit_subjects` are indexes derived from it, which `audit verify`
-- checks against the record.
CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    interaction TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    actor TEXT NOT NULL,
    client TEXT NOT NULL,
    record TEXT NOT NULL,
    hash TEXT NOT NULL,
    mac TEXT NOT NULL
);
CREATE INDEX audit_log_ts ON audit_log (ts, seq);
CREATE INDEX audit_log_actor ON audit_log (actor, seq);

-- One row per (patient, data category) a record concerns: the patient's access log and
-- AuditEvent?patient= are served from here.
CREATE TABLE audit_subjects (
    seq INTEGER NOT NULL,
    patient TEXT NOT NULL,
    category TEXT NOT NULL,
    PRIMARY KEY (patient, category, seq)
);
CREATE INDEX audit_subjects_seq ON audit_subjects (seq, patient, category);

-- The chain's head: the last record's number and hash (32 zero bytes before the first).
CREATE TABLE audit_head (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL, hash TEXT NOT NULL);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Signed heads and pruning checkpoints (kind 'head' or 'checkpoint').
CREATE TABLE audit_heads (
    kind TEXT NOT NULL,
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    signed_ms INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (kind, seq)
);
