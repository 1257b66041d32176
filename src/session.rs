//! The one place that builds a DataFusion session for a lake.
//!
//! The CLI, the demo, the tests and (later) the server all call [`open_session`]: it
//! registers every lake table at the requested point in history, medlake's SQL functions,
//! and the settings that make DICOM keywords work unquoted in their PascalCase.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::datasource::{provider_as_source, ViewTable};
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{cast, col, LogicalPlanBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::{Error, Result};
use crate::ingest::dicom::columns::time_columns;
use crate::lake::{AsOf, Lake, LAKE_LOG};
use crate::tables::MODELS;

/// A session over a lake, and what it read.
pub struct LakeSession {
    pub ctx: SessionContext,
    /// The lake version read (`None` when the lake has none yet, or for a timestamp read).
    pub lake_version: Option<i64>,
    /// The Delta version of each registered table.
    pub table_versions: BTreeMap<String, i64>,
    /// What the lake's functions were registered with, for sessions that register them
    /// again under row policies (`server::access`).
    pub(crate) lake: Lake,
    pub(crate) reports_index: Option<Arc<crate::search::ReportIndex>>,
    pub(crate) models: crate::functions::embed::Models,
}

/// The name of the catalog that holds the lake's tables.
pub const CATALOG: &str = "medlake";

/// A context with medlake's settings and functions, but no lake tables.
pub fn plain_context() -> SessionContext {
    let config = SessionConfig::new()
        // PostgreSQL clients of `medlake serve` connect to database "medlake" and look
        // it up in pg_database, which lists the catalogs.
        .with_default_catalog_and_schema(CATALOG, "public")
        .with_information_schema(true)
        // DICOM keywords are PascalCase column names: keep identifiers as typed.
        .set_bool("datafusion.sql_parser.enable_ident_normalization", false)
        // Join sides chosen with statistics propagated through the plan, including
        // medlake's GROUP BY estimate (src/optimize/stats.rs).
        .set_bool("datafusion.optimizer.use_statistics_registry", true)
        // `SET medlake.device = 'cpu'` and medlake's other session settings.
        .with_option_extension(crate::functions::ct_findings::MedlakeOptions::default());
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_statistics_registry(crate::optimize::statistics_registry())
        // Per-group count(DISTINCT ...) without one hash set per group.
        .with_optimizer_rule(Arc::new(crate::optimize::MultiDistinctToGroupBy::new()))
        .build();
    let ctx = SessionContext::new_with_state(state);
    crate::functions::register(&ctx);
    ctx
}

/// Open a session over the lake, at its newest state or as of a point in its history.
pub async fn open_session(lake: &Lake, as_of: Option<&AsOf>) -> Result<LakeSession> {
    let ctx = plain_context();
    let mut table_versions = BTreeMap::new();
    let lake_version = match as_of {
        None => {
            // The lake log is read beside the tables: a CLI statement pays for opening
            // the lake every time it runs.
            let names = lake.table_names().await?;
            let opening = names.into_iter().map(|name| async move {
                let t = lake.table(&name).await?;
                Ok((name, t))
            });
            let (versions, ()) = futures::future::try_join(
                lake.lake_versions(),
                register_all(&ctx, opening, &mut table_versions),
            )
            .await?;
            versions.last().map(|v| v.lake_version)
        }
        Some(AsOf::Version(v)) => {
            let versions = lake.lake_versions().await?;
            let newest = versions.last().map(|v| v.lake_version);
            let Some(entry) = versions.iter().find(|e| e.lake_version == *v) else {
                return Err(Error::NoSuchLakeVersion {
                    requested: *v,
                    newest: newest.unwrap_or(0),
                });
            };
            let opening = entry.table_versions.iter().map(|(name, tv)| async move {
                let t = lake.table_at_version(name, *tv).await?;
                Ok((name.clone(), t))
            });
            register_all(&ctx, opening, &mut table_versions).await?;
            Some(*v)
        }
        Some(AsOf::Timestamp(at)) => {
            let versions = lake.lake_versions().await?;
            let names = lake.table_names().await?;
            let opening =
                names
                    .into_iter()
                    .filter(|name| name != LAKE_LOG)
                    .map(|name| async move {
                        let t = lake.table_at_time(&name, *at).await?;
                        Ok((name, t))
                    });
            register_all(&ctx, opening, &mut table_versions).await?;
            versions
                .iter()
                .rev()
                .find(|v| v.committed_at <= *at)
                .map(|v| v.lake_version)
        }
    };
    let reports_index = reports_index(&ctx, lake, &table_versions).await?;
    register_views(&ctx, &table_versions).await?;
    let models =
        Arc::new(crate::models::registered_at(lake, table_versions.get(MODELS).copied()).await?);
    crate::functions::register_lake(
        &ctx,
        lake,
        lake_version,
        &table_versions,
        reports_index.clone(),
        models.clone(),
        None,
    );
    Ok(LakeSession {
        ctx,
        lake_version,
        table_versions,
        lake: lake.clone(),
        reports_index,
        models,
    })
}

/// The report index this session searches: the lake's own when it reflects the `reports`
/// version read (after bringing it up to date), else one built in memory for that version.
/// `reports` is re-registered so that `text_match` on it is answered by the index.
async fn reports_index(
    ctx: &SessionContext,
    lake: &Lake,
    table_versions: &BTreeMap<String, i64>,
) -> Result<Option<Arc<crate::search::ReportIndex>>> {
    use crate::tables::REPORTS;
    let Some(&version) = table_versions.get(REPORTS) else {
        return Ok(None);
    };
    let synced = crate::search::ReportIndex::open_synced(lake).await?;
    let index = if synced.version() == Some(version) {
        synced
    } else {
        let Some(table) = lake.table_at_version(REPORTS, version).await? else {
            return Ok(None);
        };
        crate::search::ReportIndex::in_memory(&table).await?
    };
    let index = Arc::new(index);
    if let Ok(inner) = ctx.table_provider(REPORTS).await {
        ctx.deregister_table(REPORTS)?;
        ctx.register_table(
            REPORTS,
            Arc::new(crate::functions::report_search::ReportsTable {
                inner,
                index: Some(index.clone()),
            }),
        )?;
    }
    Ok(Some(index))
}

/// The views that ship in `sql/views/`, each registered when the tables it reads exist.
pub(crate) const VIEWS: &[(&str, &[&str], &str)] = &[(
    "gene_carriers",
    &["variant_effects", "variants", "genotypes"],
    include_str!("../sql/views/gene_carriers.sql"),
)];

pub(crate) async fn register_views(
    ctx: &SessionContext,
    tables: &BTreeMap<String, i64>,
) -> Result<()> {
    for (name, needs, sql) in VIEWS {
        if !needs.iter().all(|t| tables.contains_key(*t)) {
            continue;
        }
        // Without sample links the view still works, with no patient.
        let sql = if tables.contains_key(crate::tables::SAMPLE_LINKS) {
            sql.to_string()
        } else {
            let empty = "(SELECT CAST(NULL AS VARCHAR) AS collection, \
                 CAST(NULL AS VARCHAR) AS sample_id, CAST(NULL AS VARCHAR) AS \"PatientID\") l";
            sql.replace("sample_links l", empty)
        };
        ctx.sql(&sql)
            .await
            .map_err(|e| Error::Invalid(format!("view {name}: {e}")))?;
    }
    Ok(())
}

/// Open the tables together (each open reads its Delta log: a short statement's time is
/// mostly this), then register them with the versions read.
async fn register_all<F>(
    ctx: &SessionContext,
    opening: impl Iterator<Item = F>,
    table_versions: &mut BTreeMap<String, i64>,
) -> Result<()>
where
    F: std::future::Future<Output = Result<(String, Option<deltalake::DeltaTable>)>>,
{
    let opened = futures::future::try_join_all(opening.map(|f| async move {
        let (name, table) = f.await?;
        let Some(table) = table else {
            return Ok(None);
        };
        let provider = table.table_provider().await?;
        Ok::<_, Error>(Some((name, table, provider)))
    }))
    .await?;
    for (name, table, provider) in opened.into_iter().flatten() {
        table
            .update_datafusion_session(&ctx.state())
            .map_err(|e| Error::delta(&name, e))?;
        table_versions.insert(name.clone(), table.version().unwrap_or(0) as i64);
        ctx.register_table(name.as_str(), expose(&name, provider)?)?;
    }
    Ok(())
}

/// Show TM columns, stored as Int64 microseconds (Delta has no time type), as Time64.
pub fn expose(name: &str, provider: Arc<dyn TableProvider>) -> Result<Arc<dyn TableProvider>> {
    let schema = provider.schema();
    let times: Vec<&str> = time_columns().collect();
    let needs_view = schema
        .fields()
        .iter()
        .any(|f| times.contains(&f.name().as_str()) && f.data_type() == &DataType::Int64);
    if !needs_view {
        return Ok(provider);
    }
    let exprs = schema.fields().iter().map(|f| {
        let c = col(datafusion::common::Column::new_unqualified(f.name()));
        if times.contains(&f.name().as_str()) && f.data_type() == &DataType::Int64 {
            cast(c, DataType::Time64(TimeUnit::Microsecond)).alias(f.name())
        } else {
            c
        }
    });
    let plan = LogicalPlanBuilder::scan(name, provider_as_source(provider), None)?
        .project(exprs)?
        .build()?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// A table read at its newest commit on every scan, not at the session's version: for
/// `audit_log`, which changes with every statement a server runs.
#[derive(Debug)]
pub struct LatestTable {
    lake: Lake,
    name: &'static str,
    schema: datafusion::arrow::datatypes::SchemaRef,
}

impl LatestTable {
    pub fn new(
        lake: Lake,
        name: &'static str,
        schema: datafusion::arrow::datatypes::SchemaRef,
    ) -> Self {
        LatestTable { lake, name, schema }
    }
}

#[async_trait::async_trait]
impl TableProvider for LatestTable {
    fn schema(&self) -> datafusion::arrow::datatypes::SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> datafusion::datasource::TableType {
        datafusion::datasource::TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn datafusion::catalog::Session,
        projection: Option<&Vec<usize>>,
        filters: &[datafusion::logical_expr::Expr],
        limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        match self.lake.table(self.name).await.map_err(Error::into_df)? {
            Some(t) => {
                let provider = t
                    .table_provider()
                    .await
                    .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
                provider.scan(state, projection, filters, limit).await
            }
            None => {
                let schema = match projection {
                    Some(p) => Arc::new(self.schema.project(p)?),
                    None => self.schema.clone(),
                };
                Ok(Arc::new(datafusion::physical_plan::empty::EmptyExec::new(
                    schema,
                )))
            }
        }
    }
}
