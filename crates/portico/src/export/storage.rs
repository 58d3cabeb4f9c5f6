//! Where a finished export's files are kept: the local export directory (the default) or an
//! S3-compatible bucket (`[export] store = "s3://bucket/prefix"`).
//!
//! A running job always writes to its local staging directory ([`super::files`]): appends,
//! fsync before each checkpoint and truncation on resume need a real file. Only when the job
//! is finished does [`Storage::publish`] make each complete file downloadable — with a bucket
//! by uploading it (streamed, multipart past one part, memory bounded by the parts in
//! flight) and checking the stored size before the caller records the file. Publishing is
//! idempotent: a worker that dies half-way publishes again on the next claim.
//!
//! Downloads ([`Storage::read`]) stream through portico in both cases, so the access
//! re-check at download time stays in front of the bytes; the bucket is never handed out.

use super::files;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// Files up to this size go up in one PUT; larger ones in parts of this size (S3 wants at
/// least 5 MiB per part but the last).
pub const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts uploading at once: memory per upload stays under `(1 + PARTS_IN_FLIGHT) * PART_BYTES`.
const PARTS_IN_FLIGHT: usize = 2;
/// Read size from the staging file.
const BLOCK: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("no such export file")]
    NotFound,
    #[error("export file i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("object store: {0}")]
    Object(object_store::Error),
    #[error("{name}: the store holds {stored} bytes, {expected} were sent")]
    Incomplete { name: String, stored: u64, expected: u64 },
    #[error("{name} is not what was written to it (its hash or length differs)")]
    Changed { name: String },
}

impl From<object_store::Error> for StorageError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => StorageError::NotFound,
            e => StorageError::Object(e),
        }
    }
}

/// The export storage settings, as parsed and checked from the configuration.
#[derive(Clone, Default)]
pub struct S3Settings {
    pub bucket: String,
    /// Key prefix under which every job has its own folder (may be empty).
    pub prefix: String,
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub allow_http: bool,
}

impl S3Settings {
    /// Parse `s3://bucket[/prefix]` (the bucket name by S3's rules; the prefix a valid key).
    pub fn parse_url(url: &str) -> Result<(String, String), String> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| format!("'{url}' is not an s3://bucket/prefix URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let ok_bucket = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && bucket.as_bytes()[0].is_ascii_alphanumeric()
            && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
        if !ok_bucket {
            return Err(format!("'{bucket}' is not a valid bucket name (3-63 of a-z, 0-9, '.', '-')"));
        }
        let prefix = prefix.trim_matches('/');
        Key::parse(prefix).map_err(|e| format!("invalid key prefix '{prefix}': {e}"))?;
        Ok((bucket.to_string(), prefix.to_string()))
    }
}

/// Finished export files: in the local directory, or in a bucket.
#[derive(Clone)]
pub struct Storage {
    /// Staging (and, without a bucket, final) directory: one folder per job.
    dir: PathBuf,
    bucket: Option<Arc<Bucket>>,
}

struct Bucket {
    store: Arc<dyn ObjectStore>,
    prefix: Key,
    /// `s3://bucket/prefix`, for messages.
    url: String,
}

impl Bucket {
    /// `prefix/<job>/<name>`.
    fn key(&self, job_id: &str, name: &str) -> Key {
        self.prefix.clone().join(job_id).join(name)
    }
}

impl Storage {
    /// Files stay in `dir`.
    pub fn local(dir: PathBuf) -> Storage {
        Storage { dir, bucket: None }
    }

    /// Staging in `dir`, finished files in the bucket. Settings not given fall back to the
    /// standard `AWS_*` variables and credential chain; the bucket is listed once here, so a
    /// wrong endpoint, bucket or key stops start-up instead of the first export.
    pub async fn bucket(dir: PathBuf, s: &S3Settings) -> Result<Storage, String> {
        let url =
            if s.prefix.is_empty() { format!("s3://{}", s.bucket) } else { format!("s3://{}/{}", s.bucket, s.prefix) };
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&s.bucket);
        if !s.endpoint.is_empty() {
            b = b.with_endpoint(&s.endpoint);
        }
        if !s.region.is_empty() {
            b = b.with_region(&s.region);
        }
        if !s.access_key_id.is_empty() {
            b = b.with_access_key_id(&s.access_key_id).with_secret_access_key(&s.secret_access_key);
        }
        if s.allow_http {
            b = b.with_allow_http(true);
        }
        // The default (10 retries within 3 minutes) would hold start-up and a finishing
        // worker for minutes when the store is down; a job is retried on its next claim.
        let retry = object_store::RetryConfig {
            max_retries: 3,
            retry_timeout: std::time::Duration::from_secs(15),
            ..Default::default()
        };
        b = b.with_retry(retry);
        let store = b.build().map_err(|e| format!("export store {url}: {e}"))?;
        let prefix = Key::parse(&s.prefix).map_err(|e| format!("export store {url}: {e}"))?;
        store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(|e| format!("export store {url} cannot be listed with these settings: {e}"))?;
        Ok(Storage { dir, bucket: Some(Arc::new(Bucket { store: Arc::new(store), prefix, url })) })
    }

    /// Where the export is kept, for logs (`s3://…` or the directory).
    pub fn describe(&self) -> String {
        match &self.bucket {
            Some(b) => b.url.clone(),
            None => self.dir.display().to_string(),
        }
    }

    /// A job's local (staging) directory.
    pub fn job_dir(&self, job_id: &str) -> PathBuf {
        self.dir.join(job_id)
    }

    /// Whether publishing uploads (and so takes time per file).
    pub fn uploads(&self) -> bool {
        self.bucket.is_some()
    }

    /// Make a complete staging file downloadable; its SHA-256 (hex) and length as stored.
    /// `written`: the digest taken while the file was written ([`files::Writers::digest`]);
    /// kept in place, the file is then not read again (its length is checked), and an
    /// upload, which reads and hashes it anyway, must match it.
    pub async fn publish(
        &self,
        job_id: &str,
        name: &str,
        written: Option<(String, u64)>,
    ) -> Result<(String, u64), StorageError> {
        let path = self.job_dir(job_id).join(name);
        let got = match (&self.bucket, &written) {
            (None, Some((sha, len))) => {
                if tokio::fs::metadata(&path).await?.len() != *len {
                    return Err(StorageError::Changed { name: name.to_string() });
                }
                return Ok((sha.clone(), *len));
            }
            (None, None) => {
                let p = path.clone();
                tokio::task::spawn_blocking(move || files::hash_file(&p)).await.map_err(std::io::Error::other)??
            }
            (Some(b), _) => upload(b, &b.key(job_id, name), &path, name).await?,
        };
        if written.is_some_and(|w| w != got) {
            return Err(StorageError::Changed { name: name.to_string() });
        }
        Ok(got)
    }

    /// After the job is recorded completed: drop the local copies the bucket now holds.
    pub async fn release_staging(&self, job_id: &str) {
        if self.bucket.is_some() {
            remove_dir(&self.job_dir(job_id)).await;
        }
    }

    /// A published file's bytes, as a stream.
    pub async fn read(
        &self,
        job_id: &str,
        name: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, std::io::Error>>, StorageError> {
        match &self.bucket {
            None => {
                let file =
                    tokio::fs::File::open(self.job_dir(job_id).join(name)).await.map_err(|e| match e.kind() {
                        std::io::ErrorKind::NotFound => StorageError::NotFound,
                        _ => StorageError::Io(e),
                    })?;
                Ok(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024).boxed())
            }
            Some(b) => {
                let got = b.store.get(&b.key(job_id, name)).await?;
                Ok(got.into_stream().map_err(std::io::Error::other).boxed())
            }
        }
    }

    /// Remove everything of a job: its staging directory and, with a bucket, every object
    /// under its folder (listed, so an upload whose row was never written goes too).
    pub async fn remove(&self, job_id: &str) -> Result<(), StorageError> {
        remove_dir(&self.job_dir(job_id)).await;
        if let Some(b) = &self.bucket {
            let prefix = b.prefix.clone().join(job_id);
            let keys: Vec<Key> = b.store.list(Some(&prefix)).map_ok(|m| m.location).try_collect().await?;
            for k in keys {
                match b.store.delete(&k).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }
}

async fn remove_dir(dir: &Path) {
    if let Err(e) = tokio::fs::remove_dir_all(dir).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove export files");
    }
}

/// Upload one file, hashing it on the way, and check the stored size.
async fn upload(b: &Bucket, key: &Key, path: &Path, name: &str) -> Result<(String, u64), StorageError> {
    let mut f = tokio::fs::File::open(path).await?;
    let size = f.metadata().await?.len();
    let mut h = Sha256::new();
    let mut sent = 0u64;
    if size <= PART_BYTES as u64 {
        let mut buf = Vec::with_capacity(size as usize);
        f.read_to_end(&mut buf).await?;
        h.update(&buf);
        sent = buf.len() as u64;
        b.store.put(key, buf.into()).await?;
    } else {
        let mut w = WriteMultipart::new_with_chunk_size(b.store.put_multipart(key).await?, PART_BYTES);
        let mut buf = vec![0u8; BLOCK];
        let streamed: Result<(), StorageError> = async {
            loop {
                let k = f.read(&mut buf).await?;
                if k == 0 {
                    return Ok(());
                }
                h.update(&buf[..k]);
                sent += k as u64;
                w.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                w.write(&buf[..k]);
            }
        }
        .await;
        match streamed {
            Ok(()) => {
                w.finish().await?;
            }
            Err(e) => {
                // Parts already sent would otherwise be kept (and billed) by the store.
                let _ = w.abort().await;
                return Err(e);
            }
        }
    }
    let stored = b.store.head(key).await?.size;
    if stored != sent {
        return Err(StorageError::Incomplete { name: name.to_string(), stored, expected: sent });
    }
    Ok((hex::encode(h.finalize()), sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_are_checked() {
        assert_eq!(S3Settings::parse_url("s3://exports").unwrap(), ("exports".into(), String::new()));
        assert_eq!(S3Settings::parse_url("s3://my-bucket/a/b/").unwrap(), ("my-bucket".into(), "a/b".into()));
        assert!(S3Settings::parse_url("https://x/y").is_err());
        assert!(S3Settings::parse_url("s3://").is_err());
        assert!(S3Settings::parse_url("s3://Upper").is_err());
        assert!(S3Settings::parse_url("s3://ab").is_err());
        assert!(S3Settings::parse_url("s3://bucket-/x").is_err());
        assert!(S3Settings::parse_url("s3://bucket/a//b").is_err(), "empty key segment");
        assert!(S3Settings::parse_url("s3://bucket/a/../b").is_err());
    }

    #[tokio::test]
    async fn local_storage_publishes_reads_and_removes_in_place() {
        let dir = std::env::temp_dir().join(format!("portico-export-storage-{}", uuid::Uuid::new_v4().simple()));
        let s = Storage::local(dir.clone());
        std::fs::create_dir_all(s.job_dir("j")).unwrap();
        std::fs::write(s.job_dir("j").join("Patient.ndjson"), b"{}\n").unwrap();
        let (sha, len) = s.publish("j", "Patient.ndjson", None).await.unwrap();
        assert_eq!((sha.len(), len), (64, 3));
        // A digest taken while writing is trusted in place, but only for the file's length.
        let known = (sha.clone(), 3);
        assert_eq!(s.publish("j", "Patient.ndjson", Some(known.clone())).await.unwrap(), known);
        let stale = (sha.clone(), 2);
        assert!(matches!(s.publish("j", "Patient.ndjson", Some(stale)).await, Err(StorageError::Changed { .. })));
        s.release_staging("j").await;
        let bytes: Vec<Bytes> = s.read("j", "Patient.ndjson").await.unwrap().try_collect().await.unwrap();
        assert_eq!(bytes.concat(), b"{}\n");
        assert!(matches!(s.read("j", "Other.ndjson").await, Err(StorageError::NotFound)));
        s.remove("j").await.unwrap();
        assert!(!s.job_dir("j").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
