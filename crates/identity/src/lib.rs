//! Identity primitives for portico.
pub mod fetch;
pub mod jose;
pub mod password;
pub mod pkce;
pub mod secret;
pub mod totp;
