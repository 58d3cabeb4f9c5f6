//! A running job's files on local disk: one NDJSON file per resource type (and a
//! `.sensitive` twin), appended batch by batch, fsynced before the batch's checkpoint
//! commits, truncated back to the checkpoint on resume. Once complete they are published
//! by [`super::storage`] (kept here, or uploaded to a bucket), which also serves downloads.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The download name of a type's file.
pub fn file_name(res_type: &str, sensitive: bool) -> String {
    if sensitive { format!("{res_type}.sensitive.ndjson") } else { format!("{res_type}.ndjson") }
}

/// Whether `name` is one of ours (download URLs are checked against it before any path is
/// built from them).
pub fn valid_name(name: &str) -> bool {
    if name == super::summary::FILE {
        return true;
    }
    let stem = name.strip_suffix(".ndjson").unwrap_or("");
    let stem = stem.strip_suffix(".sensitive").unwrap_or(stem);
    stem == "deleted" || stem == "error" || portico_fhir::resource_types::is_resource_type(stem)
}

/// Open files of one job, positioned at their ends. Writes are buffered (a line is a few
/// hundred bytes; a write(2) each made the system call the cost) and reach the file at the
/// latest in `sync`, before the checkpoint that covers them: what a crash loses from the
/// buffer lies past the checkpoint, which `restore` cuts off anyway.
pub struct Writers {
    dir: PathBuf,
    open: BTreeMap<String, BufWriter<std::fs::File>>,
}

/// Buffer per open file: a write(2) per ~100 lines, and a job has a few dozen files open
/// at most (one or two per type).
const BUFFER: usize = 64 * 1024;

impl Writers {
    pub fn new(dir: &Path) -> std::io::Result<Writers> {
        std::fs::create_dir_all(dir)?;
        Ok(Writers { dir: dir.to_path_buf(), open: BTreeMap::new() })
    }

    /// Cut every checkpointed file back to its committed length (what a crash may have
    /// written past it is dropped) and remove files the checkpoint does not know.
    pub fn restore(&mut self, committed: &BTreeMap<String, u64>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            match committed.get(&name) {
                Some(len) => {
                    let f = std::fs::OpenOptions::new().write(true).open(entry.path())?;
                    f.set_len(*len)?;
                    f.sync_all()?;
                }
                None => std::fs::remove_file(entry.path())?,
            }
        }
        Ok(())
    }

    /// Append bytes to `name` (created on first use).
    pub fn append(&mut self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        if !self.open.contains_key(name) {
            let mut f =
                std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(self.dir.join(name))?;
            f.seek(SeekFrom::End(0))?;
            self.open.insert(name.to_string(), BufWriter::with_capacity(BUFFER, f));
        }
        let f = self.open.get_mut(name).expect("inserted above");
        f.write_all(bytes)
    }

    /// Make every written byte durable (before the checkpoint that covers it commits).
    pub fn sync(&mut self) -> std::io::Result<()> {
        for f in self.open.values_mut() {
            f.flush()?;
            f.get_ref().sync_data()?;
        }
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// SHA-256 (hex) and length of a file, read in blocks.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_truncates_to_the_checkpoint_and_drops_unknown_files() {
        let dir = std::env::temp_dir().join(format!("portico-export-files-{}", uuid::Uuid::new_v4().simple()));
        let mut w = Writers::new(&dir).unwrap();
        w.append("Observation.ndjson", b"{\"a\":1}\n").unwrap();
        w.append("Observation.ndjson", b"{\"a\":2}\n").unwrap();
        w.append("Patient.ndjson", b"{}\n").unwrap();
        w.sync().unwrap();
        drop(w);
        let mut w = Writers::new(&dir).unwrap();
        w.restore(&BTreeMap::from([("Observation.ndjson".to_string(), 8)])).unwrap();
        w.append("Observation.ndjson", b"{\"a\":3}\n").unwrap();
        w.sync().unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("Observation.ndjson")).unwrap(), "{\"a\":1}\n{\"a\":3}\n");
        assert!(!dir.join("Patient.ndjson").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_our_names_are_valid() {
        assert!(valid_name("Observation.ndjson"));
        assert!(valid_name("Observation.sensitive.ndjson"));
        assert!(!valid_name("../x.ndjson"));
        assert!(!valid_name("Observation.ndjson/.."));
        assert!(!valid_name("Nope.ndjson"));
        assert!(valid_name("summary.pdf") && !valid_name("other.pdf"));
    }
}
