//! Signed heads: the chain's position (`seq`, `hash`) signed with the audit key. Heads are
//! kept in the database and, when configured, in a witness file outside the data directory,
//! so that a truncated log or a restored old backup no longer reaches a head that was signed.
//! A checkpoint is a signed head that pruning left behind: the chain starts again from it.

use crate::chain::{self, Hash};
use crate::keys::{AuditKey, PublicKey};
use serde::{Deserialize, Serialize};

/// What a signed head vouches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    /// The log held exactly records `..=seq`, the last with this hash.
    Head,
    /// Records `..=seq` were pruned; the chain continues from this hash.
    Checkpoint,
}

impl HeadKind {
    pub fn code(self) -> &'static str {
        match self {
            HeadKind::Head => "head",
            HeadKind::Checkpoint => "checkpoint",
        }
    }

    pub fn from_code(s: &str) -> Option<HeadKind> {
        match s {
            "head" => Some(HeadKind::Head),
            "checkpoint" => Some(HeadKind::Checkpoint),
            _ => None,
        }
    }
}

/// A chain position with the audit key's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHead {
    pub kind: HeadKind,
    pub seq: i64,
    pub hash: Hash,
    /// When it was signed, epoch ms.
    pub signed_ms: i64,
    /// Id of the signing key ([`PublicKey::key_id`]).
    pub key_id: String,
    pub signature: [u8; 64],
}

/// The text a head signature covers.
fn message(kind: HeadKind, seq: i64, hash: &Hash, signed_ms: i64, key_id: &str) -> Vec<u8> {
    format!("portico-audit-{}/1\n{seq}\n{}\n{signed_ms}\n{key_id}\n", kind.code(), chain::to_hex(hash)).into_bytes()
}

#[derive(Serialize, Deserialize)]
struct HeadJson {
    kind: HeadKind,
    seq: i64,
    hash: String,
    signed_ms: i64,
    key_id: String,
    signature: String,
}

impl SignedHead {
    pub fn sign(key: &AuditKey, kind: HeadKind, seq: i64, hash: Hash, signed_ms: i64) -> SignedHead {
        let key_id = key.public().key_id();
        let signature = key.sign(&message(kind, seq, &hash, signed_ms, &key_id));
        SignedHead { kind, seq, hash, signed_ms, key_id, signature }
    }

    /// Whether one of `trusted` made this signature over exactly these fields.
    pub fn verify(&self, trusted: &[PublicKey]) -> bool {
        let msg = message(self.kind, self.seq, &self.hash, self.signed_ms, &self.key_id);
        trusted.iter().filter(|k| k.key_id() == self.key_id).any(|k| k.verify(&msg, &self.signature))
    }

    /// One line of JSON (the witness file's content).
    pub fn to_json(&self) -> String {
        let j = HeadJson {
            kind: self.kind,
            seq: self.seq,
            hash: chain::to_hex(&self.hash),
            signed_ms: self.signed_ms,
            key_id: self.key_id.clone(),
            signature: hex::encode(self.signature),
        };
        serde_json::to_string(&j).unwrap_or_default()
    }

    pub fn from_json(s: &str) -> Option<SignedHead> {
        let j: HeadJson = serde_json::from_str(s.trim()).ok()?;
        let mut signature = [0u8; 64];
        hex::decode_to_slice(&j.signature, &mut signature).ok()?;
        Some(SignedHead {
            kind: j.kind,
            seq: j.seq,
            hash: chain::from_hex(&j.hash)?,
            signed_ms: j.signed_ms,
            key_id: j.key_id,
            signature,
        })
    }

    /// Hex of the signature (storage).
    pub fn signature_hex(&self) -> String {
        hex::encode(self.signature)
    }

    /// Rebuild from stored columns.
    pub fn from_parts(
        kind: &str,
        seq: i64,
        hash: &str,
        signed_ms: i64,
        key_id: &str,
        signature: &str,
    ) -> Option<SignedHead> {
        let mut sig = [0u8; 64];
        hex::decode_to_slice(signature, &mut sig).ok()?;
        Some(SignedHead {
            kind: HeadKind::from_code(kind)?,
            seq,
            hash: chain::from_hex(hash)?,
            signed_ms,
            key_id: key_id.to_string(),
            signature: sig,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_verify_and_survive_json() {
        let k = AuditKey::from_seed(&[1; 32]);
        let h = SignedHead::sign(&k, HeadKind::Head, 42, [9; 32], 1000);
        assert!(h.verify(&[k.public()]));
        assert!(!h.verify(&[AuditKey::from_seed(&[2; 32]).public()]));
        let back = SignedHead::from_json(&h.to_json()).unwrap();
        assert_eq!(back, h);
        assert!(!h.to_json().contains('\n'));
        for tamper in [
            SignedHead { seq: 43, ..h.clone() },
            SignedHead { hash: [8; 32], ..h.clone() },
            SignedHead { signed_ms: 1, ..h.clone() },
            SignedHead { kind: HeadKind::Checkpoint, ..h.clone() },
        ] {
            assert!(!tamper.verify(&[k.public()]));
        }
        let parts = SignedHead::from_parts("head", 42, &chain::to_hex(&h.hash), 1000, &h.key_id, &h.signature_hex());
        assert_eq!(parts, Some(h));
        assert_eq!(SignedHead::from_json("{}"), None);
    }
}
