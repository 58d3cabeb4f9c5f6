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
///
/// Each file is hashed (SHA-256) as it is written, so publishing does not read it back. The
/// running state lives only in memory: a file that already has content when it is opened
/// (a resumed job, after `restore` cut it to its checkpoint) is hashed once from disk first,
/// and a file this run never opened is hashed from disk when its digest is asked for.
pub struct Writers {
    dir: PathBuf,
    open: BTreeMap<String, Open>,
}

struct Open {
    file: BufWriter<std::fs::File>,
    /// SHA-256 of every byte of the file so far (on disk and in the buffer).
    hash: Sha256,
    len: u64,
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
            let path = self.dir.join(name);
            let mut f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
            let end = f.seek(SeekFrom::End(0))?;
            // Content from before this run (a resumed job): hash it once.
            let (hash, len) = if end == 0 { (Sha256::new(), 0) } else { hash_state(&path)? };
            if len != end {
                return Err(std::io::Error::other(format!("{name} changed while it was hashed")));
            }
            self.open.insert(name.to_string(), Open { file: BufWriter::with_capacity(BUFFER, f), hash, len });
        }
        let f = self.open.get_mut(name).expect("inserted above");
        f.file.write_all(bytes)?;
        f.hash.update(bytes);
        f.len += bytes.len() as u64;
        Ok(())
    }

    /// SHA-256 (hex) and length of everything written to `name`: from the running hash of
    /// a file this run wrote, else read from disk (a file written before a restart, or by
    /// someone else, like the PDF summary).
    pub fn digest(&mut self, name: &str) -> std::io::Result<(String, u64)> {
        match self.open.get_mut(name) {
            Some(f) => {
                f.file.flush()?;
                Ok((hex::encode(f.hash.clone().finalize()), f.len))
            }
            None => hash_file(&self.dir.join(name)),
        }
    }

    /// Make every written byte durable (before the checkpoint that covers it commits).
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.flushed()?.sync()
    }

    /// Hand every buffered byte to the kernel and return what makes them durable, to run
    /// on another thread while the next batch is written: `fsync` covers what was written
    /// before it was called, and bytes appended meanwhile lie past the checkpoint it is for.
    pub fn flushed(&mut self) -> std::io::Result<Durable> {
        let mut files = Vec::with_capacity(self.open.len());
        for f in self.open.values_mut() {
            f.file.flush()?;
            files.push(f.file.get_ref().try_clone()?);
        }
        Ok(Durable { files, dir: self.dir.clone() })
    }
}

/// Flushed files (and their directory, for the names of new ones) still to be made durable.
pub struct Durable {
    files: Vec<std::fs::File>,
    dir: PathBuf,
}

impl Durable {
    pub fn sync(self) -> std::io::Result<()> {
        for f in &self.files {
            f.sync_data()?;
        }
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// SHA-256 (hex) and length of a file, read in blocks.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let (h, n) = hash_state(path)?;
    Ok((hex::encode(h.finalize()), n))
}

/// The running SHA-256 of a file's content, and its length.
fn hash_state(path: &Path) -> std::io::Result<(Sha256, u64)> {
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
    Ok((h, n))
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

    /// The running hash is the file's hash: fresh files, a file resumed after `restore`
    /// cut it (its kept prefix hashed once) and a file this run never wrote.
    #[test]
    fn digests_while_writing_match_the_files_also_after_a_resume() {
        let dir = std::env::temp_dir().join(format!("portico-export-files-{}", uuid::Uuid::new_v4().simple()));
        let sha = |name: &str| {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            (hex::encode(Sha256::digest(&bytes)), bytes.len() as u64)
        };
        let mut w = Writers::new(&dir).unwrap();
        for i in 0..1000 {
            w.append("Observation.ndjson", format!("{{\"n\":{i}}}\n").as_bytes()).unwrap();
        }
        w.append("Patient.ndjson", b"{}\n").unwrap();
        w.sync().unwrap();
        assert_eq!(w.digest("Observation.ndjson").unwrap(), sha("Observation.ndjson"));
        let kept = 5000;
        // Written past the checkpoint, then the worker died.
        w.append("Observation.ndjson", b"{\"lost\":1}\n").unwrap();
        w.sync().unwrap();
        drop(w);
        let mut w = Writers::new(&dir).unwrap();
        let committed = BTreeMap::from([("Observation.ndjson".to_string(), kept), ("Patient.ndjson".to_string(), 3)]);
        w.restore(&committed).unwrap();
        w.append("Observation.ndjson", b"{\"after\":1}\n").unwrap();
        assert_eq!(w.digest("Observation.ndjson").unwrap(), sha("Observation.ndjson"));
        assert_eq!(w.digest("Observation.ndjson").unwrap().1, kept + 12);
        assert_eq!(w.digest("Patient.ndjson").unwrap(), sha("Patient.ndjson"), "not written in this run");
        std::fs::write(dir.join("summary.pdf"), b"%PDF").unwrap();
        assert_eq!(w.digest("summary.pdf").unwrap(), sha("summary.pdf"));
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
