//! Schema migrations, one ordered list per backend, embedded in the binary. Each applies in
//! its own transaction and is recorded with a checksum so an edited migration is noticed.

use crate::error::StoreError;
use sha2_free::checksum;

/// A migration: version, name, SQL (statements separated by `;` at line ends).
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub(crate) const SQLITE: &[Migration] = &[
    Migration { version: 1, name: "init", sql: include_str!("migrations/sqlite_0001_init.sql") },
    Migration { version: 2, name: "audit", sql: include_str!("migrations/sqlite_0002_audit.sql") },
    Migration { version: 3, name: "identity", sql: include_str!("migrations/sqlite_0003_identity.sql") },
    Migration { version: 4, name: "facts", sql: include_str!("migrations/sqlite_0004_facts.sql") },
    Migration { version: 5, name: "consent_events", sql: include_str!("migrations/sqlite_0005_consent_events.sql") },
    Migration { version: 6, name: "export", sql: include_str!("migrations/sqlite_0006_export.sql") },
    Migration { version: 7, name: "audit_recent", sql: include_str!("migrations/sqlite_0007_audit_recent.sql") },
    Migration { version: 8, name: "audit_outbox", sql: include_str!("migrations/sqlite_0008_audit_outbox.sql") },
];

pub(crate) const POSTGRES: &[Migration] = &[
    Migration { version: 1, name: "init", sql: include_str!("migrations/postgres_0001_init.sql") },
    Migration { version: 2, name: "audit", sql: include_str!("migrations/postgres_0002_audit.sql") },
    Migration { version: 3, name: "identity", sql: include_str!("migrations/postgres_0003_identity.sql") },
    Migration { version: 4, name: "facts", sql: include_str!("migrations/postgres_0004_facts.sql") },
    Migration { version: 5, name: "consent_events", sql: include_str!("migrations/postgres_0005_consent_events.sql") },
    Migration { version: 6, name: "export", sql: include_str!("migrations/postgres_0006_export.sql") },
    Migration { version: 7, name: "audit_recent", sql: include_str!("migrations/postgres_0007_audit_recent.sql") },
    Migration { version: 8, name: "audit_outbox", sql: include_str!("migrations/postgres_0008_audit_outbox.sql") },
];

/// Split a migration file into statements (our migrations hold no `;` inside literals).
pub(crate) fn statements(sql: &str) -> impl Iterator<Item = String> + '_ {
    sql.split(";\n")
        .map(|s| s.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n"))
        .map(|s| s.trim().trim_end_matches(';').to_string())
        .filter(|s| !s.is_empty())
}

pub(crate) fn check_recorded(m: &Migration, recorded: &str) -> Result<(), StoreError> {
    if recorded != checksum(m.sql) {
        return Err(StoreError::Migration(format!(
            "migration {} ({}) was changed after it was applied",
            m.version, m.name
        )));
    }
    Ok(())
}

/// A tiny stable checksum (FNV-1a 64) — enough to notice an edited migration file.
mod sha2_free {
    pub fn checksum(s: &str) -> String {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in s.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
        format!("{h:016x}")
    }
}
pub(crate) use sha2_free::checksum as migration_checksum;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backends_have_the_same_migration_versions() {
        let a: Vec<_> = SQLITE.iter().map(|m| (m.version, m.name)).collect();
        let b: Vec<_> = POSTGRES.iter().map(|m| (m.version, m.name)).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn both_backends_create_the_same_tables_and_columns() {
        fn shape(sql: &str) -> Vec<String> {
            // Columns added to existing tables count as their own entries.
            let added = statements(sql).filter(|s| s.starts_with("ALTER TABLE")).map(|s| {
                let words: Vec<&str> = s.split_whitespace().collect();
                format!("{}+{}", words.get(2).unwrap_or(&""), words.get(5).unwrap_or(&""))
            });
            statements(sql)
                .filter(|s| s.starts_with("CREATE TABLE"))
                .map(|s| {
                    let name = s.split_whitespace().nth(2).unwrap_or_default().to_string();
                    let cols: Vec<String> = s
                        .split_once('(')
                        .map(|(_, rest)| rest)
                        .unwrap_or_default()
                        .split(',')
                        .filter_map(|c| c.split_whitespace().next().map(str::to_string))
                        .collect();
                    format!("{name}:{}", cols.join(","))
                })
                .chain(added)
                .collect()
        }
        let sqlite: Vec<_> = shape(SQLITE[0].sql).into_iter().filter(|s| !s.starts_with("counters")).collect();
        assert_eq!(sqlite, shape(POSTGRES[0].sql));
        assert!(sqlite.len() >= 10);
        for (a, b) in SQLITE.iter().zip(POSTGRES).skip(1) {
            assert_eq!(shape(a.sql), shape(b.sql), "migration {} ({})", a.version, a.name);
            assert!(!shape(a.sql).is_empty());
        }
    }
}
