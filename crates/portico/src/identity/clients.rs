//! OAuth clients: registration (CLI, admin API) and authentication at the token,
//! revocation and introspection endpoints.

use super::{AuthError, Identity, now_ms};
use portico_identity::{jose, secret};
use portico_policy::ScopeSet;
use portico_store::identity::ClientRow;

/// The `client_assertion_type` of `private_key_jwt`.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How a client proves itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// A public client (a browser or mobile app): PKCE protects its codes.
    Public,
    /// A shared secret (`client_secret_basic` / `client_secret_post`); the secret is made by
    /// the server and shown once.
    Secret,
    /// `private_key_jwt` with a JWK Set given inline…
    Jwks(String),
    /// …or fetched from a URL.
    JwksUrl(String),
}

/// A client to register.
#[derive(Debug, Clone)]
pub struct NewClient {
    /// Chosen id, or None for a random one.
    pub client_id: Option<String>,
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub scopes: String,
    pub auth: ClientAuth,
}

/// What the client presented at an endpoint that authenticates clients.
#[derive(Debug, Clone, Default)]
pub struct ClientCredentials {
    /// From the form or HTTP Basic.
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub assertion_type: Option<String>,
    pub assertion: Option<String>,
}

fn redirect_uri_ok(uri: &str) -> bool {
    // Exact strings are compared at authorization; here only their shape: absolute (http,
    // https or an app's private-use scheme), no fragment, no script-bearing schemes.
    let scheme_ok = uri.split_once(':').is_some_and(|(scheme, rest)| {
        !scheme.is_empty()
            && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
            && rest.starts_with('/')
            && !["javascript", "data", "file", "vbscript"].contains(&scheme.to_ascii_lowercase().as_str())
    });
    scheme_ok && !uri.contains('#') && uri.len() <= 2000 && uri.bytes().all(|b| b > 0x20 && b < 0x7f)
}

fn client_id_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

impl Identity {
    /// Make sure the built-in clients exist: the portal's own pages and the operator CLI.
    /// Their grants hang off them like any app's (so removing or disabling them would end
    /// those grants too); their auth method `internal` never authenticates at the token
    /// endpoint.
    pub async fn ensure_builtin_clients(&self) -> Result<(), AuthError> {
        for (id, name) in [(super::PORTAL_CLIENT, "portico portal"), (super::CLI_CLIENT, "portico operator CLI")] {
            if self.store.client_get(id).await?.is_none() {
                self.store
                    .client_put(&ClientRow {
                        client_id: id.to_string(),
                        name: name.to_string(),
                        auth_method: "internal".into(),
                        secret_hash: None,
                        redirect_uris: Vec::new(),
                        scopes: String::new(),
                        jwks: None,
                        jwks_url: None,
                        disabled: false,
                        created_ms: now_ms(),
                    })
                    .await?;
            }
        }
        Ok(())
    }

    /// Register a client; returns it and, for `ClientAuth::Secret`, the secret (shown once).
    pub async fn register_client(&self, new: NewClient) -> Result<(ClientRow, Option<String>), AuthError> {
        let client_id = new.client_id.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        if !client_id_ok(&client_id) || client_id == super::PORTAL_CLIENT || client_id == super::CLI_CLIENT {
            return Err(AuthError::InvalidRequest(format!("'{client_id}' cannot be a client id.")));
        }
        if let Some(bad) = new.redirect_uris.iter().find(|u| !redirect_uri_ok(u)) {
            return Err(AuthError::InvalidRequest(format!(
                "Redirect URI '{bad}' is not an absolute URI without a fragment."
            )));
        }
        let scopes = ScopeSet::parse(&new.scopes).map_err(|e| AuthError::InvalidScope(e.0))?;
        let (auth_method, secret, jwks, jwks_url) = match new.auth {
            ClientAuth::Public => {
                if new.redirect_uris.is_empty() {
                    return Err(AuthError::InvalidRequest("A public client needs at least one redirect URI.".into()));
                }
                ("none", None, None, None)
            }
            ClientAuth::Secret => ("client_secret_basic", Some(secret::random_token()), None, None),
            ClientAuth::Jwks(set) => {
                jose::check_client_jwks(&set).map_err(|e| AuthError::InvalidRequest(format!("jwks: {e}")))?;
                ("private_key_jwt", None, Some(set), None)
            }
            ClientAuth::JwksUrl(url) => {
                let https = url.starts_with("https://");
                if !(https || self.cfg.allow_private_jwks_urls && url.starts_with("http://")) {
                    return Err(AuthError::InvalidRequest("jwks_url must be an https URL.".into()));
                }
                ("private_key_jwt", None, None, Some(url))
            }
        };
        let row = ClientRow {
            client_id,
            name: new.name,
            auth_method: auth_method.to_string(),
            secret_hash: secret.as_deref().map(secret::digest),
            redirect_uris: new.redirect_uris,
            scopes: scopes.to_scope_string(),
            jwks,
            jwks_url,
            disabled: false,
            created_ms: now_ms(),
        };
        self.store.client_put(&row).await?;
        Ok((row, secret))
    }

    /// Authenticate the client at the token endpoint (and revoke/introspect): by its
    /// registered method only — a confidential client cannot fall back to acting public.
    pub async fn authenticate_client(
        &self,
        creds: &ClientCredentials,
        token_endpoint: &str,
    ) -> Result<ClientRow, AuthError> {
        let bad = || AuthError::InvalidClient("Client authentication failed.".into());
        // private_key_jwt names the client in the assertion's iss/sub; client_id is optional.
        let client_id = match (&creds.client_id, &creds.assertion) {
            (Some(id), _) => id.clone(),
            (None, Some(a)) => unverified_issuer(a).ok_or_else(bad)?,
            (None, None) => return Err(AuthError::InvalidClient("client_id is required.".into())),
        };
        let client = self.store.client_get(&client_id).await?.filter(|c| !c.disabled).ok_or_else(bad)?;
        match client.auth_method.as_str() {
            "none" => {
                if creds.client_secret.is_some() || creds.assertion.is_some() {
                    return Err(bad());
                }
            }
            "client_secret_basic" | "client_secret_post" => {
                let presented = creds.client_secret.as_deref().ok_or_else(bad)?;
                let expected = client.secret_hash.as_deref().ok_or_else(bad)?;
                if !secret::ct_eq(secret::digest(presented).as_bytes(), expected.as_bytes()) {
                    return Err(bad());
                }
            }
            "private_key_jwt" => {
                if creds.assertion_type.as_deref() != Some(JWT_BEARER) {
                    return Err(bad());
                }
                let assertion = creds.assertion.as_deref().ok_or_else(bad)?;
                let jwks = match (&client.jwks, &client.jwks_url) {
                    (Some(set), _) => set.clone(),
                    (None, Some(url)) => portico_identity::fetch::fetch_jwks(url, self.cfg.allow_private_jwks_urls)
                        .await
                        .map_err(|e| {
                            tracing::warn!(client = %client.client_id, error = %e, "cannot fetch client JWK Set");
                            bad()
                        })?,
                    (None, None) => return Err(bad()),
                };
                let now_secs = now_ms() / 1000;
                let a = jose::verify_client_assertion(assertion, &jwks, &client.client_id, &[token_endpoint], now_secs)
                    .map_err(|_| bad())?;
                let fresh = self.store.jti_claim(&client.client_id, &a.jti, a.exp * 1000, now_ms()).await?;
                if !fresh {
                    // A replay is answered like every other bad assertion: no hint which check failed.
                    tracing::warn!(client = %client.client_id, "client assertion replayed (jti already used)");
                    return Err(bad());
                }
            }
            _ => return Err(bad()),
        }
        Ok(client)
    }
}

/// The `iss` of a JWT, read without verifying it — only to find which client's keys will
/// then verify it.
fn unverified_issuer(jwt: &str) -> Option<String> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_and_ids_are_checked() {
        assert!(redirect_uri_ok("https://app.example/cb"));
        assert!(redirect_uri_ok("http://127.0.0.1:9999/cb"));
        assert!(!redirect_uri_ok("https://app.example/cb#frag"));
        assert!(!redirect_uri_ok("javascript:alert(1)"));
        assert!(client_id_ok("my-app_1"));
        assert!(!client_id_ok("bad id"));
        assert!(!client_id_ok(""));
    }
}
