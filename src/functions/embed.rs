//! `embed`, `predict`, `cosine_similarity` and `similar_series`: the feature library in
//! SQL.
//!
//! ```sql
//! SELECT "SeriesInstanceUID", embed("SeriesInstanceUID") AS v FROM series WHERE "Modality" = 'CT';
//! SELECT * FROM similar_series('1.2.826.0.1.3680043.8.498.1', 5) s JOIN series USING ("SeriesInstanceUID");
//! ```
//!
//! - **`embed(SeriesInstanceUID [, model])`** is the model's output vector as a
//!   `FixedSizeList<Float32>` (the model defaults to the built-in filter bank; its length
//!   must be fixed, which a registered model's `--size` makes it). **`predict(uid,
//!   model)`** is any model's chosen output, flattened, as a `List<Float32>`.
//! - **Cached by (series, model name, model sha256).** Vectors come from `embeddings` when `medlake
//!   compute embeddings` stored them (at the session's table version), else they are
//!   computed, one series at a time (bounded memory), and kept for the session.
//! - **Errors are NULL.** A series the model cannot take (not CT or MR, too few slices, not
//!   one volume, unreadable) gives NULL and a `compute_errors` row; the query goes on.
//! - **`cosine_similarity(a, b)`** of two numeric lists of equal length (f64; NULL when
//!   either is NULL, the lengths differ, or either has no direction).
//! - **`similar_series(uid_or_vector, k [, model])`** is a table of the `k` series whose
//!   embeddings are most similar (cosine) to the series' own embedding (which is then left
//!   out of the result) or to a literal vector: `rank`, `SeriesInstanceUID`, `collection`,
//!   `score`. The search is exact ([`medlake_udfs::similarity`]) over the model's vectors
//!   in `embeddings`, indexed once per table version and process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use datafusion::arrow::array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Float32Builder, Float64Array, Int64Array,
    ListArray, ListBuilder, RecordBatch, StringArray,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionImpl, TableProvider};
use datafusion::common::{plan_err, Result, ScalarValue};
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::async_udf::AsyncScalarUDFImpl;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature,
    TypeSignature, Volatility,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use medlake_udfs::embedding::builtin;
use medlake_udfs::runtime::Backend;
use medlake_udfs::similarity::VectorIndex;

use super::ct_findings::{Backends, ComputeMetrics, MedlakeOptions};
use crate::compute::embeddings::embed_series;
use crate::compute::{self, tables, ComputeError};
use crate::lake::Lake;
use crate::models::ModelEntry;
use crate::tables::{COMPUTE_ERRORS, EMBEDDINGS, INSTANCES};

/// The models a session knows, by name (those in its `models` version, and the built-in).
pub type Models = Arc<crate::models::Registry>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Embed,
    Predict,
}

/// (SeriesInstanceUID, model name, model sha256).
type CacheKey = (String, String, String);

/// `embed` and `predict`.
pub struct EmbedFunc {
    kind: Kind,
    signature: Signature,
    lake: Lake,
    models: Models,
    /// The `instances` and `embeddings` versions this session reads.
    instances_version: Option<i64>,
    embeddings_version: Option<i64>,
    /// (uid, model name, model sha256) → vector (None: could not be computed).
    cache: Mutex<HashMap<CacheKey, Option<Arc<Vec<f32>>>>>,
    backends: Backends,
    metrics: Arc<ComputeMetrics>,
}

impl std::fmt::Debug for EmbedFunc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name())
    }
}
impl PartialEq for EmbedFunc {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}
impl Eq for EmbedFunc {}
impl std::hash::Hash for EmbedFunc {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.kind.hash(state)
    }
}

impl EmbedFunc {
    pub fn new(
        predict: bool,
        lake: Lake,
        models: Models,
        instances_version: Option<i64>,
        embeddings_version: Option<i64>,
        metrics: Arc<ComputeMetrics>,
    ) -> Self {
        // Any, not String: a string signature would coerce the model literal to the
        // uid's string type through a cast, and the name would no longer be a literal
        // when the return type is decided. The types are checked there instead.
        let signature = if predict {
            Signature::one_of(vec![TypeSignature::Any(2)], Volatility::Stable)
        } else {
            Signature::one_of(
                vec![TypeSignature::Any(1), TypeSignature::Any(2)],
                Volatility::Stable,
            )
        };
        EmbedFunc {
            kind: if predict { Kind::Predict } else { Kind::Embed },
            signature,
            lake,
            models,
            instances_version,
            embeddings_version,
            cache: Mutex::default(),
            backends: Backends::default(),
            metrics,
        }
    }

    /// The model a call names (a literal; `embed` defaults to the built-in one).
    fn model_named(&self, name: Option<&str>) -> Result<&ModelEntry> {
        let name = match (name, self.kind) {
            (Some(n), _) => n,
            (None, Kind::Embed) => builtin::NAME,
            (None, Kind::Predict) => return plan_err!("predict needs a model name"),
        };
        self.models.get(name).ok_or_else(|| {
            let known = self.models.names();
            DataFusionError::Plan(format!(
                "{}: no model {name:?} in this lake (models: {})",
                self.name(),
                known.join(", ")
            ))
        })
    }

    /// Fill the cache for `uids` under `entry`: from `embeddings`, else computed.
    async fn fill(&self, uids: Vec<String>, entry: &ModelEntry, backend: &Backend) -> Result<()> {
        let list = uids
            .iter()
            .map(|u| crate::lake::quote(u))
            .collect::<Vec<_>>()
            .join(", ");
        let ctx = SessionContext::new();
        let mut found: HashMap<String, Arc<Vec<f32>>> = HashMap::new();
        if let Some(v) = self.embeddings_version {
            if let Some(t) = self.lake.table_at_version(EMBEDDINGS, v).await? {
                ctx.register_table(
                    EMBEDDINGS,
                    t.table_provider()
                        .await
                        .map_err(|e| DataFusionError::External(Box::new(e)))?,
                )?;
                let sql = format!(
                    "SELECT \"SeriesInstanceUID\", vector FROM {EMBEDDINGS} \
                     WHERE {} AND \"SeriesInstanceUID\" IN ({list})",
                    entry.embeddings_filter()
                );
                for b in ctx.sql(&sql).await?.collect().await? {
                    let uid = crate::lake::text_column(b.column(0)).map_err(to_df)?;
                    let vectors = list_f32(b.column(1))?;
                    for i in 0..b.num_rows() {
                        if let Some(v) = vectors(i) {
                            found.insert(uid.value(i).to_string(), Arc::new(v));
                        }
                    }
                }
            }
        }
        let missing: Vec<&String> = uids.iter().filter(|u| !found.contains_key(*u)).collect();
        let mut computed: HashMap<String, Option<Arc<Vec<f32>>>> = HashMap::new();
        let mut errors = Vec::new();
        if !missing.is_empty() {
            // uid → (collection, modality, files)
            let mut series: HashMap<String, (String, String, Vec<String>)> = HashMap::new();
            if let Some(v) = self.instances_version {
                if let Some(t) = self.lake.table_at_version(INSTANCES, v).await? {
                    ctx.register_table(
                        INSTANCES,
                        t.table_provider()
                            .await
                            .map_err(|e| DataFusionError::External(Box::new(e)))?,
                    )?;
                    let sql = format!(
                        "SELECT collection, \"SeriesInstanceUID\", \"Modality\", file_uri \
                         FROM {INSTANCES} WHERE \"SeriesInstanceUID\" IN ({list})"
                    );
                    for b in ctx.sql(&sql).await?.collect().await? {
                        let text = |i: usize| crate::lake::text_column(b.column(i));
                        let (c, u, m, f) = (
                            text(0).map_err(to_df)?,
                            text(1).map_err(to_df)?,
                            text(2).map_err(to_df)?,
                            text(3).map_err(to_df)?,
                        );
                        for i in 0..b.num_rows() {
                            let modality = if m.is_null(i) { "" } else { m.value(i) };
                            series
                                .entry(u.value(i).to_string())
                                .or_insert_with(|| {
                                    (c.value(i).to_string(), modality.to_string(), Vec::new())
                                })
                                .2
                                .push(f.value(i).to_string());
                        }
                    }
                }
            }
            let loaded = if series.is_empty() {
                None
            } else {
                Some(crate::models::load(entry).await.map_err(to_df)?)
            };
            for uid in missing {
                let Some((collection, modality, uris)) = series.remove(uid) else {
                    // Not a series of this lake: NULL, and nothing to record.
                    computed.insert(uid.clone(), None);
                    continue;
                };
                let result = if modality != "CT" && modality != "MR" {
                    Err((
                        "modality",
                        format!(
                            "modality {modality:?}: model {:?} takes CT or MR volumes",
                            entry.name
                        ),
                    ))
                } else {
                    let mut stages = compute::ComputeSummary::default();
                    let loaded = loaded.clone().expect("loaded when there are series");
                    embed_series(&uris, entry, loaded, backend, &mut stages).await
                };
                match result {
                    Ok(v) => {
                        computed.insert(uid.clone(), Some(Arc::new(v)));
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
            let batch = tables::errors_batch(&errors, &backend.name(), &entry.method_version())
                .map_err(to_df)?;
            self.lake
                .append(
                    COMPUTE_ERRORS,
                    compute::compute_errors_schema(),
                    vec![batch],
                    self.name(),
                )
                .await
                .map_err(to_df)?;
        }
        self.metrics.record(
            found.len(),
            computed.values().filter(|b| b.is_some()).count(),
            errors.len(),
            backend,
        );
        let mut cache = self.cache.lock().expect("not poisoned");
        for (u, v) in found {
            cache.insert((u, entry.name.clone(), entry.sha256.clone()), Some(v));
        }
        for (u, v) in computed {
            cache.insert((u, entry.name.clone(), entry.sha256.clone()), v);
        }
        Ok(())
    }
}

fn to_df(e: crate::Error) -> DataFusionError {
    DataFusionError::from(e)
}

/// Row accessor over a list column of numbers (List, LargeList or FixedSizeList of any
/// float or integer type), as f32 vectors.
fn list_f32(col: &ArrayRef) -> Result<impl Fn(usize) -> Option<Vec<f32>>> {
    let as_list = cast(
        col,
        &DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
    )?;
    let list = as_list
        .as_any()
        .downcast_ref::<ListArray>()
        .expect("a List")
        .clone();
    Ok(move |i: usize| {
        if list.is_null(i) {
            return None;
        }
        let values = list.value(i);
        let values = values
            .as_any()
            .downcast_ref::<Float32Array>()
            .expect("Float32");
        (values.null_count() == 0).then(|| values.values().to_vec())
    })
}

impl ScalarUDFImpl for EmbedFunc {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Embed => "embed",
            Kind::Predict => "predict",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Err(DataFusionError::Internal(
            "return_field_from_args is used".into(),
        ))
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        for f in args.arg_fields {
            if !matches!(
                f.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
            ) {
                return plan_err!(
                    "{}(SeriesInstanceUID [, model]) takes strings, not {}",
                    self.name(),
                    f.data_type()
                );
            }
        }
        let name = match args.scalar_arguments.get(1) {
            None => None,
            Some(Some(v)) => match v.try_as_str().flatten() {
                Some(s) => Some(s),
                None => return plan_err!("{}: the model name must be a string", self.name()),
            },
            Some(None) => {
                return plan_err!(
                    "{}: the model must be a literal name, known when the query is planned",
                    self.name()
                )
            }
        };
        let entry = self.model_named(name)?;
        let item = Arc::new(Field::new("item", DataType::Float32, true));
        let data_type = match self.kind {
            Kind::Predict => DataType::List(item),
            Kind::Embed => match entry.output_dim {
                Some(d) => DataType::FixedSizeList(item, d as i32),
                None => {
                    return plan_err!(
                        "embed: model {:?} has no fixed output length (it was added without \
                         --size); use predict(uid, {:?})",
                        entry.name,
                        entry.name
                    )
                }
            },
        };
        Ok(Arc::new(Field::new(self.name(), data_type, true)))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Err(DataFusionError::Internal(format!(
            "{} runs as an async function",
            self.name()
        )))
    }
}

#[async_trait::async_trait]
impl AsyncScalarUDFImpl for EmbedFunc {
    async fn invoke_async_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let name = match args.args.get(1) {
            Some(ColumnarValue::Scalar(s)) => s.try_as_str().flatten().map(str::to_string),
            Some(ColumnarValue::Array(_)) => {
                return plan_err!("{}: the model must be a literal name", self.name())
            }
            None => None,
        };
        let entry = self.model_named(name.as_deref())?.clone();
        let uids = cast(&args.args[0].to_array(rows)?, &DataType::Utf8)?;
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
        let key = |u: &str| (u.to_string(), entry.name.clone(), entry.sha256.clone());
        let missing: Vec<String> = {
            let cache = self.cache.lock().expect("not poisoned");
            let mut m: Vec<String> = uids
                .iter()
                .flatten()
                .filter(|u| !cache.contains_key(&key(u)))
                .map(str::to_string)
                .collect();
            m.sort();
            m.dedup();
            m
        };
        if !missing.is_empty() {
            let backend = self.backends.get(&setting, entry.workload())?;
            self.fill(missing, &entry, &backend).await?;
        }
        let cache = self.cache.lock().expect("not poisoned");
        let vectors: Vec<Option<Arc<Vec<f32>>>> = uids
            .iter()
            .map(|u| u.and_then(|u| cache.get(&key(u))?.clone()))
            .collect();
        let item = Arc::new(Field::new("item", DataType::Float32, true));
        let out: ArrayRef = match (self.kind, entry.output_dim) {
            (Kind::Embed, Some(dim)) => {
                let mut values = Vec::with_capacity(rows * dim);
                let mut valid = Vec::with_capacity(rows);
                for v in &vectors {
                    match v {
                        Some(v) if v.len() == dim => {
                            values.extend_from_slice(v);
                            valid.push(true);
                        }
                        _ => {
                            values.extend(std::iter::repeat_n(0.0, dim));
                            valid.push(false);
                        }
                    }
                }
                Arc::new(FixedSizeListArray::try_new(
                    item,
                    dim as i32,
                    Arc::new(Float32Array::from(values)),
                    Some(NullBuffer::from(valid)),
                )?)
            }
            _ => {
                let mut b = ListBuilder::new(Float32Builder::new()).with_field(item);
                for v in &vectors {
                    match v {
                        Some(v) => {
                            b.values().append_slice(v);
                            b.append(true);
                        }
                        None => b.append(false),
                    }
                }
                Arc::new(b.finish())
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// `cosine_similarity(a, b)`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CosineSimilarity {
    signature: Signature,
}

impl CosineSimilarity {
    pub fn new() -> Self {
        CosineSimilarity {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl Default for CosineSimilarity {
    fn default() -> Self {
        Self::new()
    }
}

/// One argument of cosine_similarity, as f64 lists (a scalar is one list for every row).
enum Lists {
    Column(ListArray),
    Scalar(Option<Vec<f64>>),
}

impl Lists {
    fn new(v: &ColumnarValue) -> Result<Lists> {
        let target = DataType::List(Arc::new(Field::new("item", DataType::Float64, true)));
        let check = |t: &DataType| match t {
            DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _)
                if f.data_type().is_numeric() =>
            {
                Ok(())
            }
            DataType::Null => Ok(()),
            other => plan_err!("cosine_similarity takes lists of numbers, not {other}"),
        };
        match v {
            ColumnarValue::Array(a) => {
                check(a.data_type())?;
                let l = cast(a, &target)?;
                Ok(Lists::Column(
                    l.as_any()
                        .downcast_ref::<ListArray>()
                        .expect("List")
                        .clone(),
                ))
            }
            ColumnarValue::Scalar(s) => {
                check(&s.data_type())?;
                let a = cast(&s.to_array()?, &target)?;
                let l = a.as_any().downcast_ref::<ListArray>().expect("List");
                Ok(Lists::Scalar(row_f64(l, 0)))
            }
        }
    }

    fn row(&self, i: usize) -> Option<Vec<f64>> {
        match self {
            Lists::Column(l) => row_f64(l, i),
            Lists::Scalar(v) => v.clone(),
        }
    }
}

fn row_f64(l: &ListArray, i: usize) -> Option<Vec<f64>> {
    if l.is_null(i) {
        return None;
    }
    let v = l.value(i);
    let v = v.as_any().downcast_ref::<Float64Array>().expect("Float64");
    (v.null_count() == 0).then(|| v.values().to_vec())
}

impl ScalarUDFImpl for CosineSimilarity {
    fn name(&self) -> &str {
        "cosine_similarity"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (a, b) = (Lists::new(&args.args[0])?, Lists::new(&args.args[1])?);
        let out: Float64Array = (0..args.number_rows)
            .map(|i| {
                let (x, y) = (a.row(i)?, b.row(i)?);
                if x.len() != y.len() {
                    return None;
                }
                let (mut xy, mut xx, mut yy) = (0f64, 0f64, 0f64);
                for (p, q) in x.iter().zip(&y) {
                    xy += p * q;
                    xx += p * p;
                    yy += q * q;
                }
                let norm = (xx * yy).sqrt();
                (norm > 0.0 && norm.is_finite()).then(|| xy / norm)
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// `similar_series(uid_or_vector, k [, model])`.
#[derive(Debug)]
pub struct SimilarSeriesFunc {
    pub lake: Lake,
    pub models: Models,
    pub embeddings_version: Option<i64>,
    /// Under row policies: the series this session may see (the only ones searched).
    pub visibility: Option<Arc<dyn super::guard::SeriesVisibility>>,
}

#[derive(Debug, Clone)]
enum Query {
    Series(String),
    Vector(Vec<f32>),
}

impl TableFunctionImpl for SimilarSeriesFunc {
    fn call(&self, args: &[Expr]) -> Result<Arc<dyn TableProvider>> {
        let usage = "similar_series(SeriesInstanceUID or vector, k [, model])";
        if args.len() < 2 || args.len() > 3 {
            return plan_err!("{usage}: takes 2 or 3 arguments");
        }
        let query = match &args[0] {
            e if super::literal_text(e).is_some() => {
                Query::Series(super::literal_text(e).expect("checked"))
            }
            Expr::Literal(v, _) => Query::Vector(scalar_vector(v).ok_or_else(|| {
                DataFusionError::Plan(format!(
                    "{usage}: the first argument is a series UID or a list of numbers"
                ))
            })?),
            other => {
                return plan_err!(
                    "{usage}: the first argument must be a literal (a UID or an array), not {other}"
                )
            }
        };
        let k = match &args[1] {
            Expr::Literal(v, _) => match cast_i64(v) {
                Some(k) if k > 0 => k as usize,
                _ => return plan_err!("{usage}: k must be a positive whole number"),
            },
            _ => return plan_err!("{usage}: k must be a literal"),
        };
        let name = match args.get(2) {
            Some(e) => match super::literal_text(e) {
                Some(n) => n,
                None => return plan_err!("{usage}: the model must be a literal name"),
            },
            None => builtin::NAME.to_string(),
        };
        let entry = self.models.get(&name).cloned().ok_or_else(|| {
            DataFusionError::Plan(format!("similar_series: no model {name:?} in this lake"))
        })?;
        Ok(Arc::new(SimilarSeries {
            lake: self.lake.clone(),
            embeddings_version: self.embeddings_version,
            entry,
            query,
            k,
            visibility: self.visibility.clone(),
        }))
    }
}

fn cast_i64(v: &ScalarValue) -> Option<i64> {
    match v.cast_to(&DataType::Int64).ok()? {
        ScalarValue::Int64(k) => k,
        _ => None,
    }
}

fn scalar_vector(v: &ScalarValue) -> Option<Vec<f32>> {
    let a = v.to_array().ok()?;
    let f = |t| DataType::List(Arc::new(Field::new("item", t, true)));
    let l = cast(&a, &f(DataType::Float32)).ok()?;
    let l = l.as_any().downcast_ref::<ListArray>()?;
    if l.len() != 1 || l.is_null(0) {
        return None;
    }
    let values = l.value(0);
    let values = values.as_any().downcast_ref::<Float32Array>()?;
    (values.null_count() == 0).then(|| values.values().to_vec())
}

/// One model's vectors in one `embeddings` version, indexed.
struct Indexed {
    index: VectorIndex,
    uids: Vec<String>,
    collections: Vec<String>,
    by_uid: HashMap<String, usize>,
}

/// Indexes by (lake root, embeddings version, model): built once per process.
type IndexCache = Mutex<HashMap<(String, i64, String), Arc<Indexed>>>;

async fn indexed(lake: &Lake, version: i64, entry: &ModelEntry) -> Result<Arc<Indexed>> {
    static CACHE: OnceLock<IndexCache> = OnceLock::new();
    let key = (lake.root().to_string(), version, entry.embeddings_filter());
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(i) = cache.lock().expect("not poisoned").get(&key) {
        return Ok(i.clone());
    }
    let t = lake
        .table_at_version(EMBEDDINGS, version)
        .await
        .map_err(to_df)?
        .ok_or_else(|| DataFusionError::Plan("the lake has no embeddings".into()))?;
    let ctx = SessionContext::new();
    ctx.register_table(
        EMBEDDINGS,
        t.table_provider()
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?,
    )?;
    let sql = format!(
        "SELECT \"SeriesInstanceUID\", collection, vector FROM {EMBEDDINGS} \
         WHERE {} ORDER BY \"SeriesInstanceUID\", collection",
        entry.embeddings_filter()
    );
    let mut stream = ctx.sql(&sql).await?.execute_stream().await?;
    let mut out: Option<Indexed> = None;
    use futures::StreamExt;
    while let Some(b) = stream.next().await {
        let b = b?;
        let uid = crate::lake::text_column(b.column(0)).map_err(to_df)?;
        let coll = crate::lake::text_column(b.column(1)).map_err(to_df)?;
        let vectors = list_f32(b.column(2))?;
        for i in 0..b.num_rows() {
            let Some(v) = vectors(i) else { continue };
            let ix = out.get_or_insert_with(|| Indexed {
                index: VectorIndex::new(v.len()),
                uids: Vec::new(),
                collections: Vec::new(),
                by_uid: HashMap::new(),
            });
            if v.len() != ix.index.dim() {
                return Err(DataFusionError::Execution(format!(
                    "embeddings: model {:?} has vectors of {} and {} values",
                    entry.name,
                    ix.index.dim(),
                    v.len()
                )));
            }
            let at = ix
                .index
                .push(&v)
                .map_err(|e| DataFusionError::External(e.into()))?;
            ix.uids.push(uid.value(i).to_string());
            ix.collections.push(coll.value(i).to_string());
            ix.by_uid.entry(uid.value(i).to_string()).or_insert(at);
        }
    }
    let indexed = Arc::new(out.ok_or_else(|| {
        DataFusionError::Plan(format!(
            "similar_series: no embeddings for model {:?} in this lake version; run \
             `medlake compute embeddings --model {}`",
            entry.name, entry.name
        ))
    })?);
    cache
        .lock()
        .expect("not poisoned")
        .insert(key, indexed.clone());
    Ok(indexed)
}

#[derive(Debug)]
struct SimilarSeries {
    lake: Lake,
    embeddings_version: Option<i64>,
    entry: ModelEntry,
    query: Query,
    k: usize,
    visibility: Option<Arc<dyn super::guard::SeriesVisibility>>,
}

fn similar_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("rank", DataType::Int64, false),
        Field::new("SeriesInstanceUID", DataType::Utf8, false),
        Field::new("collection", DataType::Utf8, false),
        Field::new("score", DataType::Float64, false),
    ]))
}

#[async_trait::async_trait]
impl TableProvider for SimilarSeries {
    fn schema(&self) -> SchemaRef {
        similar_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(version) = self.embeddings_version else {
            return plan_err!(
                "similar_series: the lake has no embeddings; run `medlake compute embeddings`"
            );
        };
        let ix = indexed(&self.lake, version, &self.entry).await?;
        // Under row policies, a series the session may not see is not searched, and as a
        // query it is answered as one without an embedding: its existence is not told.
        let allowed: Option<Vec<bool>> = match &self.visibility {
            None => None,
            Some(v) => {
                let visible = v.visible(&ix.uids).await?;
                Some(ix.uids.iter().map(|u| visible.contains(u)).collect())
            }
        };
        let may_see = |at: usize| allowed.as_ref().is_none_or(|a| a[at]);
        let (query, exclude) = match &self.query {
            Query::Vector(v) => (v.clone(), None),
            Query::Series(uid) => match ix.by_uid.get(uid).filter(|&&at| may_see(at)) {
                Some(&at) => (ix.index.vector(at).to_vec(), Some(at)),
                None => {
                    return plan_err!(
                        "similar_series: series {uid:?} has no embedding for model {:?} in \
                         this lake version; run `medlake compute embeddings --model {}`",
                        self.entry.name,
                        self.entry.name
                    )
                }
            },
        };
        let hits = ix
            .index
            .search_where(&query, self.k, |at| Some(at) != exclude && may_see(at))
            .map_err(|e| DataFusionError::Plan(format!("similar_series: {e}")))?;
        let batch = RecordBatch::try_new(
            similar_schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(1..=hits.len() as i64)),
                Arc::new(
                    hits.iter()
                        .map(|h| Some(ix.uids[h.index].as_str()))
                        .collect::<StringArray>(),
                ),
                Arc::new(
                    hits.iter()
                        .map(|h| Some(ix.collections[h.index].as_str()))
                        .collect::<StringArray>(),
                ),
                Arc::new(
                    hits.iter()
                        .map(|h| Some(h.score as f64))
                        .collect::<Float64Array>(),
                ),
            ],
        )?;
        MemTable::try_new(similar_schema(), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}
