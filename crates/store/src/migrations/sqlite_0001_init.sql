-- portico schema v1 (SQLite). Every clinical table carries the patient compartment id
-- (`compartment`, '' when the resource is in no patient's compartment) so that the same
-- schema on PostgreSQL can be distributed by it.
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO counters (name, value) VALUES ('change_seq', 0);

CREATE TABLE resources (
    res_type TEXT NOT NULL,
    id TEXT NOT NULL,
    version_id INTEGER NOT NULL,
    last_updated TEXT NOT NULL,
    lu_ms INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    compartment TEXT NOT NULL,
    compartments TEXT NOT NULL,
    category TEXT NOT NULL,
    labels TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (res_type, id)
);
CREATE INDEX resources_type_seq ON resources (res_type, seq);
CREATE INDEX resources_type_lu ON resources (res_type, lu_ms);
CREATE INDEX resources_seq ON resources (seq);

CREATE TABLE resource_versions (
    res_type TEXT NOT NULL,
    id TEXT NOT NULL,
    version_id INTEGER NOT NULL,
    last_updated TEXT NOT NULL,
    lu_ms INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    compartment TEXT NOT NULL,
    compartments TEXT NOT NULL,
    category TEXT NOT NULL,
    labels TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (res_type, id, version_id)
);
CREATE INDEX resource_versions_seq ON resource_versions (seq);
CREATE INDEX resource_versions_type_seq ON resource_versions (res_type, seq);

-- Patient compartment membership of current versions (a resource may sit in several).
CREATE TABLE idx_compartment (res_type TEXT NOT NULL, id TEXT NOT NULL, patient TEXT NOT NULL, compartment TEXT NOT NULL);
CREATE INDEX idx_compartment_patient ON idx_compartment (patient, res_type, id);
CREATE INDEX idx_compartment_res ON idx_compartment (res_type, id);

CREATE TABLE idx_token (res_type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, system TEXT, code TEXT NOT NULL, text TEXT, compartment TEXT NOT NULL);
CREATE INDEX idx_token_lookup ON idx_token (res_type, param, code, id);
CREATE INDEX idx_token_res ON idx_token (res_type, id);

CREATE TABLE idx_string (res_type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, norm TEXT NOT NULL, exact TEXT NOT NULL, compartment TEXT NOT NULL);
CREATE INDEX idx_string_lookup ON idx_string (res_type, param, norm, id);
CREATE INDEX idx_string_res ON idx_string (res_type, id);

CREATE TABLE idx_date (res_type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL, compartment TEXT NOT NULL);
CREATE INDEX idx_date_lookup ON idx_date (res_type, param, lo, id);
CREATE INDEX idx_date_res ON idx_date (res_type, id);

CREATE TABLE idx_reference (res_type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, ref_type TEXT, ref_id TEXT, url TEXT NOT NULL, compartment TEXT NOT NULL);
CREATE INDEX idx_reference_lookup ON idx_reference (res_type, param, ref_id, id);
CREATE INDEX idx_reference_target ON idx_reference (ref_type, ref_id);
CREATE INDEX idx_reference_res ON idx_reference (res_type, id);

CREATE TABLE idx_number (res_type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, value REAL NOT NULL, compartment TEXT NOT NULL);
CREATE INDEX idx_number_lookup ON idx_number (res_type, param, value, id);
CREATE INDEX idx_number_res ON idx_number (res_type, id);

CREATE TABLE idx_quantity (res_type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, value REAL NOT NULL, system TEXT, code TEXT, compartment TEXT NOT NULL);
CREATE INDEX idx_quantity_lookup ON idx_quantity (res_type, param, value, id);
CREATE INDEX idx_quantity_res ON idx_quantity (res_type, id);

CREATE TABLE idx_uri (res_type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, value TEXT NOT NULL, compartment TEXT NOT NULL);
CREATE INDEX idx_uri_lookup ON idx_uri (res_type, param, value, id);
CREATE INDEX idx_uri_res ON idx_uri (res_type, id);

-- Rows that serialise conditional creates with the same criteria (see write.rs).
CREATE TABLE conditional_locks (res_type TEXT NOT NULL, criteria TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (res_type, criteria));
