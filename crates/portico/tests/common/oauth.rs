//! Driving portico's authorization server the way a SMART app and a browser would: real
//! forms, cookies, PKCE, redirects — through the router, no shortcuts into the store.

use super::{Resp, TestApp};
use axum::http::{Method, StatusCode};
use base64::Engine;
use portico::identity::clients::{ClientAuth, NewClient};
use portico::identity::users::NewUser;
use portico_store::identity::{PatientLink, UserRow};
use sha2::Digest;
use std::collections::HashMap;

pub const REDIRECT: &str = "https://app.example/callback";
pub const PASSWORD: &str = "correct horse battery";

/// A cookie jar for one "browser".
#[derive(Debug, Default, Clone)]
pub struct Browser {
    pub cookies: HashMap<String, String>,
}

impl Browser {
    fn header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
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
    pub async fn get(&mut self, app: &TestApp, uri: &str) -> Resp {
        let c = self.header();
        let r = app.raw(Method::GET, uri, &[("cookie", &c)], Vec::new()).await;
        self.absorb(&r);
        r
    }
    pub async fn post_form(&mut self, app: &TestApp, uri: &str, form: &[(&str, &str)]) -> Resp {
        let c = self.header();
        let body = form_body(form);
        let r = app
            .raw(
                Method::POST,
                uri,
                &[("cookie", &c), ("content-type", "application/x-www-form-urlencoded")],
                body.into_bytes(),
            )
            .await;
        self.absorb(&r);
        r
    }
    /// JSON to the portal API with the session's CSRF token.
    pub async fn portal(&mut self, app: &TestApp, method: Method, uri: &str, body: Option<serde_json::Value>) -> Resp {
        let c = self.header();
        let csrf = self.get(app, "/api/portal/me").await.json["csrf"].as_str().unwrap_or("").to_string();
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let r = app
            .raw(method, uri, &[("cookie", &c), ("x-csrf-token", &csrf), ("content-type", "application/json")], body)
            .await;
        self.absorb(&r);
        r
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
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

pub fn query_param(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
}

impl TestApp {
    /// A user of the given role linked to `patients`.
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
                totp_secret: Some("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP".into()),
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

    /// The authorize URL for a client.
    pub fn authorize_url(&self, client: &str, scope: &str, challenge: &str, state: &str) -> String {
        format!(
            "/oauth2/authorize?{}",
            form_body(&[
                ("response_type", "code"),
                ("client_id", client),
                ("redirect_uri", REDIRECT),
                ("scope", scope),
                ("state", state),
                ("aud", "http://localhost/fhir"),
                ("code_challenge", challenge),
                ("code_challenge_method", "S256"),
            ])
        )
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

    /// The whole front channel: authorize, sign in, approve every scope. Returns the code.
    pub async fn authorize(
        &self,
        b: &mut Browser,
        client: &str,
        scope: &str,
        username: &str,
        challenge: &str,
    ) -> String {
        let page = b.get(self, &self.authorize_url(client, scope, challenge, "st-1")).await;
        assert_eq!(page.status, StatusCode::OK, "authorize: {}", page.text);
        let approve_loc = if page.text.contains("name=\"password\"") {
            let r = self.sign_in(b, &page, username, PASSWORD).await;
            assert_eq!(r.status, StatusCode::SEE_OTHER, "login: {}", r.text);
            r.header("location").expect("location").to_string()
        } else {
            panic!("expected the login page, got {}", page.text)
        };
        let approve = b.get(self, &approve_loc).await;
        assert_eq!(approve.status, StatusCode::OK, "approve page: {}", approve.text);
        self.approve(b, &approve, None).await
    }

    /// Approve on an approval page (every offered scope ticked).
    pub async fn approve(&self, b: &mut Browser, page: &Resp, patient: Option<&str>) -> String {
        let csrf = hidden(&page.text, "csrf").expect("csrf");
        let req = hidden(&page.text, "req").expect("req");
        let scopes: Vec<String> = page
            .text
            .match_indices("name=\"scope\" value=\"")
            .map(|(i, m)| {
                let s = &page.text[i + m.len()..];
                s[..s.find('"').unwrap()].replace("&#x2f;", "/").replace("&#47;", "/").replace("&amp;", "&")
            })
            .collect();
        let mut form: Vec<(&str, &str)> = vec![("csrf", &csrf), ("req", &req), ("decision", "approve")];
        for s in &scopes {
            form.push(("scope", s));
        }
        if let Some(p) = patient {
            form.push(("patient", p));
        }
        let r = b.post_form(self, "/oauth2/approve", &form).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "approve: {}", r.text);
        let loc = r.header("location").expect("location").to_string();
        assert!(loc.starts_with(REDIRECT), "{loc}");
        assert_eq!(query_param(&loc, "state").as_deref(), Some("st-1"));
        query_param(&loc, "code").expect("code")
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

    /// A full standalone launch: returns the token response JSON.
    pub async fn launch(&self, client: &str, scope: &str, username: &str) -> serde_json::Value {
        let (verifier, challenge) = pkce();
        let mut b = Browser::default();
        let code = self.authorize(&mut b, client, scope, username, &challenge).await;
        let r = self.exchange(client, &code, &verifier).await;
        assert_eq!(r.status, StatusCode::OK, "token: {}", r.text);
        r.json
    }

    /// GET with a bearer token.
    pub async fn get_as(&self, token: &str, uri: &str) -> Resp {
        self.raw(Method::GET, uri, &[("authorization", &format!("Bearer {token}"))], Vec::new()).await
    }
}
