-- portico schema v7 (SQLite): the patient index of the audit log in two parts.
--
-- An append used to add its rows to `audit_subjects`, a B-tree ordered by patient, so each
-- commit rewrote about one page of it per patient it touched (the main cost of auditing a
-- read). Appends now add their rows to `audit_subjects_recent`, ordered by record number,
-- so an append only touches its last pages; the append that crosses a multiple of
-- `AUDIT_INDEX_MERGE` records moves the rows up to that multiple into `audit_subjects`,
-- sorted, in the same transaction (each page of the patient index is then written once per
-- merge). Every reader reads both parts through `audit_subject_rows`.
CREATE TABLE audit_subjects_recent (
    seq INTEGER NOT NULL,
    patient TEXT NOT NULL,
    category TEXT NOT NULL,
    PRIMARY KEY (seq, patient, category)
) WITHOUT ROWID;

CREATE VIEW audit_subject_rows AS
    SELECT seq, patient, category FROM audit_subjects
    UNION ALL
    SELECT seq, patient, category FROM audit_subjects_recent;
