//! What one role may read, enforced in the plan.
//!
//! A role's session is the lake session with every table replaced by a view: the role's
//! row policy as a filter, then only the columns it is granted (a denied DICOM keyword is
//! also taken out of `dicom_json`, where every header element is kept). Tables it is not
//! granted are not registered at all, so they do not exist for it (nor in `\d`).
//!
//! The functions that read rows by other roads are bound to the same views:
//! - `report_search` keeps only reports the role sees in `reports` (a semi join);
//! - `similar_series`, `ct_findings`, `embed`, `predict` see only series in `series`
//!   ([`crate::functions::guard`]);
//! - `as_of(table, …)` applies the same policy and grants to the older version;
//! - `vcf_scan(path)` reads only a file ingested into the lake whose `vcf_files` row the
//!   role sees, and applies the `variants` policy and grants to its rows;
//! - views (`gene_carriers`) are planned again over the role's tables.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{plan_err, Column, DataFusionError};
use datafusion::datasource::{provider_as_source, ViewTable};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{
    col, lit, ColumnarValue, Expr, JoinType, LogicalPlan, LogicalPlanBuilder, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

use super::config::Role;
use crate::error::{Error, Result};
use crate::functions::guard::SeriesVisibility;
use crate::lake::Lake;
use crate::session::{open_session, LakeSession};
use crate::tables::{REPORTS, SERIES, VARIANTS, VCF_FILES};

/// The table every statement is recorded in; readable only by roles that name it.
pub use crate::tables::AUDIT_LOG;

/// A role's session template: each connection of the role starts from its state.
pub struct RoleSession {
    pub ctx: SessionContext,
    pub lake_version: Option<i64>,
    /// The tables the role sees.
    pub tables: Vec<String>,
    /// Tables a `"*"` policy could not be applied to, hidden from the role.
    pub hidden: Vec<(String, String)>,
}

/// Build the session a role's connections use, over the lake's newest version.
pub async fn role_session(lake: &Lake, role_name: &str, role: &Role) -> Result<RoleSession> {
    let ls = open_session(lake, None).await?;
    if role.is_admin(role_name) {
        let tables = ls.table_versions.keys().cloned().collect();
        return Ok(RoleSession {
            ctx: ls.ctx,
            lake_version: ls.lake_version,
            tables,
            hidden: Vec::new(),
        });
    }
    restrict_session(ls, role).await
}

fn granted(role: &Role, table: &str) -> bool {
    role.tables.iter().any(|t| t == table)
        || (table != AUDIT_LOG && role.tables.iter().any(|t| t == "*"))
}

/// The row filter of a table for a role: its own policy, else the `"*"` policy. `Err`
/// when the policy does not fit the table (names a column it lacks, or does not parse).
fn policy(
    state: &SessionState,
    role: &Role,
    table: &str,
    plan: &LogicalPlanBuilder,
) -> std::result::Result<Option<Expr>, String> {
    let Some(sql) = role.policies.get(table).or_else(|| role.policies.get("*")) else {
        return Ok(None);
    };
    state
        .create_logical_expr(sql, plan.schema())
        .map(Some)
        .map_err(|e| format!("policy {sql:?}: {e}"))
}

/// `table` as the role may see it, over `provider` (the table itself, or an older version
/// of it from `as_of`).
fn restricted(
    state: &SessionState,
    role: &Role,
    table: &str,
    provider: Arc<dyn TableProvider>,
) -> std::result::Result<Arc<dyn TableProvider>, String> {
    let schema = provider.schema();
    let builder = LogicalPlanBuilder::scan(table, provider_as_source(provider.clone()), None)
        .map_err(|e| e.to_string())?;
    let filter = policy(state, role, table, &builder)?;
    let plan = restrict_plan(builder, filter, role, table, &schema).map_err(|e| e.to_string())?;
    match plan {
        None => Ok(provider),
        Some(plan) => Ok(Arc::new(Restricted(ViewTable::new(plan, None)))),
    }
}

/// Filter, then keep the granted columns; `None` when the role sees the table as it is.
fn restrict_plan(
    builder: LogicalPlanBuilder,
    filter: Option<Expr>,
    role: &Role,
    table: &str,
    schema: &SchemaRef,
) -> datafusion::common::Result<Option<LogicalPlan>> {
    let allowed = role.columns.get(table);
    let keep: Vec<&str> = schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .filter(|n| !role.deny_columns.iter().any(|d| d == n))
        .filter(|n| allowed.is_none_or(|a| a.iter().any(|c| c == n)))
        .collect();
    let tags = denied_tags(&role.deny_columns);
    let redact_json = keep.contains(&"dicom_json") && !tags.is_empty();
    if filter.is_none() && keep.len() == schema.fields().len() && !redact_json {
        return Ok(None);
    }
    let mut b = builder;
    if let Some(f) = filter {
        b = b.filter(f)?;
    }
    let exprs: Vec<Expr> = keep
        .iter()
        .map(|n| {
            let c = col(Column::new(Some(table), *n));
            if *n == "dicom_json" && redact_json {
                redact_dicom_json(c, &tags).alias("dicom_json")
            } else {
                c
            }
        })
        .collect();
    Ok(Some(b.project(exprs)?.build()?))
}

/// The tags (`GGGGEEEE`, as DICOM JSON keys them) of denied columns that are DICOM keywords.
fn denied_tags(deny: &[String]) -> Vec<String> {
    use dicom_core::dictionary::DataDictionary;
    let dict = dicom_dictionary_std::StandardDataDictionary;
    let mut tags: Vec<String> = deny
        .iter()
        .filter_map(|k| dict.by_name(k))
        .map(|e| {
            let t = e.tag.inner();
            format!("{:04X}{:04X}", t.group(), t.element())
        })
        .collect();
    tags.sort();
    tags
}

async fn restrict_session(ls: LakeSession, role: &Role) -> Result<RoleSession> {
    let ctx = ls.ctx.clone();
    let state = ctx.state();
    let mut tables = BTreeMap::new();
    let mut hidden = Vec::new();
    for (name, version) in &ls.table_versions {
        let Ok(provider) = ctx.table_provider(name).await else {
            continue;
        };
        ctx.deregister_table(name)?;
        if !granted(role, name) {
            continue;
        }
        match restricted(&state, role, name, provider) {
            Ok(view) => {
                ctx.register_table(name, view)?;
                tables.insert(name.clone(), *version);
            }
            // A table-specific policy must fit its table: that is a config error.
            Err(e) if role.policies.contains_key(name.as_str()) => {
                return Err(Error::Invalid(format!("table {name}: {e}")));
            }
            // A table named in `tables` is shown without a row filter when the "*"
            // policy does not fit it (the config asked for it by name)...
            Err(_) if role.tables.iter().any(|t| t == name) => {
                let p = unfiltered(&ls, name).await?;
                let b = LogicalPlanBuilder::scan(name, provider_as_source(p.clone()), None)?;
                let view = match restrict_plan(b, None, role, name, &p.schema())? {
                    Some(plan) => {
                        Arc::new(Restricted(ViewTable::new(plan, None))) as Arc<dyn TableProvider>
                    }
                    None => p,
                };
                ctx.register_table(name, view)?;
                tables.insert(name.clone(), *version);
            }
            // ...and hidden when it is reached only through "*": fail closed.
            Err(e) => hidden.push((name.clone(), e)),
        }
    }
    for (view, _, _) in crate::session::VIEWS {
        let _ = ctx.deregister_table(*view);
    }
    crate::session::register_views(&ctx, &tables).await?;

    let state = ctx.state();
    let series: Option<LogicalPlan> = match ctx.table_provider(SERIES).await {
        Ok(p) => Some(
            LogicalPlanBuilder::scan(SERIES, provider_as_source(p), None)?
                .project([col(Column::from_name("SeriesInstanceUID"))])?
                .build()?,
        ),
        Err(_) => None,
    };
    let visibility = Arc::new(PlanVisibility {
        state: state.clone(),
        plan: series,
    });
    crate::functions::register_lake(
        &ctx,
        &ls.lake,
        ls.lake_version,
        &ls.table_versions,
        ls.reports_index.clone(),
        ls.models.clone(),
        Some(visibility),
    );
    let inner = |name: &str| -> Result<Arc<dyn TableFunctionImpl>> {
        Ok(ctx
            .state()
            .table_functions()
            .get(name)
            .ok_or_else(|| Error::Invalid(format!("no table function {name}")))?
            .function()
            .clone())
    };
    let reports = match ctx.table_provider(REPORTS).await {
        Ok(p) => Some(
            LogicalPlanBuilder::scan(REPORTS, provider_as_source(p), None)?
                .project([col("collection"), col("report_id")])?
                .alias("visible_reports")?
                .build()?,
        ),
        Err(_) => None,
    };
    ctx.register_udtf(
        "report_search",
        Arc::new(ReportSearchGuard {
            inner: inner("report_search")?,
            visible: reports,
        }),
    );
    ctx.register_udtf(
        "as_of",
        Arc::new(AsOfGuard {
            inner: inner("as_of")?,
            role: role.clone(),
            state: state.clone(),
        }),
    );
    let files = ctx.table_provider(VCF_FILES).await.ok();
    ctx.register_udtf(
        "vcf_scan",
        Arc::new(VcfScanGuard {
            inner: inner("vcf_scan")?,
            role: role.clone(),
            state,
            files,
            variants_granted: tables.contains_key(VARIANTS),
        }),
    );
    Ok(RoleSession {
        ctx,
        lake_version: ls.lake_version,
        tables: tables.into_keys().collect(),
        hidden,
    })
}

async fn unfiltered(ls: &LakeSession, name: &str) -> Result<Arc<dyn TableProvider>> {
    let t = ls
        .lake
        .table_at_version(name, ls.table_versions[name])
        .await?
        .ok_or_else(|| Error::Invalid(format!("table {name} vanished")))?;
    crate::session::expose(name, t.table_provider().await?)
}

/// Runs the role's `series` view.
#[derive(Debug)]
struct PlanVisibility {
    state: SessionState,
    plan: Option<LogicalPlan>,
}

#[async_trait::async_trait]
impl SeriesVisibility for PlanVisibility {
    async fn visible(&self, uids: &[String]) -> datafusion::common::Result<HashSet<String>> {
        let Some(plan) = &self.plan else {
            return Ok(HashSet::new());
        };
        if uids.is_empty() {
            return Ok(HashSet::new());
        }
        let mut b = LogicalPlanBuilder::from(plan.clone());
        // A long list is answered by reading the whole (small) view instead.
        if uids.len() <= 1024 {
            b = b.filter(
                col(Column::from_name("SeriesInstanceUID"))
                    .in_list(uids.iter().map(lit).collect(), false),
            )?;
        }
        let asked: HashSet<&str> = uids.iter().map(String::as_str).collect();
        let found = texts(&self.state, b.build()?, "SeriesInstanceUID").await?;
        Ok(found
            .into_iter()
            .filter(|u| asked.contains(u.as_str()))
            .collect())
    }
}

/// The non-null values of a plan's text column, the plan run under the role's state.
async fn texts(
    state: &SessionState,
    plan: LogicalPlan,
    column: &str,
) -> datafusion::common::Result<Vec<String>> {
    let ctx = SessionContext::new_with_state(state.clone());
    let batches = ctx.execute_logical_plan(plan).await?.collect().await?;
    let mut out = Vec::new();
    for b in &batches {
        let Some(c) = b.column_by_name(column) else {
            return plan_err!("no column {column}");
        };
        let c = datafusion::arrow::compute::cast(c, &DataType::Utf8)?;
        let c = c.as_any().downcast_ref::<StringArray>().expect("Utf8");
        out.extend(c.iter().flatten().map(str::to_string));
    }
    Ok(out)
}

/// `report_search` bound to the role's `reports`.
#[derive(Debug)]
struct ReportSearchGuard {
    inner: Arc<dyn TableFunctionImpl>,
    visible: Option<LogicalPlan>,
}

impl TableFunctionImpl for ReportSearchGuard {
    fn call_with_args(
        &self,
        args: TableFunctionArgs,
    ) -> datafusion::common::Result<Arc<dyn TableProvider>> {
        let Some(visible) = &self.visible else {
            return plan_err!("permission denied: report_search reads table reports, which this role may not read");
        };
        let found = self.inner.call_with_args(args)?;
        let plan = LogicalPlanBuilder::scan("report_search", provider_as_source(found), None)?
            .join(
                visible.clone(),
                JoinType::LeftSemi,
                (
                    vec!["report_search.collection", "report_search.report_id"],
                    vec!["visible_reports.collection", "visible_reports.report_id"],
                ),
                None,
            )?
            .build()?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}

/// `as_of(table, …)` under the role's grants and policy for that table.
#[derive(Debug)]
struct AsOfGuard {
    inner: Arc<dyn TableFunctionImpl>,
    role: Role,
    state: SessionState,
}

impl TableFunctionImpl for AsOfGuard {
    fn call_with_args(
        &self,
        args: TableFunctionArgs,
    ) -> datafusion::common::Result<Arc<dyn TableProvider>> {
        let table = args
            .exprs()
            .first()
            .and_then(crate::functions::literal_text)
            .unwrap_or_default();
        if !granted(&self.role, &table) {
            return plan_err!("permission denied for table {table}");
        }
        let old = self.inner.call_with_args(args)?;
        restricted(&self.state, &self.role, &table, old)
            .map_err(|e| DataFusionError::Plan(format!("permission denied for table {table}: {e}")))
    }
}

/// `vcf_scan` for a role: only files ingested into the lake that it sees in `vcf_files`,
/// and only the rows its `variants` policy lets through.
#[derive(Debug)]
struct VcfScanGuard {
    inner: Arc<dyn TableFunctionImpl>,
    role: Role,
    state: SessionState,
    files: Option<Arc<dyn TableProvider>>,
    variants_granted: bool,
}

impl VcfScanGuard {
    /// The collections in which the role sees `path` ingested.
    fn collections_of(&self, path: &str) -> datafusion::common::Result<Vec<String>> {
        let Some(files) = &self.files else {
            return Ok(Vec::new());
        };
        let mut uris = vec![lit(path)];
        if let Ok(canonical) = std::fs::canonicalize(path) {
            if let Ok(u) = url::Url::from_file_path(&canonical) {
                uris.push(lit(u.to_string()));
            }
        }
        let plan = LogicalPlanBuilder::scan(VCF_FILES, provider_as_source(files.clone()), None)?
            .filter(col("source_uri").in_list(uris, false))?
            .build()?;
        let mut out = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(texts(&self.state, plan, "collection"))
        })?;
        out.sort();
        out.dedup();
        Ok(out)
    }
}

impl TableFunctionImpl for VcfScanGuard {
    fn call_with_args(
        &self,
        args: TableFunctionArgs,
    ) -> datafusion::common::Result<Arc<dyn TableProvider>> {
        let path = args
            .exprs()
            .first()
            .and_then(crate::functions::literal_text)
            .unwrap_or_default();
        if !self.variants_granted {
            return plan_err!("permission denied: vcf_scan gives variants rows, and this role may not read variants");
        }
        let collections = self.collections_of(&path)?;
        if collections.is_empty() {
            return plan_err!(
                "permission denied: vcf_scan({path:?}): in server mode a role reads only files ingested \
                 into the lake that it may see in vcf_files"
            );
        }
        let found = self.inner.call_with_args(args)?;
        let schema = found.schema();
        let mut b = LogicalPlanBuilder::scan("vcf_scan", provider_as_source(found), None)?;
        // The policy may name `collection`, which a raw file has not: each row is in the
        // collections its file was ingested into (the rows of every one the role sees).
        let has_collection = schema.column_with_name("collection").is_some();
        if !has_collection {
            let collections: Vec<Expr> = collections.iter().map(lit).collect();
            let mut exprs: Vec<Expr> = schema
                .fields()
                .iter()
                .map(|f| col(Column::new(Some("vcf_scan"), f.name())))
                .collect();
            exprs.push(
                datafusion::functions_nested::expr_fn::make_array(collections).alias("collection"),
            );
            b = b.project(exprs)?;
            b = b.unnest_column("collection")?;
        }
        let filter = policy(&self.state, &self.role, VARIANTS, &b)
            .map_err(|e| DataFusionError::Plan(format!("permission denied: vcf_scan: {e}")))?;
        if let Some(f) = filter {
            b = b.filter(f)?;
        }
        let full = b.schema().clone();
        let mut role = self.role.clone();
        if !has_collection {
            // The added column is dropped again, unless the role could read it anyway.
            role.columns.insert(
                "vcf_scan".into(),
                full.fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .filter(|n| n != "collection")
                    .collect(),
            );
        }
        if let Some(allowed) = self.role.columns.get(VARIANTS) {
            let entry = role.columns.entry("vcf_scan".into()).or_default();
            entry.retain(|c| allowed.contains(c));
        }
        let plan = restrict_plan(
            b,
            None,
            &role,
            "vcf_scan",
            &Arc::new(full.as_arrow().clone()),
        )?;
        match plan {
            Some(plan) => {
                // A file in two visible collections gives its rows once.
                let plan = LogicalPlanBuilder::from(plan).distinct()?.build()?;
                Ok(Arc::new(ViewTable::new(plan, None)))
            }
            None => plan_err!("vcf_scan: internal: expected a restricted plan"),
        }
    }
}

/// `dicom_json` without the elements of denied keywords (at any depth).
fn redact_dicom_json(json: Expr, tags: &[String]) -> Expr {
    ScalarUDF::from(RedactDicomJson {
        tags: tags.to_vec(),
        signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
    })
    .call(vec![json])
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct RedactDicomJson {
    tags: Vec<String>,
    signature: Signature,
}

fn redact(v: &mut serde_json::Value, tags: &[String]) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|k, _| !tags.iter().any(|t| t.eq_ignore_ascii_case(k)));
            for (_, x) in m.iter_mut() {
                redact(x, tags);
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| redact(x, tags)),
        _ => {}
    }
}

impl ScalarUDFImpl for RedactDicomJson {
    fn name(&self) -> &str {
        "medlake_redact_dicom_json"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let a = args.args[0].to_array(args.number_rows)?;
        let a = a
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("Utf8 by signature");
        let out: StringArray = a
            .iter()
            .map(|j| {
                j.map(|j| match serde_json::from_str::<serde_json::Value>(j) {
                    Ok(mut v) => {
                        redact(&mut v, &self.tags);
                        v.to_string()
                    }
                    // Not JSON: nothing can be shown safely.
                    Err(_) => String::new(),
                })
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_keywords_become_json_tags() {
        let t = denied_tags(&[
            "PatientName".into(),
            "PatientBirthDate".into(),
            "collection".into(),
        ]);
        assert_eq!(t, vec!["00100010".to_string(), "00100030".to_string()]);
    }

    #[test]
    fn redaction_reaches_into_sequences() {
        let mut v: serde_json::Value = serde_json::from_str(
            r#"{"00100010":{"vr":"PN","Value":[{"Alphabetic":"DOE^JANE"}]},
                "00081115":{"vr":"SQ","Value":[{"00100010":{"vr":"PN"},"0020000E":{"vr":"UI"}}]}}"#,
        )
        .unwrap();
        redact(&mut v, &["00100010".into()]);
        let s = v.to_string();
        assert!(!s.contains("00100010") && !s.contains("DOE"), "{s}");
        assert!(s.contains("0020000E"));
    }

    #[test]
    fn audit_log_needs_its_name() {
        let r = Role {
            tables: vec!["*".into()],
            ..Default::default()
        };
        assert!(granted(&r, "instances"));
        assert!(!granted(&r, AUDIT_LOG));
        let r = Role {
            tables: vec![AUDIT_LOG.into()],
            ..Default::default()
        };
        assert!(granted(&r, AUDIT_LOG));
        assert!(!granted(&r, "instances"));
    }
}

/// A role's view of a table, shown to clients as a table (psql `\dt`, DBeaver's table
/// list), planned as its view.
#[derive(Debug)]
struct Restricted(ViewTable);

#[async_trait::async_trait]
impl TableProvider for Restricted {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }
    fn table_type(&self) -> datafusion::datasource::TableType {
        datafusion::datasource::TableType::Base
    }
    fn get_logical_plan(&'_ self) -> Option<std::borrow::Cow<'_, LogicalPlan>> {
        self.0.get_logical_plan()
    }
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::common::Result<Vec<datafusion::logical_expr::TableProviderFilterPushDown>>
    {
        self.0.supports_filters_pushdown(filters)
    }
    async fn scan(
        &self,
        state: &dyn datafusion::catalog::Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        self.0.scan(state, projection, filters, limit).await
    }
}
