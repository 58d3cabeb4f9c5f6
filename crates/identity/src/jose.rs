//! JOSE: the server's own id_token signing key, and verification of
//! `private_key_jwt` client assertions (RFC 7523, SMART Backend Services).
//!
//! Why RS256 for our own tokens: SMART App Launch requires servers to
//! support RS256 for id_tokens, and it is the one algorithm every OIDC client
//! library verifies. The key is generated on first start and kept on disk
//! (0600) so restarts do not invalidate issued tokens; the `kid` is the RFC
//! 7638 thumbprint so it changes exactly when the key does.
//!
//! Why client assertions are checked so narrowly: a JWT verifier that lets
//! the token choose how it is verified is the classic JOSE failure. So the
//! algorithm allowlist is fixed (RS384 and ES384, the SMART Backend Services
//! algorithms), the key must come from the client's registered JWK Set by
//! `kid` and match the algorithm's key type, and header members that point
//! elsewhere for a key (`jku`, `x5u`, `jwk`, `x5c`) or demand extensions we do
//! not implement (`crit`) are refused rather than ignored. Claims are checked
//! only after the signature, so an unsigned forgery learns nothing from the
//! error. The short `exp` horizon (5 minutes) bounds how long the caller
//! must remember `jti`s to stop replays; remembering them is the caller's job.
//!
//! Why only jsonwebtoken's signature primitives are used for verification,
//! not its `decode`: its claim validation reads the system clock, while we
//! take `now` as a parameter (testable, one clock per request), and its
//! typed header parsing would make "claims malformed" indistinguishable from
//! "token malformed". Header, key choice and claims are all decided here.

use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, LineEnding};
use rsa::traits::PublicKeyParts as _;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

/// Size of the generated id_token signing key.
pub const SIGNING_KEY_BITS: usize = 2048;
/// Longest accepted client assertion lifetime: `exp` at most this far ahead.
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 300;
/// Clock skew tolerated for `nbf` and `iat` in the future.
pub const CLOCK_SKEW_SECS: i64 = 60;
/// Longest accepted `jti` (the caller stores it to detect replays).
pub const MAX_JTI_LEN: usize = 256;
/// Longest accepted compact JWS, in bytes.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Most keys accepted in a client's JWK Set.
const MAX_JWKS_KEYS: usize = 32;
/// Accepted RSA modulus sizes for client keys, in bytes (2048..=4096 bits).
const RSA_MIN_BYTES: usize = 256;
const RSA_MAX_BYTES: usize = 512;
/// JWK members that only a private key has.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
/// Header members that would make us fetch or trust a key named by the token itself,
/// or that demand extensions we do not implement.
const FORBIDDEN_HEADER_MEMBERS: [&str; 5] = ["jku", "x5u", "jwk", "x5c", "crit"];

/// Why a JOSE operation failed. Messages are short categories: they never
/// contain key material, token contents or which of several checks failed
/// beyond the category.
#[derive(Debug, thiserror::Error)]
pub enum JoseError {
    #[error("the signing key file could not be read or written: {0}")]
    KeyFile(#[source] std::io::Error),
    #[error("the signing key file does not hold a usable RSA private key (PKCS#8 PEM, at least 2048 bits)")]
    KeyFormat,
    #[error("generating a signing key failed")]
    KeyGeneration,
    #[error("signing failed")]
    Sign,
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's algorithm is not allowed")]
    Algorithm,
    #[error("the token's header has a member that is not accepted")]
    Header,
    #[error("the token's key is not in the key set")]
    UnknownKey,
    #[error("the token's signature is invalid")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token's lifetime is too long")]
    LifetimeTooLong,
    #[error("the token is not yet valid")]
    NotYetValid,
    #[error("the token's issuer or subject is wrong")]
    Issuer,
    #[error("the token's audience is wrong")]
    Audience,
    #[error("the token's claims are missing or malformed")]
    Claims,
    #[error("invalid JWK Set: {0}")]
    Jwks(String),
}

/// The server's own signing key for id_tokens: RS256 (SMART requires RS256 support), 2048-bit RSA.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    n: String,
    e: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Load a PKCS#8 PEM private key from `path`, or generate one and write it there (mode 0600, create parent dirs, write to a temp file then rename).
    ///
    /// If another process creates the file at the same moment, the file that
    /// landed first wins and is loaded, so both processes use one key.
    pub fn load_or_create(path: &Path) -> Result<SigningKey, JoseError> {
        match std::fs::read_to_string(path) {
            Ok(pem) => Self::from_pkcs8_pem(&pem),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = rsa::PrivateKey::new(&mut getrandom::SysRng, SIGNING_KEY_BITS)
                    .map_err(|_| JoseError::KeyGeneration)?;
                let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|_| JoseError::KeyGeneration)?;
                if write_new_key_file(path, pem.as_bytes())? {
                    Self::from_private_key(&key)
                } else {
                    // Lost a creation race: use the key that is there now.
                    let pem = std::fs::read_to_string(path).map_err(JoseError::KeyFile)?;
                    Self::from_pkcs8_pem(&pem)
                }
            }
            Err(e) => Err(JoseError::KeyFile(e)),
        }
    }

    fn from_pkcs8_pem(pem: &str) -> Result<SigningKey, JoseError> {
        let key = rsa::PrivateKey::from_pkcs8_pem(pem).map_err(|_| JoseError::KeyFormat)?;
        Self::from_private_key(&key)
    }

    fn from_private_key(key: &rsa::PrivateKey) -> Result<SigningKey, JoseError> {
        if key.size() * 8 < SIGNING_KEY_BITS {
            return Err(JoseError::KeyFormat);
        }
        let n_bytes = key.n_bytes();
        let e_bytes = key.e_bytes();
        let n = URL_SAFE_NO_PAD.encode(&n_bytes);
        let e = URL_SAFE_NO_PAD.encode(&e_bytes);
        // RFC 7638: members in lexicographic order, no whitespace.
        let thumbprint_input = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint_input.as_bytes()));
        let der = key.to_pkcs1_der().map_err(|_| JoseError::KeyFormat)?;
        Ok(SigningKey {
            kid,
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            decoding: DecodingKey::from_rsa_raw_components(&n_bytes, &e_bytes),
            n,
            e,
        })
    }

    /// RFC 7638 JWK thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK Set: `{"keys":[{kty,n,e,kid,alg:"RS256",use:"sig"}]}`.
    pub fn jwks(&self) -> Value {
        json!({
            "keys": [{
                "kty": "RSA",
                "n": self.n,
                "e": self.e,
                "kid": self.kid,
                "alg": "RS256",
                "use": "sig",
            }]
        })
    }

    /// Compact JWS RS256 with `kid` in the header, `typ` JWT. `claims` must be a JSON object.
    pub fn sign(&self, claims: &Value) -> Result<String, JoseError> {
        if !claims.is_object() {
            return Err(JoseError::Claims);
        }
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".to_string());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|_| JoseError::Sign)
    }

    /// Checks signature + exp (for tests and id_token_hint): the token must
    /// be RS256, carry this key's `kid`, have an `exp` after `now_secs` and
    /// (if present) an `nbf` not beyond the allowed skew. Returns the claims.
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<Value, JoseError> {
        let header = parse_header(token)?;
        if header.get("alg").and_then(Value::as_str) != Some("RS256") {
            return Err(JoseError::Algorithm);
        }
        if FORBIDDEN_HEADER_MEMBERS.iter().any(|m| header.contains_key(*m)) {
            return Err(JoseError::Header);
        }
        if header.get("kid").and_then(Value::as_str) != Some(self.kid.as_str()) {
            return Err(JoseError::UnknownKey);
        }
        let claims = verify_signature(token, Algorithm::RS256, &self.decoding)?;
        let exp = numeric_date(claims.get("exp")).ok_or(JoseError::Claims)?;
        if exp <= now_secs {
            return Err(JoseError::Expired);
        }
        check_not_in_future(&claims, "nbf", now_secs)?;
        Ok(Value::Object(claims))
    }
}

/// Write `contents` to a new file at `path`, mode 0600, via a temp file in the
/// same directory. Returns false (and leaves the existing file alone) if
/// `path` already exists.
fn write_new_key_file(path: &Path, contents: &[u8]) -> Result<bool, JoseError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(JoseError::KeyFile)?;
    let file_name =
        path.file_name().ok_or_else(|| JoseError::KeyFile(std::io::Error::other("key path has no file name")))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp-{}", &crate::secret::random_token()[..12]));
    let tmp = dir.join(tmp_name);

    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        // A hard link publishes the file atomically *without* replacing one
        // that appeared meanwhile; fall back to rename where links are unsupported.
        let created = match std::fs::hard_link(&tmp, path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(_) => {
                std::fs::rename(&tmp, path)?;
                true
            }
        };
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all(); // make the new directory entry durable (best effort)
        }
        Ok(created)
    })();
    let _ = std::fs::remove_file(&tmp);
    result.map_err(JoseError::KeyFile)
}

/// A verified `private_key_jwt` client assertion (RFC 7523 / SMART Backend Services).
///
/// The caller must still refuse a `jti` it has already seen before `exp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    pub jti: String,
    pub exp: i64,
}

/// Verify a client assertion against the client's JWK Set (JSON text). Only RS384 and ES384
/// are accepted (alg none, HS*, RS256, anything else → error); the JWK is chosen by `kid`
/// (unknown kid → error; a header `jku`/`x5u`/`jwk` is never followed → error); iss == sub ==
/// client_id; aud equals one of `audiences`; exp present, > now, and ≤ now + 300 s; nbf/iat if
/// present not in the future (allow 60 s skew); jti present and non-empty. Any failure → Err,
/// with a message that does not say which check failed beyond a short category.
///
/// Details: `aud` may be a string or an array (RFC 7519); it passes if any
/// value equals one of `audiences`. Keys are chosen by `kid` *and* key type
/// (RSA for RS384, EC P-384 for ES384); a key whose `alg`, `use` or
/// `key_ops` says it is not for this is skipped. `x5c` and `crit` headers are
/// refused as well. `jti` is limited to 256 bytes.
pub fn verify_client_assertion(
    assertion: &str,
    jwks_json: &str,
    client_id: &str,
    audiences: &[&str],
    now_secs: i64,
) -> Result<Assertion, JoseError> {
    // 1. Header: decide the algorithm and key before touching the signature.
    let header = parse_header(assertion)?;
    let alg = match header.get("alg").and_then(Value::as_str) {
        Some("RS384") => Algorithm::RS384,
        Some("ES384") => Algorithm::ES384,
        _ => return Err(JoseError::Algorithm),
    };
    if FORBIDDEN_HEADER_MEMBERS.iter().any(|m| header.contains_key(*m)) {
        return Err(JoseError::Header);
    }
    let kid = match header.get("kid") {
        Some(Value::String(k)) if !k.is_empty() => k.as_str(),
        _ => return Err(JoseError::UnknownKey),
    };

    // 2. Key(s) from the registered set with that kid and the right type.
    let jwks: Value = serde_json::from_str(jwks_json).map_err(|_| JoseError::Jwks("not valid JSON".to_string()))?;
    let keys =
        jwks.get("keys").and_then(Value::as_array).ok_or_else(|| JoseError::Jwks("no \"keys\" array".to_string()))?;
    let mut candidates = Vec::new();
    for key in keys {
        let Some(key) = key.as_object() else { continue };
        if key.get("kid").and_then(Value::as_str) != Some(kid) {
            continue;
        }
        let wanted_kty = if alg == Algorithm::RS384 { "RSA" } else { "EC" };
        if key.get("kty").and_then(Value::as_str) != Some(wanted_kty) {
            continue;
        }
        if !key_usable_for_signatures(key) {
            continue;
        }
        let (key_alg, decoding) = public_key_from_jwk(key)?;
        if key_alg == alg {
            candidates.push(decoding);
        }
    }
    if candidates.is_empty() {
        return Err(JoseError::UnknownKey);
    }

    // 3. Signature.
    // With duplicate kids, try each candidate; any outcome other than a bad
    // signature (success, or claims that fail to parse) is final.
    let mut verified = Err(JoseError::Signature);
    for key in &candidates {
        verified = verify_signature(assertion, alg, key);
        if !matches!(verified, Err(JoseError::Signature)) {
            break;
        }
    }
    let claims = verified?;

    // 4. Claims.
    let iss = claims.get("iss").and_then(Value::as_str);
    let sub = claims.get("sub").and_then(Value::as_str);
    if iss != Some(client_id) || sub != Some(client_id) {
        return Err(JoseError::Issuer);
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => audiences.contains(&a.as_str()),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(|a| audiences.contains(&a)),
        _ => false,
    };
    if !aud_ok {
        return Err(JoseError::Audience);
    }
    let exp = numeric_date(claims.get("exp")).ok_or(JoseError::Claims)?;
    if exp <= now_secs {
        return Err(JoseError::Expired);
    }
    if exp > now_secs.saturating_add(MAX_ASSERTION_LIFETIME_SECS) {
        return Err(JoseError::LifetimeTooLong);
    }
    check_not_in_future(&claims, "nbf", now_secs)?;
    check_not_in_future(&claims, "iat", now_secs)?;
    let jti = match claims.get("jti") {
        Some(Value::String(j)) if !j.is_empty() && j.len() <= MAX_JTI_LEN => j.clone(),
        _ => return Err(JoseError::Claims),
    };
    Ok(Assertion { jti, exp })
}

/// Validate a JWK Set given at client registration: JSON with "keys", each key RSA (RS384) or EC P-384 (ES384) public, no private members ("d" etc.) → Err otherwise.
///
/// Also required of each key: a non-empty `kid` (assertions pick keys by
/// `kid`, so a key without one could never be used), RSA moduli of
/// 2048..=4096 bits with a sane exponent, EC points that are on the P-384
/// curve, `alg` (if given) RS384/ES384 matching the key type, `use` (if
/// given) "sig", `key_ops` (if given) including "verify". At most 32 keys.
pub fn check_client_jwks(jwks_json: &str) -> Result<(), JoseError> {
    let jwks: Value = serde_json::from_str(jwks_json).map_err(|_| JoseError::Jwks("not valid JSON".to_string()))?;
    let keys = jwks
        .as_object()
        .and_then(|o| o.get("keys"))
        .and_then(Value::as_array)
        .ok_or_else(|| JoseError::Jwks("expected an object with a \"keys\" array".to_string()))?;
    if keys.is_empty() {
        return Err(JoseError::Jwks("the \"keys\" array is empty".to_string()));
    }
    if keys.len() > MAX_JWKS_KEYS {
        return Err(JoseError::Jwks(format!("more than {MAX_JWKS_KEYS} keys")));
    }
    for (i, key) in keys.iter().enumerate() {
        let at = |what: &str| JoseError::Jwks(format!("key {}: {what}", i + 1));
        let key = key.as_object().ok_or_else(|| at("not a JSON object"))?;
        match key.get("kid") {
            Some(Value::String(k)) if !k.is_empty() => {}
            _ => return Err(at("missing \"kid\"")),
        }
        if !key_usable_for_signatures(key) {
            return Err(at("\"use\" or \"key_ops\" does not allow signature verification"));
        }
        public_key_from_jwk(key).map_err(|e| match e {
            JoseError::Jwks(msg) => at(&msg),
            _ => at("unusable key"),
        })?;
    }
    Ok(())
}

fn key_usable_for_signatures(key: &Map<String, Value>) -> bool {
    let use_ok = match key.get("use") {
        None => true,
        Some(u) => u.as_str() == Some("sig"),
    };
    let ops_ok = match key.get("key_ops") {
        None => true,
        Some(Value::Array(ops)) => ops.iter().any(|o| o.as_str() == Some("verify")),
        Some(_) => false,
    };
    use_ok && ops_ok
}

/// Check one public JWK and turn it into a verification key plus the one
/// algorithm it may be used with.
fn public_key_from_jwk(key: &Map<String, Value>) -> Result<(Algorithm, DecodingKey), JoseError> {
    let bad = |what: &str| JoseError::Jwks(what.to_string());
    if PRIVATE_MEMBERS.iter().any(|m| key.contains_key(*m)) {
        return Err(bad("contains private key material; register only the public key"));
    }
    let member = |name: &str| -> Result<Vec<u8>, JoseError> {
        let s = key.get(name).and_then(Value::as_str).ok_or_else(|| JoseError::Jwks(format!("missing \"{name}\"")))?;
        URL_SAFE_NO_PAD.decode(s).map_err(|_| JoseError::Jwks(format!("\"{name}\" is not base64url")))
    };
    let alg = key.get("alg").map(|a| a.as_str().unwrap_or(""));
    match key.get("kty").and_then(Value::as_str) {
        Some("RSA") => {
            if alg.is_some_and(|a| a != "RS384") {
                return Err(bad("RSA keys must be for RS384"));
            }
            let n = member("n")?;
            let e = member("e")?;
            let n_len = n.iter().skip_while(|&&b| b == 0).count();
            if !(RSA_MIN_BYTES..=RSA_MAX_BYTES).contains(&n_len) {
                return Err(bad("RSA modulus must be 2048 to 4096 bits"));
            }
            let e_trimmed: Vec<u8> = e.iter().copied().skip_while(|&b| b == 0).collect();
            let e_odd = e_trimmed.last().is_some_and(|b| b & 1 == 1);
            if e_trimmed.is_empty() || e_trimmed.len() > 4 || !e_odd || e_trimmed == [1] {
                return Err(bad("RSA exponent is not acceptable"));
            }
            Ok((Algorithm::RS384, DecodingKey::from_rsa_raw_components(&n, &e)))
        }
        Some("EC") => {
            if alg.is_some_and(|a| a != "ES384") {
                return Err(bad("EC keys must be for ES384"));
            }
            if key.get("crv").and_then(Value::as_str) != Some("P-384") {
                return Err(bad("EC keys must use the P-384 curve"));
            }
            let x = member("x")?;
            let y = member("y")?;
            if x.len() != 48 || y.len() != 48 {
                return Err(bad("EC coordinates must be 48 bytes"));
            }
            let mut sec1 = Vec::with_capacity(97);
            sec1.push(0x04);
            sec1.extend_from_slice(&x);
            sec1.extend_from_slice(&y);
            if p384::PublicKey::from_sec1_bytes(&sec1).is_err() {
                return Err(bad("EC point is not on the P-384 curve"));
            }
            let x = URL_SAFE_NO_PAD.encode(&x);
            let y = URL_SAFE_NO_PAD.encode(&y);
            let decoding = DecodingKey::from_ec_components(&x, &y).map_err(|_| bad("unusable EC key"))?;
            Ok((Algorithm::ES384, decoding))
        }
        Some("oct") => Err(bad("symmetric keys are not accepted")),
        _ => Err(bad("key type must be RSA or EC")),
    }
}

/// Split a compact JWS strictly and return its header as a JSON object.
fn parse_header(token: &str) -> Result<Map<String, Value>, JoseError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JoseError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JoseError::Malformed);
    };
    if h.is_empty() || p.is_empty() {
        return Err(JoseError::Malformed);
    }
    if s.is_empty() {
        // An unsecured JWS ("alg":"none") has an empty signature.
        return Err(JoseError::Algorithm);
    }
    let bytes = URL_SAFE_NO_PAD.decode(h).map_err(|_| JoseError::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(header)) => Ok(header),
        _ => Err(JoseError::Malformed),
    }
}

/// Verify the signature with exactly `alg` and return the claims object.
///
/// Only the signature primitive comes from jsonwebtoken: its header and
/// claim handling is bypassed, so everything about the token's contents is
/// decided in this module (see module docs).
fn verify_signature(token: &str, alg: Algorithm, key: &DecodingKey) -> Result<Map<String, Value>, JoseError> {
    let (message, signature) = token.rsplit_once('.').ok_or(JoseError::Malformed)?;
    let (_, payload) = message.split_once('.').ok_or(JoseError::Malformed)?;
    match jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, alg) {
        Ok(true) => {}
        // Ok(false): wrong signature; Err: undecodable signature or unusable key.
        Ok(false) | Err(_) => return Err(JoseError::Signature),
    }
    // Only reachable with a good signature.
    let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| JoseError::Claims)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(claims)) => Ok(claims),
        _ => Err(JoseError::Claims),
    }
}

/// A NumericDate (RFC 7519): integer seconds, or a finite float (floored).
fn numeric_date(v: Option<&Value>) -> Option<i64> {
    let n = v?.as_number()?;
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    // `as` saturates at the i64 range, which is fine for dates this absurd.
    f.is_finite().then(|| f.floor() as i64)
}

/// If `claim` is present it must be a NumericDate no later than now + skew.
fn check_not_in_future(claims: &Map<String, Value>, claim: &str, now_secs: i64) -> Result<(), JoseError> {
    match claims.get(claim) {
        None => Ok(()),
        Some(v) => {
            let t = numeric_date(Some(v)).ok_or(JoseError::Claims)?;
            if t > now_secs.saturating_add(CLOCK_SKEW_SECS) { Err(JoseError::NotYetValid) } else { Ok(()) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::crypto::sign as jws_sign;
    use p384::elliptic_curve::Generate as _;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    const CLIENT: &str = "backend-client-1";
    const AUD: &str = "https://portico.example/oauth/token";
    const NOW: i64 = 1_750_000_000;

    struct TestKey {
        enc: EncodingKey,
        jwk: Value,
        alg: Algorithm,
        kid: &'static str,
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn new_rsa_key(kid: &'static str) -> (TestKey, rsa::PrivateKey) {
        let key = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).unwrap();
        let der = key.to_pkcs1_der().unwrap();
        let jwk = json!({
            "kty": "RSA", "kid": kid, "alg": "RS384", "use": "sig",
            "n": b64(&key.n_bytes()), "e": b64(&key.e_bytes()),
        });
        let enc = EncodingKey::from_rsa_der(der.as_bytes());
        (TestKey { enc, jwk, alg: Algorithm::RS384, kid }, key)
    }

    fn new_ec_key(kid: &'static str) -> TestKey {
        let secret = p384::SecretKey::generate();
        let der = secret.to_pkcs8_der().unwrap();
        let point = secret.public_key().to_sec1_bytes();
        assert_eq!(point.len(), 97);
        let jwk = json!({
            "kty": "EC", "crv": "P-384", "kid": kid,
            "x": b64(&point[1..49]), "y": b64(&point[49..]),
        });
        TestKey { enc: EncodingKey::from_ec_der(der.as_bytes()), jwk, alg: Algorithm::ES384, kid }
    }

    fn rsa_key() -> &'static (TestKey, rsa::PrivateKey) {
        static K: OnceLock<(TestKey, rsa::PrivateKey)> = OnceLock::new();
        K.get_or_init(|| new_rsa_key("rsa-1"))
    }

    fn ec_key() -> &'static TestKey {
        static K: OnceLock<TestKey> = OnceLock::new();
        K.get_or_init(|| new_ec_key("ec-1"))
    }

    fn jwks_of(keys: &[&TestKey]) -> String {
        json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
    }

    fn client_jwks() -> String {
        jwks_of(&[&rsa_key().0, ec_key()])
    }

    fn claims() -> Value {
        json!({
            "iss": CLIENT, "sub": CLIENT, "aud": AUD,
            "exp": NOW + 240, "iat": NOW, "jti": crate::secret::random_token(),
        })
    }

    /// Build a compact JWS with exactly the given header, signed with `alg`.
    fn token_with(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
        let msg = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let sig = jws_sign(msg.as_bytes(), key, alg).unwrap();
        format!("{msg}.{sig}")
    }

    fn token(key: &TestKey, claims: &Value) -> String {
        let alg = if key.alg == Algorithm::RS384 { "RS384" } else { "ES384" };
        token_with(&json!({"alg": alg, "kid": key.kid, "typ": "JWT"}), claims, &key.enc, key.alg)
    }

    fn check(token: &str) -> Result<Assertion, JoseError> {
        verify_client_assertion(token, &client_jwks(), CLIENT, &[AUD], NOW)
    }

    #[test]
    fn valid_rs384() {
        let c = claims();
        let a = check(&token(&rsa_key().0, &c)).unwrap();
        assert_eq!(a.jti, c["jti"].as_str().unwrap());
        assert_eq!(a.exp, NOW + 240);
    }

    #[test]
    fn valid_es384() {
        let c = claims();
        let a = check(&token(ec_key(), &c)).unwrap();
        assert_eq!(a.jti, c["jti"].as_str().unwrap());
    }

    #[test]
    fn valid_with_jsonwebtoken_encode_and_aud_array() {
        // Tokens made by a mainstream library (as a client would) verify too.
        let mut header = Header::new(Algorithm::ES384);
        header.kid = Some("ec-1".into());
        let mut c = claims();
        c["aud"] = json!(["https://other.example", AUD]);
        let t = jsonwebtoken::encode(&header, &c, &ec_key().enc).unwrap();
        assert!(check(&t).is_ok());
        // Several accepted audiences: any match passes.
        let t = token(ec_key(), &claims());
        assert!(verify_client_assertion(&t, &client_jwks(), CLIENT, &["https://x", AUD], NOW).is_ok());
    }

    #[test]
    fn alg_none_refused() {
        let h = b64(json!({"alg": "none", "kid": "rsa-1"}).to_string().as_bytes());
        let p = b64(claims().to_string().as_bytes());
        assert!(matches!(check(&format!("{h}.{p}.")), Err(JoseError::Algorithm)));
        // Even with some bytes in the signature position.
        assert!(matches!(check(&format!("{h}.{p}.AAAA")), Err(JoseError::Algorithm)));
        for alg in ["None", "NONE", ""] {
            let h = b64(json!({"alg": alg, "kid": "rsa-1"}).to_string().as_bytes());
            assert!(matches!(check(&format!("{h}.{p}.AAAA")), Err(JoseError::Algorithm)));
        }
        let h = b64(json!({"kid": "rsa-1"}).to_string().as_bytes());
        assert!(matches!(check(&format!("{h}.{p}.AAAA")), Err(JoseError::Algorithm)));
    }

    #[test]
    fn hs384_with_public_key_as_secret_refused() {
        // Algorithm confusion: HMAC keyed with the public key material the
        // attacker can read from the JWK Set.
        let (key, private) = rsa_key();
        let public_pem = {
            use rsa::pkcs8::EncodePublicKey as _;
            private.to_public_key().to_public_key_pem(LineEnding::LF).unwrap()
        };
        for secret in [public_pem.as_bytes().to_vec(), private.n_bytes().to_vec(), key.jwk.to_string().into_bytes()] {
            let hmac = EncodingKey::from_secret(&secret).unwrap();
            for (name, alg) in [("HS384", Algorithm::HS384), ("HS256", Algorithm::HS256)] {
                let t = token_with(&json!({"alg": name, "kid": "rsa-1"}), &claims(), &hmac, alg);
                assert!(matches!(check(&t), Err(JoseError::Algorithm)), "{name}");
            }
        }
    }

    #[test]
    fn rs256_and_other_algs_refused() {
        let (key, _) = rsa_key();
        let t = token_with(&json!({"alg": "RS256", "kid": "rsa-1"}), &claims(), &key.enc, Algorithm::RS256);
        assert!(matches!(check(&t), Err(JoseError::Algorithm)));
        let t = token_with(&json!({"alg": "PS384", "kid": "rsa-1"}), &claims(), &key.enc, Algorithm::PS384);
        assert!(matches!(check(&t), Err(JoseError::Algorithm)));
        let t = token_with(&json!({"alg": "RS512", "kid": "rsa-1"}), &claims(), &key.enc, Algorithm::RS512);
        assert!(matches!(check(&t), Err(JoseError::Algorithm)));
        // A header that lies: says RS384 but the signature is RS256.
        let t = token_with(&json!({"alg": "RS384", "kid": "rsa-1"}), &claims(), &key.enc, Algorithm::RS256);
        assert!(matches!(check(&t), Err(JoseError::Signature)));
    }

    #[test]
    fn unknown_kid_refused() {
        let (key, _) = rsa_key();
        let t = token_with(&json!({"alg": "RS384", "kid": "nope"}), &claims(), &key.enc, Algorithm::RS384);
        assert!(matches!(check(&t), Err(JoseError::UnknownKey)));
        let t = token_with(&json!({"alg": "RS384"}), &claims(), &key.enc, Algorithm::RS384);
        assert!(matches!(check(&t), Err(JoseError::UnknownKey)));
        let t = token_with(&json!({"alg": "RS384", "kid": 7}), &claims(), &key.enc, Algorithm::RS384);
        assert!(matches!(check(&t), Err(JoseError::UnknownKey)));
        // kid of the EC key, but RS384: key type mismatch means no candidate.
        let t = token_with(&json!({"alg": "RS384", "kid": "ec-1"}), &claims(), &key.enc, Algorithm::RS384);
        assert!(matches!(check(&t), Err(JoseError::UnknownKey)));
        // Valid token, but the client's set does not have that key.
        let t = token(key, &claims());
        assert!(matches!(
            verify_client_assertion(&t, &jwks_of(&[ec_key()]), CLIENT, &[AUD], NOW),
            Err(JoseError::UnknownKey)
        ));
    }

    #[test]
    fn key_pointing_headers_refused() {
        let (key, _) = rsa_key();
        for (member, value) in [
            ("jku", json!("https://attacker.example/jwks.json")),
            ("x5u", json!("https://attacker.example/cert.pem")),
            ("jwk", key.jwk.clone()),
            ("x5c", json!(["MIIB"])),
            ("crit", json!(["exp"])),
        ] {
            let mut header = json!({"alg": "RS384", "kid": "rsa-1"});
            header[member] = value;
            let t = token_with(&header, &claims(), &key.enc, Algorithm::RS384);
            assert!(matches!(check(&t), Err(JoseError::Header)), "{member}");
        }
    }

    #[test]
    fn embedded_jwk_is_not_trusted() {
        // An attacker's own key in the header, with the victim's kid: refused
        // before any key is used.
        let attacker = new_ec_key("rsa-1");
        let header = json!({"alg": "ES384", "kid": "ec-1", "jwk": attacker.jwk});
        let t = token_with(&header, &claims(), &attacker.enc, Algorithm::ES384);
        assert!(matches!(check(&t), Err(JoseError::Header)));
        // Without the header member, the attacker's signature fails on the registered key.
        let header = json!({"alg": "ES384", "kid": "ec-1"});
        let t = token_with(&header, &claims(), &attacker.enc, Algorithm::ES384);
        assert!(matches!(check(&t), Err(JoseError::Signature)));
    }

    #[test]
    fn expiry_window() {
        let k = ec_key();
        let mut c = claims();
        c["exp"] = json!(NOW - 1);
        assert!(matches!(check(&token(k, &c)), Err(JoseError::Expired)));
        c["exp"] = json!(NOW);
        assert!(matches!(check(&token(k, &c)), Err(JoseError::Expired)));
        c["exp"] = json!(NOW + 1);
        assert!(check(&token(k, &c)).is_ok());
        c["exp"] = json!(NOW + 300);
        assert!(check(&token(k, &c)).is_ok());
        c["exp"] = json!(NOW + 301);
        assert!(matches!(check(&token(k, &c)), Err(JoseError::LifetimeTooLong)));
        c["exp"] = json!(NOW + 86_400 * 365);
        assert!(matches!(check(&token(k, &c)), Err(JoseError::LifetimeTooLong)));
        c["exp"] = json!(NOW as f64 + 100.5);
        assert_eq!(check(&token(k, &c)).unwrap().exp, NOW + 100);
        for bad in [json!("soon"), json!(null), json!([1]), json!(true)] {
            c["exp"] = bad.clone();
            let r = check(&token(k, &c));
            assert!(matches!(r, Err(JoseError::Claims)), "{bad}: {r:?}");
        }
        c.as_object_mut().unwrap().remove("exp");
        assert!(matches!(check(&token(k, &c)), Err(JoseError::Claims)));
    }

    #[test]
    fn nbf_and_iat_in_future() {
        let k = ec_key();
        for claim in ["nbf", "iat"] {
            let mut c = claims();
            c[claim] = json!(NOW + 61);
            assert!(matches!(check(&token(k, &c)), Err(JoseError::NotYetValid)), "{claim}");
            c[claim] = json!(NOW + 60);
            assert!(check(&token(k, &c)).is_ok(), "{claim} within skew");
            c[claim] = json!(NOW - 1000);
            assert!(check(&token(k, &c)).is_ok(), "{claim} in the past");
            c[claim] = json!("yesterday");
            assert!(matches!(check(&token(k, &c)), Err(JoseError::Claims)), "{claim}");
        }
    }

    #[test]
    fn wrong_audience() {
        let k = ec_key();
        let mut c = claims();
        for bad in [
            json!("https://evil.example/token"),
            json!(["https://evil.example/token"]),
            json!([]),
            json!(null),
            json!(42),
            json!(format!("{AUD}/")),
        ] {
            c["aud"] = bad.clone();
            assert!(matches!(check(&token(k, &c)), Err(JoseError::Audience)), "{bad}");
        }
        c.as_object_mut().unwrap().remove("aud");
        assert!(matches!(check(&token(k, &c)), Err(JoseError::Audience)));
        assert!(matches!(
            verify_client_assertion(&token(k, &claims()), &client_jwks(), CLIENT, &[], NOW),
            Err(JoseError::Audience)
        ));
    }

    #[test]
    fn issuer_and_subject() {
        let k = ec_key();
        let mut c = claims();
        c["sub"] = json!("someone-else");
        assert!(matches!(check(&token(k, &c)), Err(JoseError::Issuer)));
        let mut c = claims();
        c["iss"] = json!("someone-else");
        assert!(matches!(check(&token(k, &c)), Err(JoseError::Issuer)));
        // Both consistent but not this client.
        let mut c = claims();
        c["iss"] = json!("other-client");
        c["sub"] = json!("other-client");
        assert!(matches!(check(&token(k, &c)), Err(JoseError::Issuer)));
        let mut c = claims();
        c.as_object_mut().unwrap().remove("iss");
        assert!(matches!(check(&token(k, &c)), Err(JoseError::Issuer)));
    }

    #[test]
    fn jti_required() {
        let k = ec_key();
        let mut c = claims();
        c.as_object_mut().unwrap().remove("jti");
        assert!(matches!(check(&token(k, &c)), Err(JoseError::Claims)));
        for bad in [json!(""), json!(123), json!(null), json!("j".repeat(257))] {
            c["jti"] = bad;
            assert!(matches!(check(&token(k, &c)), Err(JoseError::Claims)));
        }
        c["jti"] = json!("j".repeat(256));
        assert!(check(&token(k, &c)).is_ok());
    }

    #[test]
    fn flipped_signature_byte() {
        for key in [&rsa_key().0, ec_key()] {
            let t = token(key, &claims());
            let (msg, sig) = t.rsplit_once('.').unwrap();
            let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
            for i in [0, raw.len() / 2, raw.len() - 1] {
                raw[i] ^= 0x01;
                let forged = format!("{msg}.{}", b64(&raw));
                assert!(matches!(check(&forged), Err(JoseError::Signature)), "byte {i}");
                raw[i] ^= 0x01;
            }
            // Payload tampering is caught by the signature as well.
            let (h, rest) = t.split_once('.').unwrap();
            let (_, s) = rest.split_once('.').unwrap();
            let mut c = claims();
            c["sub"] = json!(CLIENT);
            let forged = format!("{h}.{}.{s}", b64(c.to_string().as_bytes()));
            assert!(matches!(check(&forged), Err(JoseError::Signature)));
        }
    }

    #[test]
    fn duplicate_kid_tries_each_candidate() {
        let other = new_ec_key("ec-1");
        let set = jwks_of(&[&other, ec_key()]);
        let t = token(ec_key(), &claims());
        assert!(verify_client_assertion(&t, &set, CLIENT, &[AUD], NOW).is_ok());
    }

    #[test]
    fn candidate_key_restrictions() {
        let k = ec_key();
        let t = token(k, &claims());
        let with = |member: &str, v: Value| {
            let mut jwk = k.jwk.clone();
            jwk[member] = v;
            json!({ "keys": [jwk] }).to_string()
        };
        let run = |set: String| verify_client_assertion(&t, &set, CLIENT, &[AUD], NOW);
        assert!(run(with("use", json!("sig"))).is_ok());
        assert!(run(with("key_ops", json!(["verify"]))).is_ok());
        assert!(matches!(run(with("use", json!("enc"))), Err(JoseError::UnknownKey)));
        assert!(matches!(run(with("key_ops", json!(["encrypt"]))), Err(JoseError::UnknownKey)));
        assert!(matches!(run(with("alg", json!("ES256"))), Err(JoseError::Jwks(_))));
        assert!(matches!(run(with("d", json!("AAAA"))), Err(JoseError::Jwks(_))));
        assert!(matches!(run(with("crv", json!("P-256"))), Err(JoseError::Jwks(_))));
        assert!(matches!(run("not json".into()), Err(JoseError::Jwks(_))));
        assert!(matches!(run("{}".into()), Err(JoseError::Jwks(_))));
        assert!(matches!(run(r#"{"keys":[]}"#.into()), Err(JoseError::UnknownKey)));
    }

    #[test]
    fn malformed_tokens() {
        for t in ["", ".", "..", "a.b", "a.b.c.d", "!!!.b.c", "e30.e30.AAAA", "e30..AAAA"] {
            let r = check(t);
            assert!(matches!(r, Err(JoseError::Malformed | JoseError::Algorithm)), "{t:?}: {r:?}");
        }
        let huge = format!("{}.{}.{}", "a".repeat(10_000), "b".repeat(10_000), "c");
        assert!(matches!(check(&huge), Err(JoseError::Malformed)));
        // Header that is JSON but not an object.
        let t = format!("{}.e30.AAAA", b64(b"[1,2]"));
        assert!(matches!(check(&t), Err(JoseError::Malformed)));
        // Validly signed, but the payload is not a JSON object.
        let k = ec_key();
        let msg = format!("{}.{}", b64(br#"{"alg":"ES384","kid":"ec-1"}"#), b64(b"[1]"));
        let sig = jws_sign(msg.as_bytes(), &k.enc, Algorithm::ES384).unwrap();
        let r = check(&format!("{msg}.{sig}"));
        assert!(matches!(r, Err(JoseError::Claims | JoseError::Malformed)), "{r:?}");
    }

    #[test]
    fn error_messages_are_short_and_secret_free() {
        let k = ec_key();
        let mut c = claims();
        c["aud"] = json!("https://evil.example/");
        let msg = check(&token(k, &c)).unwrap_err().to_string();
        assert!(!msg.contains("evil"), "{msg}");
        assert!(!msg.contains(CLIENT), "{msg}");
        let mut jwk = k.jwk.clone();
        jwk["d"] = json!("c2VjcmV0LXByaXZhdGUta2V5");
        let msg = check_client_jwks(&json!({"keys": [jwk]}).to_string()).unwrap_err().to_string();
        assert!(!msg.contains("c2VjcmV0"), "{msg}");
    }

    // ---- check_client_jwks ----

    #[test]
    fn registration_jwks_accepts_rsa_and_ec_public_keys() {
        check_client_jwks(&client_jwks()).unwrap();
        let mut no_alg = ec_key().jwk.clone();
        no_alg.as_object_mut().unwrap().remove("alg");
        check_client_jwks(&json!({"keys": [no_alg]}).to_string()).unwrap();
    }

    #[test]
    fn registration_jwks_refusals() {
        let rsa = rsa_key().0.jwk.clone();
        let ec = ec_key().jwk.clone();
        let set = |k: Value| json!({ "keys": [k] }).to_string();
        let edit = |mut k: Value, f: &dyn Fn(&mut Map<String, Value>)| {
            f(k.as_object_mut().unwrap());
            k
        };
        let cases: Vec<(&str, String)> = vec![
            ("not json", "nope".into()),
            ("array", "[]".into()),
            ("no keys", "{}".into()),
            ("keys not array", r#"{"keys":{}}"#.into()),
            ("empty keys", r#"{"keys":[]}"#.into()),
            ("key not object", r#"{"keys":["x"]}"#.into()),
            ("too many keys", json!({"keys": vec![ec.clone(); 33]}).to_string()),
            (
                "rsa private d",
                set(edit(rsa.clone(), &|k| {
                    k.insert("d".into(), json!("AQAB"));
                })),
            ),
            (
                "rsa private p",
                set(edit(rsa.clone(), &|k| {
                    k.insert("p".into(), json!("AQAB"));
                })),
            ),
            (
                "ec private d",
                set(edit(ec.clone(), &|k| {
                    k.insert("d".into(), json!("AQAB"));
                })),
            ),
            ("oct", set(json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0"}))),
            ("oct without k", set(json!({"kty": "oct", "kid": "h"}))),
            ("OKP", set(json!({"kty": "OKP", "kid": "o", "crv": "Ed25519", "x": "AAAA"}))),
            ("no kty", set(json!({"kid": "x"}))),
            (
                "no kid",
                set(edit(ec.clone(), &|k| {
                    k.remove("kid");
                })),
            ),
            (
                "empty kid",
                set(edit(ec.clone(), &|k| {
                    k.insert("kid".into(), json!(""));
                })),
            ),
            (
                "rsa RS256",
                set(edit(rsa.clone(), &|k| {
                    k.insert("alg".into(), json!("RS256"));
                })),
            ),
            (
                "ec ES256",
                set(edit(ec.clone(), &|k| {
                    k.insert("alg".into(), json!("ES256"));
                })),
            ),
            (
                "ec P-256",
                set(edit(ec.clone(), &|k| {
                    k.insert("crv".into(), json!("P-256"));
                })),
            ),
            (
                "use enc",
                set(edit(ec.clone(), &|k| {
                    k.insert("use".into(), json!("enc"));
                })),
            ),
            (
                "key_ops sign only",
                set(edit(ec.clone(), &|k| {
                    k.insert("key_ops".into(), json!(["sign"]));
                })),
            ),
            (
                "rsa small",
                set(edit(rsa.clone(), &|k| {
                    k.insert("n".into(), json!(b64(&[0xc5; 128])));
                })),
            ),
            (
                "rsa huge",
                set(edit(rsa.clone(), &|k| {
                    k.insert("n".into(), json!(b64(&[0xc5; 1024])));
                })),
            ),
            (
                "rsa e=1",
                set(edit(rsa.clone(), &|k| {
                    k.insert("e".into(), json!("AQ"));
                })),
            ),
            (
                "rsa e even",
                set(edit(rsa.clone(), &|k| {
                    k.insert("e".into(), json!("AQAA"));
                })),
            ),
            (
                "rsa n not b64url",
                set(edit(rsa.clone(), &|k| {
                    k.insert("n".into(), json!("a+b/"));
                })),
            ),
            (
                "rsa n missing",
                set(edit(rsa.clone(), &|k| {
                    k.remove("n");
                })),
            ),
            (
                "ec x short",
                set(edit(ec.clone(), &|k| {
                    k.insert("x".into(), json!(b64(&[1; 47])));
                })),
            ),
            (
                "ec not on curve",
                set(edit(ec.clone(), &|k| {
                    k.insert("y".into(), json!(b64(&[1; 48])));
                })),
            ),
            (
                "ec y padded",
                set(edit(ec.clone(), &|k| {
                    let y = k["y"].as_str().unwrap().to_string();
                    k.insert("y".into(), json!(format!("{y}==")));
                })),
            ),
        ];
        for (name, json) in cases {
            assert!(matches!(check_client_jwks(&json), Err(JoseError::Jwks(_))), "{name}");
        }
        // One bad key spoils the set, and the message says which.
        let msg = check_client_jwks(&json!({"keys": [ec.clone(), {"kty":"oct","kid":"k","k":"AA"}]}).to_string())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("key 2"), "{msg}");
    }

    // ---- SigningKey ----

    fn temp_dir() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("portico-identity-test-{}", &crate::secret::random_token()[..16]))
    }

    #[test]
    fn signing_key_create_then_load() {
        let dir = temp_dir();
        let path = dir.join("nested/keys/id_token.pem");
        let key = SigningKey::load_or_create(&path).unwrap();
        let pem = std::fs::read_to_string(&path).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temp files left behind.
        let names: Vec<_> =
            std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("id_token.pem")]);

        let again = SigningKey::load_or_create(&path).unwrap();
        assert_eq!(key.kid(), again.kid());
        assert_eq!(key.jwks(), again.jwks());

        // Tokens from the first instance verify with the reloaded one.
        let t = key.sign(&json!({"sub": "p1", "exp": NOW + 60})).unwrap();
        assert_eq!(again.verify(&t, NOW).unwrap()["sub"], "p1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn signing_key_concurrent_creation_agrees() {
        let dir = temp_dir();
        let path = dir.join("k.pem");
        let kids: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> =
                (0..3).map(|_| s.spawn(|| SigningKey::load_or_create(&path).unwrap().kid().to_string())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let on_disk = SigningKey::load_or_create(&path).unwrap();
        assert!(kids.iter().all(|k| k == on_disk.kid()), "{kids:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn signing_key_bad_files() {
        let dir = temp_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a key").unwrap();
        assert!(matches!(SigningKey::load_or_create(&garbage), Err(JoseError::KeyFormat)));
        // An EC key is not an RSA key.
        let ec = dir.join("ec.pem");
        let pem = p384::SecretKey::generate().to_pkcs8_pem(LineEnding::LF).unwrap();
        std::fs::write(&ec, pem.as_bytes()).unwrap();
        assert!(matches!(SigningKey::load_or_create(&ec), Err(JoseError::KeyFormat)));
        // A directory where the file should be.
        assert!(matches!(SigningKey::load_or_create(&dir), Err(JoseError::KeyFile(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn server_key() -> &'static SigningKey {
        static K: OnceLock<(SigningKey, std::path::PathBuf)> = OnceLock::new();
        &K.get_or_init(|| {
            let dir = temp_dir();
            let key = SigningKey::load_or_create(&dir.join("k.pem")).unwrap();
            let _ = std::fs::remove_dir_all(&dir);
            (key, dir)
        })
        .0
    }

    #[test]
    fn jwks_shape_and_kid_is_rfc7638_thumbprint() {
        let key = server_key();
        let jwks = key.jwks();
        let jwk = &jwks["keys"][0];
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["alg"], "RS256");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["e"], "AQAB");
        assert_eq!(jwk["kid"], key.kid());
        assert_eq!(URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap().len(), 256);
        assert!(jwk.get("d").is_none());
        // Recompute the thumbprint independently from the published members.
        let canonical = format!(r#"{{"e":{},"kty":"RSA","n":{}}}"#, jwk["e"], jwk["n"]);
        let expect = b64(&Sha256::digest(canonical.as_bytes()));
        assert_eq!(key.kid(), expect);
        assert_eq!(key.kid().len(), 43);
    }

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 §3.1 example key and thumbprint, through the same formula.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let canonical = format!(r#"{{"e":"AQAB","kty":"RSA","n":"{n}"}}"#);
        assert_eq!(b64(&Sha256::digest(canonical.as_bytes())), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn sign_verify_roundtrip_and_header() {
        let key = server_key();
        let claims = json!({"iss": "https://portico.example", "sub": "patient-1", "aud": "app", "exp": NOW + 300, "iat": NOW, "nonce": "n-0S6"});
        let t = key.sign(&claims).unwrap();
        let header = parse_header(&t).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["kid"], key.kid());
        assert_eq!(key.verify(&t, NOW).unwrap(), claims);

        // Independently verifiable from the published JWKS with jsonwebtoken.
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwks()["keys"][0].clone()).unwrap();
        let dk = DecodingKey::from_jwk(&jwk).unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::RS256);
        v.validate_exp = false;
        v.validate_aud = false;
        assert!(jsonwebtoken::decode::<Value>(&t, &dk, &v).is_ok());
    }

    #[test]
    fn own_verify_refusals() {
        let key = server_key();
        let t = key.sign(&json!({"sub": "p", "exp": NOW + 10})).unwrap();
        assert!(matches!(key.verify(&t, NOW + 10), Err(JoseError::Expired)));
        assert!(matches!(key.verify(&t, NOW + 11), Err(JoseError::Expired)));
        let no_exp = key.sign(&json!({"sub": "p"})).unwrap();
        assert!(matches!(key.verify(&no_exp, NOW), Err(JoseError::Claims)));
        let nbf = key.sign(&json!({"sub": "p", "exp": NOW + 600, "nbf": NOW + 120})).unwrap();
        assert!(matches!(key.verify(&nbf, NOW), Err(JoseError::NotYetValid)));
        assert!(matches!(key.sign(&json!("not an object")), Err(JoseError::Claims)));

        // Tampered signature.
        let (msg, sig) = t.rsplit_once('.').unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
        raw[10] ^= 0x80;
        assert!(matches!(key.verify(&format!("{msg}.{}", b64(&raw)), NOW), Err(JoseError::Signature)));

        // Signed by another RSA key claiming our kid.
        let (other, _) = rsa_key();
        let forged = token_with(
            &json!({"alg": "RS256", "kid": key.kid()}),
            &json!({"exp": NOW + 60}),
            &other.enc,
            Algorithm::RS256,
        );
        assert!(matches!(key.verify(&forged, NOW), Err(JoseError::Signature)));
        // Wrong kid, wrong alg, alg none.
        let other_kid =
            token_with(&json!({"alg": "RS256", "kid": "x"}), &json!({"exp": NOW + 60}), &other.enc, Algorithm::RS256);
        assert!(matches!(key.verify(&other_kid, NOW), Err(JoseError::UnknownKey)));
        let rs384 = token_with(
            &json!({"alg": "RS384", "kid": key.kid()}),
            &json!({"exp": NOW + 60}),
            &other.enc,
            Algorithm::RS384,
        );
        assert!(matches!(key.verify(&rs384, NOW), Err(JoseError::Algorithm)));
        let none = format!("{}.{}.", b64(json!({"alg": "none", "kid": key.kid()}).to_string().as_bytes()), b64(b"{}"));
        assert!(matches!(key.verify(&none, NOW), Err(JoseError::Algorithm)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn garbage_assertions_are_errors(t in ".{0,300}") {
            prop_assert!(verify_client_assertion(&t, &client_jwks(), CLIENT, &[AUD], NOW).is_err());
        }

        #[test]
        fn garbage_three_part_tokens_are_errors(h in "[A-Za-z0-9_-]{0,60}", p in "[A-Za-z0-9_-]{0,60}", s in "[A-Za-z0-9_-]{0,60}") {
            let t = format!("{h}.{p}.{s}");
            prop_assert!(verify_client_assertion(&t, &client_jwks(), CLIENT, &[AUD], NOW).is_err());
            prop_assert!(server_key().verify(&t, NOW).is_err());
        }

        #[test]
        fn garbage_jwks_never_panics(s in ".{0,300}") {
            let _ = check_client_jwks(&s);
        }

        #[test]
        fn assertion_lifetime_rule(offset in -1000i64..1000) {
            let mut c = claims();
            c["exp"] = json!(NOW + offset);
            let r = check(&token(ec_key(), &c));
            if offset <= 0 {
                prop_assert!(matches!(r, Err(JoseError::Expired)));
            } else if offset > MAX_ASSERTION_LIFETIME_SECS {
                prop_assert!(matches!(r, Err(JoseError::LifetimeTooLong)));
            } else {
                prop_assert!(r.is_ok());
            }
        }
    }
}
