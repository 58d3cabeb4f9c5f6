//! The audit key: an Ed25519 key that signs chain heads, and from which the per-record MAC
//! key is derived. Stored as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`); the public key is
//! exported as SubjectPublicKeyInfo PEM, which `openssl pkey -pubin` reads.

use crate::chain::MacKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::spki::der::zeroize::Zeroizing;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// A key could not be made, read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the operating system's random number generator failed")]
    Random,
    #[error("not an Ed25519 PKCS#8 private key in PEM form")]
    BadPrivateKey,
    #[error("not an Ed25519 public key in PEM form")]
    BadPublicKey,
}

/// The signing key. `Debug` shows only the key id.
pub struct AuditKey {
    signing: SigningKey,
    mac: MacKey,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditKey({})", self.public().key_id())
    }
}

impl AuditKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<AuditKey, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|_| KeyError::Random)?;
        let key = AuditKey::from_seed(&seed);
        seed.fill(0);
        Ok(key)
    }

    /// The key with this 32-byte Ed25519 seed (tests, and reading a key file).
    pub fn from_seed(seed: &[u8; 32]) -> AuditKey {
        let signing = SigningKey::from_bytes(seed);
        // Domain-separated: the MAC key is not the signing seed itself.
        let mut h = Sha256::new();
        h.update(b"portico-audit-record-mac/1\0");
        h.update(seed);
        let mut mac_key: [u8; 32] = h.finalize().into();
        let mac = MacKey::new(&mac_key);
        mac_key.fill(0);
        AuditKey { signing, mac }
    }

    pub fn from_pem(pem: &str) -> Result<AuditKey, KeyError> {
        let signing = SigningKey::from_pkcs8_pem(pem).map_err(|_| KeyError::BadPrivateKey)?;
        Ok(AuditKey::from_seed(signing.as_bytes()))
    }

    /// PKCS#8 PEM of the private key (zeroed when dropped).
    pub fn to_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        self.signing.to_pkcs8_pem(LineEnding::LF).map_err(|_| KeyError::BadPrivateKey)
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key())
    }

    /// The record MAC key.
    pub fn mac_key(&self) -> MacKey {
        self.mac.clone()
    }

    pub(crate) fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }

    /// Sign a consent event's canonical encoding. The signed text starts with its own
    /// domain tag, so a consent-event signature can never pass for a head's (and back).
    pub fn sign_consent_event(&self, canonical: &[u8]) -> [u8; 64] {
        self.sign(&consent_event_message(canonical))
    }

    /// Sign an export download link's text (see `export::links`): its own domain tag, so a
    /// link signature is never a head's or a consent event's.
    pub fn sign_export_link(&self, text: &[u8]) -> [u8; 64] {
        self.sign(&export_link_message(text))
    }
}

fn export_link_message(text: &[u8]) -> Vec<u8> {
    let mut m = b"portico-export-link/1\n".to_vec();
    m.extend_from_slice(text);
    m
}

fn consent_event_message(canonical: &[u8]) -> Vec<u8> {
    let mut m = b"portico-consent-event/1\n".to_vec();
    m.extend_from_slice(canonical);
    m
}

/// A public key that head signatures are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn to_pem(&self) -> String {
        self.0.to_public_key_pem(LineEnding::LF).unwrap_or_default()
    }

    pub fn from_pem(pem: &str) -> Result<PublicKey, KeyError> {
        VerifyingKey::from_public_key_pem(pem.trim()).map(PublicKey).map_err(|_| KeyError::BadPublicKey)
    }

    /// Short stable name of the key: the first 8 bytes of SHA-256 of the raw key, in hex.
    pub fn key_id(&self) -> String {
        hex::encode(&Sha256::digest(self.0.as_bytes())[..8])
    }

    /// Whether `sig` is this key's signature of `msg` (strict verification).
    pub fn verify(&self, msg: &[u8], sig: &[u8; 64]) -> bool {
        self.0.verify_strict(msg, &Signature::from_bytes(sig)).is_ok()
    }

    /// Whether `sig` is this key's signature of a consent event's canonical encoding (see
    /// [`AuditKey::sign_consent_event`]).
    pub fn verify_consent_event(&self, canonical: &[u8], sig: &[u8; 64]) -> bool {
        self.verify(&consent_event_message(canonical), sig)
    }

    /// Whether `sig` is this key's signature of an export link's text.
    pub fn verify_export_link(&self, text: &[u8], sig: &[u8; 64]) -> bool {
        self.verify(&export_link_message(text), sig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips_and_debug_hides_the_secret() {
        let k = AuditKey::generate().unwrap();
        let pem = k.to_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let k2 = AuditKey::from_pem(&pem).unwrap();
        assert_eq!(k.public(), k2.public());
        assert_eq!(k.mac_key().mac(b"x"), k2.mac_key().mac(b"x"));
        let pubpem = k.public().to_pem();
        assert!(pubpem.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(PublicKey::from_pem(&pubpem).unwrap(), k.public());
        assert_eq!(format!("{k:?}"), format!("AuditKey({})", k.public().key_id()));
        assert!(AuditKey::from_pem("nope").is_err());
        assert!(PublicKey::from_pem(&pem).is_err());
    }

    #[test]
    fn signatures_verify_only_for_their_message_and_key() {
        let k = AuditKey::from_seed(&[7; 32]);
        let other = AuditKey::from_seed(&[8; 32]);
        let sig = k.sign(b"head");
        assert!(k.public().verify(b"head", &sig));
        assert!(!k.public().verify(b"heae", &sig));
        assert!(!other.public().verify(b"head", &sig));
        assert_ne!(k.public().key_id(), other.public().key_id());
        assert_ne!(k.mac_key().mac(b"x"), other.mac_key().mac(b"x"));
    }

    #[test]
    fn consent_event_signatures_are_their_own_domain() {
        let k = AuditKey::from_seed(&[7; 32]);
        let sig = k.sign_consent_event(b"[\"event\"]");
        assert!(k.public().verify_consent_event(b"[\"event\"]", &sig));
        assert!(!k.public().verify_consent_event(b"[\"evenT\"]", &sig));
        // Neither kind of signature passes for the other.
        assert!(!k.public().verify(b"[\"event\"]", &sig));
        let head = k.sign(b"[\"event\"]");
        assert!(!k.public().verify_consent_event(b"[\"event\"]", &head));
    }
}
