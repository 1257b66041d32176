//! `medlake ingest reports`: radiology reports into the `reports` table and its search
//! index.
//!
//! Reports are keyed by (`collection`, `report_id`):
//! - the same key with the same content is a duplicate, skipped and counted;
//! - the same key with new content replaces the old row in one MERGE commit; the old row
//!   stays reachable through time travel (`--as-of`, `as_of()`);
//! - within one run, the last report read for a key wins.
//!
//! Each commit to `reports` is followed by the matching change to the search index, which
//! records the table version it reflects (see [`crate::search`]). A run killed between the
//! two leaves an index that is behind; the next open rebuilds it from the table.

pub mod formats;
pub mod model;
pub mod sr;

use foldhash::HashMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use datafusion::common::Column;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::Expr;
use datafusion::prelude::SessionContext;
use serde::Serialize;

pub use formats::{Format, Mapping};
pub use model::{reports_schema, Report};

use super::ErrorRow;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::search::ReportIndex;
use crate::tables::REPORTS;

/// The name of this source in `ingest_errors.source`.
pub const SOURCE: &str = "reports";

/// Options of one `ingest reports` run.
#[derive(Debug, Clone)]
pub struct ReportIngestOptions {
    pub collection: String,
    /// `None`: from each file's name.
    pub format: Option<Format>,
    /// The language of reports whose source does not say (`en`, `es`, `zh`).
    pub language: String,
    pub mapping: Mapping,
    /// Days either side of `report_date` within which a report links to a study of the
    /// same patient, when no StudyInstanceUID or AccessionNumber matches.
    pub link_window_days: i32,
    /// Reports per commit.
    pub batch_size: usize,
    pub progress: bool,
    /// Pseudonymize the identifiers and scrub the text (`--deidentify basic`); see
    /// [`crate::ingest::deidentify`]. Only `retain_dates` matters to reports.
    pub deidentify: Option<crate::ingest::deidentify::ProfileOptions>,
}

impl Default for ReportIngestOptions {
    fn default() -> Self {
        ReportIngestOptions {
            collection: "default".into(),
            format: None,
            language: "en".into(),
            mapping: Mapping::default(),
            link_window_days: 3,
            batch_size: 200_000,
            progress: std::io::stdout().is_terminal(),
            deidentify: None,
        }
    }
}

/// What an `ingest reports` run did. `records_seen = ingested + duplicates + errors`;
/// `replaced` counts the ingested reports that replaced an older version.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ReportIngestSummary {
    pub files_seen: u64,
    pub records_seen: u64,
    pub ingested: u64,
    pub replaced: u64,
    pub duplicates: u64,
    pub errors: u64,
    /// Reports ingested with a recorded problem (e.g. invalid UTF-8 replaced).
    pub warnings: u64,
    pub seconds: f64,
    pub lake_version: i64,
}

/// A report offered and not yet committed: the report, its content hash, and whether it
/// replaces a row already in the lake.
type Pending = (Report, String, bool);

/// Offers reports to the lake: decides duplicate / new / replacement, and commits them with
/// the index change. Shared by `ingest reports` and by `ingest dicom` (for SR documents).
pub struct ReportWriter {
    collection: String,
    window_days: i32,
    /// report_id → content_hash of the reports of this collection already in the lake.
    known: HashMap<String, String>,
    pending: Vec<Pending>,
    pending_index: HashMap<String, usize>,
    replaces: usize,
    errors: Vec<ErrorRow>,
    recorded: std::collections::HashSet<(String, String)>,
    index: ReportIndex,
    /// Index changes for `pending[..staged_upto]`, not committed yet.
    staged: Option<crate::search::Staged>,
    staged_upto: usize,
    /// Pending reports replaced (within this run) after they were staged.
    restage: Vec<usize>,
    /// The last flush's reports and their ids, kept to be freed when the writer is dropped.
    spent: (Vec<Pending>, HashMap<String, usize>),
}

impl Drop for ReportWriter {
    /// A run's reports and ids are hundreds of thousands of small allocations, and freeing
    /// them took a tenth of a second after PadChest's last commit. They are freed on a
    /// blocking thread, which a command ending meanwhile need not wait for.
    fn drop(&mut self) {
        let spent = (
            std::mem::take(&mut self.spent),
            std::mem::take(&mut self.pending),
            std::mem::take(&mut self.pending_index),
            std::mem::take(&mut self.known),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn_blocking(move || drop(spent));
        }
    }
}

/// What became of one offered report.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    New,
    Replacement,
    Duplicate,
}

impl ReportWriter {
    /// Bring the index in step with the table, and learn what the lake already holds.
    pub async fn open(lake: &Lake, collection: &str, window_days: i32) -> Result<Self> {
        let index = ReportIndex::open_synced(lake).await?;
        let mut known = HashMap::default();
        if let Some(table) = lake.table(REPORTS).await? {
            let ctx = SessionContext::new();
            ctx.register_table(REPORTS, table.table_provider().await?)?;
            let df = ctx
                .table(REPORTS)
                .await?
                .filter(
                    datafusion::logical_expr::col("collection")
                        .eq(datafusion::logical_expr::lit(collection)),
                )?
                .select_columns(&["report_id", "content_hash"])?;
            for b in df.collect().await? {
                let id = crate::lake::text_column(b.column(0))?;
                let h = crate::lake::text_column(b.column(1))?;
                for i in 0..b.num_rows() {
                    known.insert(id.value(i).to_string(), h.value(i).to_string());
                }
            }
        }
        Ok(ReportWriter {
            collection: collection.to_string(),
            window_days,
            known,
            pending: Vec::new(),
            pending_index: HashMap::default(),
            replaces: 0,
            errors: Vec::new(),
            recorded: super::recorded_errors(lake, SOURCE).await?,
            index,
            staged: None,
            staged_upto: 0,
            restage: Vec::new(),
            spent: Default::default(),
        })
    }

    pub fn offer(&mut self, report: Report) -> Offer {
        let hash = report.content_hash();
        if let Some(&i) = self.pending_index.get(&report.report_id) {
            if self.pending[i].1 == hash {
                return Offer::Duplicate;
            }
            // Read twice in one run with different content: the later one wins.
            let replaces = self.pending[i].2;
            self.pending[i] = (report, hash, replaces);
            if i < self.staged_upto {
                self.restage.push(i);
            }
            return Offer::Replacement;
        }
        let outcome = match self.known.get(&report.report_id) {
            Some(h) if *h == hash => return Offer::Duplicate,
            Some(_) => {
                self.replaces += 1;
                Offer::Replacement
            }
            None => Offer::New,
        };
        self.pending_index
            .insert(report.report_id.clone(), self.pending.len());
        self.pending
            .push((report, hash, outcome == Offer::Replacement));
        outcome
    }

    /// Record a problem (once per file and kind across runs).
    pub fn error(&mut self, row: ErrorRow) {
        if self
            .recorded
            .insert((row.file_uri.clone(), row.error_kind.clone()))
        {
            self.errors.push(row);
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Build the index documents of the reports offered since the last call (uncommitted).
    pub fn stage_pending(&mut self) -> Result<()> {
        let mut batch: Vec<(&Report, bool)> = self.pending[self.staged_upto..]
            .iter()
            .map(|(r, _, replaces)| (r, *replaces))
            .collect();
        // Replaced after staging: delete the staged document, add the new one.
        batch.extend(self.restage.iter().map(|&i| (&self.pending[i].0, true)));
        if batch.is_empty() {
            return Ok(());
        }
        self.index
            .stage_into(&mut self.staged, &self.collection, &batch)?;
        self.staged_upto = self.pending.len();
        self.restage.clear();
        Ok(())
    }

    /// Commit what is pending: `reports` (append, or MERGE when something is replaced),
    /// then the index, then the error rows.
    pub async fn flush(&mut self, lake: &Lake) -> Result<()> {
        let staged = self.flush_table(lake, true).await?;
        self.flush_index(lake, staged).await
    }

    /// The first half of [`Self::flush`]: the table commit. The index change is prepared
    /// (its segments written) meanwhile, and comes back to be committed by
    /// [`Self::flush_index`] with the table's version.
    ///
    /// `more`: whether reports may still be offered afterwards. After the last flush
    /// (`false`) the flushed ids are not remembered, so nothing more may be offered.
    pub async fn flush_table(
        &mut self,
        lake: &Lake,
        more: bool,
    ) -> Result<Option<(crate::search::Prepared, i64)>> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        let now = Utc::now().timestamp_micros();
        let mut batch = model::ReportBatch::new();
        for (r, h, _) in &self.pending {
            batch.push(&self.collection, r, h, self.window_days, now);
        }
        let rb = batch.finish()?;
        // The table commit runs while the last index documents are built and the index's
        // segments are written; the index commit waits for the table version.
        let replaces = self.replaces;
        let l = lake.clone();
        let table_commit = tokio::spawn(async move {
            if replaces == 0 {
                l.append(REPORTS, reports_schema(), vec![rb], "ingest reports")
                    .await
            } else {
                merge(&l, rb).await
            }
        });
        // (On a multi-threaded runtime the commit task runs on another worker meanwhile.)
        let prepared = self.stage_pending().and_then(|()| {
            let staged = self.staged.take().expect("staged above");
            self.index.prepare(staged)
        });
        // What the next batch needs to know, while both commits work. Were the table
        // commit to fail, the run ends with that error and this writer is dropped.
        let pending = std::mem::take(&mut self.pending);
        if more {
            self.known.reserve(pending.len());
            for (r, h, _) in pending {
                self.known.insert(r.report_id, h);
            }
            self.pending_index.clear();
        } else {
            // Freed when the writer is dropped (see `Drop`).
            self.spent = (pending, std::mem::take(&mut self.pending_index));
        }
        self.staged_upto = 0;
        self.replaces = 0;
        let version = table_commit
            .await
            .map_err(|e| Error::Invalid(format!("reports commit: {e}")))??;
        Ok(Some((prepared?, version)))
    }

    /// The second half of [`Self::flush`]: the index commit, then the error rows.
    pub async fn flush_index(
        &mut self,
        lake: &Lake,
        prepared: Option<(crate::search::Prepared, i64)>,
    ) -> Result<()> {
        if let Some((prepared, version)) = prepared {
            self.index.finish(lake, prepared, version).await?;
        }
        let errors = std::mem::take(&mut self.errors);
        super::commit_errors(lake, &self.collection, SOURCE, &errors).await?;
        Ok(())
    }
}

/// Replace rows with the same (collection, report_id) and insert the rest, in one commit.
async fn merge(lake: &Lake, batch: datafusion::arrow::array::RecordBatch) -> Result<i64> {
    let Some(table) = lake.table(REPORTS).await? else {
        return lake
            .append(REPORTS, reports_schema(), vec![batch], "ingest reports")
            .await;
    };
    let ctx = SessionContext::new();
    let source = ctx.read_table(Arc::new(MemTable::try_new(
        batch.schema(),
        vec![vec![batch]],
    )?))?;
    let src = |n: &str| Expr::Column(Column::new(Some("source"), n));
    let tgt = |n: &str| Expr::Column(Column::new(Some("target"), n));
    let predicate = tgt("collection")
        .eq(src("collection"))
        .and(tgt("report_id").eq(src("report_id")));
    let names: Vec<String> = reports_schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let (table, _metrics) = table
        .merge(source, predicate)
        .with_source_alias("source")
        .with_target_alias("target")
        .when_matched_update(|mut u| {
            for n in &names {
                u = u.update(Column::new_unqualified(n), src(n));
            }
            u
        })
        .map_err(|e| Error::delta(REPORTS, e))?
        .when_not_matched_insert(|mut ins| {
            for n in &names {
                ins = ins.set(Column::new_unqualified(n), src(n));
            }
            ins
        })
        .map_err(|e| Error::delta(REPORTS, e))?
        .await
        .map_err(|e| Error::delta(REPORTS, e))?;
    Ok(table.version().unwrap_or(0) as i64)
}

/// Ingest report files into the lake, then refresh the report links and record a lake
/// version.
pub async fn ingest_reports(
    lake: &Lake,
    inputs: &[String],
    opts: &ReportIngestOptions,
) -> Result<ReportIngestSummary> {
    if !model::LANGUAGES.contains(&opts.language.as_str()) {
        return Err(Error::Invalid(format!(
            "--language {:?}: one of {}",
            opts.language,
            model::LANGUAGES.join(", ")
        )));
    }
    let started = Instant::now();
    let files = super::sources::list(inputs).await?;
    let mut writer = ReportWriter::open(lake, &opts.collection, opts.link_window_days).await?;
    let deid = match opts.deidentify {
        Some(o) => Some((
            crate::ingest::deidentify::Deidentifier::open(lake, o).await?,
            crate::ingest::deidentify::Deidentifier::scrubber(lake).await?,
        )),
        None => None,
    };
    let mut summary = ReportIngestSummary {
        files_seen: files.len() as u64,
        ..Default::default()
    };
    let bar = opts.progress.then(|| {
        let b = indicatif::ProgressBar::new(files.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} files  {msg}  ETA {eta}")
                .expect("the template is valid"),
        );
        b
    });

    // Files are read on a blocking thread and handed over in bounded chunks, so memory
    // holds at most a couple of batches however large the input is.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<formats::Item>>(8);
    let read_opts = (opts.format, opts.mapping.clone(), opts.language.clone());
    // Small chunks, so that building index documents starts soon after reading does.
    let chunk = opts.batch_size.clamp(1, 4_096);
    let reader = tokio::task::spawn_blocking(move || {
        let (format, mapping, language) = read_opts;
        let ro = formats::ReadOptions {
            format,
            mapping: &mapping,
            language: &language,
        };
        let mut buf = Vec::with_capacity(chunk);
        for f in &files {
            let mut closed = false;
            formats::read_file(f, &ro, &mut |item| {
                if closed {
                    return;
                }
                buf.push(item);
                if buf.len() >= chunk
                    && tx
                        .blocking_send(std::mem::replace(&mut buf, Vec::with_capacity(chunk)))
                        .is_err()
                {
                    closed = true;
                }
            });
            // An empty chunk marks the end of a file, for the progress bar.
            if closed || tx.blocking_send(std::mem::take(&mut buf)).is_err() {
                return;
            }
        }
    });
    while let Some(items) = rx.recv().await {
        if items.is_empty() {
            if let Some(b) = &bar {
                b.inc(1);
            }
            continue;
        }
        // De-identified before anything else sees them (on every core: the scrub is the
        // costly part).
        let items = match &deid {
            Some((d, scrubber)) => {
                use rayon::prelude::*;
                items
                    .into_par_iter()
                    .map(|item| match item {
                        formats::Item::Error(row) => {
                            formats::Item::Error(d.error_row(row, scrubber))
                        }
                        formats::Item::Report { report, warnings } => formats::Item::Report {
                            report: Box::new(d.report(*report, scrubber)),
                            warnings: warnings
                                .into_iter()
                                .map(|w| d.error_row(w, scrubber))
                                .collect(),
                        },
                    })
                    .collect()
            }
            None => items,
        };
        for item in items {
            summary.records_seen += 1;
            match item {
                formats::Item::Error(row) => {
                    summary.errors += 1;
                    writer.error(row);
                }
                formats::Item::Report { report, warnings } => {
                    if !warnings.is_empty() {
                        summary.warnings += 1;
                    }
                    for w in warnings {
                        writer.error(w);
                    }
                    match writer.offer(*report) {
                        Offer::New => summary.ingested += 1,
                        Offer::Replacement => {
                            summary.ingested += 1;
                            summary.replaced += 1;
                        }
                        Offer::Duplicate => summary.duplicates += 1,
                    }
                }
            }
        }
        // Build index documents now, while the reader thread goes on reading.
        writer.stage_pending()?;
        if writer.pending() >= opts.batch_size {
            writer.flush(lake).await?;
        }
        if let Some(b) = &bar {
            b.set_message(format!(
                "{} reports, {} errors",
                summary.ingested, summary.errors
            ));
        }
    }
    reader
        .await
        .map_err(|e| Error::Invalid(format!("reading reports: {e}")))?;
    // The last commit: the table, then the index commit and the report links together
    // (both need only the table).
    let staged = writer.flush_table(lake, false).await?;
    let (index, links) = tokio::join!(
        writer.flush_index(lake, staged),
        super::derived::refresh_links_if_stale(lake)
    );
    index?;
    links?;
    if let Some(b) = bar {
        b.finish();
    }
    summary.lake_version = lake.record_version("ingest reports").await?.lake_version;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}
