//! The audit key file: made on first start (mode 0600, never overwritten), read after.

use anyhow::{Context, bail};
use portico_audit::AuditKey;
use std::io::Write;
use std::path::Path;

/// Read the key at `path`, or make one there if there is none. Returns the key and whether
/// it was just made.
pub fn load_or_create(path: &Path) -> anyhow::Result<(AuditKey, bool)> {
    match std::fs::read_to_string(path) {
        Ok(pem) => {
            check_private(path)?;
            let key =
                AuditKey::from_pem(&pem).with_context(|| format!("cannot read the audit key {}", path.display()))?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path),
        Err(e) => Err(e).with_context(|| format!("cannot read the audit key {}", path.display())),
    }
}

/// Read an existing key (for `audit verify`, which must never make one).
pub fn load(path: &Path) -> anyhow::Result<AuditKey> {
    let pem = std::fs::read_to_string(path).with_context(|| format!("cannot read the audit key {}", path.display()))?;
    AuditKey::from_pem(&pem).with_context(|| format!("cannot read the audit key {}", path.display()))
}

fn create(path: &Path) -> anyhow::Result<(AuditKey, bool)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let key = AuditKey::generate()?;
    let pem = key.to_pem()?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(mut f) => {
            f.write_all(pem.as_bytes())?;
            f.sync_all()?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                // Make the new directory entry durable too.
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
            }
            Ok((key, true))
        }
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let pem = std::fs::read_to_string(path)?;
            Ok((AuditKey::from_pem(&pem)?, false))
        }
        Err(e) => Err(e).with_context(|| format!("cannot create the audit key {}", path.display())),
    }
}

/// Refuse a key file that others can read.
fn check_private(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "the audit key {} is readable by other users (mode {:o}); run `chmod 600` on it",
                path.display(),
                mode & 0o777
            );
        }
    }
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_private_and_read_back() {
        let dir = std::env::temp_dir().join(format!("portico-key-{}", uuid::Uuid::new_v4().simple()));
        let path = dir.join("audit-key.pem");
        let (k1, made) = load_or_create(&path).unwrap();
        assert!(made);
        let (k2, made) = load_or_create(&path).unwrap();
        assert!(!made);
        assert_eq!(k1.public(), k2.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(load_or_create(&path).is_err(), "a world-readable key is refused");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
