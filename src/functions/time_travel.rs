//! Reading the lake's history from SQL.
//!
//! `SELECT * FROM lake_version()` names the lake version and the Delta version of every
//! table this session reads: record it beside a cohort and the cohort can be re-run
//! exactly. `SELECT * FROM as_of('series', 3)` reads one table as it was at lake version 3
//! (or at a timestamp: `as_of('series', '2026-11-25T10:00:00Z')`), whatever the session's
//! own point in history is.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{plan_err, Result, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::Expr;

use crate::lake::{AsOf, Lake};

#[derive(Debug)]
pub struct LakeVersionFunc {
    pub lake_version: Option<i64>,
    pub table_versions: BTreeMap<String, i64>,
}

impl TableFunctionImpl for LakeVersionFunc {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        if !args.exprs().is_empty() {
            return plan_err!("lake_version() takes no arguments");
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("lake_version", DataType::Int64, true),
            Field::new("table_name", DataType::Utf8, false),
            Field::new("table_version", DataType::Int64, false),
        ]));
        let n = self.table_versions.len();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![self.lake_version; n])),
                Arc::new(StringArray::from_iter_values(self.table_versions.keys())),
                Arc::new(Int64Array::from_iter_values(
                    self.table_versions.values().copied(),
                )),
            ],
        )?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }
}

#[derive(Debug)]
pub struct AsOfFunc {
    pub lake: Lake,
}

fn literal_text(e: &Expr) -> Option<String> {
    match e {
        Expr::Literal(ScalarValue::Utf8(Some(s)), _)
        | Expr::Literal(ScalarValue::LargeUtf8(Some(s)), _)
        | Expr::Literal(ScalarValue::Utf8View(Some(s)), _) => Some(s.clone()),
        Expr::Literal(v, _) if v.data_type().is_integer() && !v.is_null() => Some(v.to_string()),
        _ => None,
    }
}

impl TableFunctionImpl for AsOfFunc {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let (Some(table), Some(when)) = (
            args.exprs().first().and_then(literal_text),
            args.exprs().get(1).and_then(literal_text),
        ) else {
            return plan_err!("as_of(table_name, lake_version_or_timestamp) takes two literals");
        };
        let as_of: AsOf = when.parse().map_err(crate::Error::into_df)?;
        let lake = self.lake.clone();
        // Table functions are planned synchronously; loading a Delta snapshot is async.
        let loaded = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async move {
                match as_of {
                    AsOf::Version(v) => {
                        let versions = lake.lake_versions().await?;
                        let newest = versions.last().map_or(0, |e| e.lake_version);
                        let Some(entry) = versions.into_iter().find(|e| e.lake_version == v) else {
                            return Err(crate::Error::NoSuchLakeVersion {
                                requested: v,
                                newest,
                            });
                        };
                        match entry.table_versions.get(&table) {
                            Some(tv) => lake.table_at_version(&table, *tv).await,
                            None => Ok(None),
                        }
                    }
                    AsOf::Timestamp(at) => lake.table_at_time(&table, at).await,
                }
                .map(|t| (table, t))
            })
        })
        .map_err(crate::Error::into_df)?;
        let (table, Some(delta)) = loaded else {
            return plan_err!("table {when:?} has no version at that point in the lake's history");
        };
        let provider = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async { delta.table_provider().await })
        })?;
        crate::session::expose(&table, provider).map_err(crate::Error::into_df)
    }
}
