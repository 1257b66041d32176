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
    /// The lake version read (`None` when the lake has none yet, for a timestamp read, or
    /// for a script session that opened only the tables it names).
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
    open_session_with(lake, as_of, None).await
}

/// Open a session for a script known in advance (`medlake sql -c` and `-f`). At the
/// newest state, only the tables its statements read are opened, where the text tells
/// which ([`tables_read_by`]): opening a Delta table reads its log, and a short statement's
/// process is mostly that.
pub async fn open_session_for_script(
    lake: &Lake,
    as_of: Option<&AsOf>,
    sql: &str,
) -> Result<LakeSession> {
    let only = match as_of {
        None => tables_read_by(lake, sql).await?,
        Some(_) => None,
    };
    open_session_with(lake, as_of, only.as_ref()).await
}

/// The functions that read lake tables of their own, or that report on every table read,
/// and the catalogs that list the tables: a script that names one needs the whole lake.
const READS_THE_LAKE: &[&str] = &[
    "report_search",
    "text_match",
    "lake_version",
    "as_of",
    "ct_findings",
    "embed",
    "predict",
    "similar_series",
    "information_schema",
    "pg_catalog",
];

/// The lake tables a script reads, when its text tells: every statement is a query that
/// names only lake tables and shipped views, and none mentions a function that reads
/// tables of its own ([`READS_THE_LAKE`], matched as text, so a column that merely contains
/// such a name also opens the whole lake). `None`: open every table.
pub async fn tables_read_by(
    lake: &Lake,
    sql: &str,
) -> Result<Option<std::collections::BTreeSet<String>>> {
    use datafusion::sql::parser::{DFParser, Statement};
    use datafusion::sql::sqlparser::{ast, dialect::GenericDialect};
    let lower = sql.to_ascii_lowercase();
    if READS_THE_LAKE.iter().any(|f| lower.contains(f)) {
        return Ok(None);
    }
    let Ok(statements) = DFParser::parse_sql_with_dialect(sql, &GenericDialect {}) else {
        return Ok(None);
    };
    let tables: std::collections::BTreeSet<String> =
        lake.table_names().await?.into_iter().collect();
    let mut read = std::collections::BTreeSet::new();
    for stmt in &statements {
        let is_query =
            matches!(stmt, Statement::Statement(s) if matches!(**s, ast::Statement::Query(_)));
        if !is_query {
            return Ok(None);
        }
        // Identifiers are kept as typed in medlake sessions (PascalCase keywords).
        let Ok((relations, _ctes)) =
            datafusion::sql::resolve::resolve_table_references(stmt, false)
        else {
            return Ok(None);
        };
        for r in relations {
            let in_lake_schema = matches!(
                (r.catalog(), r.schema()),
                (None, None) | (None, Some("public")) | (Some(CATALOG), Some("public"))
            );
            if !in_lake_schema {
                return Ok(None);
            }
            let name = r.table();
            if tables.contains(name) {
                read.insert(name.to_string());
            } else if let Some((_, needs, _)) = VIEWS.iter().find(|(v, ..)| *v == name) {
                // Only what the lake has: opening an absent table costs a listing on an
                // object store, and a view whose tables are absent is not registered anyway.
                let wanted = needs.iter().copied().chain([crate::tables::SAMPLE_LINKS]);
                read.extend(wanted.filter(|t| tables.contains(*t)).map(str::to_string));
            } else {
                // A table function, or a table that does not exist (whose error should
                // read as it always does).
                return Ok(None);
            }
        }
    }
    Ok(Some(read))
}

async fn open_session_with(
    lake: &Lake,
    as_of: Option<&AsOf>,
    only: Option<&std::collections::BTreeSet<String>>,
) -> Result<LakeSession> {
    let ctx = plain_context();
    let mut table_versions = BTreeMap::new();
    let lake_version = match as_of {
        None => {
            // The lake log is read beside the tables: a CLI statement pays for opening
            // the lake every time it runs.
            let names = match only {
                // `tables_read_by` listed the lake already and kept only tables it has.
                Some(only) => only.iter().cloned().collect(),
                None => lake.table_names().await?,
            };
            let opening = names.into_iter().map(|name| async move {
                let t = lake.table_for_query(&name).await?;
                Ok((
                    name,
                    t.map(|(table, snapshot)| Opened::Newest(table, snapshot)),
                ))
            });
            let registering = register_all(&ctx, opening, &mut table_versions);
            if only.is_some() {
                // The lake version is read by scanning the lake log, and only
                // `lake_version()` (which opens the whole lake) shows it.
                registering.await?;
                None
            } else {
                let (versions, ()) =
                    futures::future::try_join(lake.lake_versions(), registering).await?;
                versions.last().map(|v| v.lake_version)
            }
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
                Ok((name.clone(), t.map(Opened::Loaded)))
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
                        Ok((name, t.map(Opened::Loaded)))
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
    F: std::future::Future<Output = Result<(String, Option<Opened>)>>,
{
    let opened = futures::future::try_join_all(opening.map(|f| async move {
        let (name, opened) = f.await?;
        let Some(opened) = opened else {
            return Ok(None);
        };
        let (table, provider, version) = match opened {
            Opened::Newest(table, snapshot) => {
                let version = snapshot.version() as i64;
                // An unloaded table's builder holds only the log store.
                let provider = table.table_provider().with_snapshot(snapshot).await?;
                (table, provider, version)
            }
            Opened::Loaded(table) => {
                let provider = table.table_provider().await?;
                let version = table.version().unwrap_or(0) as i64;
                (table, provider, version)
            }
        };
        Ok::<_, Error>(Some((name, table, provider, version)))
    }))
    .await?;
    for (name, table, provider, version) in opened.into_iter().flatten() {
        table
            .update_datafusion_session(&ctx.state())
            .map_err(|e| Error::delta(&name, e))?;
        table_versions.insert(name.clone(), version);
        ctx.register_table(name.as_str(), expose(&name, provider)?)?;
    }
    Ok(())
}

/// A table ready to register: the newest version read for a query
/// ([`Lake::table_for_query`]), or a table loaded at an earlier version or time.
enum Opened {
    Newest(deltalake::DeltaTable, Arc<deltalake::kernel::Snapshot>),
    Loaded(deltalake::DeltaTable),
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema};

    /// A lake whose tables hold one nullable column and no rows.
    async fn lake_with(tables: &[&str]) -> (tempfile::TempDir, Lake) {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        for t in tables {
            lake.append(t, schema.clone(), vec![], "test")
                .await
                .unwrap();
        }
        (dir, lake)
    }

    #[tokio::test]
    async fn a_script_opens_only_the_tables_it_names() {
        let (_dir, lake) =
            lake_with(&["series", "instances", "variants", "genotypes", "reports"]).await;
        let read = |sql: &'static str| {
            let lake = lake.clone();
            async move {
                tables_read_by(&lake, sql)
                    .await
                    .unwrap()
                    .map(|s| s.into_iter().collect::<Vec<_>>().join(","))
            }
        };
        assert_eq!(read("SELECT 1").await.as_deref(), Some(""));
        assert_eq!(
            read("SELECT count(*) FROM series").await.as_deref(),
            Some("series")
        );
        assert_eq!(
            read("SELECT * FROM series s JOIN medlake.public.instances i ON s.x = i.x; SELECT * FROM public.variants")
                .await
                .as_deref(),
            Some("instances,series,variants")
        );
        // A CTE is not a table; the table it reads is.
        assert_eq!(
            read("WITH v AS (SELECT * FROM variants) SELECT * FROM v")
                .await
                .as_deref(),
            Some("variants")
        );
        // A shipped view brings the tables it reads, those the lake has (this one has no
        // `sample_links` or `variant_effects`).
        assert_eq!(
            read("SELECT * FROM gene_carriers").await.as_deref(),
            Some("genotypes,variants")
        );
        // Everything else opens the whole lake.
        for sql in [
            "SELECT * FROM report_search('effusion')",
            "SELECT * FROM reports WHERE text_match(text, 'effusion')",
            "SELECT * FROM series WHERE embed(x) IS NULL",
            "SELECT * FROM lake_version()",
            "SELECT * FROM information_schema.tables",
            "SELECT * FROM no_such_table",
            "SELECT * FROM other.series",
            "CREATE VIEW v AS SELECT * FROM series",
            "SHOW TABLES",
            "SELECT * FROM",
        ] {
            assert_eq!(read(sql).await, None, "{sql}");
        }
    }

    #[tokio::test]
    async fn a_script_session_registers_only_the_named_tables() {
        let (_dir, lake) = lake_with(&["series", "instances"]).await;
        let s = open_session_for_script(&lake, None, "SELECT count(*) FROM series")
            .await
            .unwrap();
        assert!(s.ctx.table_exist("series").unwrap());
        assert!(!s.ctx.table_exist("instances").unwrap());
        let all = open_session_for_script(&lake, None, "SHOW TABLES")
            .await
            .unwrap();
        assert!(all.ctx.table_exist("instances").unwrap());
    }
}
