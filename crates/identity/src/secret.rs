//! Bearer secrets: authorization codes, access and refresh tokens, session ids.
//!
//! Why this shape: every secret we hand out is 256 bits from the OS CSPRNG, so
//! guessing is hopeless and no per-secret salt is needed. The server stores
//! only a SHA-256 digest, so a leaked database (or backup, or log of SQL
//! parameters) does not yield usable tokens, while lookups stay a plain indexed
//! equality on the digest. Argon2 would be wrong here: the input already has
//! full entropy, and a slow hash on every API request would be a DoS lever.
//! Comparisons of secret material go through [`ct_eq`] so response timing does
//! not reveal how many leading bytes matched.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// 32 random bytes from the OS CSPRNG, base64url without padding (43 chars).
///
/// # Panics
/// If the operating system cannot supply randomness (there is no safe fallback).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("OS random number generator failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 hex of a secret (how codes, tokens, session ids are stored and looked up).
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Constant-time equality (use the `subtle` crate).
///
/// Slices of different lengths compare unequal; only the length is revealed.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn token_shape_and_uniqueness() {
        let a = random_token();
        let b = random_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
    }

    #[test]
    fn digest_known_vector() {
        assert_eq!(digest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(digest("").len(), 64);
    }

    #[test]
    fn ct_eq_basics() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(!ct_eq(b"abc", b""));
    }

    proptest! {
        #[test]
        fn ct_eq_matches_eq(a in proptest::collection::vec(any::<u8>(), 0..64),
                            b in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(ct_eq(&a, &b), a == b);
            prop_assert!(ct_eq(&a, &a));
        }

        #[test]
        fn digest_is_deterministic_hex(s in ".*") {
            let d = digest(&s);
            prop_assert_eq!(d.len(), 64);
            prop_assert!(d.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
            prop_assert_eq!(d, digest(&s));
        }
    }
}
