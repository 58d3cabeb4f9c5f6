-- portico schema v5 (SQLite): consent events and break-the-glass sessions.
--
-- consent_events is append-only: one row per change of a Consent (create, update, revoke,
-- delete), written in the same transaction as the Consent version it describes and signed
-- with the server's Ed25519 audit key over a canonical encoding of the row (see
-- store/src/consent.rs). The Consent resource and its _history stay the projection;
-- `portico consent verify` checks the rows against their signatures and the stored versions.
-- `patient` leads the secondary index: it is the compartment a scale-out would distribute by.

CREATE TABLE consent_events (
    consent_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    kind TEXT NOT NULL,
    patient TEXT NOT NULL,
    status TEXT NOT NULL,
    actor TEXT NOT NULL,
    on_behalf_of TEXT NOT NULL,
    channel TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    prev_version INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    resource_sha256 TEXT NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (consent_id, version)
);

CREATE INDEX consent_events_patient ON consent_events (patient, at_ms);

-- A clinician's declared emergency access to one patient: the stated reason and when it
-- began; the gateway applies the newest unexpired one (operator rules, breakGlass.maxMinutes).
CREATE TABLE break_glass (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    patient TEXT NOT NULL,
    reason TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);

CREATE INDEX break_glass_user ON break_glass (user_id, expires_ms);
