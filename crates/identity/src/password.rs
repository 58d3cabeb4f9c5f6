//! Password hashing and the minimum password policy.
//!
//! Why Argon2id: it is memory-hard, so an attacker with a stolen user table
//! cannot cheaply parallelise guesses on GPUs/ASICs, and it is the OWASP
//! first choice. Hashes are PHC strings so the parameters travel with each
//! hash: raising the cost later does not invalidate existing hashes, and
//! [`Hasher::needs_rehash`] tells the login path when to upgrade one.
//!
//! Why [`Hasher::dummy_verify`]: a login for an unknown username must cost the
//! same as one for a known username with a wrong password, otherwise response
//! timing enumerates the user list.
//!
//! Why the policy is so small: NIST SP 800-63B advises length over composition
//! rules; we reject only what is trivially weak and leave the rest to the
//! user (and to MFA).

use std::sync::{Arc, OnceLock};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};

/// Production memory cost (KiB): OWASP's Argon2id minimum, 19 MiB.
pub const DEFAULT_MEMORY_KIB: u32 = 19_456;
/// Production iteration count.
pub const DEFAULT_ITERATIONS: u32 = 2;

/// Upper bounds accepted when verifying a stored hash. The PHC string decides
/// the cost of verification; these caps stop a corrupted or planted row from
/// turning one login into a multi-gigabyte, multi-minute job.
const MAX_VERIFY_MEMORY_KIB: u32 = 1024 * 1024;
const MAX_VERIFY_ITERATIONS: u32 = 64;
const MAX_VERIFY_LANES: u32 = 16;

/// Minimum password length, in characters (Unicode scalar values).
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Maximum password length, in characters: generous, only to bound the work
/// and memory spent on absurd inputs.
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// Argon2id with configurable cost (PHC strings). Production default m=19456 KiB, t=2, p=1.
#[derive(Clone)]
pub struct Hasher {
    params: Params,
    /// Hash of a random password with this hasher's parameters, made on first
    /// use of [`Hasher::dummy_verify`] and shared between clones.
    dummy: Arc<OnceLock<String>>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("memory_kib", &self.params.m_cost())
            .field("iterations", &self.params.t_cost())
            .finish()
    }
}

impl Default for Hasher {
    /// The production parameters (m=19456 KiB, t=2, p=1).
    fn default() -> Self {
        Hasher::new(DEFAULT_MEMORY_KIB, DEFAULT_ITERATIONS)
    }
}

impl Hasher {
    /// A hasher with `memory_kib` KiB of memory, `iterations` passes and one lane.
    ///
    /// # Panics
    /// If Argon2 rejects the parameters (memory below 8 KiB or zero
    /// iterations): that is a configuration error worth failing fast on.
    pub fn new(memory_kib: u32, iterations: u32) -> Hasher {
        let params = Params::new(memory_kib, iterations, 1, None)
            .unwrap_or_else(|e| panic!("invalid Argon2 parameters m={memory_kib} KiB, t={iterations}: {e}"));
        Hasher { params, dummy: Arc::new(OnceLock::new()) }
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Hash `password` with a fresh random salt; returns a PHC string
    /// (`$argon2id$v=19$m=...,t=...,p=1$salt$hash`).
    ///
    /// # Panics
    /// Only if the OS random number generator fails.
    pub fn hash(&self, password: &str) -> String {
        self.argon2()
            .hash_password(password.as_bytes())
            .expect("Argon2 hashing failed (OS random number generator?)")
            .to_string()
    }

    /// Whether `password` matches the PHC string `phc`. Uses the parameters
    /// recorded in `phc`, not this hasher's. Returns false for a malformed PHC
    /// string, a non-Argon2 algorithm or absurd parameters.
    pub fn verify(&self, password: &str, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        if Algorithm::try_from(parsed.algorithm.as_str()).is_err() {
            return false;
        }
        let Ok(params) = Params::try_from(&parsed) else {
            return false;
        };
        if params.m_cost() > MAX_VERIFY_MEMORY_KIB
            || params.t_cost() > MAX_VERIFY_ITERATIONS
            || params.p_cost() > MAX_VERIFY_LANES
        {
            return false;
        }
        self.argon2().verify_password(password.as_bytes(), &parsed).is_ok()
    }

    /// Spend the same time as a verify against a real hash (for unknown usernames, so timing does not reveal which usernames exist).
    ///
    /// The first call also makes the dummy hash (one extra hash, once per
    /// hasher and its clones).
    pub fn dummy_verify(&self, password: &str) {
        let dummy = self.dummy.get_or_init(|| self.hash(&crate::secret::random_token()));
        // The result is meaningless by construction; only the work matters.
        let _ = std::hint::black_box(self.verify(password, dummy));
    }

    /// Whether `phc` was made with different parameters (or algorithm) than
    /// this hasher uses, so it should be re-hashed after a successful login.
    /// A malformed PHC string also "needs rehash".
    pub fn needs_rehash(&self, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return true;
        };
        if parsed.algorithm != Algorithm::Argon2id.ident() || parsed.version != Some(Version::V0x13.into()) {
            return true;
        }
        let Ok(params) = Params::try_from(&parsed) else {
            return true;
        };
        params.m_cost() != self.params.m_cost()
            || params.t_cost() != self.params.t_cost()
            || params.p_cost() != self.params.p_cost()
    }
}

/// Minimum password policy: at least 10 chars, not all the same char; returns a plain-language problem.
///
/// Also refuses passwords longer than [`MAX_PASSWORD_CHARS`] characters.
pub fn check_policy(password: &str) -> Result<(), String> {
    let count = password.chars().count();
    if count < MIN_PASSWORD_CHARS {
        return Err(format!(
            "Your password is too short: use at least {MIN_PASSWORD_CHARS} characters (a few unrelated words work well)."
        ));
    }
    if count > MAX_PASSWORD_CHARS {
        return Err(format!("Your password is too long: use at most {MAX_PASSWORD_CHARS} characters."));
    }
    let mut chars = password.chars();
    let first = chars.next();
    if chars.all(|c| Some(c) == first) {
        return Err("Your password repeats a single character: mix in different characters or words.".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Cheap parameters so debug test builds stay fast; the algorithm is the same.
    fn cheap() -> Hasher {
        Hasher::new(64, 1)
    }

    #[test]
    fn hash_then_verify() {
        let h = cheap();
        let phc = h.hash("correct horse battery");
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        assert!(h.verify("correct horse battery", &phc));
        assert!(!h.verify("correct horse batterY", &phc));
        assert!(!h.verify("", &phc));
    }

    #[test]
    fn salts_differ() {
        let h = cheap();
        assert_ne!(h.hash("same password"), h.hash("same password"));
    }

    #[test]
    fn verify_uses_params_from_phc() {
        let old = Hasher::new(128, 2);
        let phc = old.hash("long enough password");
        // A hasher with other parameters still verifies old hashes...
        assert!(cheap().verify("long enough password", &phc));
        // ...and says they should be upgraded.
        assert!(cheap().needs_rehash(&phc));
        assert!(!old.needs_rehash(&phc));
    }

    #[test]
    fn production_default_params() {
        let h = Hasher::default();
        assert_eq!(h.params.m_cost(), 19_456);
        assert_eq!(h.params.t_cost(), 2);
        assert_eq!(h.params.p_cost(), 1);
        let phc = h.hash("a production password");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(h.verify("a production password", &phc));
    }

    #[test]
    fn malformed_phc_is_false_not_panic() {
        let h = cheap();
        for bad in [
            "",
            "not a hash",
            "$argon2id$",
            "$argon2id$v=19$m=64,t=1,p=1$",
            "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$",
            "$argon2id$v=19$m=64,t=1,p=1$!!!$!!!",
            "$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            "$scrypt$ln=15,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
        ] {
            assert!(!h.verify("password123", bad), "{bad:?}");
            assert!(h.needs_rehash(bad), "{bad:?}");
        }
    }

    #[test]
    fn absurd_params_refused_without_running() {
        let h = cheap();
        let phc = h.hash("some password");
        // Splice a 4 GiB memory cost into an otherwise valid hash.
        let planted = phc.replacen("m=64", "m=4194304", 1);
        assert!(!h.verify("some password", &planted));
        let planted = phc.replacen("t=1", "t=100000", 1);
        assert!(!h.verify("some password", &planted));
    }

    #[test]
    fn other_argon2_variants_verify() {
        // Hashes made elsewhere with argon2i/argon2d still verify (params in the PHC).
        let a = Argon2::new(Algorithm::Argon2i, Version::V0x13, Params::new(64, 1, 1, None).unwrap());
        let phc = a.hash_password(b"legacy password").unwrap().to_string();
        assert!(phc.starts_with("$argon2i$"));
        assert!(cheap().verify("legacy password", &phc));
        assert!(cheap().needs_rehash(&phc));
    }

    #[test]
    fn dummy_verify_runs_and_is_shared_by_clones() {
        let h = cheap();
        h.dummy_verify("whatever");
        let clone = h.clone();
        assert!(clone.dummy.get().is_some());
        clone.dummy_verify("whatever else");
    }

    #[test]
    #[should_panic(expected = "invalid Argon2 parameters")]
    fn invalid_params_panic() {
        let _ = Hasher::new(1, 0);
    }

    #[test]
    fn policy() {
        assert!(check_policy("").is_err());
        assert!(check_policy("short").is_err());
        assert!(check_policy("123456789").is_err());
        assert!(check_policy("aaaaaaaaaaaaaaaa").is_err());
        assert!(check_policy("          ").is_err());
        assert!(check_policy("ééééééééééé").is_err());
        assert!(check_policy("1234567890").is_ok());
        assert!(check_policy("aaaaaaaaab").is_ok());
        // Characters, not bytes: 9 two-byte chars is too short.
        assert!(check_policy("éèéèéèéèé").is_err());
        assert!(check_policy("éèéèéèéèéè").is_ok());
        assert!(check_policy(&"ab".repeat(600)).is_err());
        let msg = check_policy("short").unwrap_err();
        assert!(msg.contains("10"), "{msg}");
    }

    proptest! {
        #[test]
        fn policy_never_panics(s in ".*") {
            let _ = check_policy(&s);
        }

        #[test]
        fn repeated_char_always_refused(c in any::<char>(), n in 0usize..40) {
            let s: String = std::iter::repeat_n(c, n).collect();
            prop_assert!(check_policy(&s).is_err());
        }

        #[test]
        fn verify_never_panics_on_garbage(s in ".*") {
            prop_assert!(!cheap().verify("password", &s));
        }
    }
}
