-- portico schema v3 (PostgreSQL): identity (users, OAuth clients, devices, portal sessions,
-- authorization requests and codes, grants, tokens, client-assertion jtis) and the
-- resources' own category codings.
--
-- Secrets (session ids, codes, tokens) are stored only as the caller's SHA-256 hex digests.
-- Times are Unix milliseconds; flags are 0/1 integers; lists are JSON text. No foreign
-- keys: every check that must bite on the next request is made by the lookups themselves
-- (see identity/tokens.rs).

CREATE TABLE users (
    id TEXT COLLATE "C" PRIMARY KEY,
    username TEXT COLLATE "C" NOT NULL UNIQUE,
    password_hash TEXT COLLATE "C" NOT NULL,
    role TEXT COLLATE "C" NOT NULL,
    display_name TEXT COLLATE "C" NOT NULL,
    fhir_user TEXT COLLATE "C",
    links TEXT COLLATE "C" NOT NULL,
    totp_secret TEXT COLLATE "C",
    disabled BIGINT NOT NULL,
    failed_logins BIGINT NOT NULL,
    locked_until_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);

CREATE TABLE oauth_clients (
    client_id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL,
    auth_method TEXT COLLATE "C" NOT NULL,
    secret_hash TEXT COLLATE "C",
    redirect_uris TEXT COLLATE "C" NOT NULL,
    scopes TEXT COLLATE "C" NOT NULL,
    jwks TEXT COLLATE "C",
    jwks_url TEXT COLLATE "C",
    disabled BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);

CREATE TABLE devices (
    id TEXT COLLATE "C" PRIMARY KEY,
    user_id TEXT COLLATE "C" NOT NULL,
    client_id TEXT COLLATE "C" NOT NULL,
    user_agent TEXT COLLATE "C" NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    revoked_ms BIGINT,
    wipe BIGINT NOT NULL
);
CREATE INDEX devices_user ON devices (user_id, last_seen_ms);
-- At most one live device per (user, client, user agent): device_touch upserts on it.
CREATE UNIQUE INDEX devices_live ON devices (user_id, client_id, user_agent) WHERE revoked_ms IS NULL;

CREATE TABLE sessions (
    id_hash TEXT COLLATE "C" PRIMARY KEY,
    user_id TEXT COLLATE "C" NOT NULL,
    device_id TEXT COLLATE "C" NOT NULL,
    csrf TEXT COLLATE "C" NOT NULL,
    created_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    stepup_ms BIGINT,
    acting_for TEXT COLLATE "C",
    revoked BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_device ON sessions (device_id);

CREATE TABLE auth_requests (
    id TEXT COLLATE "C" PRIMARY KEY,
    client_id TEXT COLLATE "C" NOT NULL,
    redirect_uri TEXT COLLATE "C" NOT NULL,
    scope TEXT COLLATE "C" NOT NULL,
    state TEXT COLLATE "C",
    code_challenge TEXT COLLATE "C" NOT NULL,
    nonce TEXT COLLATE "C",
    launch_patient TEXT COLLATE "C",
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX auth_requests_expires ON auth_requests (expires_ms);

-- A grant made with an authorization code is `pending` (unusable) until the code's first
-- redemption.
CREATE TABLE grants (
    id TEXT COLLATE "C" PRIMARY KEY,
    user_id TEXT COLLATE "C",
    client_id TEXT COLLATE "C" NOT NULL,
    device_id TEXT COLLATE "C",
    scope TEXT COLLATE "C" NOT NULL,
    patient TEXT COLLATE "C",
    stepup_ms BIGINT,
    auth_time_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    revoked_ms BIGINT,
    revoked_reason TEXT COLLATE "C",
    pending BIGINT NOT NULL
);
CREATE INDEX grants_user ON grants (user_id);
CREATE INDEX grants_client ON grants (client_id);
CREATE INDEX grants_device ON grants (device_id);

CREATE TABLE auth_codes (
    code_hash TEXT COLLATE "C" PRIMARY KEY,
    client_id TEXT COLLATE "C" NOT NULL,
    redirect_uri TEXT COLLATE "C" NOT NULL,
    code_challenge TEXT COLLATE "C" NOT NULL,
    nonce TEXT COLLATE "C",
    grant_id TEXT COLLATE "C" NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    used_ms BIGINT
);
CREATE INDEX auth_codes_client ON auth_codes (client_id);

CREATE TABLE access_tokens (
    token_hash TEXT COLLATE "C" PRIMARY KEY,
    grant_id TEXT COLLATE "C" NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX access_tokens_grant ON access_tokens (grant_id);
CREATE INDEX access_tokens_expires ON access_tokens (expires_ms);

CREATE TABLE refresh_tokens (
    token_hash TEXT COLLATE "C" PRIMARY KEY,
    grant_id TEXT COLLATE "C" NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    used_ms BIGINT
);
CREATE INDEX refresh_tokens_grant ON refresh_tokens (grant_id);

CREATE TABLE client_jtis (
    client_id TEXT COLLATE "C" NOT NULL,
    jti TEXT COLLATE "C" NOT NULL,
    expires_ms BIGINT NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX client_jtis_expires ON client_jtis (expires_ms);

-- The resource's own `category` codings (`system|code`), for SMART scopes narrowed with
-- `?category=`: '' when it has none, otherwise every coding followed by a newline and the
-- list preceded by one ("\na|b\nc|d\n"), with `%` and newline inside a coding written
-- `%25` and `%0A` (see store/src/search/limits.rs).
ALTER TABLE resources ADD COLUMN category_codes TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE resource_versions ADD COLUMN category_codes TEXT COLLATE "C" NOT NULL DEFAULT '';
