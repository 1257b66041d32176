//! `medlake ingest dicom`: DICOM headers into the `instances` table.
//!
//! Files are parsed in parallel, a batch at a time; each batch is one Delta commit to
//! `instances` followed by one to `ingest_errors`. A run killed at any moment leaves only
//! whole commits behind, and running it again skips what is already in the lake, so the
//! second run completes the first with no duplicates and nothing missing.
//!
//! The duplicate rule, keyed by SOPInstanceUID:
//! - same UID, same `content_hash`: a duplicate; skipped and counted as such;
//! - same UID, different `content_hash`: the instance already in the lake is kept and the
//!   new file is recorded in `ingest_errors` as `conflicting_instance`, naming both. This
//!   is what PACS such as Orthanc do by default; a changed instance is a data-quality event
//!   a researcher should see, not something to resolve silently.

pub mod charset;
pub mod columns;
pub mod frames;
pub mod read;

use std::collections::HashMap;
use std::io::IsTerminal;

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use datafusion::arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, ListBuilder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use rayon::prelude::*;

use super::deidentify::{Deidentifier, Identifier, ProfileOptions};
use super::sources::SourceFile;
use super::{ErrorRow, IngestSummary};
use crate::error::Result;
use crate::lake::Lake;
use crate::tables::INSTANCES;

/// The name of this source in `ingest_errors.source`.
pub const SOURCE: &str = "dicom";

/// Options of one `ingest dicom` run.
#[derive(Debug, Clone)]
pub struct DicomIngestOptions {
    pub collection: String,
    /// Files parsed and committed together; one Delta commit each.
    pub batch_size: usize,
    /// Show a progress bar (only when standard output is a terminal).
    pub progress: bool,
    /// Apply the PS3.15 Basic Profile with these options (`--deidentify basic`); see
    /// [`crate::ingest::deidentify`].
    pub deidentify: Option<ProfileOptions>,
}

impl Default for DicomIngestOptions {
    fn default() -> Self {
        DicomIngestOptions {
            collection: "default".into(),
            batch_size: 5000,
            progress: std::io::stdout().is_terminal(),
            deidentify: None,
        }
    }
}

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, true)))
}

/// The schema of `instances`.
pub fn instances_schema() -> SchemaRef {
    let mut fields = vec![Field::new("collection", DataType::Utf8, false)];
    fields.extend(columns::fields());
    fields.extend([
        Field::new("TransferSyntaxUID", DataType::Utf8, true),
        Field::new("file_uri", DataType::Utf8, false),
        Field::new("file_size", DataType::Int64, false),
        Field::new("content_hash", DataType::Utf8, false),
        Field::new(
            "ingested_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        // Multi-frame instances: each frame's ImagePositionPatient, and the orientation and
        // pixel spacing, from the functional groups (null for single-frame instances).
        Field::new(
            "frame_positions_mm",
            list_of(list_of(DataType::Float64)),
            true,
        ),
        Field::new("frame_orientation", list_of(DataType::Float64), true),
        Field::new("frame_pixel_spacing_mm", list_of(DataType::Float64), true),
        // Set when the file's header was cut short (truncated file, or a length field
        // pointing past the end): the row holds the elements before the cut.
        Field::new("header_warning", DataType::Utf8, true),
        // YES, LIKELY, NO or UNKNOWN: whether the pixels may show identifying text
        // (crate::ingest::deidentify::burned_in).
        Field::new("burned_in_annotation_risk", DataType::Utf8, false),
        Field::new("dicom_json", DataType::Utf8, false),
    ]);
    Arc::new(Schema::new(fields))
}

/// A file's outcome before it is checked against the lake.
enum Parsed {
    Ok {
        uri: String,
        size: u64,
        hash: String,
        header: Box<read::Header>,
        json: String,
        /// The report an SR document holds (also ingested into `reports`); as read, not
        /// de-identified yet (that needs every identifier of the run).
        report: Option<Box<crate::ingest::reports::Report>>,
        risk: &'static str,
        /// With de-identification: the identifying values of the original header.
        identifiers: Vec<Identifier>,
    },
    Failed(ErrorRow),
}

fn parse_file(file: &SourceFile, deid: Option<&Deidentifier>) -> Parsed {
    let source_uri = file.uri();
    // A de-identified lake never records where a file was (paths name patients).
    let uri = match deid {
        Some(d) => d.uri(&source_uri),
        None => source_uri.clone(),
    };
    let fail = |size: Option<u64>, kind: &'static str, message: String| {
        Parsed::Failed(ErrorRow {
            file_uri: uri.clone(),
            file_size: size.map(|s| s as i64),
            error_kind: kind.to_string(),
            message,
        })
    };
    let (reader, size) = match file.open() {
        Ok(x) => x,
        Err(e) => return fail(None, "io", e.to_string()),
    };
    let mut src = read::Source::new(reader, size);
    let parsed = read::read_header(&mut src);
    // The fingerprint covers the header (every byte before PixelData) and the file size:
    // reading the pixel data of every file would defeat header-only ingest.
    // (Keyed when de-identifying, so that it cannot confirm a guess about a file.)
    let mut hasher = match deid {
        Some(d) => blake3::Hasher::new_keyed(&d.content_hash_key()),
        None => blake3::Hasher::new(),
    };
    hasher.update(src.header_bytes());
    hasher.update(&size.to_le_bytes());
    let hash = hasher.finalize().to_hex().to_string();
    let mut header = match parsed {
        Ok(h) => h,
        Err(f) => return fail(Some(size), f.kind, f.message),
    };
    let report = crate::ingest::reports::sr::report_from_sr(&header.obj, &source_uri, "en")
        .ok()
        .flatten()
        .filter(|r| !r.text.trim().is_empty())
        .map(Box::new);
    let risk = super::deidentify::burned_in::risk(&header.obj);
    let mut identifiers = Vec::new();
    if let Some(d) = deid {
        let obj = std::mem::replace(&mut header.obj, dicom_object::InMemDicomObject::new_empty());
        let clean = d.header(obj, &header.sop_instance_uid);
        header.obj = clean.obj;
        header.sop_instance_uid = clean.sop_instance_uid;
        identifiers = clean.identifiers;
    }
    match dicom_json::to_string(&header.obj) {
        Ok(json) => Parsed::Ok {
            report,
            uri,
            size,
            hash,
            header: Box::new(header),
            json,
            risk,
            identifiers,
        },
        Err(e) => fail(Some(size), "malformed", format!("DICOM JSON encoding: {e}")),
    }
}

fn append_floats(b: &mut ListBuilder<Float64Builder>, v: Option<&[f64]>) {
    match v {
        Some(v) => {
            b.values().append_slice(v);
            b.append(true);
        }
        None => b.append(false),
    }
}

/// What is known of an ingested file besides its header.
struct FileFacts<'a> {
    uri: &'a str,
    size: u64,
    hash: &'a str,
    /// The header as DICOM JSON.
    json: &'a str,
    risk: &'a str,
}

/// Accumulates the rows of one commit to `instances`.
struct InstanceBatch {
    header: columns::HeaderColumns,
    collection: StringBuilder,
    ts: StringBuilder,
    uri: StringBuilder,
    size: Int64Builder,
    hash: StringBuilder,
    at: TimestampMicrosecondBuilder,
    frame_positions: ListBuilder<ListBuilder<Float64Builder>>,
    frame_orientation: ListBuilder<Float64Builder>,
    frame_spacing: ListBuilder<Float64Builder>,
    warning: StringBuilder,
    risk: StringBuilder,
    json: StringBuilder,
    rows: usize,
}

impl InstanceBatch {
    fn new() -> Self {
        InstanceBatch {
            header: columns::HeaderColumns::new(),
            collection: StringBuilder::new(),
            ts: StringBuilder::new(),
            uri: StringBuilder::new(),
            size: Int64Builder::new(),
            hash: StringBuilder::new(),
            at: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            frame_positions: ListBuilder::new(ListBuilder::new(Float64Builder::new())),
            frame_orientation: ListBuilder::new(Float64Builder::new()),
            frame_spacing: ListBuilder::new(Float64Builder::new()),
            warning: StringBuilder::new(),
            risk: StringBuilder::new(),
            json: StringBuilder::new(),
            rows: 0,
        }
    }

    fn push(&mut self, collection: &str, file: FileFacts<'_>, header: &read::Header, now: i64) {
        let FileFacts {
            uri,
            size,
            hash,
            json,
            risk,
        } = file;
        self.collection.append_value(collection);
        self.header.push(&header.obj, &header.sop_instance_uid);
        self.ts.append_option(header.transfer_syntax_uid.as_deref());
        self.uri.append_value(uri);
        self.size.append_value(size as i64);
        self.hash.append_value(hash);
        self.at.append_value(now);
        match frames::frame_geometry(&header.obj) {
            Some(g) => {
                for p in &g.positions {
                    self.frame_positions.values().values().append_slice(p);
                    self.frame_positions.values().append(true);
                }
                self.frame_positions.append(true);
                append_floats(
                    &mut self.frame_orientation,
                    g.orientation.as_ref().map(|v| &v[..]),
                );
                append_floats(
                    &mut self.frame_spacing,
                    g.pixel_spacing.as_ref().map(|v| &v[..]),
                );
            }
            None => {
                self.frame_positions.append(false);
                self.frame_orientation.append(false);
                self.frame_spacing.append(false);
            }
        }
        self.warning.append_option(header.warning.as_deref());
        self.risk.append_value(risk);
        self.json.append_value(json);
        self.rows += 1;
    }

    fn finish(mut self) -> Result<RecordBatch> {
        let mut cols: Vec<ArrayRef> = vec![Arc::new(self.collection.finish())];
        cols.extend(self.header.finish());
        cols.push(Arc::new(self.ts.finish()));
        cols.push(Arc::new(self.uri.finish()));
        cols.push(Arc::new(self.size.finish()));
        cols.push(Arc::new(self.hash.finish()));
        cols.push(Arc::new(self.at.finish()));
        cols.push(Arc::new(self.frame_positions.finish()));
        cols.push(Arc::new(self.frame_orientation.finish()));
        cols.push(Arc::new(self.frame_spacing.finish()));
        cols.push(Arc::new(self.warning.finish()));
        cols.push(Arc::new(self.risk.finish()));
        cols.push(Arc::new(self.json.finish()));
        Ok(RecordBatch::try_new(instances_schema(), cols)?)
    }
}

/// SOPInstanceUID → (content_hash, file_uri) of every instance already in the lake.
async fn known_instances(lake: &Lake) -> Result<HashMap<String, (String, String)>> {
    let mut out = HashMap::new();
    let Some(table) = lake.table(INSTANCES).await? else {
        return Ok(out);
    };
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_table(INSTANCES, table.table_provider().await?)?;
    let df = ctx
        .sql(r#"SELECT "SOPInstanceUID", content_hash, file_uri FROM instances"#)
        .await?;
    for b in df.collect().await? {
        let uid = crate::lake::text_column(b.column(0))?;
        let hash = crate::lake::text_column(b.column(1))?;
        let uri = crate::lake::text_column(b.column(2))?;
        for i in 0..b.num_rows() {
            out.insert(
                uid.value(i).to_string(),
                (hash.value(i).to_string(), uri.value(i).to_string()),
            );
        }
    }
    Ok(out)
}

/// Ingest DICOM files and folders into the lake, then refresh the derived tables.
pub async fn ingest_dicom(
    lake: &Lake,
    inputs: &[String],
    opts: &DicomIngestOptions,
) -> Result<IngestSummary> {
    let started = Instant::now();
    let files = super::sources::list(inputs).await?;
    let mut known = known_instances(lake).await?;
    let mut recorded = super::recorded_errors(lake, SOURCE).await?;
    let mut summary = IngestSummary::default();
    let deid = match opts.deidentify {
        Some(o) => Some(Deidentifier::open(lake, o).await?),
        None => None,
    };
    // The identifiers recorded in the lake's map (de-identification only).
    let mut known_ids: std::collections::HashSet<Identifier> = match &deid {
        Some(_) => Deidentifier::identifiers(lake).await?.into_iter().collect(),
        None => Default::default(),
    };
    let bar = opts.progress.then(|| progress_bar(files.len() as u64));

    // Parsing of the next batch runs while the current one is committed, so the cores do
    // not wait for parquet encoding and the Delta commit. Commits stay in order.
    let chunks: Vec<Vec<SourceFile>> = files
        .chunks(opts.batch_size.max(1))
        .map(|c| c.to_vec())
        .collect();
    let parse = |chunk: Vec<SourceFile>| {
        let deid = deid.clone();
        tokio::task::spawn_blocking(move || {
            chunk
                .par_iter()
                .map(|f| parse_file(f, deid.as_deref()))
                .collect::<Vec<_>>()
        })
    };
    let mut next = chunks.first().map(|c| parse(c.clone()));
    // SR documents are reports too: they go to `reports` after the instances are in.
    let mut sr_reports: Vec<crate::ingest::reports::Report> = Vec::new();
    for i in 0..chunks.len() {
        let chunk = &chunks[i];
        let parsed: Vec<Parsed> = match next.take() {
            Some(task) => task
                .await
                .map_err(|e| crate::error::Error::Invalid(format!("header parsing: {e}")))?,
            None => Vec::new(),
        };
        next = chunks.get(i + 1).map(|c| parse(c.clone()));
        let now = Utc::now().timestamp_micros();
        let mut batch = InstanceBatch::new();
        let mut errors = Vec::new();
        let mut new_ids = Vec::new();
        for mut p in parsed {
            summary.files_seen += 1;
            if let Parsed::Ok { identifiers, .. } = &mut p {
                let ids = std::mem::take(identifiers);
                new_ids.extend(ids.into_iter().filter(|i| !known_ids.contains(i)));
            }
            let row = match p {
                Parsed::Failed(row) => row,
                Parsed::Ok {
                    uri,
                    size,
                    hash,
                    header,
                    json,
                    report,
                    risk,
                    identifiers: _,
                } => match known.get(&header.sop_instance_uid) {
                    Some((h, _)) if *h == hash => {
                        summary.duplicates += 1;
                        continue;
                    }
                    Some((_, first_uri)) => ErrorRow {
                        message: format!(
                            "SOPInstanceUID {} is already in the lake from {first_uri} with \
                             different content; the first one is kept",
                            header.sop_instance_uid
                        ),
                        file_uri: uri,
                        file_size: Some(size as i64),
                        error_kind: "conflicting_instance".into(),
                    },
                    None => {
                        if let Some(r) = report {
                            sr_reports.push(*r);
                        }
                        let facts = FileFacts {
                            uri: &uri,
                            size,
                            hash: &hash,
                            json: &json,
                            risk,
                        };
                        batch.push(&opts.collection, facts, &header, now);
                        known.insert(header.sop_instance_uid.clone(), (hash, uri));
                        summary.ingested += 1;
                        continue;
                    }
                },
            };
            summary.errors += 1;
            if recorded.insert((row.file_uri.clone(), row.error_kind.clone())) {
                errors.push(row);
            }
        }
        // The identifiers first: an instance in the lake always has its identifiers in the
        // map, so a report scrub never misses a patient the lake holds.
        if !new_ids.is_empty() {
            Deidentifier::record_identifiers(lake, &new_ids).await?;
            known_ids.extend(new_ids);
        }
        if batch.rows > 0 {
            let rb = batch.finish()?;
            lake.append(INSTANCES, instances_schema(), vec![rb], "ingest dicom")
                .await?;
        }
        super::commit_errors(lake, &opts.collection, SOURCE, &errors).await?;
        if let Some(bar) = &bar {
            bar.inc(chunk.len() as u64);
            bar.set_message(format!("{} errors", summary.errors));
        }
    }
    if let Some(bar) = bar {
        bar.finish();
    }
    if !sr_reports.is_empty() {
        let mut w = crate::ingest::reports::ReportWriter::open(lake, &opts.collection, 3).await?;
        let scrubber = match &deid {
            Some(_) => Some(Deidentifier::scrubber(lake).await?),
            None => None,
        };
        for r in sr_reports {
            match (&deid, &scrubber) {
                (Some(d), Some(s)) => w.offer(d.report(r, s)),
                _ => w.offer(r),
            };
        }
        w.flush(lake).await?;
    }
    super::derived::refresh_if_stale(lake).await?;
    super::derived::refresh_links_if_stale(lake).await?;
    summary.lake_version = lake.record_version("ingest dicom").await?.lake_version;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

fn progress_bar(len: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} files  {per_sec}  {msg}  ETA {eta}",
        )
        .expect("the template is valid"),
    );
    bar
}
