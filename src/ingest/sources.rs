//! Where ingest inputs come from: local files and folders, or object-store prefixes.
//!
//! A plain path is walked on the local file system. A URL (`file://`, `s3://`, `gs://`,
//! `az://`) goes through object_store: a prefix is listed recursively, and each object is
//! read with ranged GETs, only as far as the reader asks (for DICOM: the header, not the
//! pixel data). Credentials come from the usual environment variables of each cloud
//! (`AWS_*`, `GOOGLE_*`, `AZURE_*`), read by object_store's `from_env` builders.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use crate::error::{Error, Result};

/// One input file.
#[derive(Debug, Clone)]
pub enum SourceFile {
    Local(PathBuf),
    Object {
        store: Arc<dyn ObjectStore>,
        location: ObjectPath,
        size: u64,
        uri: String,
        /// The runtime the listing ran on; reads happen on reader threads outside it.
        runtime: tokio::runtime::Handle,
    },
}

impl SourceFile {
    /// The URI recorded in the lake: a `file://` URL for local files.
    pub fn uri(&self) -> String {
        match self {
            // Paths are absolute: the walk starts from a canonical root.
            SourceFile::Local(path) => Url::from_file_path(path)
                .map(|u| u.to_string())
                .unwrap_or_else(|_| path.display().to_string()),
            SourceFile::Object { uri, .. } => uri.clone(),
        }
    }

    /// A reader from the start of the file, and the file's size.
    pub fn open(&self) -> std::io::Result<(Box<dyn Read + Send>, u64)> {
        match self {
            SourceFile::Local(path) => {
                // No BufReader: the DICOM reader asks for large blocks.
                let file = std::fs::File::open(path)?;
                let size = file.metadata()?.len();
                Ok((Box::new(file), size))
            }
            SourceFile::Object {
                store,
                location,
                size,
                runtime,
                ..
            } => Ok((
                Box::new(RangedReader {
                    store: store.clone(),
                    location: location.clone(),
                    pos: 0,
                    size: *size,
                    runtime: runtime.clone(),
                }),
                *size,
            )),
        }
    }
}

/// A `Read` over one object that fetches exactly what each `read` asks for, in one ranged
/// GET. Callers ask for large slices (the DICOM reader asks for 16 KiB, then for what the
/// header needs), so a header costs one or two requests.
struct RangedReader {
    store: Arc<dyn ObjectStore>,
    location: ObjectPath,
    pos: u64,
    size: u64,
    runtime: tokio::runtime::Handle,
}

impl Read for RangedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let end = self.size.min(self.pos + buf.len() as u64);
        let bytes = self
            .runtime
            .block_on(self.store.get_range(&self.location, self.pos..end))
            .map_err(std::io::Error::other)?;
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

/// Whether an input names an object-store location rather than a local path.
pub fn is_url(input: &str) -> bool {
    input.contains("://")
}

/// The object store and the path within it for a URL. Cloud credentials and settings come
/// from the environment.
pub fn object_store_for(url: &Url) -> Result<(Arc<dyn ObjectStore>, ObjectPath)> {
    let bad = |reason: String| Error::Invalid(format!("{url}: {reason}"));
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "file" => Arc::new(object_store::local::LocalFileSystem::new()),
        "s3" | "s3a" => Arc::new(
            object_store::aws::AmazonS3Builder::from_env()
                .with_url(url.as_str())
                .build()
                .map_err(|e| bad(e.to_string()))?,
        ),
        "gs" => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(url.as_str())
                .build()
                .map_err(|e| bad(e.to_string()))?,
        ),
        "az" | "azure" | "abfs" | "abfss" => Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(url.as_str())
                .build()
                .map_err(|e| bad(e.to_string()))?,
        ),
        other => {
            return Err(bad(format!(
                "unsupported scheme {other:?}; use a local path, file://, s3://, gs:// or az://"
            )))
        }
    };
    let path = match url.scheme() {
        "file" => {
            let local = url
                .to_file_path()
                .map_err(|_| bad("not a local file URL".into()))?;
            ObjectPath::from_absolute_path(&local).map_err(|e| bad(e.to_string()))?
        }
        _ => ObjectPath::from_url_path(url.path()).map_err(|e| bad(e.to_string()))?,
    };
    Ok((store, path))
}

/// Expand the inputs into files, sorted by URI with repeats removed. Folders and prefixes
/// are walked recursively.
pub async fn list(inputs: &[String]) -> Result<Vec<SourceFile>> {
    let mut files = Vec::new();
    for input in inputs {
        if is_url(input) {
            let url = Url::parse(input).map_err(|e| Error::Invalid(format!("{input}: {e}")))?;
            list_objects(&url, &mut files).await?;
        } else {
            let root = std::fs::canonicalize(input).map_err(|e| Error::io(input, e))?;
            walk(&root, &mut files)?;
        }
    }
    let mut keyed: Vec<(String, SourceFile)> = files.into_iter().map(|f| (f.uri(), f)).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed.dedup_by(|a, b| a.0 == b.0);
    Ok(keyed.into_iter().map(|(_, f)| f).collect())
}

async fn list_objects(url: &Url, out: &mut Vec<SourceFile>) -> Result<()> {
    let (store, path) = object_store_for(url)?;
    let runtime = tokio::runtime::Handle::current();
    let object_uri = |location: &ObjectPath| -> String {
        let mut u = url.clone();
        u.set_path(&format!("/{location}"));
        u.set_query(None);
        u.to_string()
    };
    let failed = |e: object_store::Error| Error::Invalid(format!("{url}: {e}"));
    // A URL naming one object is that object; otherwise it is a prefix.
    if !url.path().ends_with('/') {
        match store.head(&path).await {
            Ok(meta) => {
                out.push(SourceFile::Object {
                    store: store.clone(),
                    uri: object_uri(&meta.location),
                    location: meta.location,
                    size: meta.size,
                    runtime,
                });
                return Ok(());
            }
            Err(object_store::Error::NotFound { .. }) => {}
            // A folder on the local file system answers HEAD with an error of its own.
            Err(_) if url.scheme() == "file" => {}
            Err(e) => return Err(failed(e)),
        }
    }
    let prefix = (!path.as_ref().is_empty()).then_some(&path);
    let metas: Vec<_> = store.list(prefix).try_collect().await.map_err(failed)?;
    if metas.is_empty() {
        return Err(Error::Invalid(format!(
            "{url}: no objects at this location"
        )));
    }
    for meta in metas {
        out.push(SourceFile::Object {
            store: store.clone(),
            uri: object_uri(&meta.location),
            location: meta.location,
            size: meta.size,
            runtime: runtime.clone(),
        });
    }
    Ok(())
}

fn walk(path: &Path, out: &mut Vec<SourceFile>) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path.display(), e))?;
    if meta.is_file() {
        out.push(SourceFile::Local(path.to_path_buf()));
        return Ok(());
    }
    let entries = std::fs::read_dir(path).map_err(|e| Error::io(path.display(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(path.display(), e))?;
        let p = entry.path();
        let ft = entry.file_type().map_err(|e| Error::io(p.display(), e))?;
        if ft.is_dir() {
            walk(&p, out)?;
        } else if ft.is_file() || (ft.is_symlink() && p.is_file()) {
            out.push(SourceFile::Local(p));
        }
    }
    Ok(())
}
