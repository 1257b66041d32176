//! `medlake ingest vcf`: VCF (plain, gzip or bgzip) and BCF files into `variants`,
//! `genotypes`, `variant_effects` and `samples`.
//!
//! - **Streaming.** One thread reads and decompresses records in chunks; worker threads
//!   turn chunks into Arrow rows; the rows stream into Parquet files under each table as
//!   they come (deltalake's `RecordBatchWriter`), so memory holds a few chunks, not a file.
//! - **One commit per table per file.** A file's Parquet files are committed together at
//!   its end, with the table's schema widened when the file declares INFO or FORMAT fields
//!   the lake has not seen (a field whose type disagrees with the lake's gets a suffixed
//!   name and a warning, so no value is lost).
//! - **Idempotent and restartable.** `vcf_files` records each file by content hash: a
//!   `started` row (which fixes the file's number, and so its `variant_id` range) before
//!   any data, a `complete` row after. A complete file is a duplicate. A started file from
//!   an interrupted run has whatever rows it committed deleted by id range, and is ingested
//!   again.
//! - **Every problem is a row** in `ingest_errors`, named by file and line (`#line=N`;
//!   `#record=N` for BCF): malformed lines, values that disagree with the header,
//!   undeclared fields (once per field per file), an unsorted file (once), a truncated or
//!   corrupt compressed stream (the records before it are kept).
//! - **`--split-multiallelic`** gives one `variants` row per ALT allele (`alt_index` says
//!   which); Number=A and Number=R values are cut down to that allele, and `alt_count`
//!   counts copies of that allele. Without it a site is one row with lists.

pub mod convert;
pub mod effects;
pub mod sample_text;
pub mod stream;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Read};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use datafusion::arrow::array::{
    Int32Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use deltalake::DeltaTable;
use noodles::vcf;
use serde::Serialize;

use self::convert::{ChunkRows, Layout, Problem, ROW_BITS};
use super::collection_field;
use super::sources::{self, SourceFile};
use super::ErrorRow;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::tables::{GENOTYPES, SAMPLES, VARIANTS, VARIANT_EFFECTS, VCF_FILES};

const SOURCE: &str = "vcf";

#[derive(Debug, Clone)]
pub struct VcfIngestOptions {
    pub collection: String,
    pub split_multiallelic: bool,
    pub progress: bool,
    /// Records per chunk handed to a worker.
    pub chunk_records: usize,
}

impl Default for VcfIngestOptions {
    fn default() -> Self {
        Self {
            collection: "default".into(),
            split_multiallelic: false,
            progress: true,
            chunk_records: 2048,
        }
    }
}

/// What an ingest run did. `files_seen = ingested + duplicates + failed`; index files
/// (`.tbi`, `.csi`) met in folders are not inputs and are only counted.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct VcfIngestSummary {
    pub files_seen: u64,
    pub ingested: u64,
    pub duplicates: u64,
    pub failed: u64,
    pub index_files_skipped: u64,
    pub records: u64,
    pub variants: u64,
    pub genotypes: u64,
    pub effects: u64,
    /// Rows written to `ingest_errors` (problems within files and failed files).
    pub problems: u64,
    pub seconds: f64,
    pub lake_version: i64,
}

pub fn vcf_files_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        collection_field(),
        Field::new("file_id", DataType::Utf8, false),
        Field::new("file_number", DataType::Int64, false),
        Field::new("source_uri", DataType::Utf8, false),
        Field::new("file_size", DataType::Int64, true),
        Field::new("status", DataType::Utf8, false),
        Field::new("records", DataType::Int64, true),
        Field::new("variants", DataType::Int64, true),
        Field::new("genotypes", DataType::Int64, true),
        Field::new("problems", DataType::Int64, true),
        Field::new(
            "recorded_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]))
}

pub fn samples_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        collection_field(),
        Field::new("sample_id", DataType::Utf8, false),
        Field::new("sample_index", DataType::Int32, false),
        Field::new("file_id", DataType::Utf8, false),
        Field::new("source_uri", DataType::Utf8, false),
    ]))
}

#[derive(Debug, Default, Clone)]
struct FileState {
    number: i64,
    complete: bool,
}

/// The files the lake knows in a collection: file_id → number and whether complete; and the
/// next number (over all collections: a number fixes a `variant_id` range). A file is a
/// duplicate only within its collection: the same file ingested into another collection is
/// that collection's copy, visible to whoever may see that collection.
async fn known_files(lake: &Lake, collection: &str) -> Result<(HashMap<String, FileState>, i64)> {
    let mut out: HashMap<String, FileState> = HashMap::new();
    let mut next = 1;
    let Some(table) = lake.table(VCF_FILES).await? else {
        return Ok((out, next));
    };
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_table(VCF_FILES, table.table_provider().await?)?;
    let batches = ctx
        .sql(&format!(
            "SELECT file_id, file_number, status, collection = {} FROM {VCF_FILES}",
            crate::lake::quote(collection)
        ))
        .await?
        .collect()
        .await?;
    for b in batches {
        let ids = crate::lake::text_column(b.column(0))?;
        let numbers = datafusion::arrow::compute::cast(b.column(1), &DataType::Int64)?;
        let numbers = datafusion::common::cast::as_int64_array(&numbers)?;
        let status = crate::lake::text_column(b.column(2))?;
        let ours = datafusion::common::cast::as_boolean_array(b.column(3))?;
        for i in 0..b.num_rows() {
            next = next.max(numbers.value(i) + 1);
            if !ours.value(i) {
                continue;
            }
            let e = out.entry(ids.value(i).to_string()).or_default();
            e.number = numbers.value(i);
            e.complete |= status.value(i) == "complete";
        }
    }
    Ok((out, next))
}

struct FileRow<'a> {
    collection: &'a str,
    file_id: &'a str,
    number: i64,
    uri: &'a str,
    size: Option<i64>,
    status: &'a str,
    counts: Option<[i64; 4]>,
}

async fn record_file(lake: &Lake, r: FileRow<'_>) -> Result<()> {
    let now = Utc::now().timestamp_micros();
    let mut coll = StringBuilder::new();
    let mut id = StringBuilder::new();
    let mut num = Int64Builder::new();
    let mut uri = StringBuilder::new();
    let mut size = Int64Builder::new();
    let mut status = StringBuilder::new();
    let mut counts: Vec<Int64Builder> = (0..4).map(|_| Int64Builder::new()).collect();
    let mut at = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    coll.append_value(r.collection);
    id.append_value(r.file_id);
    num.append_value(r.number);
    uri.append_value(r.uri);
    size.append_option(r.size);
    status.append_value(r.status);
    for (i, b) in counts.iter_mut().enumerate() {
        b.append_option(r.counts.map(|c| c[i]));
    }
    at.append_value(now);
    let schema = vcf_files_schema();
    let mut cols: Vec<datafusion::arrow::array::ArrayRef> = vec![
        Arc::new(coll.finish()),
        Arc::new(id.finish()),
        Arc::new(num.finish()),
        Arc::new(uri.finish()),
        Arc::new(size.finish()),
        Arc::new(status.finish()),
    ];
    cols.extend(counts.iter_mut().map(|b| Arc::new(b.finish()) as _));
    cols.push(Arc::new(at.finish()));
    let batch = RecordBatch::try_new(schema.clone(), cols)?;
    lake.append(VCF_FILES, schema, vec![batch], "ingest vcf")
        .await?;
    Ok(())
}

/// Remove what an interrupted run committed for a file: its id range, and its samples.
async fn remove_partial(lake: &Lake, collection: &str, file_id: &str, number: i64) -> Result<()> {
    let lo = number << ROW_BITS;
    let hi = (number + 1) << ROW_BITS;
    for name in [VARIANTS, GENOTYPES, VARIANT_EFFECTS] {
        if let Some(t) = lake.table(name).await? {
            t.delete()
                .with_predicate(format!("variant_id >= {lo} AND variant_id < {hi}"))
                .await
                .map_err(|e| Error::delta(name, e))?;
        }
    }
    if let Some(t) = lake.table(SAMPLES).await? {
        t.delete()
            .with_predicate(format!(
                "file_id = '{file_id}' AND collection = {}",
                crate::lake::quote(collection)
            ))
            .await
            .map_err(|e| Error::delta(SAMPLES, e))?;
    }
    Ok(())
}

fn is_index_file(uri: &str) -> bool {
    let lower = uri.to_ascii_lowercase();
    [".tbi", ".csi", ".gzi", ".bai", ".crai"]
        .iter()
        .any(|s| lower.ends_with(s))
}

/// Ingest VCF and BCF files, folders of them, or object-store prefixes.
pub async fn ingest_vcf(
    lake: &Lake,
    inputs: &[String],
    opts: &VcfIngestOptions,
) -> Result<VcfIngestSummary> {
    let started = std::time::Instant::now();
    let mut summary = VcfIngestSummary::default();
    let listed = sources::list(inputs).await?;
    let files: Vec<SourceFile> = listed
        .into_iter()
        .filter(|f| {
            let skip = is_index_file(&f.uri());
            if skip {
                summary.index_files_skipped += 1;
            }
            !skip
        })
        .collect();
    let (mut known, mut next_number) = known_files(lake, &opts.collection).await?;
    let recorded = super::recorded_errors(lake, SOURCE).await?;
    let bar = opts.progress.then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]")
                .expect("a valid template"),
        );
        b
    });
    for file in &files {
        summary.files_seen += 1;
        let uri = file.uri();
        let mut errors: Vec<ErrorRow> = Vec::new();
        let hashed = {
            let f = file.clone();
            tokio::task::spawn_blocking(move || hash_file(&f))
                .await
                .map_err(|e| Error::Invalid(format!("hashing task: {e}")))?
        };
        let (file_id, size) = match hashed {
            Ok(h) => h,
            Err(e) => {
                summary.failed += 1;
                errors.push(ErrorRow {
                    file_uri: uri.clone(),
                    file_size: None,
                    error_kind: "unreadable".into(),
                    message: e.to_string(),
                });
                summary.problems += commit_new_errors(lake, opts, &recorded, errors).await?;
                continue;
            }
        };
        let state = known.get(&file_id).cloned();
        if state.as_ref().is_some_and(|s| s.complete) {
            summary.duplicates += 1;
            continue;
        }
        let number = match &state {
            Some(s) => {
                remove_partial(lake, &opts.collection, &file_id, s.number).await?;
                s.number
            }
            None => {
                let n = next_number;
                next_number += 1;
                record_file(
                    lake,
                    FileRow {
                        collection: &opts.collection,
                        file_id: &file_id,
                        number: n,
                        uri: &uri,
                        size: Some(size as i64),
                        status: "started",
                        counts: None,
                    },
                )
                .await?;
                known.insert(
                    file_id.clone(),
                    FileState {
                        number: n,
                        complete: false,
                    },
                );
                n
            }
        };
        if let Some(b) = &bar {
            b.set_message(uri.to_string());
        }
        let outcome = ingest_file(lake, file, &uri, number, opts, bar.as_ref()).await?;
        match outcome {
            FileOutcome::Failed(message) => {
                summary.failed += 1;
                errors.push(ErrorRow {
                    file_uri: uri.clone(),
                    file_size: Some(size as i64),
                    error_kind: "unreadable_header".into(),
                    message,
                });
            }
            FileOutcome::Done {
                records,
                variants,
                genotypes,
                effects,
                samples,
                problems,
                line_base,
            } => {
                for p in &problems {
                    let at = match line_base {
                        Some(base) => format!("#line={}", base + p.record + 1),
                        None => format!("#record={}", p.record + 1),
                    };
                    errors.push(ErrorRow {
                        file_uri: format!("{uri}{at}"),
                        file_size: Some(size as i64),
                        error_kind: p.kind.to_string(),
                        message: p.message.clone(),
                    });
                }
                if !samples.is_empty() {
                    append_samples(lake, &opts.collection, &samples, &file_id, &uri).await?;
                }
                record_file(
                    lake,
                    FileRow {
                        collection: &opts.collection,
                        file_id: &file_id,
                        number,
                        uri: &uri,
                        size: Some(size as i64),
                        status: "complete",
                        counts: Some([
                            records as i64,
                            variants as i64,
                            genotypes as i64,
                            problems.len() as i64,
                        ]),
                    },
                )
                .await?;
                if let Some(s) = known.get_mut(&file_id) {
                    s.complete = true;
                }
                summary.ingested += 1;
                summary.records += records;
                summary.variants += variants;
                summary.genotypes += genotypes;
                summary.effects += effects;
            }
        }
        summary.problems += commit_new_errors(lake, opts, &recorded, errors).await?;
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    summary.seconds = started.elapsed().as_secs_f64();
    summary.lake_version = lake.record_version("ingest vcf").await?.lake_version;
    Ok(summary)
}

async fn commit_new_errors(
    lake: &Lake,
    opts: &VcfIngestOptions,
    recorded: &HashSet<(String, String)>,
    rows: Vec<ErrorRow>,
) -> Result<u64> {
    let rows: Vec<ErrorRow> = rows
        .into_iter()
        .filter(|r| !recorded.contains(&(r.file_uri.clone(), r.error_kind.clone())))
        .collect();
    super::commit_errors(lake, &opts.collection, SOURCE, &rows).await?;
    Ok(rows.len() as u64)
}

async fn append_samples(
    lake: &Lake,
    collection: &str,
    samples: &[String],
    file_id: &str,
    uri: &str,
) -> Result<()> {
    let mut coll = StringBuilder::new();
    let mut id = StringBuilder::new();
    let mut idx = Int32Builder::new();
    let mut f = StringBuilder::new();
    let mut u = StringBuilder::new();
    for (i, s) in samples.iter().enumerate() {
        coll.append_value(collection);
        id.append_value(s);
        idx.append_value(i as i32);
        f.append_value(file_id);
        u.append_value(uri);
    }
    let schema = samples_schema();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(coll.finish()),
            Arc::new(id.finish()),
            Arc::new(idx.finish()),
            Arc::new(f.finish()),
            Arc::new(u.finish()),
        ],
    )?;
    lake.append(SAMPLES, schema, vec![batch], "ingest vcf")
        .await?;
    Ok(())
}

/// The blake3 of a file's bytes (its `file_id`), and its size.
fn hash_file(file: &SourceFile) -> std::io::Result<(String, u64)> {
    let (mut r, size) = file.open()?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok((h.finalize().to_hex()[..32].to_string(), size))
}

enum FileOutcome {
    Failed(String),
    Done {
        records: u64,
        variants: u64,
        genotypes: u64,
        effects: u64,
        samples: Vec<String>,
        problems: Vec<Problem>,
        /// The number of header lines, for VCF text (line numbers); `None` for BCF.
        line_base: Option<u64>,
    },
}

/// A decompressed stream, VCF text or BCF.
enum Opened {
    Vcf(vcf::io::Reader<Box<dyn BufRead + Send>>),
    Bcf(noodles::bcf::io::Reader<Box<dyn BufRead + Send>>),
}

/// Open a file: gzip and bgzip (any number of members) are decompressed; BCF is told from
/// VCF text by its magic.
fn open(file: &SourceFile) -> std::io::Result<Opened> {
    let (raw, _) = file.open()?;
    let mut inner = stream::decompressed(raw)?;
    if inner.fill_buf()?.starts_with(b"BCF") {
        Ok(Opened::Bcf(noodles::bcf::io::Reader::from(inner)))
    } else {
        Ok(Opened::Vcf(vcf::io::Reader::new(inner)))
    }
}

/// One chunk of records on its way to a worker.
enum Records {
    Vcf(Vec<vcf::Record>),
    Bcf(Vec<noodles::bcf::Record>),
}

struct Chunk {
    seq: u64,
    records: Records,
    first_record: u64,
    first_row: u64,
}

/// What the reader thread says, in order.
enum Event {
    Header(Box<vcf::Header>, Option<u64>),
    Problem(Problem),
    Failed(String),
    End { records: u64 },
}

async fn ingest_file(
    lake: &Lake,
    file: &SourceFile,
    uri: &str,
    number: i64,
    opts: &VcfIngestOptions,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<FileOutcome> {
    let (event_tx, mut event_rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let (chunk_tx, chunk_rx) = std::sync::mpsc::sync_channel::<Chunk>(2);
    let split = opts.split_multiallelic;
    let chunk_records = opts.chunk_records.max(1);
    let f = file.clone();
    let reader = std::thread::spawn(move || {
        read_records(&f, split, chunk_records, event_tx, chunk_tx);
    });

    // The header first: it fixes the columns.
    let (header, line_base) = match event_rx.recv().await {
        Some(Event::Header(h, base)) => (Arc::new(*h), base),
        Some(Event::Failed(msg)) => {
            let _ = reader.join();
            return Ok(FileOutcome::Failed(msg));
        }
        _ => {
            let _ = reader.join();
            return Ok(FileOutcome::Failed("no header".into()));
        }
    };
    let mut layout = Layout::from_header(&header, split, uri, number);
    let mut problems: Vec<Problem> = Vec::new();
    reconcile(lake, &mut layout, &mut problems).await?;
    let samples = layout.samples.clone();

    // Workers: chunks in, rows out (in any order; reordered below).
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8);
    let (rows_tx, mut rows_rx) = tokio::sync::mpsc::channel::<(u64, ChunkRows)>(workers * 2);
    let chunk_rx = Arc::new(Mutex::new(chunk_rx));
    let mut handles = Vec::new();
    for _ in 0..workers {
        let rx = chunk_rx.clone();
        let tx = rows_tx.clone();
        let header = header.clone();
        let layout = layout.clone();
        handles.push(std::thread::spawn(move || loop {
            let next = rx.lock().expect("chunk queue").recv();
            let Ok(chunk) = next else { break };
            let rows = match &chunk.records {
                Records::Vcf(r) => {
                    convert::convert(r, &header, &layout, chunk.first_record, chunk.first_row)
                }
                Records::Bcf(r) => {
                    convert::convert(r, &header, &layout, chunk.first_record, chunk.first_row)
                }
            };
            if tx.blocking_send((chunk.seq, rows)).is_err() {
                break;
            }
        }));
    }
    drop(rows_tx);

    let mut sinks = Sinks::open(lake, &layout, &opts.collection).await?;
    let mut pending: BTreeMap<u64, ChunkRows> = BTreeMap::new();
    let mut next_seq = 0u64;
    let (mut variants, mut genotypes, mut effects) = (0u64, 0u64, 0u64);
    let mut seen_once: HashSet<String> = HashSet::new();
    while let Some((seq, rows)) = rows_rx.recv().await {
        pending.insert(seq, rows);
        while let Some(mut rows) = pending.remove(&next_seq) {
            next_seq += 1;
            variants += rows.variant_rows;
            genotypes += rows.genotype_rows;
            for p in std::mem::take(&mut rows.problems) {
                if let Some(k) = &p.once_key {
                    if !seen_once.insert(k.clone()) {
                        continue;
                    }
                }
                problems.push(p);
            }
            if let Some(e) = &rows.effects {
                effects += e.num_rows() as u64;
            }
            sinks.write(rows).await?;
            if let Some(b) = bar {
                b.set_message(format!("{uri}: {variants} variants, {genotypes} genotypes"));
            }
        }
    }
    for h in handles {
        let _ = h.join();
    }
    let _ = reader.join();
    let mut records = 0;
    while let Ok(ev) = event_rx.try_recv() {
        match ev {
            Event::Problem(p) => problems.push(p),
            Event::End { records: n } => records = n,
            Event::Failed(msg) => problems.push(Problem {
                record: records,
                kind: "truncated",
                message: msg,
                once_key: None,
            }),
            Event::Header(..) => {}
        }
    }
    sinks.commit(uri).await?;
    problems.sort_by_key(|p| p.record);
    Ok(FileOutcome::Done {
        records,
        variants,
        genotypes,
        effects,
        samples,
        problems,
        line_base,
    })
}

/// A lake table's schema as Arrow, or `None` when the table does not exist yet.
async fn arrow_schema(lake: &Lake, name: &str) -> Result<Option<Schema>> {
    let Some(t) = lake.table(name).await? else {
        return Ok(None);
    };
    let schema = t.snapshot().map_err(|e| Error::delta(name, e))?.schema();
    deltalake::kernel::engine::arrow_conversion::TryIntoArrow::try_into_arrow(schema.as_ref())
        .map(Some)
        .map_err(|e: datafusion::arrow::error::ArrowError| Error::Invalid(e.to_string()))
}

/// Give INFO and FORMAT fields whose type disagrees with the lake's a name of their own.
async fn reconcile(lake: &Lake, layout: &mut Layout, problems: &mut Vec<Problem>) -> Result<()> {
    if let Some(arrow) = arrow_schema(lake, VARIANTS).await? {
        if let Ok(info) = arrow.field_with_name("info") {
            if let DataType::Struct(existing) = info.data_type() {
                let existing: HashMap<&str, &DataType> = existing
                    .iter()
                    .map(|f| (f.name().as_str(), f.data_type()))
                    .collect();
                for c in layout.info.iter_mut() {
                    rename_on_conflict(c, &existing, "INFO", problems);
                }
            }
        }
    }
    if let Some(arrow) = arrow_schema(lake, GENOTYPES).await? {
        let existing: HashMap<&str, &DataType> = arrow
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.data_type()))
            .collect();
        for c in layout.formats.iter_mut() {
            rename_on_conflict(c, &existing, "FORMAT", problems);
        }
    }
    Ok(())
}

fn rename_on_conflict(
    c: &mut convert::Col,
    existing: &HashMap<&str, &DataType>,
    what: &str,
    problems: &mut Vec<Problem>,
) {
    let ours = c.data_type();
    let Some(theirs) = existing.get(c.name.as_str()) else {
        return;
    };
    if same_type(&ours, theirs) {
        return;
    }
    let suffix = match (c.kind, c.list) {
        (convert::Kind::Int, false) => "int",
        (convert::Kind::Int, true) => "ints",
        (convert::Kind::Float, false) => "float",
        (convert::Kind::Float, true) => "floats",
        (convert::Kind::Flag, _) => "flag",
        (convert::Kind::Str, false) => "str",
        (convert::Kind::Str, true) => "strs",
    };
    let renamed = format!("{}_{suffix}", c.name);
    problems.push(Problem {
        record: 0,
        kind: "type_conflict",
        message: format!(
            "{what}/{} is {ours} in this file's header but {theirs} in the lake; its values go to {renamed}",
            c.key
        ),
        once_key: None,
    });
    c.name = renamed;
}

/// Types equal up to the names and nullability of list items.
fn same_type(a: &DataType, b: &DataType) -> bool {
    match (a, b) {
        (DataType::List(x), DataType::List(y))
        | (DataType::List(x), DataType::LargeList(y))
        | (DataType::LargeList(x), DataType::List(y)) => same_type(x.data_type(), y.data_type()),
        (DataType::Utf8, DataType::Utf8View | DataType::LargeUtf8)
        | (DataType::Utf8View | DataType::LargeUtf8, DataType::Utf8) => true,
        _ => a == b,
    }
}

/// The reader thread: header, then chunks of records, checking order as it goes.
fn read_records(
    file: &SourceFile,
    split: bool,
    chunk_records: usize,
    events: tokio::sync::mpsc::UnboundedSender<Event>,
    chunks: std::sync::mpsc::SyncSender<Chunk>,
) {
    let fail = |msg: String| {
        let _ = events.send(Event::Failed(msg));
    };
    let opened = match open(file) {
        Ok(o) => o,
        Err(e) => return fail(format!("cannot open: {e}")),
    };
    let mut order = OrderCheck::default();
    let mut record_no = 0u64;
    let mut row_no = 0u64;
    match opened {
        Opened::Vcf(mut r) => {
            let mut raw = String::new();
            if let Err(e) = r.header_reader().read_to_string(&mut raw) {
                return fail(format!("cannot read the header: {e}"));
            }
            let header: vcf::Header = match raw.parse() {
                Ok(h) => h,
                Err(e) => return fail(format!("invalid header: {e}")),
            };
            let lines = raw.lines().count() as u64;
            let _ = events.send(Event::Header(Box::new(header.clone()), Some(lines)));
            let mut out = Batcher::new(chunk_records, Records::Vcf, &chunks);
            loop {
                let mut rec = vcf::Record::default();
                match r.read_record(&mut rec) {
                    Ok(0) => break,
                    Ok(_) => {
                        if let Some(p) = order.check(
                            record_no,
                            rec.reference_sequence_name(),
                            rec.variant_start().and_then(|p| p.ok()).map(usize::from),
                        ) {
                            let _ = events.send(Event::Problem(p));
                        }
                        row_no += rows_of(&rec, split);
                        record_no += 1;
                        if !out.push(rec, record_no, row_no) {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                        let _ = events.send(Event::Problem(Problem {
                            record: record_no,
                            kind: "malformed_line",
                            message: e.to_string(),
                            once_key: None,
                        }));
                        record_no += 1;
                        out.skip(record_no);
                    }
                    Err(e) => {
                        fail(format!(
                            "the stream ends in error after {record_no} records (truncated or corrupt): {e}"
                        ));
                        break;
                    }
                }
            }
            out.finish();
        }
        Opened::Bcf(mut r) => {
            let header = match r.read_header() {
                Ok(h) => h,
                Err(e) => return fail(format!("invalid BCF header: {e}")),
            };
            let _ = events.send(Event::Header(Box::new(header.clone()), None));
            let mut out = Batcher::new(chunk_records, Records::Bcf, &chunks);
            loop {
                let mut rec = noodles::bcf::Record::default();
                match r.read_record(&mut rec) {
                    Ok(0) => break,
                    Ok(_) => {
                        let chrom =
                            noodles::vcf::variant::Record::reference_sequence_name(&rec, &header)
                                .map(str::to_string)
                                .unwrap_or_default();
                        let pos = rec.variant_start().and_then(|p| p.ok()).map(usize::from);
                        if let Some(p) = order.check(record_no, &chrom, pos) {
                            let _ = events.send(Event::Problem(p));
                        }
                        row_no += rows_of(&rec, split);
                        record_no += 1;
                        if !out.push(rec, record_no, row_no) {
                            return;
                        }
                    }
                    Err(e) => {
                        fail(format!(
                            "the stream ends in error after {record_no} records (truncated or corrupt): {e}"
                        ));
                        break;
                    }
                }
            }
            out.finish();
        }
    }
    let _ = events.send(Event::End { records: record_no });
}

/// Records gathered into chunks for the workers, each chunk knowing the file ordinal of
/// its first record and first row.
struct Batcher<'a, T> {
    batch: Vec<T>,
    size: usize,
    wrap: fn(Vec<T>) -> Records,
    chunks: &'a std::sync::mpsc::SyncSender<Chunk>,
    seq: u64,
    first_record: u64,
    first_row: u64,
}

impl<'a, T> Batcher<'a, T> {
    fn new(
        size: usize,
        wrap: fn(Vec<T>) -> Records,
        chunks: &'a std::sync::mpsc::SyncSender<Chunk>,
    ) -> Self {
        Batcher {
            batch: Vec::with_capacity(size),
            size,
            wrap,
            chunks,
            seq: 0,
            first_record: 0,
            first_row: 0,
        }
    }

    /// Add a record; `records` and `rows` count what has been read so far, this one
    /// included. `false` when the workers have gone.
    fn push(&mut self, rec: T, records: u64, rows: u64) -> bool {
        self.batch.push(rec);
        if self.batch.len() < self.size {
            return true;
        }
        let ok = self.send();
        self.first_record = records;
        self.first_row = rows;
        ok
    }

    /// A line that was not a record: the next chunk starts after it.
    fn skip(&mut self, records: u64) {
        if self.batch.is_empty() {
            self.first_record = records;
        } else {
            // Keep ordinals exact: close the chunk before the gap.
            let rows = self.first_row + self.batch.len() as u64;
            let _ = self.send();
            self.first_record = records;
            self.first_row = rows;
        }
    }

    fn send(&mut self) -> bool {
        let records = (self.wrap)(std::mem::replace(
            &mut self.batch,
            Vec::with_capacity(self.size),
        ));
        let ok = self
            .chunks
            .send(Chunk {
                seq: self.seq,
                records,
                first_record: self.first_record,
                first_row: self.first_row,
            })
            .is_ok();
        self.seq += 1;
        ok
    }

    fn finish(mut self) {
        if !self.batch.is_empty() {
            let _ = self.send();
        }
    }
}

/// Rows a record becomes: one, or one per ALT allele when splitting.
fn rows_of<R: vcf::variant::Record>(rec: &R, split: bool) -> u64 {
    if split {
        (rec.alternate_bases().len() as u64).max(1)
    } else {
        1
    }
}

/// Files must be sorted by position within each chromosome, with each chromosome in one
/// run; the first place that is not is reported once.
#[derive(Default)]
struct OrderCheck {
    chrom: String,
    pos: usize,
    done: HashSet<String>,
    reported: bool,
}

impl OrderCheck {
    fn check(&mut self, record: u64, chrom: &str, pos: Option<usize>) -> Option<Problem> {
        let pos = pos?;
        let mut bad = None;
        if chrom != self.chrom {
            if self.done.contains(chrom) {
                bad = Some(format!("{chrom} appears again after other chromosomes"));
            }
            let prev = std::mem::replace(&mut self.chrom, chrom.to_string());
            self.done.insert(prev);
        } else if pos < self.pos {
            bad = Some(format!("{chrom}:{pos} comes after {chrom}:{}", self.pos));
        }
        self.pos = pos;
        if self.reported {
            return None;
        }
        bad.map(|why| {
            self.reported = true;
            Problem {
                record,
                kind: "unsorted",
                message: format!(
                    "the file is not sorted ({why}); its rows are kept, but region queries \
                     prune less well"
                ),
                once_key: None,
            }
        })
    }
}

/// The streaming writers of one file's tables.
struct Sinks {
    variants: TableSink,
    genotypes: Option<TableSink>,
    effects: Option<TableSink>,
}

struct TableSink {
    name: &'static str,
    table: DeltaTable,
    writer: RecordBatchWriter,
    /// The table's columns with this file's new ones added (also inside `info`): every
    /// batch is conformed to it, since the writer widens top-level columns only.
    target: SchemaRef,
    collection: String,
}

impl TableSink {
    async fn open(
        lake: &Lake,
        name: &'static str,
        schema: SchemaRef,
        collection: &str,
    ) -> Result<TableSink> {
        // The converters' rows (shared with `vcf_scan`, which has no collection) get the
        // ingest's collection here, first, as every other lake table has it.
        let schema = Arc::new(Schema::new(
            std::iter::once(Arc::new(collection_field()))
                .chain(schema.fields().iter().cloned())
                .collect::<Vec<_>>(),
        ));
        let table = match lake.table(name).await? {
            Some(t) => t,
            None => {
                lake.append(name, schema.clone(), vec![], "ingest vcf")
                    .await?;
                lake.table(name)
                    .await?
                    .ok_or_else(|| Error::Invalid(format!("{name}: not created")))?
            }
        };
        let mut writer = RecordBatchWriter::for_table(&table).map_err(|e| Error::delta(name, e))?;
        if name == GENOTYPES {
            writer = writer.with_writer_properties(genotype_writer_properties());
        } else if name == VARIANTS {
            writer = writer.with_writer_properties(variant_writer_properties());
        }
        let writer = writer.with_commit_properties(CommitProperties::default().with_metadata([(
            "medlake.operation".to_string(),
            serde_json::Value::String("ingest vcf".into()),
        )]));
        let target = Arc::new(merge_fields(
            writer.arrow_schema().fields(),
            schema.fields(),
        ));
        Ok(TableSink {
            name,
            table,
            writer,
            target,
            collection: collection.to_string(),
        })
    }

    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let collection: datafusion::arrow::array::ArrayRef =
            Arc::new(datafusion::arrow::array::StringArray::from_iter_values(
                std::iter::repeat_n(self.collection.as_str(), batch.num_rows()),
            ));
        let batch = conform(&batch, &self.target, Some(&collection))?;
        self.writer
            .write_with_mode(batch, WriteMode::MergeSchema)
            .await
            .map_err(|e| Error::delta(self.name, e))
    }

    async fn commit(&mut self) -> Result<()> {
        self.writer
            .flush_and_commit(&mut self.table)
            .await
            .map_err(|e| Error::delta(self.name, e))?;
        Ok(())
    }
}

/// How `genotypes` Parquet is written. It is the one table with a row per sample, so its
/// encoding cost is most of an ingest's: min/max statistics (computed for every value) are
/// kept only for the columns that prune scans (the collection, `variant_id`, the chromosome
/// and the position; not `sample_id`, whose every page holds nearly every sample), and the
/// sorted integer keys, which repeat once per sample, are delta-encoded.
fn genotype_writer_properties() -> datafusion::parquet::file::properties::WriterProperties {
    use datafusion::parquet::file::properties::EnabledStatistics;
    use datafusion::parquet::schema::types::ColumnPath;
    let mut props = sorted_keys_delta_encoded(&["variant_id", "pos"])
        .set_statistics_enabled(EnabledStatistics::None);
    for key in ["collection", "variant_id", "chrom", "pos"] {
        props = props.set_column_statistics_enabled(ColumnPath::from(key), EnabledStatistics::Page);
    }
    props.build()
}

/// How `variants` Parquet is written: every column keeps its statistics, and the sorted,
/// nearly unique integers are delta-encoded. Dictionary-encoded, `pos` filled a 1 MB
/// dictionary page per row group before falling back to plain, and a 10 kb region query
/// read and decompressed that page whole (1.56 MB scanned for 124 rows).
fn variant_writer_properties() -> datafusion::parquet::file::properties::WriterProperties {
    sorted_keys_delta_encoded(&["variant_id", "pos", "end"]).build()
}

/// deltalake's writer defaults (Snappy), with `sorted` columns delta-encoded and no
/// dictionary: cheaper to write, and about 4x smaller for `variant_id` in `genotypes`.
fn sorted_keys_delta_encoded(
    sorted: &[&str],
) -> datafusion::parquet::file::properties::WriterPropertiesBuilder {
    use datafusion::parquet::basic::{Compression, Encoding};
    use datafusion::parquet::file::properties::WriterProperties;
    use datafusion::parquet::schema::types::ColumnPath;
    let mut props = WriterProperties::builder().set_compression(Compression::SNAPPY);
    for column in sorted {
        props = props
            .set_column_dictionary_enabled(ColumnPath::from(*column), false)
            .set_column_encoding(ColumnPath::from(*column), Encoding::DELTA_BINARY_PACKED);
    }
    props
}

/// The existing fields, then the new ones; structs merged the same way, field by field.
fn merge_fields(
    existing: &datafusion::arrow::datatypes::Fields,
    ours: &datafusion::arrow::datatypes::Fields,
) -> Schema {
    Schema::new(merge_list(existing, ours))
}

fn merge_list(
    existing: &datafusion::arrow::datatypes::Fields,
    ours: &datafusion::arrow::datatypes::Fields,
) -> Vec<Field> {
    let mut out: Vec<Field> = Vec::new();
    for f in existing.iter() {
        match (
            f.data_type(),
            ours.find(f.name()).map(|(_, o)| o.data_type()),
        ) {
            (DataType::Struct(a), Some(DataType::Struct(b))) => out.push(Field::new(
                f.name(),
                DataType::Struct(merge_list(a, b).into()),
                true,
            )),
            _ => out.push(f.as_ref().clone()),
        }
    }
    for f in ours.iter() {
        if existing.find(f.name()).is_none() {
            out.push(f.as_ref().clone().with_nullable(true));
        }
    }
    out
}

/// A batch with exactly the target's columns: missing ones (also inside structs) null,
/// others cast to the target's type where the layouts differ (e.g. Utf8 and Utf8View);
/// `collection`, where given, fills the column of that name.
fn conform(
    batch: &RecordBatch,
    target: &SchemaRef,
    collection: Option<&datafusion::arrow::array::ArrayRef>,
) -> Result<RecordBatch> {
    use datafusion::arrow::array::{new_null_array, Array, ArrayRef, StructArray};
    fn fit(col: Option<&ArrayRef>, field: &Field, rows: usize) -> Result<ArrayRef> {
        let Some(col) = col else {
            return Ok(new_null_array(field.data_type(), rows));
        };
        if col.data_type() == field.data_type() {
            return Ok(col.clone());
        }
        if let (DataType::Struct(want), Some(s)) = (
            field.data_type(),
            col.as_any().downcast_ref::<StructArray>(),
        ) {
            let children: Vec<ArrayRef> = want
                .iter()
                .map(|f| fit(s.column_by_name(f.name()), f, rows))
                .collect::<Result<_>>()?;
            return Ok(Arc::new(StructArray::try_new(
                want.clone(),
                children,
                s.nulls().cloned(),
            )?));
        }
        Ok(datafusion::arrow::compute::cast(col, field.data_type())?)
    }
    let rows = batch.num_rows();
    let cols: Vec<ArrayRef> = target
        .fields()
        .iter()
        .map(|f| match collection {
            Some(c) if f.name() == "collection" => fit(Some(c), f, rows),
            _ => fit(batch.column_by_name(f.name()), f, rows),
        })
        .collect::<Result<_>>()?;
    Ok(RecordBatch::try_new(target.clone(), cols)?)
}

impl Sinks {
    async fn open(lake: &Lake, layout: &Layout, collection: &str) -> Result<Sinks> {
        let variants =
            TableSink::open(lake, VARIANTS, layout.variants_schema(), collection).await?;
        let genotypes = if layout.samples.is_empty() {
            None
        } else {
            Some(TableSink::open(lake, GENOTYPES, layout.genotypes_schema(), collection).await?)
        };
        let effects = if layout.effects.is_empty() {
            None
        } else {
            Some(
                TableSink::open(lake, VARIANT_EFFECTS, convert::effects_schema(), collection)
                    .await?,
            )
        };
        Ok(Sinks {
            variants,
            genotypes,
            effects,
        })
    }

    async fn write(&mut self, rows: ChunkRows) -> Result<()> {
        self.variants.write(rows.variants).await?;
        if let (Some(s), Some(b)) = (self.genotypes.as_mut(), rows.genotypes) {
            s.write(b).await?;
        }
        if let (Some(s), Some(b)) = (self.effects.as_mut(), rows.effects) {
            s.write(b).await?;
        }
        Ok(())
    }

    /// Genotypes and effects first, variants last: a reader that sees a variant sees its
    /// genotypes.
    async fn commit(&mut self, _uri: &str) -> Result<()> {
        if let Some(s) = self.genotypes.as_mut() {
            s.commit().await?;
        }
        if let Some(s) = self.effects.as_mut() {
            s.commit().await?;
        }
        self.variants.commit().await
    }
}
