//! Where the lake lives, and the only code that opens, reads and writes its tables.
//!
//! A lake is a root location (a local folder, or an object-store URL) with one Delta table
//! per folder beneath it. Every write is one Delta commit, so a reader sees either all of a
//! write or none of it. After an operation has written all its tables, it appends one row
//! to `lake_log`: that row is a *lake version*, naming the version of every table at that
//! moment, which is what makes a cohort query reproducible (`--as-of`).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError};
use url::Url;

use crate::error::{Error, Result};

/// The table that records lake versions.
pub const LAKE_LOG: &str = "lake_log";

/// A point in the lake's history to read at.
#[derive(Debug, Clone, PartialEq)]
pub enum AsOf {
    /// A lake version: a `lake_version` in `lake_log`.
    Version(i64),
    /// The newest commit of each table at or before this instant.
    Timestamp(DateTime<Utc>),
}

impl std::str::FromStr for AsOf {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        if let Ok(v) = t.parse::<i64>() {
            return Ok(AsOf::Version(v));
        }
        if let Ok(ts) = DateTime::parse_from_rfc3339(t) {
            return Ok(AsOf::Timestamp(ts.with_timezone(&Utc)));
        }
        // A bare date or a space-separated timestamp, read as UTC.
        for fmt in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"] {
            if let Ok(n) = chrono::NaiveDateTime::parse_from_str(t, fmt) {
                return Ok(AsOf::Timestamp(n.and_utc()));
            }
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
            return Ok(AsOf::Timestamp(d.and_hms_opt(0, 0, 0).unwrap().and_utc()));
        }
        Err(Error::BadAsOf(s.to_string()))
    }
}

/// One row of `lake_log`.
#[derive(Debug, Clone)]
pub struct LakeVersion {
    pub lake_version: i64,
    pub committed_at: DateTime<Utc>,
    pub operation: String,
    /// Delta version of every table that existed when this lake version was recorded.
    pub table_versions: BTreeMap<String, i64>,
}

/// A lake: a root location plus the tables under it.
#[derive(Debug, Clone)]
pub struct Lake {
    root: Url,
}

impl Lake {
    /// Open (and for a local folder, create) the lake at a path or URL.
    ///
    /// A plain path is the local filesystem. `file://`, `s3://`, `gs://` and `az://` URLs go
    /// through object_store; cloud schemes need the `cloud` feature, which registers their
    /// handlers.
    pub fn open(location: &str) -> Result<Self> {
        let bad = |reason: String| Error::LakeLocation {
            location: location.to_string(),
            reason,
        };
        let root = if location.contains("://") {
            let mut url = Url::parse(location).map_err(|e| bad(e.to_string()))?;
            if url.scheme() == "file" {
                let path = url
                    .to_file_path()
                    .map_err(|_| bad("not a local file URL".into()))?;
                return Self::open_local(&path, location);
            }
            if !url.path().ends_with('/') {
                url.set_path(&format!("{}/", url.path()));
            }
            register_cloud_handlers();
            url
        } else {
            return Self::open_local(std::path::Path::new(location), location);
        };
        Ok(Lake { root })
    }

    fn open_local(path: &std::path::Path, location: &str) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(|e| Error::io(path.display(), e))?;
        let abs = std::fs::canonicalize(path).map_err(|e| Error::io(path.display(), e))?;
        let root = Url::from_directory_path(&abs).map_err(|_| Error::LakeLocation {
            location: location.to_string(),
            reason: "cannot be made into a file URL".into(),
        })?;
        Ok(Lake { root })
    }

    /// The lake's root URL (always ending in `/`).
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// The local folder of the lake, when it is on the local filesystem.
    pub fn local_root(&self) -> Option<std::path::PathBuf> {
        (self.root.scheme() == "file")
            .then(|| self.root.to_file_path().ok())
            .flatten()
    }

    pub fn table_url(&self, name: &str) -> Url {
        self.root
            .join(&format!("{name}/"))
            .expect("a table name is a valid URL segment")
    }

    /// The newest version of a table, or `None` when it has never been written.
    pub async fn table(&self, name: &str) -> Result<Option<DeltaTable>> {
        self.if_table(name, deltalake::open_table(self.table_url(name)))
            .await
    }

    /// The newest version of a table, opened for a query: its protocol, metadata and
    /// version are read, but not its list of files. [`Lake::table`] also materializes every
    /// file's action and statistics, which a query does not use: the scan replays the log
    /// itself, for the files its filters keep. The table comes back unloaded, holding only
    /// its log store. `None` when the table has never been written.
    pub async fn table_for_query(
        &self,
        name: &str,
    ) -> Result<Option<(DeltaTable, Arc<deltalake::kernel::Snapshot>)>> {
        let url = self.table_url(name);
        self.if_table(name, async move {
            let table = deltalake::DeltaTableBuilder::from_url(url)?.build()?;
            let snapshot =
                deltalake::kernel::Snapshot::try_new(table.log_store().as_ref(), None).await?;
            Ok((table, Arc::new(snapshot)))
        })
        .await
    }

    /// Run `open` (which reads the table's log) unless the table has never been written:
    /// on a local lake that is known from its `_delta_log` folder without reading it, and
    /// anywhere from deltalake's not-a-table errors. Both give `None`.
    async fn if_table<T>(
        &self,
        name: &str,
        open: impl std::future::Future<Output = std::result::Result<T, DeltaTableError>>,
    ) -> Result<Option<T>> {
        if let Some(root) = self.local_root() {
            if !root.join(name).join("_delta_log").is_dir() {
                return Ok(None);
            }
        }
        match open.await {
            Ok(t) => Ok(Some(t)),
            Err(DeltaTableError::NotATable(_)) | Err(DeltaTableError::InvalidTableLocation(_)) => {
                Ok(None)
            }
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(Error::delta(name, e)),
        }
    }

    /// A table at a given Delta version.
    pub async fn table_at_version(&self, name: &str, version: i64) -> Result<Option<DeltaTable>> {
        let Some(mut t) = self.table(name).await? else {
            return Ok(None);
        };
        t.load_version(version as _)
            .await
            .map_err(|e| Error::delta(name, e))?;
        Ok(Some(t))
    }

    /// A table as it was at an instant; `None` when it did not exist yet.
    pub async fn table_at_time(&self, name: &str, at: DateTime<Utc>) -> Result<Option<DeltaTable>> {
        let Some(mut t) = self.table(name).await? else {
            return Ok(None);
        };
        match t.load_with_datetime(at).await {
            Ok(()) => Ok(Some(t)),
            // Asking for a moment before the table's first commit.
            Err(DeltaTableError::InvalidVersion(_)) => Ok(None),
            Err(e) if e.to_string().contains("before") => Ok(None),
            Err(e) => Err(Error::delta(name, e)),
        }
    }

    /// Append batches to a table (created on first write) in one atomic commit.
    /// Returns the table's new version.
    pub async fn append(
        &self,
        name: &str,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        operation: &str,
    ) -> Result<i64> {
        self.write(name, schema, batches, SaveMode::Append, operation)
            .await
    }

    /// Replace a table's rows in one atomic commit (the old rows stay reachable by version).
    pub async fn overwrite(
        &self,
        name: &str,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        operation: &str,
    ) -> Result<i64> {
        self.write(name, schema, batches, SaveMode::Overwrite, operation)
            .await
    }

    async fn write(
        &self,
        name: &str,
        schema: SchemaRef,
        mut batches: Vec<RecordBatch>,
        mode: SaveMode,
        operation: &str,
    ) -> Result<i64> {
        if let Some(root) = self.local_root() {
            let dir = root.join(name);
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display(), e))?;
        }
        let table = DeltaTable::try_from_url(self.table_url(name))
            .await
            .map_err(|e| Error::delta(name, e))?;
        if batches.is_empty() {
            // An empty write still creates the table, so every table a command owns exists.
            batches.push(RecordBatch::new_empty(schema));
        }
        let props = CommitProperties::default().with_metadata([(
            "medlake.operation".to_string(),
            serde_json::Value::String(operation.to_string()),
        )]);
        let table = table
            .write(batches)
            .with_save_mode(mode)
            .with_commit_properties(props)
            .await
            .map_err(|e| Error::delta(name, e))?;
        Ok(table.version().unwrap_or(0) as i64)
    }

    /// The tables of the lake, by name, that exist now.
    pub async fn table_names(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        if let Some(root) = self.local_root() {
            let entries = std::fs::read_dir(&root).map_err(|e| Error::io(root.display(), e))?;
            for entry in entries.flatten() {
                let p = entry.path();
                if p.join("_delta_log").is_dir() {
                    if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
                        names.push(n.to_string());
                    }
                }
            }
        } else {
            for n in crate::tables::ALL {
                if self.table(n).await?.is_some() {
                    names.push(n.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Record a lake version naming the current version of every table.
    pub async fn record_version(&self, operation: &str) -> Result<LakeVersion> {
        let mut table_versions = BTreeMap::new();
        for name in self.table_names().await? {
            if name == LAKE_LOG {
                continue;
            }
            if let Some(t) = self.table(&name).await? {
                table_versions.insert(name, t.version().unwrap_or(0) as i64);
            }
        }
        let previous = self.lake_versions().await?;
        if let Some(last) = previous.last() {
            if last.table_versions == table_versions {
                // Nothing was written since: the lake is still at that version.
                return Ok(last.clone());
            }
        }
        let lake_version = previous.last().map(|v| v.lake_version + 1).unwrap_or(1);
        let v = LakeVersion {
            lake_version,
            committed_at: Utc::now(),
            operation: operation.to_string(),
            table_versions,
        };
        let json = serde_json::to_string(&v.table_versions).expect("a map of ints serializes");
        let schema = lake_log_schema();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![v.lake_version])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![v.committed_at.timestamp_micros()])
                        .with_timezone("UTC"),
                ),
                Arc::new(StringArray::from(vec![v.operation.clone()])),
                Arc::new(StringArray::from(vec![json])),
            ],
        )?;
        self.append(LAKE_LOG, schema, vec![batch], operation)
            .await?;
        Ok(v)
    }

    /// Every recorded lake version, oldest first.
    pub async fn lake_versions(&self) -> Result<Vec<LakeVersion>> {
        let Some(table) = self.table(LAKE_LOG).await? else {
            return Ok(Vec::new());
        };
        let ctx = datafusion::prelude::SessionContext::new();
        let provider = table.table_provider().await?;
        ctx.register_table(LAKE_LOG, provider)?;
        let batches = ctx
            .sql(&format!(
                "SELECT lake_version, committed_at, operation, table_versions \
                 FROM {LAKE_LOG} ORDER BY lake_version"
            ))
            .await?
            .collect()
            .await?;
        let mut out = Vec::new();
        for b in &batches {
            let ver = b.column(0).as_any().downcast_ref::<Int64Array>();
            let at = b
                .column(1)
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>();
            let op = text_column(b.column(2))?;
            let tv = text_column(b.column(3))?;
            let (op, tv) = (Some(&op), Some(&tv));
            let (Some(ver), Some(at), Some(op), Some(tv)) = (ver, at, op, tv) else {
                return Err(Error::Invalid(format!(
                    "{LAKE_LOG} has unexpected column types: {:?}",
                    b.schema()
                )));
            };
            for i in 0..b.num_rows() {
                out.push(LakeVersion {
                    lake_version: ver.value(i),
                    committed_at: DateTime::from_timestamp_micros(at.value(i)).unwrap_or_default(),
                    operation: op.value(i).to_string(),
                    table_versions: serde_json::from_str(tv.value(i)).unwrap_or_default(),
                });
            }
        }
        Ok(out)
    }
}

/// A string column as a plain `StringArray`, whichever string layout the scan produced
/// (Delta scans give `Utf8View`).
pub fn text_column(col: &datafusion::arrow::array::ArrayRef) -> Result<StringArray> {
    let cast = datafusion::arrow::compute::cast(col, &DataType::Utf8)?;
    Ok(cast
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("a cast to Utf8 gives a StringArray")
        .clone())
}

/// The kernel reports a table that was never written in several ways.
fn is_missing(e: &DeltaTableError) -> bool {
    let m = e.to_string();
    m.contains("Invalid table location")
        || m.contains("not a Delta table")
        || m.contains("No files in log segment")
}

fn lake_log_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("lake_version", DataType::Int64, false),
        Field::new(
            "committed_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("operation", DataType::Utf8, false),
        Field::new("table_versions", DataType::Utf8, false),
    ]))
}

/// deltalake finds the object stores and log stores for s3://, gs:// and az:// through
/// handlers that must be registered once per process.
fn register_cloud_handlers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        deltalake::aws::register_handlers(None);
        deltalake::gcp::register_handlers(None);
        deltalake::azure::register_handlers(None);
    });
}

/// A string as a SQL literal, for the predicates the lake's own writes build.
pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_of_parses_versions_and_timestamps() {
        assert_eq!("3".parse::<AsOf>().unwrap(), AsOf::Version(3));
        assert!(matches!(
            "2026-11-25T10:00:00Z".parse::<AsOf>().unwrap(),
            AsOf::Timestamp(_)
        ));
        assert!(matches!(
            "2026-11-25".parse::<AsOf>().unwrap(),
            AsOf::Timestamp(_)
        ));
        assert!("yesterday".parse::<AsOf>().is_err());
    }
}
