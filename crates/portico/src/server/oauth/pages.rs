//! The authorization server's HTML pages (askama templates under `templates/`, escaped by
//! default). Their form fields are documented in `docs/AUTH.md` for automated clients.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Template)]
#[template(path = "login.html")]
pub struct Login {
    pub csrf: String,
    pub req: String,
    pub app_name: Option<String>,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "approve.html")]
pub struct Approve {
    pub csrf: String,
    pub req: String,
    pub app_name: String,
    pub user_name: String,
    /// (scope token, plain-language sentence)
    pub scopes: Vec<(String, String)>,
    /// (patient id, display name)
    pub patients: Vec<(String, String)>,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct Message {
    pub title: String,
    pub message: String,
    pub is_error: bool,
}

/// Render a page; pages are never cached and never framed (clickjacking).
pub fn html(status: StatusCode, page: &impl Template) -> Response {
    let body = page.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "template failed");
        "<!doctype html><title>Error</title><p>Something went wrong.</p>".to_string()
    });
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' *; frame-ancestors 'none'",
        ),
    );
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

/// An error page (never a redirect: used when the client or redirect URI is not trusted).
pub fn error_page(status: StatusCode, message: impl Into<String>) -> Response {
    html(status, &Message { title: "This request cannot continue".into(), message: message.into(), is_error: true })
}
