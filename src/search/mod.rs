//! Report search: a tantivy index over the `reports` table, kept in step with it.
//!
//! - **Layout.** One tantivy index per language under `<lake>/_search/reports/<lang>/`
//!   (a remote lake keeps them in a local cache folder), plus `manifest.json` naming the
//!   `reports` table version the indexes reflect. Each index commit carries that version
//!   as its payload too.
//! - **Fields.** `text` (stored, for snippets), `title`, one field per section
//!   (`indication`, `comparison`, `findings`, `impression`), and one field per assertion
//!   status (`affirmed`, `negated`, `uncertain`) holding only the words the negation rules
//!   put in that status (see [`assertion`]). Stretches with one status are separate values,
//!   so a phrase never matches across a status boundary.
//! - **Consistency.** Ingest commits the table first, then the index. Opening the index
//!   compares the manifest with the table; an index that is behind (a crash between the two
//!   commits, a copied lake, a new machine) is rebuilt from the table.

pub mod analyzers;
pub mod assertion;
pub mod query;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tantivy::collector::{Collector, Count, SegmentCollector, TopDocs};
use tantivy::schema::{Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST};
use tantivy::{
    DocAddress, DocId, Index, IndexReader, IndexWriter, Score, SegmentOrdinal, SegmentReader,
    TantivyDocument,
};

pub use assertion::Assertion;

use crate::error::{Error, Result};
use crate::ingest::reports::model::{Report, LANGUAGES, SECTIONS};
use crate::lake::Lake;
use crate::tables::REPORTS;

/// Memory for each index writer: enough to index PadChest (160k reports) in one segment.
const WRITER_HEAP_BYTES: usize = 256 * 1024 * 1024;

/// The fields of one language's index.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    pub collection: Field,
    pub report_id: Field,
    pub title: Field,
    pub sections: [Field; 4],
    pub text: Field,
    pub affirmed: Field,
    pub negated: Field,
    pub uncertain: Field,
}

impl Fields {
    pub fn assertion(&self, a: Assertion) -> Field {
        match a {
            Assertion::Affirmed => self.affirmed,
            Assertion::Negated => self.negated,
            Assertion::Uncertain => self.uncertain,
        }
    }
}

fn schema(language: &str) -> (Schema, Fields) {
    let mut b = Schema::builder();
    let indexing = TextFieldIndexing::default()
        .set_tokenizer(&analyzers::tokenizer_name(language))
        .set_index_option(IndexRecordOption::WithFreqsAndPositions);
    let text_opts = TextOptions::default().set_indexing_options(indexing);
    // Read back, and matched by deletes, through fast-field columns; never searched, so
    // not indexed: an indexed unique key (one term and one posting list per report) took
    // a tenth of an index build's time (see `delete_reports`).
    let collection = b.add_text_field("collection", TextOptions::default().set_fast("raw"));
    let report_id = b.add_text_field("report_id", TextOptions::default().set_fast("raw"));
    let title = b.add_text_field("title", text_opts.clone());
    let sections = SECTIONS.map(|s| b.add_text_field(s, text_opts.clone()));
    let text = b.add_text_field("text", text_opts.clone().set_stored());
    let affirmed = b.add_text_field("affirmed", text_opts.clone());
    let negated = b.add_text_field("negated", text_opts.clone());
    let uncertain = b.add_text_field("uncertain", text_opts);
    (
        b.build(),
        Fields {
            collection,
            report_id,
            title,
            sections,
            text,
            affirmed,
            negated,
            uncertain,
        },
    )
}

/// One language's index.
pub struct LangIndex {
    pub language: String,
    pub index: Index,
    pub fields: Fields,
    reader: IndexReader,
    /// Searches segments in parallel; made on the first search costly enough to use it.
    parallel: std::sync::OnceLock<Option<tantivy::Executor>>,
    /// [`PARALLEL_SEARCH_COST`], but for tests.
    parallel_cost: u64,
}

/// A search whose [`search_cost`] reaches this is spread over the segments in parallel.
/// Below it, handing segments to other threads costs more (tens of microseconds) than it
/// saves: PadChest's counts of single terms and boolean combinations take 0.3 ms in all.
const PARALLEL_SEARCH_COST: u64 = 100_000;

/// About how much posting-list work a search does: each term's document frequency,
/// eight times over where positions are checked (phrases), which is where the time goes
/// (a count of the phrase "sin hallazg" over PadChest: 2 ms in one thread).
fn search_cost(searcher: &tantivy::Searcher, query: &dyn tantivy::query::Query) -> u64 {
    let mut cost = 0u64;
    query.query_terms(&mut |term, positions| {
        let df = searcher.doc_freq(term).unwrap_or(0);
        cost = cost.saturating_add(if positions { df.saturating_mul(8) } else { df });
    });
    cost
}

impl LangIndex {
    fn open_or_create(dir: Option<&Path>, language: &str) -> Result<LangIndex> {
        let (schema, fields) = schema(language);
        let index = match dir {
            None => Index::create_in_ram(schema),
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
                match Index::open_in_dir(dir) {
                    Ok(i) if i.schema() == schema => i,
                    // Missing, or written by another medlake: start again (the table is
                    // the truth; the caller rebuilds from it).
                    _ => {
                        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
                        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
                        Index::create_in_dir(dir, schema)
                            .map_err(|e| tantivy_err(dir.display(), e))?
                    }
                }
            }
        };
        analyzers::register(index.tokenizers(), language);
        let reader = index
            .reader_builder()
            .reload_policy(tantivy::ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| tantivy_err(language, e))?;
        Ok(LangIndex {
            language: language.to_string(),
            index,
            fields,
            reader,
            parallel: std::sync::OnceLock::new(),
            parallel_cost: PARALLEL_SEARCH_COST,
        })
    }

    /// Run a search: on this thread, or over the segments in parallel when it is costly
    /// and there is more than one segment and core.
    fn run<C: tantivy::collector::Collector>(
        &self,
        searcher: &tantivy::Searcher,
        query: &dyn tantivy::query::Query,
        collector: &C,
    ) -> Result<C::Fruit> {
        use tantivy::query::EnableScoring;
        let scoring = if collector.requires_scoring() {
            EnableScoring::enabled_from_searcher(searcher)
        } else {
            EnableScoring::disabled_from_searcher(searcher)
        };
        let single = tantivy::Executor::single_thread();
        let executor = if searcher.segment_readers().len() > 1
            && search_cost(searcher, query) >= self.parallel_cost
        {
            self.parallel
                .get_or_init(|| {
                    let threads = std::thread::available_parallelism()
                        .map(|n| n.get())
                        .unwrap_or(1)
                        .clamp(1, 4);
                    // Without a pool (none could be started), searches stay on one thread.
                    (threads > 1)
                        .then(|| tantivy::Executor::multi_thread(threads, "medlake-search-").ok())
                        .flatten()
                })
                .as_ref()
                .unwrap_or(&single)
        } else {
            &single
        };
        searcher
            .search_with_executor(query, collector, executor, scoring)
            .map_err(|e| tantivy_err(&self.language, e))
    }

    /// The table version recorded by the last commit.
    fn committed_version(&self) -> Option<i64> {
        let meta = self.index.load_metas().ok()?;
        let p: Payload = serde_json::from_str(meta.payload.as_deref()?).ok()?;
        Some(p.table_version)
    }

    fn writer(&self) -> Result<IndexWriter> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4);
        self.index
            .writer_with_num_threads(threads, WRITER_HEAP_BYTES)
            .map_err(|e| tantivy_err(&self.language, e))
    }

    pub fn searcher(&self) -> tantivy::Searcher {
        self.reader.searcher()
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Payload {
    table_version: i64,
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct Manifest {
    table_version: i64,
    languages: Vec<String>,
}

fn tantivy_err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("report index ({what}): {e}"))
}

/// The report index of a lake: one [`LangIndex`] per language present.
pub struct ReportIndex {
    /// `None`: held in memory (a time-travel session's index of an older table version).
    root: Option<PathBuf>,
    langs: BTreeMap<String, LangIndex>,
    /// The `reports` version the index reflects (`None`: no reports yet).
    version: Option<i64>,
}

/// Where a lake's report index lives on this machine.
pub fn index_root(lake: &Lake) -> PathBuf {
    if let Some(root) = lake.local_root() {
        return root.join("_search").join(REPORTS);
    }
    let base = std::env::var_os("MEDLAKE_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("medlake")))
        .or_else(|| std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache/medlake")))
        .unwrap_or_else(|| std::env::temp_dir().join("medlake"));
    let tag = blake3::hash(lake.root().as_str().as_bytes()).to_hex();
    base.join("lakes")
        .join(&tag[..16])
        .join("_search")
        .join(REPORTS)
}

impl ReportIndex {
    /// Open the lake's index, rebuilding it from `reports` when it does not reflect the
    /// table's current version.
    pub async fn open_synced(lake: &Lake) -> Result<ReportIndex> {
        let root = index_root(lake);
        let table = lake.table(REPORTS).await?;
        let table_version = table.as_ref().map(|t| t.version().unwrap_or(0) as i64);
        let manifest: Option<Manifest> = std::fs::read(root.join("manifest.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let mut idx = ReportIndex {
            root: Some(root.clone()),
            langs: BTreeMap::new(),
            version: None,
        };
        if let (Some(m), Some(v)) = (&manifest, table_version) {
            if m.table_version == v {
                let mut ok = true;
                for l in &m.languages {
                    let li = LangIndex::open_or_create(Some(&root.join(l)), l)?;
                    ok &= li.committed_version() == Some(v);
                    idx.langs.insert(l.clone(), li);
                }
                if ok {
                    idx.version = Some(v);
                    return Ok(idx);
                }
            }
        }
        match table {
            Some(t) => {
                idx.rebuild(&t).await?;
            }
            None => {
                // No reports: an index left from an earlier lake at this path is stale.
                if root.exists() {
                    std::fs::remove_dir_all(&root).map_err(|e| Error::io(root.display(), e))?;
                }
            }
        }
        Ok(idx)
    }

    /// Throw the lake's index away and build it again from the `reports` table.
    pub async fn rebuild_lake(lake: &Lake) -> Result<ReportIndex> {
        let root = index_root(lake);
        if root.exists() {
            std::fs::remove_dir_all(&root).map_err(|e| Error::io(root.display(), e))?;
        }
        Self::open_synced(lake).await
    }

    /// An index of a table version held in memory, for sessions that read the past.
    pub async fn in_memory(table: &deltalake::DeltaTable) -> Result<ReportIndex> {
        let mut idx = ReportIndex {
            root: None,
            langs: BTreeMap::new(),
            version: None,
        };
        idx.rebuild(table).await?;
        Ok(idx)
    }

    pub fn version(&self) -> Option<i64> {
        self.version
    }

    pub fn languages(&self) -> impl Iterator<Item = &LangIndex> {
        self.langs.values()
    }

    pub fn language(&self, l: &str) -> Option<&LangIndex> {
        self.langs.get(l)
    }

    fn lang_mut(&mut self, l: &str) -> Result<&mut LangIndex> {
        if !self.langs.contains_key(l) {
            let dir = self.root.as_ref().map(|r| r.join(l));
            let li = LangIndex::open_or_create(dir.as_deref(), l)?;
            self.langs.insert(l.to_string(), li);
        }
        Ok(self.langs.get_mut(l).expect("inserted above"))
    }

    /// Re-index every row of `table` (its loaded version).
    pub async fn rebuild(&mut self, table: &deltalake::DeltaTable) -> Result<()> {
        let version = table.version().unwrap_or(0) as i64;
        let ctx = SessionContext::new();
        ctx.register_table(REPORTS, table.table_provider().await?)?;
        let sections = SECTIONS.join(", ");
        let df = ctx
            .sql(&format!(
                "SELECT collection, report_id, title, {sections}, text, language FROM {REPORTS}"
            ))
            .await?;
        let mut stream = df.execute_stream().await?;
        let mut writers: BTreeMap<String, IndexWriter> = BTreeMap::new();
        // Start from empty indexes for every language known, present or not.
        let known: Vec<String> = self.langs.keys().cloned().collect();
        for l in &known {
            let w = self.langs[l].writer()?;
            w.delete_all_documents().map_err(|e| tantivy_err(l, e))?;
            writers.insert(l.clone(), w);
        }
        let mut spans = Vec::new();
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let rows = BatchRows::new(&batch)?;
            for i in 0..batch.num_rows() {
                let r = rows.report(i);
                let lang = index_language(&r.language);
                if !writers.contains_key(lang) {
                    let li = self.lang_mut(lang)?;
                    let w = li.writer()?;
                    w.delete_all_documents().map_err(|e| tantivy_err(lang, e))?;
                    writers.insert(lang.to_string(), w);
                }
                let li = &self.langs[lang];
                let doc = document(&li.fields, rows.collection(i), &r, lang, &mut spans);
                writers[lang]
                    .add_document(doc)
                    .map_err(|e| tantivy_err(lang, e))?;
            }
        }
        self.commit_all(writers, version)?;
        Ok(())
    }

    /// Stage index changes without committing them: for each report, delete what the
    /// index holds under its key (when the flag says it may hold something) and add its
    /// document. Called as reports arrive, so that building documents overlaps reading;
    /// [`Self::finish`] commits once the table version is known, and dropping the staged
    /// changes discards them.
    pub fn stage_into(
        &mut self,
        staged: &mut Option<Staged>,
        collection: &str,
        reports: &[(&Report, bool)],
    ) -> Result<()> {
        let writers = &mut staged
            .get_or_insert_with(|| Staged {
                writers: BTreeMap::new(),
            })
            .writers;
        let mut needed: HashSet<String> = reports
            .iter()
            .map(|(r, _)| index_language(&r.language).to_string())
            .collect();
        if reports.iter().any(|(_, d)| *d) {
            // A replaced report may have changed language: delete it everywhere.
            needed.extend(self.langs.keys().cloned());
        }
        for lang in needed {
            if let std::collections::btree_map::Entry::Vacant(slot) = writers.entry(lang) {
                let w = self.lang_mut(slot.key())?.writer()?;
                slot.insert(w);
            }
        }
        // Deletes first: a delete removes only documents added before it.
        let replaced: HashSet<String> = reports
            .iter()
            .filter(|(_, d)| *d)
            .map(|(r, _)| r.report_id.clone())
            .collect();
        if !replaced.is_empty() {
            let replaced = Arc::new(replaced);
            for (l, w) in writers.iter() {
                w.delete_query(Box::new(delete_reports(collection, replaced.clone())))
                    .map_err(|e| tantivy_err(l, e))?;
            }
        }
        // Documents are built on every core; the writers' own threads invert them.
        use rayon::prelude::*;
        let langs = &self.langs;
        let writers: &BTreeMap<String, IndexWriter> = writers;
        reports
            .par_iter()
            .try_for_each_init(Vec::new, |spans, (r, _)| {
                let lang = index_language(&r.language);
                let doc = document(&langs[lang].fields, collection, r, lang, spans);
                writers[lang]
                    .add_document(doc)
                    .map(|_| ())
                    .map_err(|e| tantivy_err(lang, e))
            })
    }

    /// Start serializing a staged change (writing its segments) while the caller commits
    /// the table. Nothing becomes visible until [`Self::finish`] commits it with the
    /// table's version; until then a crash leaves only unreferenced segment files, which
    /// the next commit's garbage collection removes.
    pub fn prepare(&self, staged: Staged) -> Result<Prepared> {
        let writers = self.writers_for_all(staged.writers)?;
        let (payload_tx, payload_rx) = std::sync::mpsc::channel::<Option<String>>();
        let worker = std::thread::Builder::new()
            .name("report-index-commit".into())
            .spawn(move || prepare_then_commit(writers, payload_rx))
            .map_err(|e| Error::Invalid(format!("report index commit thread: {e}")))?;
        Ok(Prepared { payload_tx, worker })
    }

    /// Commit a prepared change as the index of table version `version`. An index that
    /// was not at the version before is rebuilt from the table instead.
    pub async fn finish(&mut self, lake: &Lake, prepared: Prepared, version: i64) -> Result<()> {
        let follows = match self.version {
            Some(v) => v + 1 == version,
            None => self.langs.values().all(|l| l.searcher().num_docs() == 0),
        };
        if !follows {
            if let Some(t) = lake.table(REPORTS).await? {
                // The prepared writers hold the index's lock: roll back and release them
                // before the rebuild takes it.
                drop(prepared.complete(None).await?);
                return self.rebuild(&t).await;
            }
        }
        drop(prepared.complete(Some(payload(version))).await?);
        self.committed(version)
    }

    /// The given writers, plus one for every other language (which records the version).
    fn writers_for_all(
        &self,
        mut writers: BTreeMap<String, IndexWriter>,
    ) -> Result<BTreeMap<String, IndexWriter>> {
        for (l, li) in &self.langs {
            if !writers.contains_key(l) {
                writers.insert(l.clone(), li.writer()?);
            }
        }
        Ok(writers)
    }

    /// Commit every language's writer with the version as payload, then write the manifest
    /// (last, so that a crash before it leaves an index that the next open rebuilds).
    fn commit_all(&mut self, writers: BTreeMap<String, IndexWriter>, version: i64) -> Result<()> {
        let writers = self.writers_for_all(writers)?;
        drop(commit_writers(writers, &payload(version))?);
        self.committed(version)
    }

    /// After the writers committed: readers see the new segments, and the manifest names
    /// the version.
    fn committed(&mut self, version: i64) -> Result<()> {
        for (l, li) in &self.langs {
            li.reader.reload().map_err(|e| tantivy_err(l, e))?;
        }
        self.version = Some(version);
        if let Some(root) = &self.root {
            let m = Manifest {
                table_version: version,
                languages: self.langs.keys().cloned().collect(),
            };
            let tmp = root.join("manifest.json.tmp");
            std::fs::create_dir_all(root).map_err(|e| Error::io(root.display(), e))?;
            std::fs::write(
                &tmp,
                serde_json::to_vec(&m).expect("the manifest serializes"),
            )
            .map_err(|e| Error::io(tmp.display(), e))?;
            std::fs::rename(&tmp, root.join("manifest.json"))
                .map_err(|e| Error::io(root.display(), e))?;
        }
        Ok(())
    }
}

fn payload(version: i64) -> String {
    serde_json::to_string(&Payload {
        table_version: version,
    })
    .expect("the payload serializes")
}

/// Commit each writer with the payload. Merges triggered by the commit are not waited for:
/// the committed segments are complete, and a merge cut short by the process ending is
/// discarded. The writers are handed back so that the caller decides when they drop.
fn commit_writers(
    writers: BTreeMap<String, IndexWriter>,
    payload: &str,
) -> Result<Vec<IndexWriter>> {
    let (tx, rx) = std::sync::mpsc::channel();
    tx.send(Some(payload.to_string()))
        .expect("the receiver is alive");
    prepare_then_commit(writers, rx)
}

/// Serialize every writer's segments (`prepare_commit`, the heavy part), then wait for the
/// payload: commit with it, or roll back when none comes (`None`, or the sender dropped).
fn prepare_then_commit(
    writers: BTreeMap<String, IndexWriter>,
    payload: std::sync::mpsc::Receiver<Option<String>>,
) -> Result<Vec<IndexWriter>> {
    let mut writers: Vec<(String, IndexWriter)> = writers.into_iter().collect();
    let mut prepared = Vec::with_capacity(writers.len());
    for (l, w) in writers.iter_mut() {
        let l: &str = l;
        let p = w.prepare_commit().map_err(|e| tantivy_err(l, e))?;
        prepared.push((l, p));
    }
    match payload.recv() {
        Ok(Some(payload)) => {
            for (l, mut p) in prepared {
                p.set_payload(&payload);
                p.commit().map_err(|e| tantivy_err(l, e))?;
            }
        }
        Ok(None) | Err(_) => {
            for (l, p) in prepared {
                p.abort().map_err(|e| tantivy_err(l, e))?;
            }
        }
    }
    Ok(writers.into_iter().map(|(_, w)| w).collect())
}

/// Index changes added but not committed (see [`ReportIndex::stage_into`]).
pub struct Staged {
    writers: BTreeMap<String, IndexWriter>,
}

/// Staged changes whose segments are being written on a thread of their own (see
/// [`ReportIndex::prepare`]). Dropping it rolls the changes back.
pub struct Prepared {
    payload_tx: std::sync::mpsc::Sender<Option<String>>,
    worker: std::thread::JoinHandle<Result<Vec<IndexWriter>>>,
}

impl Prepared {
    /// Commit with the payload (or roll back with `None`), and wait for it; the writers
    /// come back so that the caller decides when they drop.
    async fn complete(self, payload: Option<String>) -> Result<Vec<IndexWriter>> {
        // A send fails only when the worker has already stopped on an error; the join
        // below reports that error.
        let _ = self.payload_tx.send(payload);
        let worker = self.worker;
        tokio::task::spawn_blocking(move || worker.join())
            .await
            .map_err(|e| Error::Invalid(format!("report index commit: {e}")))?
            .map_err(|_| Error::Invalid("report index commit: the thread panicked".into()))?
    }
}

/// Languages without an analyzer of their own are indexed as English.
fn index_language(l: &str) -> &str {
    LANGUAGES.iter().find(|x| **x == l).copied().unwrap_or("en")
}

/// The documents of `collection` whose `report_id` is one of `ids`, found through the
/// fast-field columns: per segment, each id's term ordinal is looked up once in the
/// column's dictionary, then each document's ordinal is checked against that set.
fn delete_reports(
    collection: &str,
    ids: Arc<HashSet<String>>,
) -> tantivy::query::doc_predicate_query::DocPredicateQuery {
    let collection = collection.to_string();
    let per_segment = move |segment: &SegmentReader| -> tantivy::Result<_> {
        let fast = segment.fast_fields();
        let (Some(collections), Some(report_ids)) =
            (fast.str("collection")?, fast.str("report_id")?)
        else {
            return Ok(None);
        };
        let Some(collection_ord) = collections.dictionary().term_ord(&collection)? else {
            return Ok(None);
        };
        let mut ords = HashSet::with_capacity(ids.len());
        for id in ids.iter() {
            if let Some(ord) = report_ids.dictionary().term_ord(id)? {
                ords.insert(ord);
            }
        }
        Ok((!ords.is_empty()).then_some((collections, collection_ord, report_ids, ords)))
    };
    tantivy::query::doc_predicate_query::FunctionPredicate::from(move |segment: &SegmentReader| {
        let found = per_segment(segment)?;
        Ok(move |doc: DocId| {
            found
                .as_ref()
                .is_some_and(|(collections, c, report_ids, ords)| {
                    report_ids
                        .ords()
                        .first(doc)
                        .is_some_and(|o| ords.contains(&o))
                        && collections.ords().first(doc) == Some(*c)
                })
        })
    })
    .into()
}

/// The index document of a report: its fields, and its words by assertion status.
fn document(
    f: &Fields,
    collection: &str,
    r: &Report,
    lang: &str,
    spans: &mut Vec<assertion::Span>,
) -> TantivyDocument {
    let mut d = TantivyDocument::new();
    d.add_text(f.collection, collection);
    d.add_text(f.report_id, &r.report_id);
    if let Some(t) = &r.title {
        d.add_text(f.title, t);
    }
    for (field, s) in f.sections.iter().zip(&r.sections) {
        if let Some(s) = s {
            d.add_text(*field, s);
        }
    }
    d.add_text(f.text, &r.text);
    if let Some(rules) = assertion::Rules::builtin(lang) {
        spans.clear();
        rules.annotate_into(&r.text, spans);
        for s in spans.iter() {
            if let Some(piece) = r.text.get(s.start..s.end) {
                d.add_text(f.assertion(s.assertion), piece);
            }
        }
    } else {
        d.add_text(f.affirmed, &r.text);
    }
    d
}

/// Row access to a batch of (collection, report_id, title, sections..., text, language).
struct BatchRows {
    cols: Vec<datafusion::arrow::array::StringArray>,
}

impl BatchRows {
    fn new(b: &RecordBatch) -> Result<Self> {
        let cols = (0..b.num_columns())
            .map(|i| crate::lake::text_column(b.column(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(BatchRows { cols })
    }

    fn opt(&self, c: usize, i: usize) -> Option<String> {
        let a = &self.cols[c];
        a.is_valid(i).then(|| a.value(i).to_string())
    }

    fn collection(&self, i: usize) -> &str {
        self.cols[0].value(i)
    }

    fn report(&self, i: usize) -> Report {
        Report {
            report_id: self.cols[1].value(i).to_string(),
            title: self.opt(2, i),
            sections: [3, 4, 5, 6].map(|c| self.opt(c, i)),
            text: self.opt(7, i).unwrap_or_default(),
            language: self.opt(8, i).unwrap_or_else(|| "en".into()),
            ..Default::default()
        }
    }
}

/// A search, as `report_search` and `text_match` ask for it.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    pub query: String,
    /// Search only words in this assertion status (default: all words).
    pub assertion: Option<Assertion>,
    /// Search only this language's reports (default: every language).
    pub language: Option<String>,
    /// The field searched by terms without a `field:` prefix (default `text`).
    pub default_field: Option<String>,
    /// Top k by score; `None` for every match.
    pub limit: Option<usize>,
    pub snippets: bool,
    pub snippet_chars: Option<usize>,
}

/// One match.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub collection: String,
    pub report_id: String,
    pub score: f32,
    pub snippet: Option<String>,
    pub language: String,
}

/// Collects every match with its score (a top-k heap the size of the index would do the
/// same work with more memory).
struct AllScored;

struct AllScoredSegment {
    ord: SegmentOrdinal,
    hits: Vec<(Score, DocAddress)>,
}

impl Collector for AllScored {
    type Fruit = Vec<(Score, DocAddress)>;
    type Child = AllScoredSegment;
    fn for_segment(&self, ord: SegmentOrdinal, _: &SegmentReader) -> tantivy::Result<Self::Child> {
        Ok(AllScoredSegment {
            ord,
            hits: Vec::new(),
        })
    }
    fn requires_scoring(&self) -> bool {
        true
    }
    fn merge_fruits(&self, fruits: Vec<Self::Fruit>) -> tantivy::Result<Self::Fruit> {
        Ok(fruits.concat())
    }
}

impl SegmentCollector for AllScoredSegment {
    type Fruit = Vec<(Score, DocAddress)>;
    fn collect(&mut self, doc: DocId, score: Score) {
        self.hits.push((score, DocAddress::new(self.ord, doc)));
    }
    fn harvest(self) -> Self::Fruit {
        self.hits
    }
}

impl ReportIndex {
    /// Run a search over every language index (or the one asked for); hits come back
    /// ordered by score, best first.
    pub fn search(&self, req: &SearchRequest) -> Result<Vec<Hit>> {
        let mut hits = Vec::new();
        for li in self.targets(req)? {
            let searcher = li.searcher();
            let built = query::build(li, req)?;
            let found: Vec<(Score, DocAddress)> = match req.limit {
                Some(0) => Vec::new(),
                Some(k) => li.run(
                    &searcher,
                    &*built.query,
                    &TopDocs::with_limit(k).order_by_score(),
                )?,
                None => li.run(&searcher, &*built.query, &AllScored)?,
            };
            let snippets = if req.snippets {
                let mut g = snippet_generator(&searcher, &*built.snippet_query, li)
                    .map_err(|e| tantivy_err(&li.language, e))?;
                if let Some(n) = req.snippet_chars {
                    g.set_max_num_chars(n);
                }
                Some(g)
            } else {
                None
            };
            let mut ids = FastIds::default();
            for (score, addr) in found {
                let (collection, report_id) = ids.get(&searcher, addr, &li.fields)?;
                let snippet = match &snippets {
                    Some(g) => {
                        let doc: TantivyDocument = searcher
                            .doc(addr)
                            .map_err(|e| tantivy_err(&li.language, e))?;
                        Some(g.snippet_from_doc(&doc).to_html())
                    }
                    None => None,
                };
                hits.push(Hit {
                    collection,
                    report_id,
                    score,
                    snippet,
                    language: li.language.clone(),
                });
            }
        }
        hits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.report_id.cmp(&b.report_id))
        });
        if let Some(k) = req.limit {
            hits.truncate(k);
        }
        Ok(hits)
    }

    /// How many reports match, without scoring.
    pub fn count(&self, req: &SearchRequest) -> Result<usize> {
        let mut n = 0;
        for li in self.targets(req)? {
            let built = query::build(li, req)?;
            n += li.run(&li.searcher(), &*built.query, &Count)?;
        }
        Ok(n)
    }

    /// The (collection, report_id) of every match, without scoring.
    pub fn matching_keys(&self, req: &SearchRequest) -> Result<HashSet<(String, String)>> {
        let mut r = req.clone();
        r.limit = None;
        r.snippets = false;
        Ok(self
            .search(&r)?
            .into_iter()
            .map(|h| (h.collection, h.report_id))
            .collect())
    }

    fn targets(&self, req: &SearchRequest) -> Result<Vec<&LangIndex>> {
        match &req.language {
            Some(l) => {
                if !LANGUAGES.contains(&l.as_str()) {
                    return Err(Error::Invalid(format!(
                        "report search: language {l:?} is not one of {}",
                        LANGUAGES.join(", ")
                    )));
                }
                Ok(self.langs.get(l).into_iter().collect())
            }
            None => Ok(self.langs.values().collect()),
        }
    }
}

/// Reads ids from the fast-field columns, one segment at a time.
#[derive(Default)]
struct FastIds {
    segment: Option<(
        SegmentOrdinal,
        tantivy::columnar::StrColumn,
        tantivy::columnar::StrColumn,
    )>,
    buf: String,
}

impl FastIds {
    fn get(
        &mut self,
        searcher: &tantivy::Searcher,
        addr: DocAddress,
        f: &Fields,
    ) -> Result<(String, String)> {
        if self.segment.as_ref().map(|s| s.0) != Some(addr.segment_ord) {
            let ff = searcher.segment_reader(addr.segment_ord).fast_fields();
            let name = |fld| searcher.schema().get_field_name(fld).to_string();
            let col = |fld| -> Result<tantivy::columnar::StrColumn> {
                ff.str(&name(fld))
                    .map_err(|e| tantivy_err("fast field", e))?
                    .ok_or_else(|| tantivy_err("fast field", "missing"))
            };
            self.segment = Some((addr.segment_ord, col(f.collection)?, col(f.report_id)?));
        }
        let (_, c, r) = self.segment.as_ref().expect("set above");
        let mut read = |col: &tantivy::columnar::StrColumn| -> String {
            self.buf.clear();
            if let Some(ord) = col.term_ords(addr.doc_id).next() {
                let _ = col.ord_to_str(ord, &mut self.buf);
            }
            self.buf.clone()
        };
        let collection = read(c);
        let report_id = read(r);
        Ok((collection, report_id))
    }
}

/// Shared handle, for SQL functions.
pub type SharedIndex = Arc<ReportIndex>;

/// Which of these texts match a query: the row-by-row form of `text_match`, through a
/// throw-away in-memory index (English analysis), so that its answers follow the same
/// query language as the lake index.
pub fn match_rows(texts: &datafusion::arrow::array::StringArray, query: &str) -> Result<Vec<bool>> {
    let mut b = Schema::builder();
    let indexing = TextFieldIndexing::default()
        .set_tokenizer(&analyzers::tokenizer_name("en"))
        .set_index_option(IndexRecordOption::WithFreqsAndPositions);
    let text = b.add_text_field(
        "text",
        TextOptions::default().set_indexing_options(indexing),
    );
    let row = b.add_u64_field("row", FAST);
    let index = Index::create_in_ram(b.build());
    analyzers::register(index.tokenizers(), "en");
    let mut w: IndexWriter = index
        .writer_with_num_threads(1, 15_000_000)
        .map_err(|e| tantivy_err("text_match", e))?;
    for i in 0..texts.len() {
        if texts.is_valid(i) {
            let mut d = TantivyDocument::new();
            d.add_text(text, texts.value(i));
            d.add_u64(row, i as u64);
            w.add_document(d)
                .map_err(|e| tantivy_err("text_match", e))?;
        }
    }
    w.commit().map_err(|e| tantivy_err("text_match", e))?;
    let reader = index.reader().map_err(|e| tantivy_err("text_match", e))?;
    let searcher = reader.searcher();
    let mut parser = tantivy::query::QueryParser::for_index(&index, vec![text]);
    parser.set_conjunction_by_default();
    let q = parser
        .parse_query(query)
        .map_err(|e| Error::Invalid(format!("text_match: cannot parse {query:?}: {e}")))?;
    let docs = searcher
        .search(&*q, &tantivy::collector::DocSetCollector)
        .map_err(|e| tantivy_err("text_match", e))?;
    let mut out = vec![false; texts.len()];
    for addr in docs {
        let col = searcher
            .segment_reader(addr.segment_ord)
            .fast_fields()
            .u64("row")
            .map_err(|e| tantivy_err("text_match", e))?;
        if let Some(r) = col.first(addr.doc_id) {
            out[r as usize] = true;
        }
    }
    Ok(out)
}

/// tantivy's `SnippetGenerator::create`, less the stop words of a synonym's phrase
/// ("enlargement of the cardiac silhouette"), which would otherwise be marked wherever
/// they occur. A query of stop words only keeps them.
fn snippet_generator(
    searcher: &tantivy::Searcher,
    query: &dyn tantivy::query::Query,
    li: &LangIndex,
) -> tantivy::Result<tantivy::snippet::SnippetGenerator> {
    use tantivy::tokenizer::{Language, RawTokenizer, StopWordFilter, TextAnalyzer};
    let field = li.fields.text;
    let mut terms = std::collections::BTreeSet::new();
    query.query_terms(&mut |term, _| {
        if term.field() == field {
            terms.insert(term.clone());
        }
    });
    let mut scored = std::collections::BTreeMap::new();
    for term in &terms {
        let value = term.value();
        let Some(text) = value.as_str() else {
            continue;
        };
        let doc_freq = searcher.doc_freq(term)?;
        if doc_freq > 0 {
            scored.insert(text.to_string(), 1.0 / (1.0 + doc_freq as f32));
        }
    }
    let stop = match li.language.as_str() {
        "en" => StopWordFilter::new(Language::English),
        "es" => StopWordFilter::new(Language::Spanish),
        _ => None,
    };
    if let Some(stop) = stop {
        let mut a = TextAnalyzer::builder(RawTokenizer::default())
            .filter(stop)
            .build();
        let mut is_stop = |w: &str| !a.token_stream(w).advance();
        let content: std::collections::BTreeMap<_, _> = scored
            .iter()
            .filter(|(w, _)| !is_stop(w))
            .map(|(w, s)| (w.clone(), *s))
            .collect();
        if !content.is_empty() {
            scored = content;
        }
    }
    let tokenizer = searcher.index().tokenizer_for_field(field)?;
    Ok(tantivy::snippet::SnippetGenerator::new(
        scored, tokenizer, field, 150,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts and top hits (with their scores) are the same whether segments are searched
    /// one after the other or in parallel.
    #[test]
    fn parallel_segment_search_gives_the_single_threaded_results() {
        let mut li = LangIndex::open_or_create(None, "en").unwrap();
        let mut w: IndexWriter = li.index.writer_with_num_threads(1, 15_000_000).unwrap();
        let texts = [
            "Small left pleural effusion.",
            "No pleural effusion. Heart size normal.",
            "Pleural thickening; the effusion has resolved.",
            "Right pneumothorax and a small pleural effusion, pleural effusion increasing.",
            "Normal chest.",
        ];
        for segment in 0..3 {
            for (i, t) in texts.iter().enumerate().skip(segment) {
                let mut d = TantivyDocument::new();
                d.add_text(li.fields.collection, "c");
                d.add_text(li.fields.report_id, format!("r{segment}_{i}"));
                d.add_text(li.fields.text, t);
                w.add_document(d).unwrap();
            }
            w.commit().unwrap();
        }
        li.reader.reload().unwrap();
        let searcher = li.searcher();
        assert_eq!(searcher.segment_readers().len(), 3);
        for q in [
            "\"pleural effusion\"",
            "pleural OR pneumothorax",
            "effusion -normal",
        ] {
            let req = SearchRequest {
                query: q.to_string(),
                ..Default::default()
            };
            let built = query::build(&li, &req).unwrap();
            let top = TopDocs::with_limit(4).order_by_score();
            li.parallel_cost = u64::MAX;
            let one = (
                li.run(&searcher, &*built.query, &Count).unwrap(),
                li.run(&searcher, &*built.query, &top).unwrap(),
            );
            assert!(li.parallel.get().is_none(), "{q}: the pool was not needed");
            li.parallel_cost = 0;
            let all = (
                li.run(&searcher, &*built.query, &Count).unwrap(),
                li.run(&searcher, &*built.query, &top).unwrap(),
            );
            if std::thread::available_parallelism().is_ok_and(|n| n.get() > 1) {
                assert!(
                    li.parallel.get().is_some_and(|p| p.is_some()),
                    "{q}: no pool"
                );
            }
            assert!(one.0 > 0, "{q}");
            assert_eq!(one, all, "{q}");
            li.parallel = std::sync::OnceLock::new();
        }
    }

    /// Deletes by (collection, report_id) within one segment, where both collections'
    /// documents share the fast-field dictionaries.
    #[test]
    fn delete_reports_matches_its_own_collection_only() {
        let (schema, f) = schema("en");
        let index = Index::create_in_ram(schema);
        analyzers::register(index.tokenizers(), "en");
        let mut w: IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
        for (collection, id) in [("a", "r1"), ("b", "r1"), ("a", "r2"), ("b", "r3")] {
            let mut d = TantivyDocument::new();
            d.add_text(f.collection, collection);
            d.add_text(f.report_id, id);
            d.add_text(f.text, "small pneumothorax");
            w.add_document(d).unwrap();
        }
        w.commit().unwrap();
        let ids = HashSet::from(["r1".to_string(), "r3".to_string(), "r9".to_string()]);
        w.delete_query(Box::new(delete_reports("a", Arc::new(ids))))
            .unwrap();
        w.commit().unwrap();
        let searcher = index.reader().unwrap().searcher();
        assert_eq!(searcher.segment_readers().len(), 1);
        let mut alive = Vec::new();
        for segment in searcher.segment_readers() {
            let fast = segment.fast_fields();
            let collections = fast.str("collection").unwrap().unwrap();
            let report_ids = fast.str("report_id").unwrap().unwrap();
            for doc in segment.doc_ids_alive() {
                let (mut c, mut id) = (String::new(), String::new());
                collections
                    .ord_to_str(collections.ords().first(doc).unwrap(), &mut c)
                    .unwrap();
                report_ids
                    .ord_to_str(report_ids.ords().first(doc).unwrap(), &mut id)
                    .unwrap();
                alive.push((c, id));
            }
        }
        alive.sort();
        let expected = [("a", "r2"), ("b", "r1"), ("b", "r3")];
        assert_eq!(
            alive,
            expected.map(|(c, id)| (c.to_string(), id.to_string()))
        );
    }
}
