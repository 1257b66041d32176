//! The lake's models: ONNX files and their preprocessing, registered by name.
//!
//! - **`medlake model add`** ([`add_model`]) checks that the file loads (every op and
//!   attribute supported, see `medlake_udfs::model`), stores its bytes in the lake under
//!   `_models/<sha256>.onnx` (so a lake moved or shared keeps its models), and records a
//!   row in `models`: the name, the file's sha256, the preprocessing (`input_spec`, JSON)
//!   and the output read (`output_spec`, JSON, with the output's length when the input
//!   size is fixed). Adding a name again replaces its row (in one commit; the old row
//!   stays reachable through time travel) when the file or spec changed, and does nothing
//!   when neither did.
//! - **The built-in model** (`medlake_udfs::embedding::builtin`, a training-free filter
//!   bank) needs no file: it is always resolvable by name, and `compute embeddings`
//!   records its row the first time it is used.
//! - **Identity is the name and the sha256.** Embeddings are cached and stored by (series,
//!   model name, model sha256), so re-registering a name with another file never mixes
//!   the two, and two names reading different outputs of one file stay apart. A name
//!   re-registered with a changed spec has its stored vectors deleted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::Utc;
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use medlake_udfs::embedding::{self, builtin, Preprocess};
use medlake_udfs::model::Model;
use object_store::{ObjectStoreExt, PutPayload};
use serde::Deserialize;
use sha2::Digest;

use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::tables::MODELS;

/// A registered model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelEntry {
    pub name: String,
    pub sha256: String,
    /// Where the ONNX bytes are (`None` for the built-in model, which is built in memory).
    pub file_uri: Option<String>,
    pub source: String,
    pub preprocess: Preprocess,
    /// The graph output read (`None`: the first).
    pub output: Option<String>,
    /// The output's length for the preprocessing's fixed input size, when known.
    pub output_dim: Option<usize>,
    /// The CPU run's memory for that input size (weights, peak activations), when known
    /// (`peak_node` is not recorded: 0).
    pub memory: Option<medlake_udfs::model::MemoryPlan>,
    pub builtin: bool,
}

impl ModelEntry {
    /// The built-in filter-bank model's entry. Building it means building the model (for
    /// its sha256 and memory plan, tens of milliseconds), so it is made on first use, not
    /// when a session opens.
    pub fn builtin() -> &'static ModelEntry {
        static ENTRY: OnceLock<ModelEntry> = OnceLock::new();
        ENTRY.get_or_init(|| ModelEntry {
            name: builtin::NAME.to_string(),
            sha256: sha256_hex(&builtin::onnx_bytes()),
            file_uri: None,
            source: "built-in".to_string(),
            preprocess: builtin::preprocess(),
            output: None,
            output_dim: Some(builtin::DIM),
            memory: builtin::preprocess()
                .size
                .and_then(|[d, h, w]| builtin::model().memory(&[vec![1, 1, d, h, w]]).ok())
                .map(|m| medlake_udfs::model::MemoryPlan { peak_node: 0, ..m }),
            builtin: true,
        })
    }

    /// The rows of `embeddings` (and the vectors cached) that this entry computed: its
    /// name and file. Two names may share a file (reading another output, say), and a
    /// name re-registered with another file starts afresh.
    pub fn embeddings_filter(&self) -> String {
        format!(
            "model = {} AND model_sha256 = {}",
            crate::lake::quote(&self.name),
            crate::lake::quote(&self.sha256)
        )
    }

    /// How `auto` places it: the built-in filter bank is light next to its preprocessing
    /// (volume passes), a registered network is heavy and stays on the device.
    pub fn workload(&self) -> medlake_udfs::runtime::Workload {
        if self.builtin {
            medlake_udfs::runtime::Workload::VolumeOps
        } else {
            medlake_udfs::runtime::Workload::Network
        }
    }

    /// What `compute_errors.method_version` records for this model.
    pub fn method_version(&self) -> String {
        format!("{}@sha256:{}", self.name, self.sha256)
    }

    fn input_spec_json(&self) -> String {
        let input_shape = self.preprocess.size.map(|[d, h, w]| [1, 1, d, h, w]);
        let memory = self.memory.map(|m| {
            serde_json::json!({
                "weight_bytes": m.weight_bytes,
                "peak_activation_bytes": m.peak_activation_bytes,
            })
        });
        serde_json::json!({
            "preprocess": self.preprocess,
            "input_shape": input_shape,
            "memory": memory,
        })
        .to_string()
    }

    fn output_spec_json(&self) -> String {
        serde_json::json!({ "output": self.output, "dim": self.output_dim }).to_string()
    }
}

pub fn models_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("sha256", DataType::Utf8, false),
        Field::new("file_uri", DataType::Utf8, true),
        Field::new("source", DataType::Utf8, false),
        Field::new("input_spec", DataType::Utf8, false),
        Field::new("output_spec", DataType::Utf8, false),
        Field::new("output_dim", DataType::Int64, true),
        Field::new("builtin", DataType::Boolean, false),
        Field::new(
            "added_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]))
}

/// Lower-case hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The models a lake knows: those recorded in a `models` version, by name, and the
/// built-in model, which resolves by name whether or not it is recorded.
#[derive(Debug, Default)]
pub struct Registry {
    recorded: HashMap<String, ModelEntry>,
}

impl Registry {
    /// The model called `name`: its recorded row, else the built-in model by its name.
    pub fn get(&self, name: &str) -> Option<&ModelEntry> {
        self.recorded
            .get(name)
            .or_else(|| (name == builtin::NAME).then(ModelEntry::builtin))
    }

    /// Every name that resolves, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.recorded.keys().map(String::as_str).collect();
        if !self.recorded.contains_key(builtin::NAME) {
            names.push(builtin::NAME);
        }
        names.sort();
        names
    }
}

/// The models of the lake's newest `models` version.
pub async fn registered(lake: &Lake) -> Result<Registry> {
    let t = lake.table(MODELS).await?;
    registered_in(t).await
}

/// As [`registered`], at a given `models` version (`None`: the table does not exist).
pub async fn registered_at(lake: &Lake, version: Option<i64>) -> Result<Registry> {
    let t = match version {
        Some(v) => lake.table_at_version(MODELS, v).await?,
        None => None,
    };
    registered_in(t).await
}

async fn registered_in(table: Option<deltalake::DeltaTable>) -> Result<Registry> {
    let mut recorded = HashMap::new();
    if let Some(t) = table {
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_table(MODELS, t.table_provider().await?)?;
        let batches = ctx
            .sql(&format!("SELECT * FROM {MODELS}"))
            .await?
            .collect()
            .await?;
        for b in &batches {
            for e in entries_from_batch(b)? {
                recorded.insert(e.name.clone(), e);
            }
        }
    }
    Ok(Registry { recorded })
}

/// The rows of a `models` batch (read back from Delta, so strings may be views).
pub fn entries_from_batch(b: &RecordBatch) -> Result<Vec<ModelEntry>> {
    let text = |name: &str| -> Result<StringArray> {
        let i = b
            .schema()
            .index_of(name)
            .map_err(|_| Error::Invalid(format!("{MODELS}: no column {name}")))?;
        crate::lake::text_column(b.column(i))
    };
    let (name, sha, file, source, input, output) = (
        text("name")?,
        text("sha256")?,
        text("file_uri")?,
        text("source")?,
        text("input_spec")?,
        text("output_spec")?,
    );
    let dim_col = datafusion::arrow::compute::cast(
        b.column(b.schema().index_of("output_dim")?),
        &DataType::Int64,
    )?;
    let dim = dim_col
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("Int64");
    let builtin_col = b.column(b.schema().index_of("builtin")?);
    let builtin = builtin_col
        .as_any()
        .downcast_ref::<BooleanArray>()
        .ok_or_else(|| Error::Invalid(format!("{MODELS}.builtin is not boolean")))?;
    let mut out = Vec::new();
    for i in 0..b.num_rows() {
        #[derive(Deserialize)]
        struct Memory {
            weight_bytes: usize,
            peak_activation_bytes: usize,
        }
        #[derive(Deserialize)]
        struct Input {
            preprocess: Preprocess,
            #[serde(default)]
            memory: Option<Memory>,
        }
        #[derive(Deserialize)]
        struct Output {
            output: Option<String>,
        }
        let bad = |what: &str, e: serde_json::Error| {
            Error::Invalid(format!("{MODELS}: model {:?}: {what}: {e}", name.value(i)))
        };
        let input: Input =
            serde_json::from_str(input.value(i)).map_err(|e| bad("input_spec", e))?;
        let output_spec: Output =
            serde_json::from_str(output.value(i)).map_err(|e| bad("output_spec", e))?;
        out.push(ModelEntry {
            name: name.value(i).to_string(),
            sha256: sha.value(i).to_string(),
            file_uri: (!file.is_null(i)).then(|| file.value(i).to_string()),
            source: source.value(i).to_string(),
            preprocess: input.preprocess,
            output: output_spec.output,
            output_dim: (!dim.is_null(i)).then(|| dim.value(i) as usize),
            memory: input.memory.map(|m| medlake_udfs::model::MemoryPlan {
                weight_bytes: m.weight_bytes,
                peak_activation_bytes: m.peak_activation_bytes,
                peak_node: 0,
            }),
            builtin: builtin.value(i),
        });
    }
    Ok(out)
}

fn entries_batch(entries: &[ModelEntry]) -> Result<RecordBatch> {
    let now = Utc::now().timestamp_micros();
    let col = |f: &dyn Fn(&ModelEntry) -> Option<String>| -> ArrayRef {
        Arc::new(entries.iter().map(f).collect::<StringArray>())
    };
    Ok(RecordBatch::try_new(
        models_schema(),
        vec![
            col(&|e| Some(e.name.clone())),
            col(&|e| Some(e.sha256.clone())),
            col(&|e| e.file_uri.clone()),
            col(&|e| Some(e.source.clone())),
            col(&|e| Some(e.input_spec_json())),
            col(&|e| Some(e.output_spec_json())),
            Arc::new(
                entries
                    .iter()
                    .map(|e| e.output_dim.map(|d| d as i64))
                    .collect::<Int64Array>(),
            ),
            Arc::new(
                entries
                    .iter()
                    .map(|e| Some(e.builtin))
                    .collect::<BooleanArray>(),
            ),
            Arc::new(
                TimestampMicrosecondArray::from(vec![now; entries.len()]).with_timezone("UTC"),
            ),
        ],
    )?)
}

/// Record `entry` in `models`, replacing a row of the same name; nothing is written when
/// the same name is already recorded with the same file and spec. Returns whether it wrote.
pub async fn record(lake: &Lake, entry: &ModelEntry) -> Result<bool> {
    let mut rows: Vec<ModelEntry> = Vec::new();
    if let Some(t) = lake.table(MODELS).await? {
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_table(MODELS, t.table_provider().await?)?;
        for b in ctx
            .sql(&format!("SELECT * FROM {MODELS} ORDER BY name"))
            .await?
            .collect()
            .await?
        {
            rows.extend(entries_from_batch(&b)?);
        }
    }
    if rows.iter().any(|r| r == entry) {
        return Ok(false);
    }
    let replaced = rows.iter().any(|r| r.name == entry.name);
    rows.retain(|r| r.name != entry.name);
    rows.push(entry.clone());
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    if replaced {
        // The name's vectors came from another file or spec: no longer its output (the
        // old rows stay reachable through time travel).
        if let Some(t) = lake.table(crate::tables::EMBEDDINGS).await? {
            t.delete()
                .with_predicate(format!("model = {}", crate::lake::quote(&entry.name)))
                .await
                .map_err(|e| Error::delta(crate::tables::EMBEDDINGS, e))?;
        }
    }
    lake.overwrite(
        MODELS,
        models_schema(),
        vec![entries_batch(&rows)?],
        "model add",
    )
    .await?;
    Ok(true)
}

/// What `medlake model add` was asked.
#[derive(Debug, Clone)]
pub struct AddModel {
    pub name: String,
    pub path: String,
    pub preprocess: Preprocess,
    pub output: Option<String>,
}

/// Check, store and record a model file; see the module docs.
pub async fn add_model(lake: &Lake, add: &AddModel) -> Result<(ModelEntry, bool)> {
    if add.name == builtin::NAME {
        return Err(Error::Invalid(format!(
            "model add: {:?} is the built-in model's name",
            add.name
        )));
    }
    if add.name.is_empty() || add.name.contains(|c: char| c.is_control() || c == '\'') {
        return Err(Error::Invalid(format!(
            "model add: {:?} is not a usable model name",
            add.name
        )));
    }
    let bytes = std::fs::read(&add.path).map_err(|e| Error::io(&add.path, e))?;
    let model = Model::from_bytes(&bytes)
        .map_err(|e| Error::Invalid(format!("model add: {}: {e}", add.path)))?;
    let output = match &add.output {
        Some(o) if !model.output_names().contains(&o.as_str()) => {
            return Err(Error::Invalid(format!(
                "model add: {}: --output {o:?} is not a graph output (outputs: {})",
                add.path,
                model.output_names().join(", ")
            )))
        }
        o => o.clone(),
    };
    let output_dim = output_dim(&model, &add.preprocess, output.as_deref())
        .map_err(|e| Error::Invalid(format!("model add: {}: {e}", add.path)))?;
    let memory = match add.preprocess.size {
        Some([d, h, w]) => Some(medlake_udfs::model::MemoryPlan {
            peak_node: 0,
            ..model
                .check_memory(&[vec![1, 1, d, h, w]])
                .map_err(|e| Error::Invalid(format!("model add: {}: {e}", add.path)))?
        }),
        None => None,
    };
    let sha256 = sha256_hex(&bytes);
    let location = lake
        .root()
        .join(&format!("_models/{sha256}.onnx"))
        .expect("a valid URL segment");
    let (store, path) = crate::ingest::sources::object_store_for(&location)?;
    store
        .put(&path, PutPayload::from(bytes))
        .await
        .map_err(|e| Error::Invalid(format!("{location}: {e}")))?;
    let entry = ModelEntry {
        name: add.name.clone(),
        sha256,
        file_uri: Some(location.to_string()),
        source: add.path.clone(),
        preprocess: add.preprocess.clone(),
        output,
        output_dim,
        memory,
        builtin: false,
    };
    let wrote = record(lake, &entry).await?;
    if wrote {
        lake.record_version("model add").await?;
    }
    Ok((entry, wrote))
}

/// The output's length for the spec's fixed input size (`None` without one), checking on
/// the way that the model takes one single-channel 5-D input.
fn output_dim(
    model: &Model,
    spec: &Preprocess,
    output: Option<&str>,
) -> std::result::Result<Option<usize>, String> {
    let inputs = model.inputs();
    if inputs.len() != 1 {
        return Err(format!(
            "the model takes {} inputs; medlake feeds one volume",
            inputs.len()
        ));
    }
    let dims = &inputs[0].dims;
    if dims.len() != 5 {
        return Err(format!(
            "input {:?} has rank {}; a volume is fed as [1, 1, D, H, W]",
            inputs[0].name,
            dims.len()
        ));
    }
    if let Some(c) = dims[1] {
        if c != 1 {
            return Err(format!(
                "input {:?} has {c} channels; a volume is fed as one",
                inputs[0].name
            ));
        }
    }
    let Some(size) = spec.size else {
        // Without a fixed size every declared spatial dimension must be symbolic or the
        // volume would rarely fit; the length is then known only per series.
        return Ok(None);
    };
    for (d, (want, have)) in dims[2..].iter().zip(size).enumerate() {
        if let Some(w) = want {
            if *w != have {
                return Err(format!(
                    "input {:?} declares spatial dimension {d} = {w} but --size gives {have}",
                    inputs[0].name
                ));
            }
        }
    }
    let shapes = model
        .shapes(&[vec![1, 1, size[0], size[1], size[2]]])
        .map_err(|e| e.to_string())?;
    let names = model.output_names();
    let at = match output {
        Some(o) => names.iter().position(|n| *n == o).expect("checked"),
        None => 0,
    };
    Ok(Some(shapes[at].iter().product()))
}

/// A model's graph, loaded once per process (by sha256) from the lake.
pub async fn load(entry: &ModelEntry) -> Result<Arc<LoadedModel>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<LoadedModel>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(m) = cache.lock().expect("not poisoned").get(&entry.sha256) {
        return Ok(m.clone());
    }
    let loaded = if entry.builtin {
        LoadedModel::Builtin
    } else {
        let uri = entry.file_uri.as_deref().ok_or_else(|| {
            Error::Invalid(format!("model {:?} has no file in the lake", entry.name))
        })?;
        let bytes = crate::compute::read_uri(uri).await?;
        let sha = sha256_hex(&bytes);
        if sha != entry.sha256 {
            return Err(Error::Invalid(format!(
                "model {:?}: {uri} has sha256 {sha}, but `models` records {}",
                entry.name, entry.sha256
            )));
        }
        LoadedModel::Onnx(
            Model::from_bytes(&bytes)
                .map_err(|e| Error::Invalid(format!("model {:?}: {uri}: {e}", entry.name)))?,
        )
    };
    let loaded = Arc::new(loaded);
    cache
        .lock()
        .expect("not poisoned")
        .insert(entry.sha256.clone(), loaded.clone());
    Ok(loaded)
}

/// A model ready to run.
pub enum LoadedModel {
    Builtin,
    Onnx(Model),
}

impl LoadedModel {
    /// The model's output for a volume: the built-in embedding (L2-normalized), or the
    /// chosen output of an ONNX model, flattened.
    pub fn run(
        &self,
        entry: &ModelEntry,
        volume: &medlake_udfs::Volume,
        backend: &medlake_udfs::runtime::Backend,
    ) -> medlake_udfs::Result<Vec<f32>> {
        match self {
            LoadedModel::Builtin => builtin::embed(volume, backend),
            LoadedModel::Onnx(m) => embedding::run_model(
                volume,
                m,
                &entry.preprocess,
                entry.output.as_deref(),
                backend,
            ),
        }
    }
}
