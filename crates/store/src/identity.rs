//! Identity storage: users, OAuth clients, devices, web sessions, pending authorization
//! requests, authorization codes, grants (one per authorization; a refresh-token family),
//! refresh and access tokens, client-assertion `jti`s. Secrets (codes, tokens, session ids)
//! are stored only as SHA-256 hex digests computed by the caller; lookups go by digest, so
//! comparison never touches the secret.
//!
//! Every check that must bite "on the next request in every server process" is made in the
//! database at lookup time: [`IdentityStore::access_lookup`] joins the token to its grant,
//! user and device and refuses anything revoked, disabled or expired.

mod clients;
mod devices;
mod imp;
mod jti;
mod oauth;
mod rows;
mod sessions;
mod tokens;
mod users;

use crate::StoreError;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// A patient a user may act for, and through which link (e.g. `RelatedPerson/rp-1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientLink {
    pub patient: String,
    /// The FHIR resource that establishes the link (RelatedPerson for caregivers); `None`
    /// for a patient's own record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// Display name of the patient, for choosers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    /// Stable id (uuid).
    pub id: String,
    /// Login name, unique (case-sensitive as stored; callers lowercase).
    pub username: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// `patient`, `caregiver`, `clinician` or `admin`.
    pub role: String,
    pub display_name: String,
    /// `Patient/x`, `RelatedPerson/y`, `Practitioner/z` — the `fhirUser` claim.
    pub fhir_user: Option<String>,
    /// Patients the user may act for (a patient: their own; a caregiver: theirs).
    pub links: Vec<PatientLink>,
    /// Base32 TOTP secret once enrolled.
    pub totp_secret: Option<String>,
    pub disabled: bool,
    /// Consecutive failed logins.
    pub failed_logins: i64,
    /// Unix ms until which logins are refused (0: not locked).
    pub locked_until_ms: i64,
    pub created_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRow {
    pub client_id: String,
    pub name: String,
    /// `none` (public), `client_secret_basic`, `client_secret_post` or `private_key_jwt`.
    pub auth_method: String,
    /// SHA-256 hex of the client secret (confidential clients with a secret).
    pub secret_hash: Option<String>,
    pub redirect_uris: Vec<String>,
    /// Space-separated scopes the client may be granted.
    pub scopes: String,
    /// A JWK Set (JSON text) for `private_key_jwt`.
    pub jwks: Option<String>,
    /// Or a URL to fetch it from.
    pub jwks_url: Option<String>,
    pub disabled: bool,
    pub created_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    pub id: String,
    pub user_id: String,
    /// Client the device used (`portal` for the portal's own pages).
    pub client_id: String,
    pub user_agent: String,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub revoked_ms: Option<i64>,
    /// Marked for remote wipe (set when revoked).
    pub wipe: bool,
}

/// A portal web session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// SHA-256 hex of the session cookie value.
    pub id_hash: String,
    pub user_id: String,
    pub device_id: String,
    /// The session's CSRF token (not secret from the page, secret from other sites).
    pub csrf: String,
    pub created_ms: i64,
    pub last_seen_ms: i64,
    pub stepup_ms: Option<i64>,
    /// Patient the session acts for (caregivers choose).
    pub acting_for: Option<String>,
    pub revoked: bool,
}

/// An authorization request between `/oauth2/authorize` and the user's approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequestRow {
    /// Random id carried in the login and approval forms.
    pub id: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: Option<String>,
    pub code_challenge: String,
    pub nonce: Option<String>,
    /// EHR launch: the opaque `launch` value and the patient it stands for.
    pub launch_patient: Option<String>,
    pub created_ms: i64,
    pub expires_ms: i64,
}

/// An issued authorization code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRow {
    pub code_hash: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub nonce: Option<String>,
    /// The grant the code will activate (created with the code, unusable until redeemed).
    pub grant_id: String,
    pub created_ms: i64,
    pub expires_ms: i64,
}

/// One authorization: who, which app, which scopes, for which patient. A refresh-token
/// family belongs to one grant; revoking the grant ends every token of the family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRow {
    pub id: String,
    /// `None` for backend services (`client_credentials`).
    pub user_id: Option<String>,
    pub client_id: String,
    pub device_id: Option<String>,
    /// Granted scopes (space-separated).
    pub scope: String,
    /// Patient context (`patient` in the token response).
    pub patient: Option<String>,
    pub stepup_ms: Option<i64>,
    /// When the user authenticated for this grant.
    pub auth_time_ms: i64,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
    pub revoked_reason: Option<String>,
}

/// What an access token stands for, checked live (grant, user, device, expiry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAuth {
    pub grant: GrantRow,
    /// The user, when the grant has one.
    pub user: Option<UserRow>,
    pub expires_ms: i64,
}

/// Result of redeeming an authorization code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeemed {
    /// First use: the code's row (the caller checks client, redirect URI, PKCE).
    Fresh(CodeRow),
    /// The code had been used: the grant it issued has now been revoked.
    Replayed,
    /// Unknown or expired.
    Invalid,
}

/// Result of presenting a refresh token.
// The grant is returned by value on purpose: one short-lived value per token request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotated {
    /// The token was live and is now used; the new refresh token is stored. Its grant.
    Rotated(GrantRow),
    /// Already used, but within the grace period (a concurrent refresh): refused, the
    /// family is kept.
    Concurrent,
    /// Already used outside the grace period: the whole family (grant) has been revoked.
    Reused,
    /// Unknown, expired or its grant is revoked.
    Invalid,
}

/// Storage of identities, sessions and OAuth state.
#[async_trait]
pub trait IdentityStore: Send + Sync {
    // --- users
    /// Create a user; `StoreError::Conflict` when the username is taken.
    async fn user_create(&self, user: &UserRow) -> Result<(), StoreError>;
    async fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, StoreError>;
    async fn user_by_username(&self, username: &str) -> Result<Option<UserRow>, StoreError>;
    async fn users_list(&self) -> Result<Vec<UserRow>, StoreError>;
    /// Disable or re-enable; disabling revokes every session and grant of the user.
    async fn user_set_disabled(&self, id: &str, disabled: bool, now_ms: i64) -> Result<bool, StoreError>;
    /// Set a new password hash and revoke the user's sessions (except `keep_session`, the
    /// session that made the change) and every grant.
    async fn user_set_password(
        &self,
        id: &str,
        password_hash: &str,
        keep_session: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    async fn user_set_totp(&self, id: &str, secret: Option<&str>) -> Result<(), StoreError>;
    /// Count a failed login; once `threshold` consecutive failures are reached, lock until
    /// `now_ms + lock_ms`. Returns the updated row.
    async fn user_login_failed(
        &self,
        id: &str,
        now_ms: i64,
        threshold: i64,
        lock_ms: i64,
    ) -> Result<Option<UserRow>, StoreError>;
    async fn user_login_succeeded(&self, id: &str) -> Result<(), StoreError>;

    // --- clients
    /// Create or replace a client registration.
    async fn client_put(&self, client: &ClientRow) -> Result<(), StoreError>;
    async fn client_get(&self, client_id: &str) -> Result<Option<ClientRow>, StoreError>;
    async fn clients_list(&self) -> Result<Vec<ClientRow>, StoreError>;
    /// Remove a client and revoke every grant it holds; false when absent.
    async fn client_remove(&self, client_id: &str, now_ms: i64) -> Result<bool, StoreError>;

    // --- devices
    /// The device for (user, client, user agent): the existing live one (last seen updated)
    /// or a new one. Returns its id.
    async fn device_touch(
        &self,
        user_id: &str,
        client_id: &str,
        user_agent: &str,
        now_ms: i64,
    ) -> Result<String, StoreError>;
    async fn devices_list(&self, user_id: &str) -> Result<Vec<DeviceRow>, StoreError>;
    /// Revoke one of the user's devices: its sessions and grants end, it is marked for wipe.
    /// False when the user has no such device.
    async fn device_revoke(&self, user_id: &str, device_id: &str, now_ms: i64) -> Result<bool, StoreError>;

    // --- web sessions
    async fn session_create(&self, session: &SessionRow) -> Result<(), StoreError>;
    /// A live session: not revoked, user enabled, device not revoked, idle and absolute
    /// limits met (`last_seen_ms >= now - idle_ms`, `created_ms >= now - absolute_ms`); its
    /// `last_seen_ms` is advanced to `now_ms`.
    async fn session_get(
        &self,
        id_hash: &str,
        now_ms: i64,
        idle_ms: i64,
        absolute_ms: i64,
    ) -> Result<Option<SessionRow>, StoreError>;
    async fn session_set_stepup(&self, id_hash: &str, at_ms: i64) -> Result<(), StoreError>;
    async fn session_set_acting_for(&self, id_hash: &str, patient: Option<&str>) -> Result<(), StoreError>;
    async fn session_revoke(&self, id_hash: &str) -> Result<(), StoreError>;

    // --- authorization requests and codes
    async fn auth_request_put(&self, req: &AuthRequestRow) -> Result<(), StoreError>;
    /// A request that has not expired.
    async fn auth_request_get(&self, id: &str, now_ms: i64) -> Result<Option<AuthRequestRow>, StoreError>;
    async fn auth_request_delete(&self, id: &str) -> Result<(), StoreError>;
    /// Store a code together with the (not yet active) grant it will activate.
    async fn code_put(&self, code: &CodeRow, grant: &GrantRow) -> Result<(), StoreError>;
    /// Mark the code used, atomically: exactly one caller ever gets `Fresh`. A second use
    /// revokes the grant (and so every token) the first use issued.
    async fn code_redeem(&self, code_hash: &str, now_ms: i64) -> Result<Redeemed, StoreError>;

    // --- grants and tokens
    /// Create a grant directly (client_credentials, `portico token issue`).
    async fn grant_create(&self, grant: &GrantRow) -> Result<(), StoreError>;
    async fn grant_get(&self, id: &str) -> Result<Option<GrantRow>, StoreError>;
    /// The user's live grants (their connected apps).
    async fn grants_for_user(&self, user_id: &str) -> Result<Vec<GrantRow>, StoreError>;
    /// Revoke a grant: every access and refresh token of it stops working. False when absent
    /// or already revoked.
    async fn grant_revoke(&self, id: &str, reason: &str, now_ms: i64) -> Result<bool, StoreError>;
    async fn access_put(&self, token_hash: &str, grant_id: &str, expires_ms: i64) -> Result<(), StoreError>;
    /// The live grant (and user) behind an access token, or None.
    async fn access_lookup(&self, token_hash: &str, now_ms: i64) -> Result<Option<TokenAuth>, StoreError>;
    async fn refresh_put(
        &self,
        token_hash: &str,
        grant_id: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<(), StoreError>;
    /// Use a refresh token and store its successor, atomically (concurrent refreshes rotate
    /// once). A reuse later than `grace_ms` after the first use revokes the family.
    async fn refresh_rotate(
        &self,
        old_hash: &str,
        new_hash: &str,
        now_ms: i64,
        new_expires_ms: i64,
        grace_ms: i64,
    ) -> Result<Rotated, StoreError>;
    /// The grant behind a refresh token (live or not), for revocation and introspection:
    /// `(grant, the token's expiry in Unix ms, whether the token has been used)`.
    async fn refresh_grant(&self, token_hash: &str) -> Result<Option<(GrantRow, i64, bool)>, StoreError>;
    /// Forget one access token (RFC 7009 revocation of an access token).
    async fn access_delete(&self, token_hash: &str) -> Result<(), StoreError>;

    // --- client assertions
    /// Remember a `private_key_jwt` assertion's `jti` until `expires_ms`; false when the
    /// same client already used it (a replay).
    async fn jti_claim(&self, client_id: &str, jti: &str, expires_ms: i64, now_ms: i64) -> Result<bool, StoreError>;
}
