//! `medlake compute findings`: CT findings (`medlake_udfs::findings`) for the lake's CT
//! series, materialized in the `findings` table, with what could not be computed in
//! `compute_errors`.
//!
//! - **Only what is missing or stale.** A series is current when `findings` holds rows for
//!   it under the running [`METHOD_VERSION`] computed from as many instances as `series`
//!   now counts; a series recorded in `compute_errors` under this version is not retried
//!   (unless asked). A stale series' old rows are deleted before its new ones are added.
//! - **Bounded memory.** Series are computed one at a time, their files read, decoded and
//!   dropped; rows are committed every `commit_every` series.
//! - **Crash-safe.** Each commit is atomic; an interrupted run leaves whole series behind,
//!   and running it again computes the rest. Nothing is counted twice: a series' rows are
//!   committed together, and a series with rows is skipped.
//! - **Errors are rows.** A series that is not one volume, or whose files cannot be read
//!   or decoded, gets a `compute_errors` row with the reason; the run goes on.

pub mod embeddings;
pub(crate) mod tables;

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use futures::StreamExt;
use medlake_udfs::findings::{self, METHOD_VERSION};
use medlake_udfs::runtime::{Backend, Workload};
use medlake_udfs::volume::{assemble, read_image, Input, Volume};
use object_store::ObjectStoreExt;
use serde::Serialize;
use url::Url;

use crate::error::{Error, Result};
use crate::lake::{quote, Lake};
use crate::tables::{COMPUTE_ERRORS, FINDINGS};

pub use tables::{compute_errors_schema, findings_schema};

/// What `compute findings` does.
#[derive(Debug, Clone)]
pub struct ComputeOptions {
    /// A SQL predicate on `series` columns choosing which series to consider (CT only in
    /// any case).
    pub predicate: Option<String>,
    /// `cpu`, `gpu` or `auto` (default: `MEDLAKE_DEVICE`, else `auto`).
    pub device: Option<String>,
    /// Retry series recorded in `compute_errors` under this method version.
    pub retry_errors: bool,
    pub progress: bool,
    /// Series per commit.
    pub commit_every: usize,
}

impl Default for ComputeOptions {
    fn default() -> Self {
        ComputeOptions {
            predicate: None,
            device: None,
            retry_errors: false,
            progress: false,
            commit_every: 16,
        }
    }
}

/// What a run did. Stage times are totals over the series computed, in seconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ComputeSummary {
    pub series_selected: u64,
    pub already_current: u64,
    pub computed: u64,
    pub errors: u64,
    pub findings: u64,
    pub backend: String,
    pub method_version: String,
    pub stages: Vec<(String, f64)>,
    pub seconds: f64,
    pub lake_version: i64,
}

impl ComputeSummary {
    pub(crate) fn add_stage(&mut self, name: &str, seconds: f64) {
        match self.stages.iter_mut().find(|(n, _)| n == name) {
            Some((_, s)) => *s += seconds,
            None => self.stages.push((name.to_string(), seconds)),
        }
    }
}

/// One series to compute.
pub(crate) struct Job {
    pub collection: String,
    pub series_uid: String,
    pub instance_count: i64,
}

/// One series that could not be computed.
pub struct ComputeError {
    pub collection: String,
    pub series_uid: String,
    pub error_kind: &'static str,
    pub message: String,
}

/// One computed series.
pub struct Computed {
    pub collection: String,
    pub series_uid: String,
    pub instance_count: i64,
    pub report: findings::Report,
}

pub async fn compute_findings(lake: &Lake, opts: &ComputeOptions) -> Result<ComputeSummary> {
    let started = Instant::now();
    let setting = opts
        .device
        .clone()
        .or_else(|| std::env::var("MEDLAKE_DEVICE").ok());
    let backend = Backend::choose_for(setting.as_deref(), Workload::VolumeOps)
        .map_err(|e| Error::Invalid(format!("compute findings: {e}")))?;
    let mut summary = ComputeSummary {
        backend: backend.name(),
        method_version: METHOD_VERSION.to_string(),
        ..Default::default()
    };
    let session = crate::session::open_session(lake, None).await?;
    let ctx = &session.ctx;
    if !session.table_versions.contains_key(crate::tables::SERIES) {
        summary.lake_version = lake.record_version("compute findings").await?.lake_version;
        return Ok(summary);
    }
    let plan = plan_jobs(
        &session,
        "\"Modality\" = 'CT'",
        opts.predicate.as_deref(),
        FINDINGS,
        &format!("method_version = '{METHOD_VERSION}'"),
        METHOD_VERSION,
        opts.retry_errors,
    )
    .await?;
    summary.series_selected = plan.selected;
    summary.already_current = plan.already_current;
    let (jobs, stale) = (plan.jobs, plan.stale);
    let bar = series_bar(jobs.len(), opts.progress);
    for chunk in jobs.chunks(opts.commit_every.max(1)) {
        let uids: Vec<&str> = chunk.iter().map(|j| j.series_uid.as_str()).collect();
        let mut files = series_files(ctx, &uids).await?;
        let mut done = Vec::new();
        let mut errors = Vec::new();
        for job in chunk {
            bar.set_message(job.series_uid.clone());
            let uris = files.remove(&job.series_uid).unwrap_or_default();
            match compute_series(&uris, &backend, &mut summary).await {
                Ok(report) => done.push(Computed {
                    collection: job.collection.clone(),
                    series_uid: job.series_uid.clone(),
                    instance_count: job.instance_count,
                    report,
                }),
                Err((error_kind, message)) => errors.push(ComputeError {
                    collection: job.collection.clone(),
                    series_uid: job.series_uid.clone(),
                    error_kind,
                    message,
                }),
            }
            bar.inc(1);
        }
        let write = Instant::now();
        let chunk_stale: Vec<String> = chunk
            .iter()
            .filter(|j| stale.contains(&j.series_uid))
            .map(|j| quote(&j.series_uid))
            .collect();
        if !chunk_stale.is_empty() {
            if let Some(t) = lake.table(FINDINGS).await? {
                t.delete()
                    .with_predicate(format!(
                        "\"SeriesInstanceUID\" IN ({})",
                        chunk_stale.join(", ")
                    ))
                    .await
                    .map_err(|e| Error::delta(FINDINGS, e))?;
            }
        }
        summary.computed += done.len() as u64;
        summary.errors += errors.len() as u64;
        summary.findings += done
            .iter()
            .map(|d| d.report.findings.len() as u64)
            .sum::<u64>();
        let batch = tables::findings_batch(&done)?;
        lake.append(FINDINGS, findings_schema(), vec![batch], "compute findings")
            .await?;
        if !errors.is_empty() {
            let batch = tables::errors_batch(&errors, &summary.backend, METHOD_VERSION)?;
            lake.append(
                COMPUTE_ERRORS,
                compute_errors_schema(),
                vec![batch],
                "compute findings",
            )
            .await?;
        }
        summary.add_stage("write", write.elapsed().as_secs_f64());
    }
    bar.finish_and_clear();
    summary.lake_version = lake.record_version("compute findings").await?.lake_version;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Read, decode, assemble and measure one series; an error is (kind, message).
pub(crate) async fn compute_series(
    uris: &[String],
    backend: &Backend,
    summary: &mut ComputeSummary,
) -> std::result::Result<findings::Report, (&'static str, String)> {
    let volume = read_volume(uris, summary).await?;
    let backend = backend.clone();
    let report = tokio::task::spawn_blocking(move || {
        findings::compute(&volume, &backend).map_err(|e| ("findings", e.to_string()))
    })
    .await
    .map_err(|e| ("findings", format!("worker failed: {e}")))??;
    for (name, d) in &report.stages {
        summary.add_stage(name, d.as_secs_f64());
    }
    Ok(report)
}

/// Read, parse, decode and assemble one series into a volume (the files read together,
/// then dropped); an error is (kind, message).
pub(crate) async fn read_volume(
    uris: &[String],
    summary: &mut ComputeSummary,
) -> std::result::Result<Volume, (&'static str, String)> {
    if uris.is_empty() {
        return Err(("read", "no instances".into()));
    }
    let t = Instant::now();
    let reads: Vec<(String, Result<Vec<u8>>)> = futures::stream::iter(uris.iter().cloned())
        .map(|uri| async move {
            let bytes = read_uri(&uri).await;
            (uri, bytes)
        })
        .buffered(16)
        .collect()
        .await;
    let mut blobs = Vec::with_capacity(reads.len());
    for (uri, r) in reads {
        match r {
            Ok(b) => blobs.push((uri, b)),
            Err(e) => return Err(("read", e.to_string())),
        }
    }
    summary.add_stage("read", t.elapsed().as_secs_f64());
    let (volume, parse_s, assemble_s) = tokio::task::spawn_blocking(move || {
        use rayon::prelude::*;
        let t = Instant::now();
        let objects = blobs
            .par_iter()
            .map(|(uri, bytes)| read_image(bytes, uri))
            .collect::<medlake_udfs::Result<Vec<_>>>()
            .map_err(|e| ("parse", e.to_string()))?;
        let names: Vec<String> = blobs.into_iter().map(|(uri, _)| uri).collect();
        let parse_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let inputs: Vec<Input> = objects
            .iter()
            .zip(&names)
            .map(|(o, n)| Input { name: n, object: o })
            .collect();
        let volume = assemble(&inputs).map_err(|e| ("volume", e.to_string()))?;
        Ok::<_, (&'static str, String)>((volume, parse_s, t.elapsed().as_secs_f64()))
    })
    .await
    .map_err(|e| ("volume", format!("worker failed: {e}")))??;
    summary.add_stage("parse", parse_s);
    summary.add_stage("decode + assemble", assemble_s);
    Ok(volume)
}

/// What a compute command has to do.
pub(crate) struct Plan {
    pub selected: u64,
    pub already_current: u64,
    pub jobs: Vec<Job>,
    /// Series with rows computed from another instance count: replaced.
    pub stale: HashSet<String>,
}

/// The series a compute command considers (`modality` and the user's `--where`), less
/// those current in `table` (rows matching `current_filter` computed from as many
/// instances as `series` now counts) and, unless `retry_errors`, those recorded in
/// `compute_errors` under `method_version`.
pub(crate) async fn plan_jobs(
    session: &crate::session::LakeSession,
    modality: &str,
    predicate: Option<&str>,
    table: &str,
    current_filter: &str,
    method_version: &str,
    retry_errors: bool,
) -> Result<Plan> {
    let ctx = &session.ctx;
    let predicate = predicate.unwrap_or("TRUE");
    let selected = ctx
        .sql(&format!(
            "SELECT collection, \"SeriesInstanceUID\", instance_count FROM series \
             WHERE ({modality}) AND ({predicate}) \
             ORDER BY collection, \"SeriesInstanceUID\""
        ))
        .await
        .map_err(|e| Error::Invalid(format!("--where {predicate:?}: {e}")))?
        .collect()
        .await?;
    // uid → the instance count its current rows were computed from.
    let mut current: HashMap<String, i64> = HashMap::new();
    if session.table_versions.contains_key(table) {
        let sql = format!(
            "SELECT DISTINCT \"SeriesInstanceUID\", instance_count FROM {table} \
             WHERE {current_filter}"
        );
        for b in ctx.sql(&sql).await?.collect().await? {
            let uid = crate::lake::text_column(b.column(0))?;
            let n = int64_column(b.column(1))?;
            for i in 0..b.num_rows() {
                current.insert(uid.value(i).to_string(), n.value(i));
            }
        }
    }
    let mut failed: HashSet<String> = HashSet::new();
    if !retry_errors && session.table_versions.contains_key(COMPUTE_ERRORS) {
        let sql = format!(
            "SELECT DISTINCT \"SeriesInstanceUID\" FROM {COMPUTE_ERRORS} \
             WHERE method_version = {}",
            quote(method_version)
        );
        for b in ctx.sql(&sql).await?.collect().await? {
            let uid = crate::lake::text_column(b.column(0))?;
            for i in 0..b.num_rows() {
                failed.insert(uid.value(i).to_string());
            }
        }
    }
    let mut plan = Plan {
        selected: 0,
        already_current: 0,
        jobs: Vec::new(),
        stale: HashSet::new(),
    };
    for b in &selected {
        let collection = crate::lake::text_column(b.column(0))?;
        let uid = crate::lake::text_column(b.column(1))?;
        let count = int64_column(b.column(2))?;
        for i in 0..b.num_rows() {
            plan.selected += 1;
            let series_uid = uid.value(i).to_string();
            match current.get(&series_uid) {
                Some(n) if *n == count.value(i) => {
                    plan.already_current += 1;
                    continue;
                }
                Some(_) => {
                    plan.stale.insert(series_uid.clone());
                }
                None if failed.contains(&series_uid) => {
                    plan.already_current += 1;
                    continue;
                }
                None => {}
            }
            plan.jobs.push(Job {
                collection: collection.value(i).to_string(),
                series_uid,
                instance_count: count.value(i),
            });
        }
    }
    Ok(plan)
}

/// A progress bar over series (hidden unless `show`).
pub(crate) fn series_bar(len: usize, show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} series  {per_sec}  {msg}  ETA {eta}",
        )
        .expect("the template is valid"),
    );
    bar
}

/// The instance files of the given series, from the session's `instances`.
pub(crate) async fn series_files(
    ctx: &datafusion::prelude::SessionContext,
    uids: &[&str],
) -> Result<HashMap<String, Vec<String>>> {
    let mut files: HashMap<String, Vec<String>> = HashMap::new();
    if uids.is_empty() {
        return Ok(files);
    }
    let list: Vec<String> = uids.iter().map(|u| quote(u)).collect();
    let sql = format!(
        "SELECT \"SeriesInstanceUID\", file_uri FROM instances \
         WHERE \"SeriesInstanceUID\" IN ({})",
        list.join(", ")
    );
    for b in ctx.sql(&sql).await?.collect().await? {
        let uid = crate::lake::text_column(b.column(0))?;
        let uri = crate::lake::text_column(b.column(1))?;
        for i in 0..b.num_rows() {
            files
                .entry(uid.value(i).to_string())
                .or_default()
                .push(uri.value(i).to_string());
        }
    }
    Ok(files)
}

/// The bytes of a file the lake points to: a `file://` URL or an object-store URL.
pub(crate) async fn read_uri(uri: &str) -> Result<Vec<u8>> {
    if uri.starts_with("deidentified:") {
        return Err(Error::Invalid(format!(
            "{uri}: ingested with --deidentify, so the lake does not record where the file is"
        )));
    }
    let url = Url::parse(uri).map_err(|e| Error::Invalid(format!("{uri}: {e}")))?;
    if url.scheme() == "file" {
        let path = url
            .to_file_path()
            .map_err(|_| Error::Invalid(format!("{uri}: not a local path")))?;
        return tokio::fs::read(&path).await.map_err(|e| Error::io(uri, e));
    }
    let (store, location) = crate::ingest::sources::object_store_for(&url)?;
    let got = store
        .get(&location)
        .await
        .map_err(|e| Error::Invalid(format!("{uri}: {e}")))?;
    let bytes = got
        .bytes()
        .await
        .map_err(|e| Error::Invalid(format!("{uri}: {e}")))?;
    Ok(bytes.to_vec())
}

pub(crate) fn int64_column(
    col: &datafusion::arrow::array::ArrayRef,
) -> Result<datafusion::arrow::array::Int64Array> {
    let cast =
        datafusion::arrow::compute::cast(col, &datafusion::arrow::datatypes::DataType::Int64)?;
    Ok(datafusion::arrow::array::Int64Array::from(cast.to_data()))
}
