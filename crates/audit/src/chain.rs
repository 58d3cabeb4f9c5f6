//! The hash chain: `hash_i = SHA-256(hash_{i-1} || canonical(record_i))`, starting from 32
//! zero bytes (or from a signed checkpoint after pruning), and a per-record authentication
//! code `mac_i = HMAC-SHA-256(k, hash_i)` with a key derived from the audit signing key.
//!
//! The chain catches an edited, deleted, inserted or reordered record on its own; the MAC
//! catches a record that was rewritten *and* re-hashed (with every later hash recomputed) by
//! someone without the key, and names that exact record; signed heads and the witness file
//! catch truncation and rollback.

use crate::canonical;
use crate::record::AuditRecord;
use sha2::{Digest, Sha256};

/// A chain hash.
pub type Hash = [u8; 32];

/// The hash before the first record.
pub const GENESIS: Hash = [0u8; 32];

/// `SHA-256(prev || canonical)`.
pub fn link_hash(prev: &Hash, canonical: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical);
    h.finalize().into()
}

/// The secret that authenticates each record. `Debug` never shows it.
#[derive(Clone)]
pub struct MacKey {
    /// SHA-256 state after the key XOR ipad block, and after the key XOR opad block.
    inner: Sha256,
    outer: Sha256,
}

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(..)")
    }
}

impl MacKey {
    /// HMAC-SHA-256 key (RFC 2104); keys longer than a block are hashed first.
    pub fn new(key: &[u8]) -> MacKey {
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let ipad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
        let mut inner = Sha256::new();
        inner.update(&ipad);
        let mut outer = Sha256::new();
        outer.update(&opad);
        MacKey { inner, outer }
    }

    /// HMAC-SHA-256 of `msg`.
    pub fn mac(&self, msg: &[u8]) -> [u8; 32] {
        let mut i = self.inner.clone();
        i.update(msg);
        let inner_hash = i.finalize();
        let mut o = self.outer.clone();
        o.update(inner_hash);
        o.finalize().into()
    }

    /// Whether `mac` authenticates `msg` (constant time in the MAC's content).
    pub fn check(&self, msg: &[u8], mac: &[u8]) -> bool {
        let want = self.mac(msg);
        mac.len() == want.len() && want.iter().zip(mac).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// A record made ready to store under the chain's head lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub seq: i64,
    /// The canonical encoding (what the hash covers).
    pub canonical: String,
    pub hash: Hash,
    pub mac: [u8; 32],
}

/// Turns records into links; the store calls it with the previous head while it holds the
/// head lock, so links are made in chain order only.
#[derive(Debug, Clone)]
pub struct Chainer {
    key: MacKey,
}

impl Chainer {
    pub fn new(key: MacKey) -> Chainer {
        Chainer { key }
    }

    /// Link record number `seq` after `prev`.
    pub fn link(&self, prev: &Hash, seq: i64, record: &AuditRecord) -> Link {
        self.seal(prev, seq, canonical::encode(seq, record))
    }

    /// [`Chainer::link`] for a record already encoded by [`canonical::encode_tail`].
    pub fn link_tail(&self, prev: &Hash, seq: i64, tail: &str) -> Link {
        self.seal(prev, seq, canonical::join(seq, tail))
    }

    fn seal(&self, prev: &Hash, seq: i64, canonical: String) -> Link {
        let hash = link_hash(prev, canonical.as_bytes());
        let mac = self.key.mac(&hash);
        Link { seq, canonical, hash, mac }
    }
}

/// Lower-case hex of a hash.
pub fn to_hex(h: &[u8]) -> String {
    hex::encode(h)
}

/// Lower-case hex of 32 bytes, without allocating (the stored form of hashes and MACs).
pub fn hex32(h: &[u8; 32]) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, b) in h.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
    }
    out
}

/// Parse 64 lower-case hex digits (the only stored form) into a hash.
pub fn from_hex(s: &str) -> Option<Hash> {
    let mut out = [0u8; 32];
    decode_lower_hex(s, &mut out)?;
    Some(out)
}

/// Decode lower-case hex of exactly `out.len()` bytes; anything else (upper case included,
/// so that one value has one stored form) is refused.
pub fn decode_lower_hex(s: &str, out: &mut [u8]) -> Option<()> {
    if s.len() != out.len() * 2 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    hex::decode_to_slice(s, out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 1.
        let k = MacKey::new(&[0x0b; 20]);
        assert_eq!(hex::encode(k.mac(b"Hi There")), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
        // Test case 2.
        let k = MacKey::new(b"Jefe");
        assert_eq!(
            hex::encode(k.mac(b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block size.
        let k = MacKey::new(&[0xaa; 131]);
        assert_eq!(
            hex::encode(k.mac(b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        assert!(k.check(b"x", &k.mac(b"x")));
        assert!(!k.check(b"x", &k.mac(b"y")));
        assert_eq!(format!("{k:?}"), "MacKey(..)");
    }

    #[test]
    fn links_chain_in_order() {
        let c = Chainer::new(MacKey::new(b"k"));
        let r = crate::canonical::tests::sample();
        let a = c.link(&GENESIS, 1, &r);
        let b = c.link(&a.hash, 2, &r);
        assert_eq!(b.hash, link_hash(&a.hash, b.canonical.as_bytes()));
        assert_ne!(a.hash, b.hash);
        assert_eq!(from_hex(&to_hex(&a.hash)), Some(a.hash));
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex(&to_hex(&a.hash).to_uppercase()), None);
        assert_eq!(hex32(&a.hash).as_slice(), to_hex(&a.hash).as_bytes());
    }
}
