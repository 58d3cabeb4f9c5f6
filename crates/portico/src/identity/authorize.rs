//! The authorization-code flow's decisions: checking an `/oauth2/authorize` request, and
//! turning the user's approval into a code (RFC 6749 §4.1, PKCE RFC 7636, SMART App Launch).

use super::{AuthError, Identity, now_ms};
use portico_identity::{pkce, secret};
use portico_policy::ScopeSet;
use portico_policy::scopes::Scope;
use portico_store::identity::{AuthRequestRow, ClientRow, CodeRow, GrantRow, UserRow};
use std::collections::HashMap;

/// How long a pending authorization request waits for the user.
const REQUEST_TTL_MS: i64 = 15 * 60 * 1000;
/// How long an EHR launch context stays usable.
const LAUNCH_TTL_SECS: i64 = 5 * 60;

/// A refused authorization request. `Page` errors are shown to the user and never
/// redirected (the client or redirect URI cannot be trusted); `Redirect` errors go back to
/// the client's verified redirect URI.
#[derive(Debug)]
pub enum AuthorizeError {
    Page(String),
    Redirect { redirect_uri: String, state: Option<String>, error: AuthError },
}

impl Identity {
    /// Check an authorization request and remember it for the login and approval steps.
    /// `fhir_base` is this server's FHIR base URL, which `aud` must name.
    pub async fn start_authorization(
        &self,
        q: &HashMap<String, String>,
        fhir_base: &str,
    ) -> Result<(AuthRequestRow, ClientRow), AuthorizeError> {
        let page = |m: &str| AuthorizeError::Page(m.to_string());
        let client_id =
            q.get("client_id").ok_or_else(|| page("The app did not say who it is (client_id is missing)."))?;
        let client = match self.store.client_get(client_id).await {
            Ok(Some(c)) if !c.disabled => c,
            Ok(_) => return Err(page("This app is not registered with this server.")),
            Err(_) => return Err(page("The server is busy; try again shortly.")),
        };
        let redirect_uri = q
            .get("redirect_uri")
            .ok_or_else(|| page("The app did not say where to return (redirect_uri is missing)."))?;
        if !client.redirect_uris.iter().any(|r| r == redirect_uri) {
            return Err(page(
                "The app asked to return to an address it has not registered, so this request was stopped.",
            ));
        }
        let state = q.get("state").cloned();
        let back = |error: AuthError| AuthorizeError::Redirect {
            redirect_uri: redirect_uri.clone(),
            state: state.clone(),
            error,
        };
        if q.get("response_type").map(String::as_str) != Some("code") {
            return Err(back(AuthError::InvalidRequest("response_type must be code".into())));
        }
        if q.get("code_challenge_method").map(String::as_str) != Some("S256") {
            return Err(back(AuthError::InvalidRequest("PKCE with code_challenge_method=S256 is required".into())));
        }
        let challenge = q.get("code_challenge").filter(|c| pkce::challenge_is_well_formed(c));
        let Some(challenge) = challenge else {
            return Err(back(AuthError::InvalidRequest("code_challenge must be an S256 challenge".into())));
        };
        let aud = q.get("aud").map(|a| a.trim_end_matches('/'));
        if aud != Some(fhir_base.trim_end_matches('/')) {
            return Err(back(AuthError::InvalidRequest(format!(
                "aud must be this server's FHIR base URL, {fhir_base}"
            ))));
        }
        let requested = ScopeSet::parse(q.get("scope").map(String::as_str).unwrap_or(""))
            .map_err(|e| back(AuthError::InvalidScope(e.0)))?;
        let allowed = ScopeSet::parse(&client.scopes).unwrap_or_default();
        let scopes = requested.restrict_to(&allowed);
        if !scopes.scopes.iter().any(|s| matches!(s, Scope::Resource(_))) {
            return Err(back(AuthError::InvalidScope(
                "none of the requested data scopes is allowed for this app".into(),
            )));
        }
        let launch_patient = match q.get("launch") {
            Some(launch) => Some(self.open_launch(launch).map_err(back)?),
            None => None,
        };
        let now = now_ms();
        let req = AuthRequestRow {
            id: secret::random_token(),
            client_id: client.client_id.clone(),
            redirect_uri: redirect_uri.clone(),
            scope: scopes.to_scope_string(),
            state,
            code_challenge: challenge.clone(),
            nonce: q.get("nonce").cloned(),
            launch_patient,
            created_ms: now,
            expires_ms: now + REQUEST_TTL_MS,
        };
        self.store.auth_request_put(&req).await.map_err(|_| page("The server is busy; try again shortly."))?;
        Ok((req, client))
    }

    /// An EHR launch context for `patient`: opaque to the app, signed by the server, short-lived.
    pub fn make_launch(&self, patient: &str) -> Result<String, AuthError> {
        let exp = now_ms() / 1000 + LAUNCH_TTL_SECS;
        self.keys
            .sign(&serde_json::json!({"typ": "launch", "patient": patient, "exp": exp}))
            .map_err(|e| AuthError::Internal(e.to_string()))
    }

    fn open_launch(&self, launch: &str) -> Result<String, AuthError> {
        let claims = self
            .keys
            .verify(launch, now_ms() / 1000)
            .map_err(|_| AuthError::InvalidRequest("the launch context is invalid or expired".into()))?;
        match (claims.get("typ").and_then(|v| v.as_str()), claims.get("patient").and_then(|v| v.as_str())) {
            (Some("launch"), Some(p)) => Ok(p.to_string()),
            _ => Err(AuthError::InvalidRequest("the launch context is invalid".into())),
        }
    }

    /// The patients the user may choose to let the app act for.
    pub fn patient_choices(user: &UserRow) -> Vec<(String, String)> {
        user.links.iter().map(|l| (l.patient.clone(), l.name.clone().unwrap_or_else(|| l.patient.clone()))).collect()
    }

    /// The user approved: keep only the scopes they left ticked, fix the patient context,
    /// store a code with its (inactive) grant, and return the redirect URL carrying it.
    #[allow(clippy::too_many_arguments)]
    pub async fn approve(
        &self,
        req: &AuthRequestRow,
        user: &UserRow,
        device_id: &str,
        auth_time_ms: i64,
        stepup_ms: Option<i64>,
        kept_scopes: &[String],
        chosen_patient: Option<&str>,
    ) -> Result<String, AuthError> {
        let requested = ScopeSet::parse(&req.scope).unwrap_or_default();
        let kept = ScopeSet::parse(&kept_scopes.join(" ")).map_err(|e| AuthError::InvalidScope(e.0))?;
        let granted = kept.restrict_to(&requested);
        if !granted.scopes.iter().any(|s| matches!(s, Scope::Resource(_))) {
            return Err(AuthError::AccessDenied("No access was chosen for the app.".into()));
        }
        let links: Vec<&str> = user.links.iter().map(|l| l.patient.as_str()).collect();
        let wants_patient = granted.has(&Scope::LaunchPatient)
            || granted
                .scopes
                .iter()
                .any(|s| matches!(s, Scope::Resource(r) if r.context == portico_policy::scopes::ScopeContext::Patient));
        let patient = if let Some(p) = &req.launch_patient {
            if !links.contains(&p.as_str()) {
                return Err(AuthError::AccessDenied("You cannot open this patient's record.".into()));
            }
            Some(p.clone())
        } else if wants_patient {
            match (chosen_patient, links.as_slice()) {
                (Some(p), _) if links.contains(&p) => Some(p.to_string()),
                (Some(_), _) => return Err(AuthError::AccessDenied("You cannot share this patient's record.".into())),
                (None, [only]) => Some((*only).to_string()),
                (None, []) => {
                    return Err(AuthError::AccessDenied("Your account has no patient record to share.".into()));
                }
                (None, _) => return Err(AuthError::InvalidRequest("Choose whose record the app may use.".into())),
            }
        } else {
            None
        };
        let now = now_ms();
        let code = secret::random_token();
        let grant = GrantRow {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: Some(user.id.clone()),
            client_id: req.client_id.clone(),
            device_id: Some(device_id.to_string()),
            scope: granted.to_scope_string(),
            patient,
            stepup_ms,
            auth_time_ms,
            created_ms: now,
            revoked_ms: None,
            revoked_reason: None,
        };
        let row = CodeRow {
            code_hash: secret::digest(&code),
            client_id: req.client_id.clone(),
            redirect_uri: req.redirect_uri.clone(),
            code_challenge: req.code_challenge.clone(),
            nonce: req.nonce.clone(),
            grant_id: grant.id.clone(),
            created_ms: now,
            expires_ms: now + self.cfg.code_secs * 1000,
        };
        self.store.code_put(&row, &grant).await?;
        self.store.auth_request_delete(&req.id).await?;
        Ok(redirect_with(&req.redirect_uri, &[("code", Some(code.as_str())), ("state", req.state.as_deref())]))
    }
}

/// Characters escaped in a query value: everything but RFC 3986's unreserved set.
const QUERY_VALUE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// `redirect_uri` with query parameters appended (keeping any query it already has).
pub fn redirect_with(redirect_uri: &str, params: &[(&str, Option<&str>)]) -> String {
    let mut url = redirect_uri.to_string();
    let mut sep = if url.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        if let Some(v) = v {
            url.push(sep);
            url.push_str(k);
            url.push('=');
            url.push_str(&percent_encoding::utf8_percent_encode(v, QUERY_VALUE).to_string());
            sep = '&';
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::redirect_with;

    #[test]
    fn redirects_keep_existing_queries_and_encode() {
        assert_eq!(redirect_with("https://a/cb", &[("code", Some("x y")), ("state", None)]), "https://a/cb?code=x%20y");
        assert_eq!(redirect_with("https://a/cb?k=1", &[("code", Some("c"))]), "https://a/cb?k=1&code=c");
    }
}
