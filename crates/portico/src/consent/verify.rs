//! Checking the consent event log: every event's signature, that it matches the stored
//! Consent version it names (SHA-256 of the stored JSON), that versions follow each other,
//! and that every stored Consent version has its event.

use portico_audit::PublicKey;
use portico_store::consent::ConsentLedger;
use std::collections::{HashMap, HashSet};

/// Problems found, one sentence each, in event order (empty: the log is sound).
pub fn check(ledger: &ConsentLedger, keys: &[PublicKey]) -> Vec<String> {
    let mut findings = Vec::new();
    let stored: HashMap<(&str, i64), &str> =
        ledger.versions.iter().map(|(id, v, sha)| ((id.as_str(), *v), sha.as_str())).collect();
    let mut seen = HashSet::new();
    for e in &ledger.events {
        let at = format!("event Consent/{}/_history/{} ({})", e.consent_id, e.version, e.kind);
        seen.insert((e.consent_id.as_str(), e.version));
        if !keys.iter().any(|k| e.signature_valid(k)) {
            findings.push(format!(
                "{at}: the signature does not verify (the event was altered or not signed by this server)"
            ));
        }
        match stored.get(&(e.consent_id.as_str(), e.version)) {
            None => findings.push(format!("{at}: no such Consent version is stored")),
            Some(sha) if *sha != e.resource_sha256 => {
                findings.push(format!("{at}: the stored version does not match the event (its content changed)"))
            }
            Some(_) => {}
        }
        if e.prev_version != e.version - 1 {
            findings.push(format!("{at}: previous version {} does not precede it", e.prev_version));
        }
    }
    for (id, v, _) in &ledger.versions {
        if !seen.contains(&(id.as_str(), *v)) {
            findings.push(format!("Consent/{id}/_history/{v} has no consent event"));
        }
    }
    findings
}
