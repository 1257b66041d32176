//! `medlake compute embeddings --model M`: the image feature library. One vector per
//! (series, model) in the `embeddings` table, from the built-in filter-bank model or a
//! registered ONNX model (`crate::models`).
//!
//! - **Only what is missing.** A series is current when `embeddings` holds its vector for
//!   the model (its name and sha256) computed from as many instances as `series` now counts. A series
//!   recorded in `compute_errors` under the model (`<name>@sha256:<hex>`) is not retried
//!   unless asked. A series that grew gets its vector replaced.
//! - **Which series.** CT and MR (3-D volumes), narrowed by `--where`.
//! - **Bounded memory, crash-safe, errors are rows**: as `compute findings` (one series in
//!   memory at a time, a commit every `commit_every` series, a series that cannot be read
//!   or that the model cannot take is a `compute_errors` row and the run goes on).

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use datafusion::arrow::array::{
    ArrayRef, Float32Builder, Int64Array, ListBuilder, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use medlake_udfs::runtime::Backend;
use serde::Serialize;

use super::{plan_jobs, quote, read_volume, series_bar, series_files, tables, ComputeError};
use super::{ComputeSummary, Job};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::models::{LoadedModel, ModelEntry};
use crate::tables::{COMPUTE_ERRORS, EMBEDDINGS};

/// Modalities whose series are volumes a 3-D model takes.
pub const MODALITIES: &str = "\"Modality\" IN ('CT', 'MR')";

/// What `compute embeddings` does: the model, and which series, where, how (as for
/// `compute findings`; `--retry-errors` retries this model's errors).
#[derive(Debug, Clone)]
pub struct EmbedOptions {
    /// A registered model's name, or the built-in model's.
    pub model: String,
    pub run: super::ComputeOptions,
}

impl EmbedOptions {
    pub fn new(model: &str) -> EmbedOptions {
        EmbedOptions {
            model: model.to_string(),
            run: super::ComputeOptions::default(),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EmbedSummary {
    pub model: String,
    pub model_sha256: String,
    pub dim: Option<usize>,
    pub series_selected: u64,
    pub already_current: u64,
    pub computed: u64,
    pub errors: u64,
    pub backend: String,
    pub stages: Vec<(String, f64)>,
    pub seconds: f64,
    pub lake_version: i64,
}

pub fn embeddings_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("collection", DataType::Utf8, false),
        Field::new("SeriesInstanceUID", DataType::Utf8, false),
        Field::new("model", DataType::Utf8, false),
        Field::new("model_sha256", DataType::Utf8, false),
        Field::new(
            "vector",
            DataType::List(Arc::new(Field::new("item", DataType::Float32, false))),
            false,
        ),
        Field::new("backend", DataType::Utf8, false),
        Field::new("instance_count", DataType::Int64, false),
        Field::new(
            "computed_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]))
}

/// One computed vector.
pub struct Embedded {
    pub collection: String,
    pub series_uid: String,
    pub instance_count: i64,
    pub vector: Vec<f32>,
}

pub(crate) fn embeddings_batch(
    rows: &[Embedded],
    entry: &ModelEntry,
    backend: &str,
) -> Result<RecordBatch> {
    let n = rows.len();
    let text = |f: &dyn Fn(&Embedded) -> String| -> ArrayRef {
        Arc::new(rows.iter().map(|r| Some(f(r))).collect::<StringArray>())
    };
    let mut vectors = ListBuilder::new(Float32Builder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::Float32,
        false,
    )));
    for r in rows {
        vectors.values().append_slice(&r.vector);
        vectors.append(true);
    }
    let now = Utc::now().timestamp_micros();
    Ok(RecordBatch::try_new(
        embeddings_schema(),
        vec![
            text(&|r| r.collection.clone()),
            text(&|r| r.series_uid.clone()),
            text(&|_| entry.name.clone()),
            text(&|_| entry.sha256.clone()),
            Arc::new(vectors.finish()),
            text(&|_| backend.to_string()),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.instance_count),
            )),
            Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
        ],
    )?)
}

/// Read one series and run the model on it; an error is (kind, message).
pub(crate) async fn embed_series(
    uris: &[String],
    entry: &ModelEntry,
    model: Arc<LoadedModel>,
    backend: &Backend,
    summary: &mut ComputeSummary,
) -> std::result::Result<Vec<f32>, (&'static str, String)> {
    let volume = read_volume(uris, summary).await?;
    let (entry, backend) = (entry.clone(), backend.clone());
    let t = Instant::now();
    let vector = tokio::task::spawn_blocking(move || {
        model
            .run(&entry, &volume, &backend)
            .map_err(|e| ("model", e.to_string()))
    })
    .await
    .map_err(|e| ("model", format!("worker failed: {e}")))??;
    summary.add_stage("model", t.elapsed().as_secs_f64());
    if let Some(bad) = vector.iter().find(|v| !v.is_finite()) {
        return Err((
            "model",
            format!("the output holds a non-finite value ({bad})"),
        ));
    }
    Ok(vector)
}

/// The model `name` as this lake knows it.
pub async fn resolve_model(lake: &Lake, name: &str) -> Result<ModelEntry> {
    let models = crate::models::registered(lake).await?;
    models.get(name).cloned().ok_or_else(|| {
        Error::Invalid(format!(
            "no model {name:?} in this lake (models: {}); add one with `medlake model add`",
            models.names().join(", ")
        ))
    })
}

pub async fn compute_embeddings(lake: &Lake, opts: &EmbedOptions) -> Result<EmbedSummary> {
    let started = Instant::now();
    let entry = resolve_model(lake, &opts.model).await?;
    let opts = &opts.run;
    let setting = opts
        .device
        .clone()
        .or_else(|| std::env::var("MEDLAKE_DEVICE").ok());
    let backend = Backend::choose_for(setting.as_deref(), entry.workload())
        .map_err(|e| Error::Invalid(format!("compute embeddings: {e}")))?;
    let loaded = crate::models::load(&entry).await?;
    if entry.builtin {
        // The built-in model is listed in `models` once it has been used.
        crate::models::record(lake, &entry).await?;
    }
    let mut summary = EmbedSummary {
        model: entry.name.clone(),
        model_sha256: entry.sha256.clone(),
        dim: entry.output_dim,
        backend: backend.name(),
        ..Default::default()
    };
    let mut stages = ComputeSummary::default();
    let session = crate::session::open_session(lake, None).await?;
    if !session.table_versions.contains_key(crate::tables::SERIES) {
        summary.lake_version = lake
            .record_version("compute embeddings")
            .await?
            .lake_version;
        return Ok(summary);
    }
    let method = entry.method_version();
    let plan = plan_jobs(
        &session,
        MODALITIES,
        opts.predicate.as_deref(),
        EMBEDDINGS,
        &entry.embeddings_filter(),
        &method,
        opts.retry_errors,
    )
    .await?;
    summary.series_selected = plan.selected;
    summary.already_current = plan.already_current;
    let bar = series_bar(plan.jobs.len(), opts.progress);
    for chunk in plan.jobs.chunks(opts.commit_every.max(1)) {
        let uids: Vec<&str> = chunk.iter().map(|j| j.series_uid.as_str()).collect();
        let mut files = series_files(&session.ctx, &uids).await?;
        let mut done = Vec::new();
        let mut errors = Vec::new();
        for Job {
            collection,
            series_uid,
            instance_count,
        } in chunk
        {
            bar.set_message(series_uid.clone());
            let uris = files.remove(series_uid).unwrap_or_default();
            match embed_series(&uris, &entry, loaded.clone(), &backend, &mut stages).await {
                Ok(vector) => done.push(Embedded {
                    collection: collection.clone(),
                    series_uid: series_uid.clone(),
                    instance_count: *instance_count,
                    vector,
                }),
                Err((error_kind, message)) => errors.push(ComputeError {
                    collection: collection.clone(),
                    series_uid: series_uid.clone(),
                    error_kind,
                    message,
                }),
            }
            bar.inc(1);
        }
        let write = Instant::now();
        let stale: Vec<String> = chunk
            .iter()
            .filter(|j| plan.stale.contains(&j.series_uid))
            .map(|j| quote(&j.series_uid))
            .collect();
        if !stale.is_empty() {
            if let Some(t) = lake.table(EMBEDDINGS).await? {
                t.delete()
                    .with_predicate(format!(
                        "{} AND \"SeriesInstanceUID\" IN ({})",
                        entry.embeddings_filter(),
                        stale.join(", ")
                    ))
                    .await
                    .map_err(|e| Error::delta(EMBEDDINGS, e))?;
            }
        }
        summary.computed += done.len() as u64;
        summary.errors += errors.len() as u64;
        let batch = embeddings_batch(&done, &entry, &summary.backend)?;
        lake.append(
            EMBEDDINGS,
            embeddings_schema(),
            vec![batch],
            "compute embeddings",
        )
        .await?;
        if !errors.is_empty() {
            let batch = tables::errors_batch(&errors, &summary.backend, &method)?;
            lake.append(
                COMPUTE_ERRORS,
                super::compute_errors_schema(),
                vec![batch],
                "compute embeddings",
            )
            .await?;
        }
        stages.add_stage("write", write.elapsed().as_secs_f64());
    }
    bar.finish_and_clear();
    summary.stages = stages.stages;
    summary.lake_version = lake
        .record_version("compute embeddings")
        .await?
        .lake_version;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}
