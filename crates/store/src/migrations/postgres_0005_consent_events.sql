-- portico schema v5 (PostgreSQL): consent events and break-the-glass sessions.
--
-- consent_events is append-only: one row per change of a Consent (create, update, revoke,
-- delete), written in the same transaction as the Consent version it describes and signed
-- with the server's Ed25519 audit key over a canonical encoding of the row (see
-- store/src/consent.rs). The Consent resource and its _history stay the projection;
-- `portico consent verify` checks the rows against their signatures and the stored versions.
-- `patient` leads the secondary index: it is the compartment a scale-out would distribute by.

CREATE TABLE consent_events (
    consent_id TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    patient TEXT COLLATE "C" NOT NULL,
    status TEXT COLLATE "C" NOT NULL,
    actor TEXT COLLATE "C" NOT NULL,
    on_behalf_of TEXT COLLATE "C" NOT NULL,
    channel TEXT COLLATE "C" NOT NULL,
    at_ms BIGINT NOT NULL,
    prev_version BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    resource_sha256 TEXT COLLATE "C" NOT NULL,
    key_id TEXT COLLATE "C" NOT NULL,
    signature TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (consent_id, version)
);

CREATE INDEX consent_events_patient ON consent_events (patient, at_ms);

-- A clinician's declared emergency access to one patient: the stated reason and when it
-- began; the gateway applies the newest unexpired one (operator rules, breakGlass.maxMinutes).
CREATE TABLE break_glass (
    id TEXT COLLATE "C" PRIMARY KEY,
    user_id TEXT COLLATE "C" NOT NULL,
    patient TEXT COLLATE "C" NOT NULL,
    reason TEXT COLLATE "C" NOT NULL,
    started_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);

CREATE INDEX break_glass_user ON break_glass (user_id, expires_ms);
