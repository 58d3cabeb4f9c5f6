//! Grants and tokens: the authorization-code exchange, refresh with rotation, client
//! credentials, operator-issued tokens, revocation and introspection.
//!
//! Access tokens are opaque random strings; the database keeps only their SHA-256, and
//! every request looks the token up joined to its grant, user and device, so a revocation
//! of any of them bites on the next request in every server process.

use super::clients::ClientCredentials;
use super::{AuthError, Identity, now_ms};
use portico_identity::{pkce, secret};
use portico_policy::ScopeSet;
use portico_policy::scopes::Scope;
use portico_store::identity::{ClientRow, GrantRow, Redeemed, Rotated, UserRow};
use serde::Serialize;
use serde_json::json;

/// The token endpoint's answer (RFC 6749 §5.1 plus SMART's launch context).
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    #[serde(rename = "fhirUser", skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub need_patient_banner: bool,
}

/// Whether the token response carries a refresh token, and which.
enum Refresh {
    None,
    /// A new family member already stored (rotation).
    Given(String),
    /// Make and store a new one.
    New,
}

impl Identity {
    /// Issue an access token (and, as the scopes ask, a refresh and an id token) for a grant.
    async fn issue(
        &self,
        grant: &GrantRow,
        user: Option<&UserRow>,
        issuer: &str,
        nonce: Option<&str>,
        refresh: Refresh,
    ) -> Result<TokenResponse, AuthError> {
        let now = now_ms();
        let access = secret::random_token();
        let ttl = self.cfg.access_token_secs;
        self.store.access_put(&secret::digest(&access), &grant.id, now + ttl * 1000).await?;
        let scopes = ScopeSet::parse(&grant.scope).unwrap_or_default();
        let refresh_token = match refresh {
            Refresh::None => None,
            Refresh::Given(t) => Some(t),
            Refresh::New => {
                let t = secret::random_token();
                self.store.refresh_put(&secret::digest(&t), &grant.id, now, now + self.refresh_ttl_ms(&scopes)).await?;
                Some(t)
            }
        };
        let fhir_user = user.and_then(|u| u.fhir_user.as_ref()).map(|r| format!("{issuer}/{r}"));
        let id_token = match user {
            Some(u) if scopes.has(&Scope::OpenId) => {
                let mut claims = json!({
                    "iss": issuer,
                    "sub": u.id,
                    "aud": grant.client_id,
                    "iat": now / 1000,
                    "exp": now / 1000 + ttl,
                    "auth_time": grant.auth_time_ms / 1000,
                    "name": u.display_name,
                    "preferred_username": u.username,
                });
                if scopes.has(&Scope::FhirUser) {
                    claims["fhirUser"] = json!(fhir_user);
                }
                if let Some(n) = nonce {
                    claims["nonce"] = json!(n);
                }
                if let Some(at) = grant.stepup_ms {
                    claims["acr"] = json!("urn:portico:acr:totp");
                    claims["amr"] = json!(["pwd", "otp"]);
                    claims["stepup_time"] = json!(at / 1000);
                } else {
                    claims["amr"] = json!(["pwd"]);
                }
                Some(self.keys.sign(&claims).map_err(|e| AuthError::Internal(e.to_string()))?)
            }
            _ => None,
        };
        Ok(TokenResponse {
            access_token: access,
            token_type: "Bearer",
            expires_in: ttl,
            scope: grant.scope.clone(),
            refresh_token,
            id_token,
            patient: grant.patient.clone(),
            fhir_user: fhir_user.filter(|_| scopes.has(&Scope::FhirUser)),
            need_patient_banner: grant.patient.is_some() && user.is_some_and(|u| u.role != "patient"),
        })
    }

    fn refresh_ttl_ms(&self, scopes: &ScopeSet) -> i64 {
        if scopes.has(&Scope::OfflineAccess) {
            self.cfg.refresh_token_days * 24 * 3600 * 1000
        } else {
            // online_access: no longer than a web session may last.
            self.cfg.session_absolute_secs * 1000
        }
    }

    fn wants_refresh(scopes: &ScopeSet) -> bool {
        scopes.has(&Scope::OfflineAccess) || scopes.has(&Scope::OnlineAccess)
    }

    /// `grant_type=authorization_code`: single use; bound to the client, the exact redirect
    /// URI and the PKCE verifier. Any mismatch consumes the code and revokes its grant.
    pub async fn exchange_code(
        &self,
        client: &ClientRow,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
        issuer: &str,
    ) -> Result<(TokenResponse, GrantRow), AuthError> {
        let invalid = || AuthError::InvalidGrant("The authorization code is invalid, expired or already used.".into());
        let row = match self.store.code_redeem(&secret::digest(code), now_ms()).await? {
            Redeemed::Fresh(row) => row,
            Redeemed::Replayed | Redeemed::Invalid => return Err(invalid()),
        };
        let bound = row.client_id == client.client_id
            && secret::ct_eq(row.redirect_uri.as_bytes(), redirect_uri.as_bytes())
            && pkce::verify_s256(verifier, &row.code_challenge);
        if !bound {
            self.store.grant_revoke(&row.grant_id, "code-misuse", now_ms()).await?;
            return Err(invalid());
        }
        let grant =
            self.store.grant_get(&row.grant_id).await?.filter(|g| g.revoked_ms.is_none()).ok_or_else(invalid)?;
        let user = match &grant.user_id {
            Some(id) => Some(self.store.user_by_id(id).await?.filter(|u| !u.disabled).ok_or_else(invalid)?),
            None => None,
        };
        let scopes = ScopeSet::parse(&grant.scope).unwrap_or_default();
        let refresh = if Self::wants_refresh(&scopes) { Refresh::New } else { Refresh::None };
        let resp = self.issue(&grant, user.as_ref(), issuer, row.nonce.as_deref(), refresh).await?;
        Ok((resp, grant))
    }

    /// `grant_type=refresh_token`: rotate. The new tokens keep the grant's scopes; asking for
    /// more is `invalid_scope`.
    pub async fn refresh(
        &self,
        client: &ClientRow,
        refresh_token: &str,
        scope: Option<&str>,
        issuer: &str,
    ) -> Result<(TokenResponse, GrantRow), AuthError> {
        let invalid = || AuthError::InvalidGrant("The refresh token is invalid, expired or revoked.".into());
        let hash = secret::digest(refresh_token);
        let (grant, _, _) = self.store.refresh_grant(&hash).await?.ok_or_else(invalid)?;
        if grant.client_id != client.client_id {
            return Err(invalid());
        }
        if let Some(requested) = scope {
            let requested = ScopeSet::parse(requested).map_err(|e| AuthError::InvalidScope(e.0))?;
            let granted = ScopeSet::parse(&grant.scope).unwrap_or_default();
            if !requested.is_subset_of(&granted) {
                return Err(AuthError::InvalidScope("A refresh cannot widen the granted scopes.".into()));
            }
        }
        let now = now_ms();
        let next = secret::random_token();
        let scopes = ScopeSet::parse(&grant.scope).unwrap_or_default();
        let expires = now + self.refresh_ttl_ms(&scopes);
        let grant = match self
            .store
            .refresh_rotate(&hash, &secret::digest(&next), now, expires, self.cfg.refresh_grace_secs * 1000)
            .await?
        {
            Rotated::Rotated(g) => g,
            Rotated::Concurrent | Rotated::Reused | Rotated::Invalid => return Err(invalid()),
        };
        let user = match &grant.user_id {
            Some(id) => Some(self.store.user_by_id(id).await?.filter(|u| !u.disabled).ok_or_else(invalid)?),
            None => None,
        };
        let resp = self.issue(&grant, user.as_ref(), issuer, None, Refresh::Given(next)).await?;
        Ok((resp, grant))
    }

    /// The client of a refresh token when that client is public (so a refresh may omit
    /// `client_id`); None otherwise.
    pub async fn public_client_of_refresh(&self, refresh_token: Option<&str>) -> Result<Option<String>, AuthError> {
        let Some(token) = refresh_token else { return Ok(None) };
        let Some((grant, _, _)) = self.store.refresh_grant(&secret::digest(token)).await? else { return Ok(None) };
        let client = self.store.client_get(&grant.client_id).await?;
        Ok(client.filter(|c| c.auth_method == "none").map(|c| c.client_id))
    }

    /// `grant_type=client_credentials` (SMART Backend Services): `system/` scopes only,
    /// within the client's registration; no refresh token.
    pub async fn client_credentials(
        &self,
        client: &ClientRow,
        scope: &str,
        issuer: &str,
    ) -> Result<(TokenResponse, GrantRow), AuthError> {
        if client.auth_method == "none" {
            return Err(AuthError::UnauthorizedClient("A public client cannot use client_credentials.".into()));
        }
        let requested = ScopeSet::parse(scope).map_err(|e| AuthError::InvalidScope(e.0))?;
        let allowed = ScopeSet::parse(&client.scopes).unwrap_or_default();
        let granted = requested.restrict_to(&allowed);
        let only_system = granted.scopes.iter().all(|s| match s {
            Scope::Resource(r) => r.context == portico_policy::scopes::ScopeContext::System,
            _ => false,
        });
        if granted.scopes.is_empty() || !only_system {
            return Err(AuthError::InvalidScope(
                "client_credentials grants only system/ scopes the client is registered for.".into(),
            ));
        }
        let now = now_ms();
        let grant = GrantRow {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: None,
            client_id: client.client_id.clone(),
            device_id: None,
            scope: granted.to_scope_string(),
            patient: None,
            stepup_ms: None,
            auth_time_ms: now,
            created_ms: now,
            revoked_ms: None,
            revoked_reason: None,
        };
        self.store.grant_create(&grant).await?;
        let resp = self.issue(&grant, None, issuer, None, Refresh::None).await?;
        Ok((resp, grant))
    }

    /// An operator-issued token (`portico token issue`): for a user, or for a patient id
    /// directly, under the named client (default: the CLI's own).
    pub async fn issue_operator_token(
        &self,
        user: Option<&UserRow>,
        patient: Option<String>,
        client_id: &str,
        scope: &str,
        issuer: &str,
    ) -> Result<(TokenResponse, GrantRow), AuthError> {
        let scopes = ScopeSet::parse(scope).map_err(|e| AuthError::InvalidScope(e.0))?;
        let now = now_ms();
        let patient = patient
            .or_else(|| user.filter(|u| u.role == "patient").and_then(|u| u.links.first().map(|l| l.patient.clone())));
        if let (Some(u), Some(p)) = (user, &patient)
            && !u.links.iter().any(|l| &l.patient == p)
        {
            return Err(AuthError::InvalidRequest(format!("User {} is not linked to patient {p}.", u.username)));
        }
        let grant = GrantRow {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: user.map(|u| u.id.clone()),
            client_id: client_id.to_string(),
            device_id: None,
            scope: scopes.to_scope_string(),
            patient,
            stepup_ms: None,
            auth_time_ms: now,
            created_ms: now,
            revoked_ms: None,
            revoked_reason: None,
        };
        self.store.grant_create(&grant).await?;
        let refresh = if Self::wants_refresh(&scopes) && user.is_some() { Refresh::New } else { Refresh::None };
        let resp = self.issue(&grant, user, issuer, None, refresh).await?;
        Ok((resp, grant))
    }

    /// RFC 7009: revoke a refresh token (its whole grant) or an access token. Unknown tokens
    /// and other clients' tokens are answered the same way (200), revealing nothing.
    pub async fn revoke_token(&self, client: &ClientRow, token: &str) -> Result<(), AuthError> {
        let hash = secret::digest(token);
        if let Some((grant, _, _)) = self.store.refresh_grant(&hash).await? {
            if grant.client_id == client.client_id {
                self.store.grant_revoke(&grant.id, "revoked-by-client", now_ms()).await?;
            }
            return Ok(());
        }
        if let Some(auth) = self.store.access_lookup(&hash, now_ms()).await?
            && auth.grant.client_id == client.client_id
        {
            self.store.access_delete(&hash).await?;
        }
        Ok(())
    }

    /// RFC 7662: what a token stands for, if it is live. `caller` None is the operator.
    pub async fn introspect(&self, caller: Option<&ClientRow>, token: &str) -> Result<serde_json::Value, AuthError> {
        let hash = secret::digest(token);
        let inactive = json!({"active": false});
        let Some(auth) = self.store.access_lookup(&hash, now_ms()).await? else {
            return Ok(inactive);
        };
        // A client may introspect only its own tokens; the operator any.
        if caller.is_some_and(|c| c.client_id != auth.grant.client_id) {
            return Ok(inactive);
        }
        let mut v = json!({
            "active": true,
            "scope": auth.grant.scope,
            "client_id": auth.grant.client_id,
            "token_type": "Bearer",
            "exp": auth.expires_ms / 1000,
            "iat": auth.grant.created_ms / 1000,
        });
        if let Some(u) = &auth.user {
            v["sub"] = json!(u.id);
            v["username"] = json!(u.username);
            if let Some(f) = &u.fhir_user {
                v["fhirUser"] = json!(f);
            }
        }
        if let Some(p) = &auth.grant.patient {
            v["patient"] = json!(p);
        }
        Ok(v)
    }
}

/// Client credentials from a form and an `Authorization: Basic` header.
pub fn credentials_from(
    form: &std::collections::HashMap<String, String>,
    basic: Option<(String, String)>,
) -> ClientCredentials {
    let (basic_id, basic_secret) = basic.map(|(i, s)| (Some(i), Some(s))).unwrap_or((None, None));
    ClientCredentials {
        client_id: basic_id.or_else(|| form.get("client_id").cloned()),
        client_secret: basic_secret.or_else(|| form.get("client_secret").cloned()),
        assertion_type: form.get("client_assertion_type").cloned(),
        assertion: form.get("client_assertion").cloned(),
    }
}
