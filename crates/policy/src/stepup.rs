//! The actions that need a fresh step-up verification (TOTP), declared in one table
//! ([`STEP_UP_REQUIRED`]) and enforced by `Gate::require_step_up`, which records the
//! decision in the request's audit scope like every other decision (rules `step-up-fresh` /
//! `step-up-required`).

use serde::Serialize;

/// A sensitive action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sensitive {
    BulkExport,
    CreateShare,
    WidenShare,
    AddCaregiver,
    SecuritySettings,
}

/// Every sensitive action with the sentence shown when step-up is missing.
pub const STEP_UP_REQUIRED: &[(Sensitive, &str)] = &[
    (Sensitive::BulkExport, "Exporting your whole record needs a fresh verification code."),
    (Sensitive::CreateShare, "Sharing your records needs a fresh verification code."),
    (Sensitive::WidenShare, "Widening a share needs a fresh verification code."),
    (Sensitive::AddCaregiver, "Adding a caregiver needs a fresh verification code."),
    (Sensitive::SecuritySettings, "Changing security settings needs a fresh verification code."),
];

/// How long a step-up stays fresh unless configured otherwise.
pub const DEFAULT_FRESH_MS: i64 = 5 * 60 * 1000;

/// How far in the future a step-up time may lie and still count (clocks of two processes
/// sharing one database may differ a little). A step-up time further ahead is not trusted.
pub const CLOCK_SKEW_MS: i64 = 5_000;

impl Sensitive {
    /// Every sensitive action.
    pub const ALL: [Sensitive; 5] = [
        Sensitive::BulkExport,
        Sensitive::CreateShare,
        Sensitive::WidenShare,
        Sensitive::AddCaregiver,
        Sensitive::SecuritySettings,
    ];

    /// The stable code (as serialized).
    pub fn code(self) -> &'static str {
        match self {
            Sensitive::BulkExport => "bulk-export",
            Sensitive::CreateShare => "create-share",
            Sensitive::WidenShare => "widen-share",
            Sensitive::AddCaregiver => "add-caregiver",
            Sensitive::SecuritySettings => "security-settings",
        }
    }

    /// The sentence shown when step-up is missing (from [`STEP_UP_REQUIRED`]).
    pub fn required_reason(self) -> &'static str {
        STEP_UP_REQUIRED
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("This needs a fresh verification code.", |(_, sentence)| *sentence)
    }

    /// Whether the action concerns the acted-for patient's data (and so belongs in that
    /// patient's access log), rather than only the user's own account.
    pub fn concerns_patient(self) -> bool {
        !matches!(self, Sensitive::SecuritySettings)
    }
}

/// Whether a step-up made at `stepup_at_ms` is still fresh at `now_ms`: it happened, at
/// most `fresh_ms` ago (and not more than [`CLOCK_SKEW_MS`] in the future). A negative
/// `fresh_ms` means nothing is ever fresh.
pub fn is_fresh(stepup_at_ms: Option<i64>, now_ms: i64, fresh_ms: i64) -> bool {
    let Some(at) = stepup_at_ms else { return false };
    if fresh_ms < 0 {
        return false;
    }
    let age = i128::from(now_ms) - i128::from(at);
    age <= i128::from(fresh_ms) && age >= -i128::from(CLOCK_SKEW_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sentence_per_sensitive_action() {
        for s in Sensitive::ALL {
            assert_eq!(STEP_UP_REQUIRED.iter().filter(|(x, _)| *x == s).count(), 1, "{s:?}");
            assert!(s.required_reason().contains("verification code"));
            assert_eq!(serde_json_like(s), s.code());
        }
        assert_eq!(STEP_UP_REQUIRED.len(), Sensitive::ALL.len());
    }

    /// The serde name, without a JSON dependency: the kebab-case of the variant name.
    fn serde_json_like(s: Sensitive) -> String {
        let name = format!("{s:?}");
        let mut out = String::new();
        for (i, c) in name.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    }

    #[test]
    fn freshness() {
        let now = 1_000_000_000;
        assert!(!is_fresh(None, now, DEFAULT_FRESH_MS));
        assert!(is_fresh(Some(now), now, DEFAULT_FRESH_MS));
        assert!(is_fresh(Some(now - DEFAULT_FRESH_MS), now, DEFAULT_FRESH_MS), "the boundary is fresh");
        assert!(!is_fresh(Some(now - DEFAULT_FRESH_MS - 1), now, DEFAULT_FRESH_MS));
        assert!(is_fresh(Some(now + CLOCK_SKEW_MS), now, DEFAULT_FRESH_MS));
        assert!(!is_fresh(Some(now + CLOCK_SKEW_MS + 1), now, DEFAULT_FRESH_MS), "far future is not trusted");
        assert!(is_fresh(Some(now), now, 0));
        assert!(!is_fresh(Some(now), now, -1));
        assert!(!is_fresh(Some(i64::MIN), i64::MAX, i64::MAX), "no overflow");
        assert!(is_fresh(Some(i64::MAX), i64::MAX, 0));
    }
}
