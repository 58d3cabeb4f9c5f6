-- portico schema v8 (SQLite): the outbox of a write's audit records.
--
-- A SQLite file store keeps the audit log in a file of its own (`audit_file.rs`), and a
-- transaction across two WAL files is atomic per file only. A write therefore commits its
-- records here, in the clinical file, in the write's own transaction; the appender chains
-- them into the audit log and, in the same transaction, sets `audit_head.outbox_done` to the
-- last id it chained; the next write deletes the rows up to it. AUTOINCREMENT: ids are
-- never reused, so `id > outbox_done` is exactly the rows not chained yet. `ts` (the
-- record's time, ms) lets `audit verify` name records that have waited too long.
CREATE TABLE audit_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts INTEGER NOT NULL,
    record TEXT NOT NULL
);

ALTER TABLE audit_head ADD COLUMN outbox_done INTEGER NOT NULL DEFAULT 0;
