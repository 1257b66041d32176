//! Report search in SQL.
//!
//! - `report_search(query [, options])` is a table function: `collection`, `report_id`,
//!   `score` (BM25), `snippet` (matched terms in `<b>…</b>`), `language`, ordered by score.
//!   Options are a comma-separated list: `affirmed` | `negated` | `uncertain` (search only
//!   words in that assertion status), `lang=en|es|zh`, `field=<default field>`,
//!   `snippet_chars=<n>`. A `LIMIT` (with or without `ORDER BY score DESC`) runs a top-k
//!   search, not a search of everything; `count(*)` counts without scoring.
//! - `text_match(column, query)` is a boolean predicate. On `reports` it is answered by the
//!   index (pushed down, exact) for the `text`, `title` and section columns; anywhere else
//!   it evaluates row by row, with the same query language and English analysis.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float32Array, RecordBatch, RecordBatchOptions, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{plan_err, DFSchema, Result, Statistics};
use datafusion::datasource::TableType;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDFImpl, Signature, TableProviderFilterPushDown,
    Volatility,
};
use datafusion::physical_expr::{
    EquivalenceProperties, LexOrdering, PhysicalExpr, PhysicalSortExpr,
};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};

use super::literal_text;
use crate::search::{Assertion, ReportIndex, SearchRequest};

/// Parse `report_search`'s options string.
pub fn parse_options(opts: &str, req: &mut SearchRequest) -> Result<()> {
    for part in opts.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .map_or((part, ""), |(k, v)| (k.trim(), v.trim()));
        match (k.to_ascii_lowercase().as_str(), v) {
            ("affirmed", "") => req.assertion = Some(Assertion::Affirmed),
            ("negated", "") => req.assertion = Some(Assertion::Negated),
            ("uncertain", "") => req.assertion = Some(Assertion::Uncertain),
            ("any", "") => req.assertion = None,
            ("lang" | "language", l) if !l.is_empty() => {
                req.language = Some(l.to_ascii_lowercase())
            }
            ("field", f) if !f.is_empty() => req.default_field = Some(f.to_string()),
            ("snippet_chars", n) => {
                req.snippet_chars = Some(n.parse().map_err(|_| {
                    datafusion::error::DataFusionError::Plan(format!(
                        "report_search: snippet_chars={n:?} is not a number"
                    ))
                })?)
            }
            _ => {
                return plan_err!(
                    "report_search: unknown option {part:?}; options are affirmed, negated, \
                     uncertain, any, lang=<en|es|zh>, field=<name>, snippet_chars=<n>"
                )
            }
        }
    }
    Ok(())
}

/// `report_search(query [, options])`.
#[derive(Debug)]
pub struct ReportSearchFunc {
    pub index: Option<Arc<ReportIndex>>,
}

impl TableFunctionImpl for ReportSearchFunc {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let Some(query) = exprs.first().and_then(literal_text) else {
            return plan_err!("report_search(query [, options]) takes a text literal query");
        };
        let mut req = SearchRequest {
            query,
            ..Default::default()
        };
        if let Some(o) = exprs.get(1) {
            let Some(o) = literal_text(o) else {
                return plan_err!("report_search: options must be a text literal");
            };
            parse_options(&o, &mut req)?;
        }
        if exprs.len() > 2 {
            return plan_err!("report_search takes one or two arguments");
        }
        Ok(Arc::new(ReportSearchTable {
            index: self.index.clone(),
            req,
        }))
    }
}

impl fmt::Debug for ReportIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReportIndex(version {:?})", self.version())
    }
}

fn search_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("collection", DataType::Utf8, false),
        Field::new("report_id", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
        Field::new("snippet", DataType::Utf8, true),
        Field::new("language", DataType::Utf8, false),
    ]))
}

#[derive(Debug)]
struct ReportSearchTable {
    index: Option<Arc<ReportIndex>>,
    req: SearchRequest,
}

#[async_trait]
impl TableProvider for ReportSearchTable {
    fn schema(&self) -> SchemaRef {
        search_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(ReportSearchExec::new(
            self.index.clone(),
            self.req.clone(),
            projection.cloned(),
            limit,
        )))
    }
}

/// Runs the search when executed, so that a `LIMIT` pushed in as `fetch` makes it top-k.
#[derive(Debug)]
struct ReportSearchExec {
    index: Option<Arc<ReportIndex>>,
    req: SearchRequest,
    projection: Option<Vec<usize>>,
    fetch: Option<usize>,
    schema: SchemaRef,
    props: Arc<PlanProperties>,
    /// The number of matches, once counted (for statistics and for `count(*)`).
    count: std::sync::OnceLock<usize>,
}

impl ReportSearchExec {
    fn new(
        index: Option<Arc<ReportIndex>>,
        req: SearchRequest,
        projection: Option<Vec<usize>>,
        fetch: Option<usize>,
    ) -> Self {
        let full = search_schema();
        let schema = match &projection {
            Some(p) => Arc::new(full.project(p).expect("projection within the schema")),
            None => full,
        };
        // Hits come out best first: declaring it lets DataFusion drop an ORDER BY score DESC
        // and push its LIMIT into this node.
        let mut eq = EquivalenceProperties::new(schema.clone());
        if let Ok(i) = schema.index_of("score") {
            let e: Arc<dyn PhysicalExpr> = Arc::new(
                datafusion::physical_expr::expressions::Column::new("score", i),
            );
            let sort = PhysicalSortExpr::new(
                e,
                datafusion::arrow::compute::SortOptions {
                    descending: true,
                    nulls_first: false,
                },
            );
            if let Some(o) = LexOrdering::new(vec![sort]) {
                eq.add_ordering(o);
            }
        }
        let props = Arc::new(PlanProperties::new(
            eq,
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        ReportSearchExec {
            index,
            req,
            projection,
            fetch,
            schema,
            props,
            count: std::sync::OnceLock::new(),
        }
    }

    /// The number of rows this node produces when no column is read (`count(*)`).
    fn row_count(&self) -> crate::Result<usize> {
        if let Some(n) = self.count.get() {
            return Ok(*n);
        }
        let n = match &self.index {
            Some(index) => index.count(&self.req)?,
            None => 0,
        };
        let n = self.fetch.map_or(n, |k| n.min(k));
        Ok(*self.count.get_or_init(|| n))
    }

    fn run(&self) -> crate::Result<RecordBatch> {
        let full = search_schema();
        let cols: Vec<usize> = self
            .projection
            .clone()
            .unwrap_or_else(|| (0..full.fields().len()).collect());
        let Some(index) = &self.index else {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        };
        let mut req = self.req.clone();
        req.limit = self.fetch;
        if cols.is_empty() {
            // count(*): no scores, no ids.
            let n = self.row_count()?;
            return Ok(RecordBatch::try_new_with_options(
                self.schema.clone(),
                vec![],
                &RecordBatchOptions::new().with_row_count(Some(n)),
            )?);
        }
        req.snippets = cols.contains(&3);
        let hits = index.search(&req)?;
        let arrays: Vec<ArrayRef> = cols
            .iter()
            .map(|c| -> ArrayRef {
                match c {
                    0 => Arc::new(StringArray::from_iter_values(
                        hits.iter().map(|h| &h.collection),
                    )),
                    1 => Arc::new(StringArray::from_iter_values(
                        hits.iter().map(|h| &h.report_id),
                    )),
                    2 => Arc::new(Float32Array::from_iter_values(hits.iter().map(|h| h.score))),
                    3 => Arc::new(StringArray::from_iter(
                        hits.iter().map(|h| h.snippet.as_deref()),
                    )),
                    _ => Arc::new(StringArray::from_iter_values(
                        hits.iter().map(|h| &h.language),
                    )),
                }
            })
            .collect();
        Ok(RecordBatch::try_new(self.schema.clone(), arrays)?)
    }
}

impl DisplayAs for ReportSearchExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ReportSearchExec: query={:?}, assertion={:?}, fetch={:?}",
            self.req.query, self.req.assertion, self.fetch
        )
    }
}

impl ExecutionPlan for ReportSearchExec {
    fn name(&self) -> &'static str {
        "ReportSearchExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_fetch(&self, limit: Option<usize>) -> Option<Arc<dyn ExecutionPlan>> {
        let fetch = match (self.fetch, limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Some(Arc::new(ReportSearchExec::new(
            self.index.clone(),
            self.req.clone(),
            self.projection.clone(),
            fetch,
        )))
    }

    fn fetch(&self) -> Option<usize> {
        self.fetch
    }

    /// When no column is read, the row count is the match count, and it is exact: with it
    /// DataFusion answers `count(*)` from statistics, without running an aggregation.
    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        _args: &datafusion::physical_plan::statistics::StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        let mut s = Statistics::new_unknown(&self.schema);
        if self.projection.as_ref().is_some_and(|p| p.is_empty()) {
            s.num_rows = Precision::Exact(self.row_count().map_err(crate::Error::into_df)?);
        }
        Ok(Arc::new(s))
    }

    fn execute(
        &self,
        _partition: usize,
        _ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let batch = self.run().map_err(crate::Error::into_df)?;
        Ok(Box::pin(MemoryStream::try_new(
            vec![batch],
            self.schema.clone(),
            None,
        )?))
    }
}

/// The report columns `text_match` can answer from the index, and their index fields.
const INDEXED_COLUMNS: [&str; 6] = [
    "text",
    "title",
    "indication",
    "comparison",
    "findings",
    "impression",
];

/// `text_match(column, query)`, evaluated row by row: each batch's texts go into a small
/// in-memory index, so the query language and analysis are the same as the lake index's.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TextMatch {
    signature: Signature,
}

impl Default for TextMatch {
    fn default() -> Self {
        Self::new()
    }
}

impl TextMatch {
    pub fn new() -> Self {
        TextMatch {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for TextMatch {
    fn name(&self) -> &str {
        "text_match"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let [text, query] = args.args.as_slice() else {
            return plan_err!("text_match(column, query) takes two arguments");
        };
        let ColumnarValue::Scalar(q) = query else {
            return plan_err!("text_match: the query must be a literal");
        };
        let Some(Some(q)) = q.try_as_str().map(|s| s.map(str::to_string)) else {
            return plan_err!("text_match: the query must be text");
        };
        let texts = datafusion::arrow::compute::cast(&text.to_array(rows)?, &DataType::Utf8)?;
        let texts = datafusion::common::cast::as_string_array(&texts)?;
        let matched = crate::search::match_rows(texts, &q).map_err(crate::Error::into_df)?;
        Ok(ColumnarValue::Array(Arc::new(BooleanArray::from(matched))))
    }
}

/// `text_match(<indexed column>, '<literal>')` on `reports`: (column, query).
fn pushable(e: &Expr) -> Option<(String, String)> {
    let Expr::ScalarFunction(f) = e else {
        return None;
    };
    if f.func.name() != "text_match" || f.args.len() != 2 {
        return None;
    }
    let Expr::Column(c) = &f.args[0] else {
        return None;
    };
    let q = literal_text(&f.args[1])?;
    INDEXED_COLUMNS
        .contains(&c.name.as_str())
        .then(|| (c.name.clone(), q))
}

/// `reports`, with `text_match` answered by the index.
#[derive(Debug)]
pub struct ReportsTable {
    pub inner: Arc<dyn TableProvider>,
    pub index: Option<Arc<ReportIndex>>,
}

#[async_trait]
impl TableProvider for ReportsTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let others: Vec<&Expr> = filters
            .iter()
            .copied()
            .filter(|f| pushable(f).is_none())
            .collect();
        let mut inner = self.inner.supports_filters_pushdown(&others)?.into_iter();
        Ok(filters
            .iter()
            .map(|f| match pushable(f) {
                Some(_) if self.index.is_some() => TableProviderFilterPushDown::Exact,
                Some(_) => TableProviderFilterPushDown::Unsupported,
                None => inner
                    .next()
                    .unwrap_or(TableProviderFilterPushDown::Unsupported),
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (searches, others): (Vec<&Expr>, Vec<&Expr>) =
            filters.iter().partition(|f| pushable(f).is_some());
        let (Some(index), false) = (&self.index, searches.is_empty()) else {
            return self.inner.scan(state, projection, filters, limit).await;
        };
        // Every text_match must hold: intersect their key sets.
        let mut keys: Option<HashSet<(String, String)>> = None;
        for s in &searches {
            let (column, query) = pushable(s).expect("partitioned on pushable");
            let req = SearchRequest {
                query,
                default_field: Some(column),
                ..Default::default()
            };
            let found = index.matching_keys(&req).map_err(crate::Error::into_df)?;
            keys = Some(match keys {
                None => found,
                Some(k) => k.intersection(&found).cloned().collect(),
            });
        }
        let keys = keys.unwrap_or_default();
        let others: Vec<Expr> = others.into_iter().cloned().collect();
        // Scan every column, keep the matching rows, then project what was asked for.
        let plan = self.inner.scan(state, None, &others, None).await?;
        let schema = self.inner.schema();
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        let membership = key_predicate(&keys);
        let mut predicate = membership;
        for o in others {
            predicate = predicate.and(o);
        }
        let physical = state.create_physical_expr(predicate, &df_schema)?;
        let mut plan: Arc<dyn ExecutionPlan> = Arc::new(FilterExec::try_new(physical, plan)?);
        if let Some(p) = projection {
            let exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = p
                .iter()
                .map(|&i| {
                    let name = schema.field(i).name().clone();
                    let e: Arc<dyn PhysicalExpr> = Arc::new(
                        datafusion::physical_expr::expressions::Column::new(&name, i),
                    );
                    (e, name)
                })
                .collect();
            plan = Arc::new(ProjectionExec::try_new(exprs, plan)?);
        }
        if let Some(k) = limit {
            plan = Arc::new(datafusion::physical_plan::limit::GlobalLimitExec::new(
                plan,
                0,
                Some(k),
            ));
        }
        Ok(plan)
    }
}

/// `(collection, report_id) ∈ keys` as an expression.
fn key_predicate(keys: &HashSet<(String, String)>) -> Expr {
    use datafusion::logical_expr::{col, lit};
    if keys.is_empty() {
        return lit(false);
    }
    let collections: HashSet<&str> = keys.iter().map(|(c, _)| c.as_str()).collect();
    if collections.len() == 1 {
        let c = collections.into_iter().next().expect("one");
        let ids: Vec<Expr> = keys.iter().map(|(_, r)| lit(r.clone())).collect();
        col("collection")
            .eq(lit(c))
            .and(col("report_id").in_list(ids, false))
    } else {
        let both: Vec<Expr> = keys
            .iter()
            .map(|(c, r)| lit(format!("{c}\u{1f}{r}")))
            .collect();
        datafusion::functions::string::expr_fn::concat(vec![
            col("collection"),
            lit("\u{1f}"),
            col("report_id"),
        ])
        .in_list(both, false)
    }
}
