//! One test's stores and the directory of their SQLite file, which is removed after the
//! last store. Shared by the unit tests' `testdb` and the integration tests' `common`
//! (included there by path), so it names no crate paths.

use std::path::{Path, PathBuf};

/// The stores, one at a time.
pub struct Stores<S> {
    // Declared before the directory: the stores left are dropped first.
    stores: std::vec::IntoIter<S>,
    _dir: TempDir,
}

impl<S> Stores<S> {
    pub fn new(stores: Vec<S>, dir: TempDir) -> Stores<S> {
        Stores { stores: stores.into_iter(), _dir: dir }
    }

    /// The first store (SQLite), for a test of it alone; before any is taken.
    pub fn first(&self) -> &S {
        &self.stores.as_slice()[0]
    }
}

impl<S> Iterator for Stores<S> {
    type Item = S;

    fn next(&mut self) -> Option<S> {
        self.stores.next()
    }
}

/// A new directory under the system's temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
