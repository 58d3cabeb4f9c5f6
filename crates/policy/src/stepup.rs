//! The actions that need a fresh step-up verification (TOTP), declared in one table and
//! enforced by `Gate::require_step_up`.
//!
//! INTERFACE (implementation pending).

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
