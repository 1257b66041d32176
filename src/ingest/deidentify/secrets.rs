//! `_secrets/` under the lake root: the de-identification key and the identifier map.
//! Written through the lake's object store, so a lake on S3 keeps them beside its tables;
//! on a local disk the folder is 0700 and the files 0600.

use std::collections::HashSet;

use object_store::{ObjectStoreExt, PutMode, PutPayload};

use super::{Identifier, SECRET_ENV};
use crate::error::{Error, Result};
use crate::ingest::sources::object_store_for;
use crate::lake::Lake;

pub const FOLDER: &str = "_secrets";
const KEY: &str = "deidentify.key";
const IDENTIFIERS: &str = "deidentify.identifiers";

fn url(lake: &Lake, name: &str) -> url::Url {
    lake.root()
        .join(&format!("{FOLDER}/{name}"))
        .expect("a valid URL segment")
}

/// The file's bytes, or `None` when it does not exist.
async fn read(lake: &Lake, name: &str) -> Result<Option<Vec<u8>>> {
    let u = url(lake, name);
    if let Some(root) = lake.local_root() {
        let p = root.join(FOLDER).join(name);
        return match std::fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(p.display(), e)),
        };
    }
    let (store, path) = object_store_for(&u)?;
    match store.get(&path).await {
        Ok(r) => Ok(Some(
            r.bytes()
                .await
                .map_err(|e| Error::Invalid(format!("{u}: {e}")))?
                .to_vec(),
        )),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(Error::Invalid(format!("{u}: {e}"))),
    }
}

#[cfg(unix)]
fn private_dir(p: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .map_err(|e| Error::io(p.display(), e))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(p.display(), e))
}

#[cfg(not(unix))]
fn private_dir(p: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(|e| Error::io(p.display(), e))
}

/// Open a new file readable by its owner only.
fn private_file(p: &std::path::Path, create_new: bool) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true);
    if create_new {
        o.create_new(true);
    } else {
        o.create(true).truncate(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(p)
}

/// Write a file; with `create_new`, fail with `AlreadyExists` when it exists (so two
/// first uses cannot make two keys). Returns false when it already existed.
async fn write(lake: &Lake, name: &str, bytes: Vec<u8>, create_new: bool) -> Result<bool> {
    use std::io::Write;
    let u = url(lake, name);
    if let Some(root) = lake.local_root() {
        let dir = root.join(FOLDER);
        private_dir(&dir)?;
        let p = dir.join(name);
        if create_new {
            return match private_file(&p, true) {
                Ok(mut f) => {
                    f.write_all(&bytes)
                        .and_then(|_| f.sync_all())
                        .map_err(|e| Error::io(p.display(), e))?;
                    Ok(true)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(Error::io(p.display(), e)),
            };
        }
        // Replace atomically: a reader sees the old file or the new one.
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let mut f = private_file(&tmp, false).map_err(|e| Error::io(tmp.display(), e))?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(tmp.display(), e))?;
        std::fs::rename(&tmp, &p).map_err(|e| Error::io(p.display(), e))?;
        return Ok(true);
    }
    let (store, path) = object_store_for(&u)?;
    let mode = if create_new {
        PutMode::Create
    } else {
        PutMode::Overwrite
    };
    let payload = PutPayload::from(bytes);
    match store.put_opts(&path, payload.clone(), mode.into()).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
        // A store without conditional writes (older MinIO): write it, as the lake's own
        // commits do there (see AWS_S3_ALLOW_UNSAFE_RENAME).
        Err(object_store::Error::NotImplemented { .. }) => store
            .put(&path, payload)
            .await
            .map(|_| true)
            .map_err(|e| Error::Invalid(format!("{u}: {e}"))),
        Err(e) => Err(Error::Invalid(format!("{u}: {e}"))),
    }
}

/// The secret: `MEDLAKE_DEID_SECRET` when set, else `_secrets/deidentify.key`, made (32
/// random bytes) on first use.
pub async fn key(lake: &Lake) -> Result<Vec<u8>> {
    if let Some(v) = std::env::var_os(SECRET_ENV).filter(|v| !v.is_empty()) {
        return Ok(v.into_encoded_bytes());
    }
    if let Some(k) = read(lake, KEY).await? {
        return Ok(k);
    }
    let k: [u8; 32] = rand::random();
    if write(lake, KEY, k.to_vec(), true).await? {
        return Ok(k.to_vec());
    }
    // Another process made it first: use theirs.
    read(lake, KEY)
        .await?
        .ok_or_else(|| Error::Invalid(format!("{}: exists but cannot be read", url(lake, KEY))))
}

/// The identifiers recorded so far (JSON lines).
pub async fn identifiers(lake: &Lake) -> Result<Vec<Identifier>> {
    let Some(bytes) = read(lake, IDENTIFIERS).await? else {
        return Ok(Vec::new());
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let id: Identifier = serde_json::from_str(line).map_err(|e| {
            Error::Invalid(format!("{} line {}: {e}", url(lake, IDENTIFIERS), i + 1))
        })?;
        out.push(id);
    }
    Ok(out)
}

/// Add identifiers not yet recorded; the file is rewritten only when something is new.
/// (Concurrent DICOM ingests into one lake may lose each other's additions; the scrub then
/// misses those names until they are seen again.)
pub async fn add_identifiers(lake: &Lake, new: &[Identifier]) -> Result<()> {
    let mut all = identifiers(lake).await?;
    let mut seen: HashSet<Identifier> = all.iter().cloned().collect();
    let before = all.len();
    for id in new {
        if seen.insert(id.clone()) {
            all.push(id.clone());
        }
    }
    if all.len() == before {
        return Ok(());
    }
    let mut text = String::new();
    for id in &all {
        text.push_str(&serde_json::to_string(id).expect("an identifier serializes"));
        text.push('\n');
    }
    write(lake, IDENTIFIERS, text.into_bytes(), false).await?;
    Ok(())
}
