//! PKCE (RFC 7636), S256 only.
//!
//! Why: SMART apps are mostly public clients (browser and native apps)
//! that cannot keep a client secret, so an intercepted authorization code
//! would otherwise be redeemable by anyone. The `plain` method protects
//! nothing against an attacker who sees the authorization request, so it
//! is not offered. Strict syntax checks here mean malformed values fail
//! at the authorization endpoint with a clear error instead of as a
//! mysterious mismatch at the token endpoint.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};

fn verifier_is_well_formed(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// RFC 7636 S256: verifier 43..=128 chars of [A-Za-z0-9-._~], BASE64URL(SHA256(verifier)) == challenge, constant time.
pub fn verify_s256(verifier: &str, challenge: &str) -> bool {
    if !verifier_is_well_formed(verifier) {
        return false;
    }
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    crate::secret::ct_eq(computed.as_bytes(), challenge.as_bytes())
}

/// A challenge must be 43 base64url chars (an S256 digest).
///
/// Also requires canonical encoding (the unused low bits of the last
/// character are zero), since only such strings can equal a computed digest.
pub fn challenge_is_well_formed(challenge: &str) -> bool {
    challenge.len() == 43 && URL_SAFE_NO_PAD.decode(challenge).is_ok_and(|bytes| bytes.len() == 32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(challenge_is_well_formed(challenge));
        assert!(verify_s256(verifier, challenge));
        assert!(!verify_s256(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"));
        assert!(!verify_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj", challenge));
    }

    #[test]
    fn verifier_syntax() {
        let c = |v: &str| URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes()));
        let ok42 = "a".repeat(42);
        let ok43 = "a".repeat(43);
        let ok128 = "a".repeat(128);
        let bad129 = "a".repeat(129);
        assert!(!verify_s256(&ok42, &c(&ok42)));
        assert!(verify_s256(&ok43, &c(&ok43)));
        assert!(verify_s256(&ok128, &c(&ok128)));
        assert!(!verify_s256(&bad129, &c(&bad129)));
        let tricky = format!("{}-._~", "Az09".repeat(10));
        assert!(verify_s256(&tricky, &c(&tricky)));
        for bad_char in [" ", "+", "/", "=", "%", "é"] {
            let v = format!("{}{bad_char}", "a".repeat(43));
            assert!(!verify_s256(&v, &c(&v)), "{bad_char:?}");
        }
    }

    #[test]
    fn challenge_syntax() {
        assert!(!challenge_is_well_formed(""));
        assert!(!challenge_is_well_formed(&"A".repeat(42)));
        assert!(!challenge_is_well_formed(&"A".repeat(44)));
        assert!(challenge_is_well_formed(&"A".repeat(43)));
        // "=" padding, standard-alphabet chars and non-canonical last chars.
        assert!(!challenge_is_well_formed(&format!("{}=", "A".repeat(42))));
        assert!(!challenge_is_well_formed(&format!("{}+", "A".repeat(42))));
        assert!(!challenge_is_well_formed(&format!("{}/", "A".repeat(42))));
        assert!(!challenge_is_well_formed(&format!("{}B", "A".repeat(42))));
        assert!(challenge_is_well_formed(&format!("{}E", "A".repeat(42))));
    }

    proptest! {
        #[test]
        fn roundtrip(v in "[A-Za-z0-9._~-]{43,128}") {
            let c = URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes()));
            prop_assert!(challenge_is_well_formed(&c));
            prop_assert!(verify_s256(&v, &c));
        }

        #[test]
        fn garbage_never_panics(v in ".*", c in ".*") {
            let _ = verify_s256(&v, &c);
            let _ = challenge_is_well_formed(&c);
        }
    }
}
