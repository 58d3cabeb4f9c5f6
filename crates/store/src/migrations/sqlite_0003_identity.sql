-- portico schema v3 (SQLite): identity (users, OAuth clients, devices, portal sessions,
-- authorization requests and codes, grants, tokens, client-assertion jtis) and the
-- resources' own category codings.
--
-- Secrets (session ids, codes, tokens) are stored only as the caller's SHA-256 hex digests.
-- Times are Unix milliseconds; flags are 0/1 integers; lists are JSON text. No foreign
-- keys: every check that must bite on the next request is made by the lookups themselves
-- (see identity/tokens.rs).

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    display_name TEXT NOT NULL,
    fhir_user TEXT,
    links TEXT NOT NULL,
    totp_secret TEXT,
    disabled INTEGER NOT NULL,
    failed_logins INTEGER NOT NULL,
    locked_until_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);

CREATE TABLE oauth_clients (
    client_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    auth_method TEXT NOT NULL,
    secret_hash TEXT,
    redirect_uris TEXT NOT NULL,
    scopes TEXT NOT NULL,
    jwks TEXT,
    jwks_url TEXT,
    disabled INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);

CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    revoked_ms INTEGER,
    wipe INTEGER NOT NULL
);
CREATE INDEX devices_user ON devices (user_id, last_seen_ms);
-- At most one live device per (user, client, user agent): device_touch upserts on it.
CREATE UNIQUE INDEX devices_live ON devices (user_id, client_id, user_agent) WHERE revoked_ms IS NULL;

CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    stepup_ms INTEGER,
    acting_for TEXT,
    revoked INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_device ON sessions (device_id);

CREATE TABLE auth_requests (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    scope TEXT NOT NULL,
    state TEXT,
    code_challenge TEXT NOT NULL,
    nonce TEXT,
    launch_patient TEXT,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX auth_requests_expires ON auth_requests (expires_ms);

-- A grant made with an authorization code is `pending` (unusable) until the code's first
-- redemption.
CREATE TABLE grants (
    id TEXT PRIMARY KEY,
    user_id TEXT,
    client_id TEXT NOT NULL,
    device_id TEXT,
    scope TEXT NOT NULL,
    patient TEXT,
    stepup_ms INTEGER,
    auth_time_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER,
    revoked_reason TEXT,
    pending INTEGER NOT NULL
);
CREATE INDEX grants_user ON grants (user_id);
CREATE INDEX grants_client ON grants (client_id);
CREATE INDEX grants_device ON grants (device_id);

CREATE TABLE auth_codes (
    code_hash TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    nonce TEXT,
    grant_id TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    used_ms INTEGER
);
CREATE INDEX auth_codes_client ON auth_codes (client_id);

CREATE TABLE access_tokens (
    token_hash TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX access_tokens_grant ON access_tokens (grant_id);
CREATE INDEX access_tokens_expires ON access_tokens (expires_ms);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    used_ms INTEGER
);
CREATE INDEX refresh_tokens_grant ON refresh_tokens (grant_id);

CREATE TABLE client_jtis (
    client_id TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX client_jtis_expires ON client_jtis (expires_ms);

-- The resource's own `category` codings (`system|code`), for SMART scopes narrowed with
-- `?category=`: '' when it has none, otherwise every coding followed by a newline and the
-- list preceded by one ("\na|b\nc|d\n"), with `%` and newline inside a coding written
-- `%25` and `%0A` (see store/src/search/limits.rs).
ALTER TABLE resources ADD COLUMN category_codes TEXT NOT NULL DEFAULT '';
ALTER TABLE resource_versions ADD COLUMN category_codes TEXT NOT NULL DEFAULT '';
