//! Driving portico's authorization server the way a SMART app and a browser would: real
//! forms, cookies, PKCE, redirects — through the router, no shortcuts into the store — and
//! the things those tests need around it: real client keys and signed client assertions,
//! requests from a given source address (for the rate limits), the audit trail.

use super::{Resp, TestApp};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use portico::identity::clients::{ClientAuth, NewClient};
use portico::identity::users::NewUser;
use portico_audit::AuditRecord;
use portico_store::ScanItem;
use portico_store::identity::{PatientLink, UserRow};
use serde_json::{Value, json};
use sha2::Digest;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use tower::ServiceExt;

pub const REDIRECT: &str = "https://app.example/callback";
pub const PASSWORD: &str = "correct horse battery";
/// Every test user's enrolled TOTP secret.
pub const TOTP_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
/// This server's FHIR base and token endpoint as in-process requests (`Host: localhost`) see them.
pub const FHIR_BASE: &str = "http://localhost/fhir";
pub const TOKEN_ENDPOINT: &str = "http://localhost/oauth2/token";

/// A cookie jar for one "browser", with the address it connects from (None: no address,
/// like every in-process request) and its `User-Agent` (which tells devices apart).
#[derive(Debug, Default, Clone)]
pub struct Browser {
    pub cookies: HashMap<String, String>,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl Browser {
    /// A browser with this `User-Agent` (a device of its own).
    pub fn with_agent(ua: &str) -> Browser {
        Browser { user_agent: Some(ua.to_string()), ..Browser::default() }
    }
    /// A browser connecting from this address.
    pub fn at(ip: &str) -> Browser {
        Browser { ip: Some(ip.parse().expect("ip")), ..Browser::default() }
    }
    pub fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }
    /// The portal session cookie's value, whatever its name in this deployment.
    pub fn session(&self) -> Option<String> {
        self.cookies.get("portico-session").or_else(|| self.cookies.get("__Host-portico-session")).cloned()
    }
    fn absorb(&mut self, r: &Resp) {
        for v in r.headers.get_all("set-cookie") {
            let v = v.to_str().unwrap_or("");
            let first = v.split(';').next().unwrap_or("");
            if let Some((k, val)) = first.split_once('=') {
                if v.contains("Max-Age=0") || val.is_empty() {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_string(), val.to_string());
                }
            }
        }
    }
    /// Send with this browser's cookies, agent and address; keep the cookies it is given.
    pub async fn send(
        &mut self,
        app: &TestApp,
        method: Method,
        uri: &str,
        extra: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Resp {
        let c = self.cookie_header();
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if !c.is_empty() {
            headers.push(("cookie", &c));
        }
        if let Some(ua) = &self.user_agent {
            headers.push(("user-agent", ua));
        }
        headers.extend_from_slice(extra);
        let r = app.send_from(self.ip, method, uri, &headers, body).await;
        self.absorb(&r);
        r
    }
    pub async fn get(&mut self, app: &TestApp, uri: &str) -> Resp {
        self.send(app, Method::GET, uri, &[], Vec::new()).await
    }
    pub async fn post_form(&mut self, app: &TestApp, uri: &str, form: &[(&str, &str)]) -> Resp {
        let body = form_body(form);
        self.send(app, Method::POST, uri, &[("content-type", "application/x-www-form-urlencoded")], body.into_bytes())
            .await
    }
    /// The session's CSRF token, as the portal page reads it from `/api/portal/me`.
    pub async fn csrf(&mut self, app: &TestApp) -> String {
        let me = self.get(app, "/api/portal/me").await;
        me.json["csrf"].as_str().unwrap_or("").to_string()
    }
    /// JSON to the portal API with the session's CSRF token.
    pub async fn portal(&mut self, app: &TestApp, method: Method, uri: &str, body: Option<Value>) -> Resp {
        let csrf = self.csrf(app).await;
        self.portal_csrf(app, method, uri, body, Some(&csrf)).await
    }
    /// JSON to the portal API with exactly this `X-CSRF-Token` (None: without one).
    pub async fn portal_csrf(
        &mut self,
        app: &TestApp,
        method: Method,
        uri: &str,
        body: Option<Value>,
        csrf: Option<&str>,
    ) -> Resp {
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let mut headers = vec![("content-type", "application/json")];
        if let Some(c) = csrf {
            headers.push(("x-csrf-token", c));
        }
        self.send(app, method, uri, &headers, body).await
    }
}

pub fn form_body(form: &[(&str, &str)]) -> String {
    form.iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                percent_encoding::utf8_percent_encode(k, percent_encoding::NON_ALPHANUMERIC),
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The value of a hidden input in a page.
pub fn hidden(page: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker)? + marker.len();
    let end = page[start..].find('"')? + start;
    Some(page[start..end].replace("&#34;", "\"").replace("&amp;", "&"))
}

/// A PKCE verifier and its S256 challenge.
pub fn pkce() -> (String, String) {
    let verifier = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

pub fn query_param(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
}

/// The current time in Unix seconds.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// The current TOTP code of the test users' secret.
pub fn totp_now() -> String {
    portico_identity::totp::code_at(TOTP_SECRET, now_secs() as u64).expect("totp code")
}

/// A token with one character changed (in the middle, so the encoding stays valid).
pub fn flipped(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

// --- client keys and assertions (real keys, real signatures)

/// A backend client's key pair: the private half signs assertions, `jwk` is the public half.
pub struct ClientKey {
    pub kid: String,
    pub alg: Algorithm,
    pub enc: EncodingKey,
    pub jwk: Value,
    /// The public key as SPKI PEM (RSA only): what an attacker can read and try as an HMAC key.
    pub public_pem: String,
    /// The same key for RS256 (RSA only), to try an algorithm the server does not allow.
    pub rs256: Option<EncodingKey>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A fresh 2048-bit RSA key for RS384.
pub fn rsa_key(kid: &str) -> ClientKey {
    use rsa::pkcs1::EncodeRsaPrivateKey as _;
    use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
    use rsa::traits::PublicKeyParts as _;
    let key = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).expect("rsa key");
    let der = key.to_pkcs1_der().expect("der");
    let jwk = json!({"kty": "RSA", "kid": kid, "alg": "RS384", "use": "sig", "n": b64(&key.n_bytes()), "e": b64(&key.e_bytes())});
    let public_pem = key.to_public_key().to_public_key_pem(LineEnding::LF).expect("pem");
    ClientKey {
        kid: kid.to_string(),
        alg: Algorithm::RS384,
        enc: EncodingKey::from_rsa_der(der.as_bytes()),
        jwk,
        public_pem,
        rs256: Some(EncodingKey::from_rsa_der(der.as_bytes())),
    }
}

/// A fresh P-384 key for ES384.
pub fn ec_key(kid: &str) -> ClientKey {
    use p384::elliptic_curve::Generate as _;
    use p384::pkcs8::EncodePrivateKey as _;
    let secret = p384::SecretKey::generate();
    let der = secret.to_pkcs8_der().expect("der");
    let point = secret.public_key().to_sec1_bytes();
    let jwk = json!({"kty": "EC", "crv": "P-384", "kid": kid, "x": b64(&point[1..49]), "y": b64(&point[49..])});
    ClientKey {
        kid: kid.to_string(),
        alg: Algorithm::ES384,
        enc: EncodingKey::from_ec_der(der.as_bytes()),
        jwk,
        public_pem: String::new(),
        rs256: None,
    }
}

/// A JWK Set of these keys' public halves.
pub fn jwks(keys: &[&ClientKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// A compact JWS with exactly this header, signed with `key` under `alg`.
pub fn compact_jws(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let msg = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), key, alg).expect("sign");
    format!("{msg}.{sig}")
}

impl ClientKey {
    pub fn alg_name(&self) -> &'static str {
        if self.alg == Algorithm::RS384 { "RS384" } else { "ES384" }
    }
    /// The header a well-behaved client sends.
    pub fn header(&self) -> Value {
        json!({"alg": self.alg_name(), "kid": self.kid, "typ": "JWT"})
    }
    /// An assertion with these claims, signed properly.
    pub fn sign(&self, claims: &Value) -> String {
        compact_jws(&self.header(), claims, &self.enc, self.alg)
    }
}

/// Good client-assertion claims for `client` at this server's token endpoint.
pub fn assertion_claims(client: &str) -> Value {
    let now = now_secs();
    json!({
        "iss": client, "sub": client, "aud": TOKEN_ENDPOINT,
        "exp": now + 120, "iat": now, "jti": uuid::Uuid::new_v4().to_string(),
    })
}

impl TestApp {
    /// Send exactly these headers and bytes, from `ip` (the peer address the server sees).
    pub async fn send_from(
        &self,
        ip: Option<IpAddr>,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(uri).header("host", "localhost");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let mut req = b.body(Body::from(body)).expect("request");
        if let Some(ip) = ip {
            req.extensions_mut().insert(ConnectInfo(SocketAddr::new(ip, 49152)));
        }
        let resp = self.router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, headers, text, json }
    }

    /// A user of the given role linked to `patients`, with TOTP enrolled ([`TOTP_SECRET`]).
    pub async fn user(&self, username: &str, role: &str, patients: &[&str]) -> UserRow {
        let links = patients.iter().map(|p| PatientLink { patient: p.to_string(), via: None, name: None }).collect();
        let fhir_user = match role {
            "patient" => patients.first().map(|p| format!("Patient/{p}")),
            _ => None,
        };
        self.state
            .identity
            .create_user(NewUser {
                username: username.into(),
                password: PASSWORD.into(),
                role: role.into(),
                display_name: username.into(),
                fhir_user,
                links,
                totp_secret: Some(TOTP_SECRET.into()),
            })
            .await
            .expect("create user")
    }

    /// A public SMART app.
    pub async fn public_client(&self, id: &str, scopes: &str) {
        self.state
            .identity
            .register_client(NewClient {
                client_id: Some(id.into()),
                name: format!("App {id}"),
                redirect_uris: vec![REDIRECT.into()],
                scopes: scopes.into(),
                auth: ClientAuth::Public,
            })
            .await
            .expect("register client");
    }

    /// A backend service (`private_key_jwt`) with this JWK Set.
    pub async fn backend_client(&self, id: &str, jwk_set: String, scopes: &str) {
        self.state
            .identity
            .register_client(NewClient {
                client_id: Some(id.into()),
                name: format!("Service {id}"),
                redirect_uris: Vec::new(),
                scopes: scopes.into(),
                auth: ClientAuth::Jwks(jwk_set),
            })
            .await
            .expect("register backend client");
    }

    /// `client_credentials` with this client assertion.
    pub async fn client_credentials(&self, assertion: &str, scope: &str) -> Resp {
        self.token(&[
            ("grant_type", "client_credentials"),
            ("scope", scope),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", assertion),
        ])
        .await
    }

    /// The authorize URL for a client.
    pub fn authorize_url(&self, client: &str, scope: &str, challenge: &str, state: &str) -> String {
        self.authorize_url_with(client, scope, challenge, state, &[])
    }

    /// The authorize URL with parameters changed (`Some`), added, or left out (`None`).
    pub fn authorize_url_with(
        &self,
        client: &str,
        scope: &str,
        challenge: &str,
        state: &str,
        changes: &[(&str, Option<&str>)],
    ) -> String {
        let mut params: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", client),
            ("redirect_uri", REDIRECT),
            ("scope", scope),
            ("state", state),
            ("aud", FHIR_BASE),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ];
        for (k, v) in changes {
            params.retain(|(p, _)| p != k);
            if let Some(v) = v {
                params.push((k, v));
            }
        }
        format!("/oauth2/authorize?{}", form_body(&params))
    }

    /// Sign in on the login page the authorize request showed.
    pub async fn sign_in(&self, b: &mut Browser, login_page: &Resp, username: &str, password: &str) -> Resp {
        let csrf = hidden(&login_page.text, "csrf").expect("login csrf");
        let req = hidden(&login_page.text, "req").unwrap_or_default();
        b.post_form(
            self,
            "/oauth2/login",
            &[("csrf", &csrf), ("req", &req), ("username", username), ("password", password)],
        )
        .await
    }

    /// Sign in to the portal itself (no app): the login page, then the form.
    pub async fn portal_sign_in(&self, b: &mut Browser, username: &str, password: &str) -> Resp {
        let page = b.get(self, "/oauth2/login").await;
        assert_eq!(page.status, StatusCode::OK, "login page: {}", page.text);
        self.sign_in(b, &page, username, password).await
    }

    /// The front channel up to the approval page: authorize, and sign in unless the browser
    /// already has a session. Returns the approval page.
    pub async fn approval_page(&self, b: &mut Browser, url: &str, username: &str) -> Resp {
        let page = b.get(self, url).await;
        let approve_loc = match page.status {
            StatusCode::OK if page.text.contains("name=\"password\"") => {
                let r = self.sign_in(b, &page, username, PASSWORD).await;
                assert_eq!(r.status, StatusCode::SEE_OTHER, "login: {}", r.text);
                r.header("location").expect("location").to_string()
            }
            StatusCode::SEE_OTHER => page.header("location").expect("location").to_string(),
            _ => panic!("expected the login page or a redirect to approval, got {}: {}", page.status, page.text),
        };
        let approve = b.get(self, &approve_loc).await;
        assert_eq!(approve.status, StatusCode::OK, "approve page: {}", approve.text);
        approve
    }

    /// The whole front channel: authorize, sign in, approve every scope. Returns the code.
    pub async fn authorize(
        &self,
        b: &mut Browser,
        client: &str,
        scope: &str,
        username: &str,
        challenge: &str,
    ) -> String {
        let approve = self.approval_page(b, &self.authorize_url(client, scope, challenge, "st-1"), username).await;
        self.approve(b, &approve, None).await
    }

    /// Approve on an approval page (every offered scope ticked).
    pub async fn approve(&self, b: &mut Browser, page: &Resp, patient: Option<&str>) -> String {
        let r = self.approve_form(b, page, patient, hidden(&page.text, "csrf").as_deref()).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "approve: {}", r.text);
        let loc = r.header("location").expect("location").to_string();
        assert!(loc.starts_with(REDIRECT), "{loc}");
        assert_eq!(query_param(&loc, "state").as_deref(), Some("st-1"));
        query_param(&loc, "code").expect("code")
    }

    /// Post the approval form (every offered scope ticked) with exactly this CSRF field.
    pub async fn approve_form(&self, b: &mut Browser, page: &Resp, patient: Option<&str>, csrf: Option<&str>) -> Resp {
        let req = hidden(&page.text, "req").expect("req");
        let scopes: Vec<String> = page
            .text
            .match_indices("name=\"scope\" value=\"")
            .map(|(i, m)| {
                let s = &page.text[i + m.len()..];
                s[..s.find('"').unwrap()].replace("&#x2f;", "/").replace("&#47;", "/").replace("&amp;", "&")
            })
            .collect();
        let mut form: Vec<(&str, &str)> = vec![("req", &req), ("decision", "approve")];
        if let Some(c) = csrf {
            form.push(("csrf", c));
        }
        for s in &scopes {
            form.push(("scope", s));
        }
        if let Some(p) = patient {
            form.push(("patient", p));
        }
        b.post_form(self, "/oauth2/approve", &form).await
    }

    /// `POST /oauth2/token` with a form.
    pub async fn token(&self, form: &[(&str, &str)]) -> Resp {
        self.raw(
            Method::POST,
            "/oauth2/token",
            &[("content-type", "application/x-www-form-urlencoded")],
            form_body(form).into_bytes(),
        )
        .await
    }

    /// Code exchange for a public client.
    pub async fn exchange(&self, client: &str, code: &str, verifier: &str) -> Resp {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("client_id", client),
            ("code_verifier", verifier),
        ])
        .await
    }

    /// A refresh for a public client (`scope` None: not asked).
    pub async fn refresh(&self, client: &str, refresh_token: &str, scope: Option<&str>) -> Resp {
        let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", refresh_token), ("client_id", client)];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        self.token(&form).await
    }

    /// `POST /oauth2/revoke` by a public client.
    pub async fn revoke(&self, client: &str, token: &str) -> Resp {
        self.raw(
            Method::POST,
            "/oauth2/revoke",
            &[("content-type", "application/x-www-form-urlencoded")],
            form_body(&[("token", token), ("client_id", client)]).into_bytes(),
        )
        .await
    }

    /// `POST /oauth2/introspect`: by the operator (`client` None) or by a public client.
    pub async fn introspect(&self, client: Option<&str>, token: &str) -> Resp {
        let auth = format!("Bearer {}", super::TOKEN);
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        let mut form = vec![("token", token)];
        match client {
            Some(c) => form.push(("client_id", c)),
            None => headers.push(("authorization", &auth)),
        }
        self.raw(Method::POST, "/oauth2/introspect", &headers, form_body(&form).into_bytes()).await
    }

    /// A full standalone launch: returns the token response JSON.
    pub async fn launch(&self, client: &str, scope: &str, username: &str) -> Value {
        let mut b = Browser::default();
        self.launch_in(&mut b, client, scope, username).await
    }

    /// A full standalone launch in this browser (which keeps its portal session).
    pub async fn launch_in(&self, b: &mut Browser, client: &str, scope: &str, username: &str) -> Value {
        let (verifier, challenge) = pkce();
        let code = self.authorize(b, client, scope, username, &challenge).await;
        let r = self.exchange(client, &code, &verifier).await;
        assert_eq!(r.status, StatusCode::OK, "token: {}", r.text);
        r.json
    }

    /// GET with a bearer token.
    pub async fn get_as(&self, token: &str, uri: &str) -> Resp {
        self.raw(Method::GET, uri, &[("authorization", &format!("Bearer {token}"))], Vec::new()).await
    }

    /// Every audit record so far, in order.
    pub async fn audit_records(&self) -> Vec<AuditRecord> {
        let mut out = Vec::new();
        let mut on = |item: ScanItem| {
            if let ScanItem::Rows(rows) = item {
                for r in rows {
                    out.push(portico_audit::canonical::decode(&r.record).expect("canonical record").1);
                }
            }
            true
        };
        self.state.store.audit_scan(500, &mut on).await.expect("audit scan");
        out
    }

    /// The audit records one request left, by its `X-Request-Id`.
    pub async fn audit_of(&self, r: &Resp) -> Vec<AuditRecord> {
        let rid = r.header("x-request-id").expect("x-request-id").to_string();
        self.audit_records().await.into_iter().filter(|a| a.request_id == rid).collect()
    }
}
