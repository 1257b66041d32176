//! `ct_findings(SeriesInstanceUID)`: a CT series' findings inside a query, as a list of
//! structs (the columns of the `findings` table from `kind` to `backend`).
//!
//! ```sql
//! SELECT "SeriesInstanceUID", f['kind'] AS kind, f['diameter_mm'] AS diameter_mm
//! FROM (SELECT "SeriesInstanceUID", unnest(ct_findings("SeriesInstanceUID")) AS f
//!       FROM series WHERE "Modality" = 'CT' AND "PatientID" = 'DEMO-007')
//! WHERE f['kind'] = 'nodule';
//! ```
//!
//! - **Cached by (series, method_version).** A series' findings come from the `findings`
//!   table when `medlake compute findings` has materialized them under the running method
//!   version; otherwise they are computed (the series read through the lake, one at a
//!   time, so memory stays bounded by one volume) and kept for the rest of the session.
//! - **Errors are NULL.** A series that cannot be computed gives NULL and a row in
//!   `compute_errors`; the query goes on.
//! - **Where it runs.** `SET medlake.device = 'cpu' | 'gpu' | 'auto'` (default:
//!   `MEDLAKE_DEVICE`, else auto); each struct's `backend` says where its filters ran, and
//!   the session's [`ComputeMetrics`] (printed by `medlake sql` after each statement that
//!   computed) count series computed, read from the table and failed, with the backends.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, ListArray, RecordBatch, StringArray, StructArray,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::compute::{cast, concat, concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::catalog::TableProvider;
use datafusion::common::config::ConfigExtension;
use datafusion::common::{extensions_options, Result};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::async_udf::AsyncScalarUDFImpl;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use medlake_udfs::findings::METHOD_VERSION;
use medlake_udfs::runtime::{Backend, Workload};

use crate::compute::{self, tables, ComputeError, Computed};
use crate::lake::Lake;
use crate::tables::{COMPUTE_ERRORS, FINDINGS, INSTANCES};

extensions_options! {
    /// medlake's session settings (`SET medlake.<name> = ...`).
    pub struct MedlakeOptions {
        /// Where compute functions run: cpu, gpu or auto (a hardware GPU when there is
        /// one). Empty: the MEDLAKE_DEVICE environment variable, else auto.
        pub device: String, default = String::new()
    }
}

impl ConfigExtension for MedlakeOptions {
    const PREFIX: &'static str = "medlake";
}

/// The `findings` columns each struct holds: `kind` to `backend`.
fn item_fields() -> Fields {
    let schema = compute::findings_schema();
    let (first, last) = (column(&schema, "kind"), column(&schema, "backend"));
    schema.fields()[first..=last].iter().cloned().collect()
}

fn column(schema: &datafusion::arrow::datatypes::Schema, name: &str) -> usize {
    schema.index_of(name).expect("a findings column")
}

/// What `ct_findings` did in a session: a `SessionConfig` extension, so whoever runs
/// statements (the CLI) can report it next to the results.
#[derive(Debug, Default)]
pub struct ComputeMetrics {
    pub computed: AtomicU64,
    pub from_table: AtomicU64,
    pub failed: AtomicU64,
    pub backends: Mutex<BTreeSet<String>>,
}

impl ComputeMetrics {
    /// (computed, read from `findings`, failed).
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.computed.load(Ordering::Relaxed),
            self.from_table.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// Count one fill: series read from a table, computed, failed, and where it ran (when
    /// anything was computed or failed).
    pub fn record(&self, from_table: usize, computed: usize, failed: usize, backend: &Backend) {
        self.from_table
            .fetch_add(from_table as u64, Ordering::Relaxed);
        self.computed.fetch_add(computed as u64, Ordering::Relaxed);
        self.failed.fetch_add(failed as u64, Ordering::Relaxed);
        if computed > 0 || failed > 0 {
            self.backends
                .lock()
                .expect("not poisoned")
                .insert(backend.name());
        }
    }

    pub fn backends(&self) -> Vec<String> {
        self.backends
            .lock()
            .expect("not poisoned")
            .iter()
            .cloned()
            .collect()
    }
}

/// The backends a session's compute functions opened, by `medlake.device` setting: a GPU
/// is opened once per session, not per batch.
#[derive(Debug, Default)]
pub struct Backends(Mutex<HashMap<(String, Workload), Backend>>);

impl Backends {
    /// The backend for a `medlake.device` setting (empty: MEDLAKE_DEVICE, else auto) and
    /// a workload (which `auto` depends on).
    pub fn get(&self, setting: &str, workload: Workload) -> Result<Backend> {
        let setting = if setting.is_empty() {
            std::env::var("MEDLAKE_DEVICE").unwrap_or_default()
        } else {
            setting.to_string()
        };
        let mut backends = self.0.lock().expect("not poisoned");
        let key = (setting, workload);
        if let Some(b) = backends.get(&key) {
            return Ok(b.clone());
        }
        let b = Backend::choose_for(Some(&key.0), workload)
            .map_err(|e| DataFusionError::Execution(format!("medlake.device: {e}")))?;
        backends.insert(key, b.clone());
        Ok(b)
    }
}

/// The table versions the function reads (those of its session).
#[derive(Debug, Clone)]
pub struct Versions {
    pub instances: Option<i64>,
    pub findings: Option<i64>,
}

#[derive(Debug)]
pub struct CtFindings {
    signature: Signature,
    lake: Lake,
    versions: Versions,
    /// uid → its findings rows (None: could not be computed).
    cache: Mutex<HashMap<String, Option<RecordBatch>>>,
    backends: Backends,
    providers: tokio::sync::OnceCell<Providers>,
    metrics: Arc<ComputeMetrics>,
}

struct Providers {
    instances: Option<Arc<dyn TableProvider>>,
    findings: Option<Arc<dyn TableProvider>>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Providers")
    }
}

impl PartialEq for CtFindings {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}
impl Eq for CtFindings {}
impl std::hash::Hash for CtFindings {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "ct_findings".hash(state)
    }
}

impl CtFindings {
    pub fn new(lake: Lake, versions: Versions, metrics: Arc<ComputeMetrics>) -> Self {
        Self {
            signature: Signature::string(1, Volatility::Stable),
            lake,
            versions,
            cache: Mutex::default(),
            backends: Backends::default(),
            providers: tokio::sync::OnceCell::new(),
            metrics,
        }
    }

    async fn providers(&self) -> Result<&Providers> {
        self.providers
            .get_or_try_init(|| async {
                let open = |name: &'static str, v: Option<i64>| async move {
                    let Some(v) = v else {
                        return Ok::<_, crate::Error>(None);
                    };
                    match self.lake.table_at_version(name, v).await? {
                        Some(t) => Ok(Some(t.table_provider().await? as Arc<dyn TableProvider>)),
                        None => Ok(None),
                    }
                };
                Ok::<_, crate::Error>(Providers {
                    instances: open(INSTANCES, self.versions.instances).await?,
                    findings: open(FINDINGS, self.versions.findings).await?,
                })
            })
            .await
            .map_err(DataFusionError::from)
    }

    /// Fill the cache for `uids`: from `findings` where materialized, else computed.
    async fn fill(&self, uids: Vec<String>, backend: &Backend) -> Result<()> {
        let providers = self.providers().await?;
        let list = uids
            .iter()
            .map(|u| format!("'{}'", u.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(", ");
        let ctx = SessionContext::new();
        let mut found: HashMap<String, RecordBatch> = HashMap::new();
        if let Some(p) = &providers.findings {
            ctx.register_table(FINDINGS, p.clone())?;
            let batches = ctx
                .sql(&format!(
                    "SELECT * FROM {FINDINGS} WHERE \"SeriesInstanceUID\" IN ({list}) \
                     AND method_version = '{METHOD_VERSION}'"
                ))
                .await?
                .collect()
                .await?;
            // The table may hand strings back as views: cast to the schema written.
            let schema = compute::findings_schema();
            let batches = batches
                .iter()
                .map(|b| {
                    let cols = schema
                        .fields()
                        .iter()
                        .zip(b.columns())
                        .map(|(f, c)| cast(c, f.data_type()))
                        .collect::<std::result::Result<Vec<_>, _>>()?;
                    Ok(RecordBatch::try_new(schema.clone(), cols)?)
                })
                .collect::<Result<Vec<_>>>()?;
            let all = concat_batches(&schema, &batches)?;
            let uid_col = cast(all.column(1), &DataType::Utf8)?;
            let uid_col = uid_col
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("Utf8");
            for u in &uids {
                let mask: BooleanArray = uid_col.iter().map(|v| Some(v == Some(u))).collect();
                let rows = filter_record_batch(&all, &mask)?;
                if rows.num_rows() > 0 {
                    found.insert(u.clone(), rows);
                }
            }
        }
        let missing: Vec<&String> = uids.iter().filter(|u| !found.contains_key(*u)).collect();
        let mut computed: HashMap<String, Option<RecordBatch>> = HashMap::new();
        let mut errors = Vec::new();
        if !missing.is_empty() {
            let mut files: HashMap<String, (String, Vec<String>)> = HashMap::new();
            if let Some(p) = &providers.instances {
                ctx.register_table(INSTANCES, p.clone())?;
                let batches = ctx
                    .sql(&format!(
                        "SELECT collection, \"SeriesInstanceUID\", file_uri FROM {INSTANCES} \
                         WHERE \"SeriesInstanceUID\" IN ({list})"
                    ))
                    .await?
                    .collect()
                    .await?;
                for b in batches {
                    let text = |i: usize| crate::lake::text_column(b.column(i));
                    let (c, u, f) = (text(0)?, text(1)?, text(2)?);
                    for i in 0..b.num_rows() {
                        files
                            .entry(u.value(i).to_string())
                            .or_insert_with(|| (c.value(i).to_string(), Vec::new()))
                            .1
                            .push(f.value(i).to_string());
                    }
                }
            }
            for uid in missing {
                let Some((collection, uris)) = files.remove(uid) else {
                    // Not a series of this lake: NULL, and nothing to record.
                    computed.insert(uid.clone(), None);
                    continue;
                };
                let mut summary = compute::ComputeSummary::default();
                let instance_count = uris.len() as i64;
                match compute::compute_series(&uris, backend, &mut summary).await {
                    Ok(report) => {
                        let rows = tables::findings_batch(&[Computed {
                            collection,
                            series_uid: uid.clone(),
                            instance_count,
                            report,
                        }])?;
                        computed.insert(uid.clone(), Some(rows));
                    }
                    Err((error_kind, message)) => {
                        errors.push(ComputeError {
                            collection,
                            series_uid: uid.clone(),
                            error_kind,
                            message,
                        });
                        computed.insert(uid.clone(), None);
                    }
                }
            }
        }
        if !errors.is_empty() {
            let batch = tables::errors_batch(&errors, &backend.name(), METHOD_VERSION)?;
            self.lake
                .append(
                    COMPUTE_ERRORS,
                    compute::compute_errors_schema(),
                    vec![batch],
                    "ct_findings",
                )
                .await?;
        }
        self.metrics.record(
            found.len(),
            computed.values().filter(|b| b.is_some()).count(),
            errors.len(),
            backend,
        );
        let mut cache = self.cache.lock().expect("not poisoned");
        for (u, b) in found {
            cache.insert(u, Some(b));
        }
        cache.extend(computed);
        Ok(())
    }
}

impl ScalarUDFImpl for CtFindings {
    fn name(&self) -> &str {
        "ct_findings"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(Arc::new(Field::new(
            "item",
            DataType::Struct(item_fields()),
            true,
        ))))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Err(DataFusionError::Internal(
            "ct_findings runs as an async function".into(),
        ))
    }
}

#[async_trait::async_trait]
impl AsyncScalarUDFImpl for CtFindings {
    async fn invoke_async_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let uids = args.args[0].to_array(rows)?;
        let uids = cast(&uids, &DataType::Utf8)?;
        let uids = uids
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("Utf8")
            .clone();
        let setting = args
            .config_options
            .extensions
            .get::<MedlakeOptions>()
            .map(|o| o.device.clone())
            .unwrap_or_default();
        let missing: Vec<String> = {
            let cache = self.cache.lock().expect("not poisoned");
            let mut m: Vec<String> = uids
                .iter()
                .flatten()
                .filter(|u| !cache.contains_key(*u))
                .map(str::to_string)
                .collect();
            m.sort();
            m.dedup();
            m
        };
        if !missing.is_empty() {
            let backend = self.backends.get(&setting, Workload::VolumeOps)?;
            self.fill(missing, &backend).await?;
        }
        let fields = item_fields();
        let schema = compute::findings_schema();
        let first = column(&schema, "kind");
        let cache = self.cache.lock().expect("not poisoned");
        let mut parts: Vec<StructArray> = Vec::new();
        let mut offsets = vec![0i32];
        let mut valid = Vec::with_capacity(rows);
        for u in uids.iter() {
            let batch = u.and_then(|u| cache.get(u).cloned().flatten());
            valid.push(batch.is_some());
            if let Some(b) = batch {
                let cols: Vec<ArrayRef> = (0..fields.len())
                    .map(|i| b.column(first + i).clone())
                    .collect();
                parts.push(StructArray::try_new(fields.clone(), cols, None)?);
                offsets.push(offsets.last().expect("one") + b.num_rows() as i32);
            } else {
                offsets.push(*offsets.last().expect("one"));
            }
        }
        let values: ArrayRef = if parts.is_empty() {
            datafusion::arrow::array::new_empty_array(&DataType::Struct(fields.clone()))
        } else {
            let refs: Vec<&dyn Array> = parts.iter().map(|p| p as &dyn Array).collect();
            concat(&refs)?
        };
        let list = ListArray::try_new(
            Arc::new(Field::new("item", DataType::Struct(fields), true)),
            OffsetBuffer::new(offsets.into()),
            values,
            Some(NullBuffer::from(valid)),
        )?;
        Ok(ColumnarValue::Array(Arc::new(list)))
    }
}
