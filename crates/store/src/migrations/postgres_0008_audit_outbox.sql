-- portico schema v8 (PostgreSQL): the outbox of a write's audit records.
--
-- Used by SQLite file stores only, which keep the audit log in a file of their own and so
-- cannot commit a write and its records in one atomic transaction (see the SQLite
-- migration). On PostgreSQL a write appends its records to the chain in its own
-- transaction, and this table and column stay empty and zero; they exist so that both
-- backends have one schema and one verify.
CREATE TABLE audit_outbox (
    id BIGSERIAL PRIMARY KEY,
    ts BIGINT NOT NULL,
    record TEXT NOT NULL
);

ALTER TABLE audit_head ADD COLUMN outbox_done BIGINT NOT NULL DEFAULT 0;
