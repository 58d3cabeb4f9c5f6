//! Signed download links: with `export.signed_urls` on, each manifest URL carries an expiry
//! and an Ed25519 signature by the server's audit key (shared by every process on one
//! database), so a client can fetch the file without its access token
//! (`requiresAccessToken: false`). A link lives at most 15 minutes and every status poll
//! issues fresh ones. The link only stands in for the token: each download still rebuilds
//! the requester's access from the job's grant and asks the gate again, so a revocation
//! makes a signed link fail as it makes a token fail.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portico_audit::{AuditKey, PublicKey};

/// The longest a link may live (the bound; config is checked against it).
pub const MAX_TTL_SECS: i64 = 15 * 60;

/// The query parameters of a signed link.
pub const EXPIRES: &str = "expires";
pub const SIGNATURE: &str = "signature";

/// What is signed: the job, the file and the expiry (epoch ms), one per line.
fn text(job: &str, file: &str, expires_ms: i64) -> String {
    format!("{job}\n{file}\n{expires_ms}")
}

/// The query string (`expires=…&signature=…`) of a link to `file` of `job` valid until
/// `expires_ms`.
pub fn query(key: &AuditKey, job: &str, file: &str, expires_ms: i64) -> String {
    let sig = key.sign_export_link(text(job, file, expires_ms).as_bytes());
    format!("{EXPIRES}={expires_ms}&{SIGNATURE}={}", URL_SAFE_NO_PAD.encode(sig))
}

/// Why a link is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Missing, malformed or not our signature of this job and file.
    Invalid,
    /// Signed, but its time is up (or it claims to live longer than any link may).
    Expired,
}

/// Check a link's `expires` and `signature` parameters for `file` of `job` at `now_ms`.
pub fn check(
    key: &PublicKey,
    job: &str,
    file: &str,
    expires: Option<&str>,
    signature: Option<&str>,
    now_ms: i64,
) -> Result<(), Refused> {
    let (Some(expires), Some(signature)) = (expires, signature) else { return Err(Refused::Invalid) };
    let expires_ms: i64 = expires.parse().map_err(|_| Refused::Invalid)?;
    let sig: [u8; 64] =
        URL_SAFE_NO_PAD.decode(signature).ok().and_then(|b| b.try_into().ok()).ok_or(Refused::Invalid)?;
    if !key.verify_export_link(text(job, file, expires_ms).as_bytes(), &sig) {
        return Err(Refused::Invalid);
    }
    // A signed expiry further out than any link may live was not issued by a server
    // configured within the bound (an old key, a changed setting): refuse it too.
    if expires_ms <= now_ms || expires_ms > now_ms + MAX_TTL_SECS * 1000 {
        return Err(Refused::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parts(q: &str) -> (String, String) {
        let mut e = String::new();
        let mut s = String::new();
        for kv in q.split('&') {
            let (k, v) = kv.split_once('=').unwrap();
            match k {
                EXPIRES => e = v.to_string(),
                SIGNATURE => s = v.to_string(),
                _ => panic!("unexpected {k}"),
            }
        }
        (e, s)
    }

    #[test]
    fn a_link_is_good_for_its_job_file_and_time_only() {
        let key = AuditKey::from_seed(&[7; 32]);
        let pk = key.public();
        let now = 1_800_000_000_000;
        let (e, s) = parts(&query(&key, "job-1", "Observation.ndjson", now + 600_000));
        assert_eq!(check(&pk, "job-1", "Observation.ndjson", Some(&e), Some(&s), now), Ok(()));
        assert_eq!(check(&pk, "job-2", "Observation.ndjson", Some(&e), Some(&s), now), Err(Refused::Invalid));
        assert_eq!(check(&pk, "job-1", "Patient.ndjson", Some(&e), Some(&s), now), Err(Refused::Invalid));
        let later = (now + 600_001).to_string();
        assert_eq!(check(&pk, "job-1", "Observation.ndjson", Some(&later), Some(&s), now), Err(Refused::Invalid));
        assert_eq!(check(&pk, "job-1", "Observation.ndjson", Some(&e), Some(&s), now + 600_000), Err(Refused::Expired));
        assert_eq!(check(&pk, "job-1", "Observation.ndjson", None, Some(&s), now), Err(Refused::Invalid));
        assert_eq!(check(&pk, "job-1", "Observation.ndjson", Some(&e), None, now), Err(Refused::Invalid));
        let other = AuditKey::from_seed(&[8; 32]).public();
        assert_eq!(check(&other, "job-1", "Observation.ndjson", Some(&e), Some(&s), now), Err(Refused::Invalid));
        // Signed by us but for longer than any link may live.
        let (e, s) = parts(&query(&key, "job-1", "Observation.ndjson", now + MAX_TTL_SECS * 1000 + 1));
        assert_eq!(check(&pk, "job-1", "Observation.ndjson", Some(&e), Some(&s), now), Err(Refused::Expired));
    }

    proptest! {
        #[test]
        fn hostile_parameters_are_refused_without_panicking(e in ".{0,40}", s in ".{0,120}") {
            let pk = AuditKey::from_seed(&[7; 32]).public();
            prop_assert!(check(&pk, "job", "f.ndjson", Some(&e), Some(&s), 0).is_err());
        }
    }
}
