//! The witness file: the newest signed head, kept where the database's keepers cannot
//! rewrite it (another disk, another machine's mount), so that truncating the log or
//! restoring an old backup is caught by `audit verify`.

use anyhow::Context;
use portico_audit::SignedHead;
use std::io::Write;
use std::path::Path;

/// The head in the witness file, if there is a readable one.
pub fn read(path: &Path) -> anyhow::Result<Option<SignedHead>> {
    match std::fs::read_to_string(path) {
        Ok(text) => SignedHead::from_json(&text)
            .map(Some)
            .with_context(|| format!("the witness file {} does not hold a signed head", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read the witness file {}", path.display())),
    }
}

/// Replace the witness with `head` if it is newer, atomically (write aside, fsync, rename).
pub fn write(path: &Path, head: &SignedHead) -> anyhow::Result<bool> {
    if let Ok(Some(old)) = read(path) {
        if old.seq >= head.seq {
            return Ok(false);
        }
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("witness"),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(head.to_json().as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_audit::{AuditKey, HeadKind};

    #[test]
    fn keeps_the_newest_head() {
        let dir = std::env::temp_dir().join(format!("portico-witness-{}", uuid::Uuid::new_v4().simple()));
        let path = dir.join("witness.json");
        let k = AuditKey::from_seed(&[5; 32]);
        assert_eq!(read(&path).unwrap(), None);
        let h5 = SignedHead::sign(&k, HeadKind::Head, 5, [1; 32], 0);
        let h3 = SignedHead::sign(&k, HeadKind::Head, 3, [2; 32], 0);
        assert!(write(&path, &h5).unwrap());
        assert!(!write(&path, &h3).unwrap());
        assert_eq!(read(&path).unwrap(), Some(h5));
        std::fs::write(&path, "garbage").unwrap();
        assert!(read(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
