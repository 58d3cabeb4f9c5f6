//! Identity primitives for portico: the security-sensitive building blocks
//! of login, MFA and the SMART on FHIR authorization server.
//!
//! Why a separate crate: these functions decide whether someone gets at a
//! patient's records, so they are kept small, free of web-framework and
//! database types, and tested on their own with real cryptography. The
//! server composes them; nothing here knows about users, sessions or
//! storage. The only I/O is the id_token signing key file
//! ([`jose::SigningKey::load_or_create`]) and fetching a client's JWK Set
//! ([`fetch::fetch_jwks`]).
//!
//! Crypto choices follow STACK.md: pure-Rust RustCrypto (argon2, rsa, p384,
//! sha2) and `jsonwebtoken` with its `rust_crypto` backend; TLS for fetching
//! is rustls with *ring*. No OpenSSL, no aws-lc.

pub mod fetch;
pub mod jose;
pub mod password;
pub mod pkce;
pub mod secret;
pub mod totp;
