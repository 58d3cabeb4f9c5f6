//! Time-based one-time passwords (RFC 6238) as the second factor.
//!
//! Why these fixed parameters (SHA-1, 6 digits, 30 s): they are the only
//! ones every authenticator app honours; several apps silently ignore the
//! `algorithm`/`digits` URI parameters, which would lock users out. HMAC-SHA-1
//! is not weakened by SHA-1 collisions.
//!
//! Why ±1 step: phone clocks drift and people type slowly; a wider window
//! gives an online guesser more targets. The window is at most 3 codes of
//! 10^6, so login attempts must still be rate-limited, and a code must be
//! accepted only once per step (RFC 6238 §5.2): that replay bookkeeping
//! belongs to the caller, which knows the user's last accepted step.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use totp_rs::{Algorithm, Builder, Secret, Totp};

const DIGITS: u8 = 6;
const STEP_SECS: u64 = 30;
const SKEW_STEPS: u16 = 1;
const SECRET_BYTES: usize = 20;
/// Far beyond any real clock; keeps the step arithmetic away from overflow.
const MAX_UNIX_SECS: u64 = u64::MAX / 4;

fn totp(secret_b32: &str) -> Option<Totp> {
    let secret = Secret::try_from_base32(secret_b32.trim_end_matches('=')).ok()?;
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS)
        .with_skew(SKEW_STEPS)
        .with_step_duration(STEP_SECS)
        .with_secret(secret)
        .build() // refuses secrets under 128 bits
        .ok()
}

/// A fresh shared secret: base32 (no padding), 20 random bytes (32 chars).
///
/// # Panics
/// If the operating system cannot supply randomness.
pub fn new_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).expect("OS random number generator failed");
    Secret::from(bytes.to_vec()).to_base32()
}

/// The 6-digit code for the step containing `unix_secs`; `None` for a
/// malformed secret (not base32, or shorter than 128 bits).
pub fn code_at(secret_b32: &str, unix_secs: u64) -> Option<String> {
    if unix_secs > MAX_UNIX_SECS {
        return None;
    }
    Some(totp(secret_b32)?.generate(unix_secs).to_string())
}

/// Accepts the current step and ±1 step; code must be exactly 6 ASCII digits.
///
/// Returns false for a malformed secret. The comparison is constant time.
pub fn verify(secret_b32: &str, code: &str, unix_secs: u64) -> bool {
    if code.len() != usize::from(DIGITS) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    if unix_secs > MAX_UNIX_SECS {
        return false;
    }
    totp(secret_b32).is_some_and(|t| t.check(code, unix_secs).is_some())
}

/// Characters escaped in the label and parameters: everything but unreserved.
const URI_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The `otpauth://totp/Issuer:account?secret=...&issuer=...` URI that
/// authenticator apps import (usually via a QR code rendered by the caller).
/// The label and parameters are percent-encoded, so a `:` or `&` in the
/// account or issuer cannot change the meaning of the URI.
pub fn provisioning_uri(secret_b32: &str, account: &str, issuer: &str) -> String {
    let issuer_enc = utf8_percent_encode(issuer, URI_ESCAPE);
    let account_enc = utf8_percent_encode(account, URI_ESCAPE);
    let secret = secret_b32.trim_end_matches('=');
    format!(
        "otpauth://totp/{issuer_enc}:{account_enc}?secret={secret}&issuer={issuer_enc}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 6238 Appendix B seed for SHA-1: ASCII "12345678901234567890".
    const RFC_SEED_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    #[test]
    fn rfc6238_vectors() {
        // Appendix B lists 8-digit values; the 6-digit code is the last 6 digits.
        for (t, expected8) in [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(code_at(RFC_SEED_B32, t).unwrap(), expected8[2..], "t={t}");
            assert!(verify(RFC_SEED_B32, &expected8[2..], t));
        }
    }

    #[test]
    fn window_is_plus_minus_one_step() {
        let s = new_secret();
        let t = 1_700_000_015; // mid-step
        let code = code_at(&s, t).unwrap();
        assert!(verify(&s, &code, t));
        assert!(verify(&s, &code, t + 30));
        assert!(verify(&s, &code, t - 30));
        assert!(!verify(&s, &code, t + 60));
        assert!(!verify(&s, &code, t - 60));
    }

    #[test]
    fn code_format_is_strict() {
        let t = 59;
        assert!(verify(RFC_SEED_B32, "287082", t));
        for bad in ["", "28708", "2870820", " 287082", "287082 ", "287 082", "28708２", "+87082", "-87082"] {
            assert!(!verify(RFC_SEED_B32, bad, t), "{bad:?}");
        }
    }

    #[test]
    fn new_secret_shape() {
        let s = new_secret();
        assert_eq!(s.len(), 32);
        assert!(!s.contains('='));
        assert!(s.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
        assert_ne!(s, new_secret());
        assert!(code_at(&s, 0).is_some());
    }

    #[test]
    fn malformed_secrets() {
        assert_eq!(code_at("", 0), None);
        assert_eq!(code_at("not base32!", 0), None);
        assert_eq!(code_at("GEZDGNBV", 0), None); // 5 bytes: too short
        assert!(!verify("not base32!", "123456", 0));
        // Padding is tolerated.
        assert!(code_at(&format!("{RFC_SEED_B32}===="), 59).is_some());
    }

    #[test]
    fn uri() {
        let uri = provisioning_uri("JBSWY3DPEHPK3PXP", "ana@example.org", "Portico Health");
        assert_eq!(
            uri,
            "otpauth://totp/Portico%20Health:ana%40example.org?secret=JBSWY3DPEHPK3PXP&issuer=Portico%20Health&algorithm=SHA1&digits=6&period=30"
        );
        let uri = provisioning_uri("JBSWY3DPEHPK3PXP", "a:b&c=d", "x?y#z");
        assert!(uri.starts_with("otpauth://totp/x%3Fy%23z:a%3Ab%26c%3Dd?secret="));
    }

    proptest! {
        #[test]
        fn generated_codes_verify(t in 30u64..4_000_000_000u64) {
            let s = RFC_SEED_B32;
            let code = code_at(s, t).unwrap();
            prop_assert_eq!(code.len(), 6);
            prop_assert!(code.bytes().all(|b| b.is_ascii_digit()));
            prop_assert!(verify(s, &code, t));
            prop_assert!(verify(s, &code, t + 30));
            prop_assert!(verify(s, &code, t - 30));
        }

        #[test]
        fn any_time_never_panics(t in any::<u64>()) {
            let _ = code_at(RFC_SEED_B32, t);
            let _ = verify(RFC_SEED_B32, "123456", t);
        }

        #[test]
        fn garbage_never_panics(secret in ".*", code in ".*", t in any::<u64>()) {
            let _ = verify(&secret, &code, t);
            let _ = code_at(&secret, t);
        }
    }
}
