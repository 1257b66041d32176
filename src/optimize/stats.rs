//! A row estimate for GROUP BY when the keys have no distinct-count statistics.
//!
//! DataFusion 55 estimates a grouped aggregate at its input row count unless every key
//! column has a distinct count (NDV), which Parquet files almost never carry. A query such
//! as `WHERE PatientID IN (SELECT PatientID FROM t GROUP BY PatientID HAVING ...)` then
//! looks as big on the subquery side as on the table side, the hash join keeps the
//! whole table as its build side, and the join costs a hash table over every row instead
//! of over the few grouped keys.
//!
//! [`GroupedAggregateEstimate`] is a [`StatisticsProvider`] placed in front of
//! DataFusion's built-in providers (which do use NDV when it exists). For a final grouped
//! aggregate without NDV on its keys it estimates `input rows / GROUP_REDUCTION`, inexact;
//! a partial aggregate passes its input estimate through, so stacked aggregates (the
//! two-level plans of DISTINCT rewrites) compound. Only estimates change, never results;
//! they steer join build sides (`datafusion.optimizer.use_statistics_registry`).

use std::sync::Arc;

use datafusion::common::stats::Precision;
use datafusion::common::Result;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::operator_statistics::{
    ExtendedStatistics, StatisticsProvider, StatisticsRegistry, StatisticsResult,
};
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use datafusion::physical_plan::ExecutionPlan;

/// Assumed rows per group for a final GROUP BY whose keys have no NDV statistics.
pub const GROUP_REDUCTION: usize = 10;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct GroupedAggregateEstimate;

impl StatisticsProvider for GroupedAggregateEstimate {
    fn compute_statistics(
        &self,
        plan: &dyn ExecutionPlan,
        child_stats: &[ExtendedStatistics],
    ) -> Result<StatisticsResult> {
        let Some(agg) = plan.downcast_ref::<AggregateExec>() else {
            return Ok(StatisticsResult::Delegate);
        };
        let group_by = agg.group_expr();
        if group_by.expr().is_empty() || group_by.groups().len() > 1 || child_stats.len() != 1 {
            return Ok(StatisticsResult::Delegate);
        }
        let input = child_stats[0].base();
        let Some(&input_rows) = input.num_rows.get_value() else {
            return Ok(StatisticsResult::Delegate);
        };
        let keys_have_ndv = group_by.expr().iter().all(|(e, _)| {
            e.downcast_ref::<Column>().is_some_and(|c| {
                input
                    .column_statistics
                    .get(c.index())
                    .is_some_and(|s| s.distinct_count.get_value().is_some())
            })
        });
        if keys_have_ndv {
            // DataFusion's AggregateStatisticsProvider estimates from the NDVs.
            return Ok(StatisticsResult::Delegate);
        }
        let rows = if matches!(agg.mode(), AggregateMode::Partial) {
            input_rows
        } else {
            (input_rows / GROUP_REDUCTION).max(1).min(input_rows)
        };
        let mut stats =
            Arc::unwrap_or_clone(StatisticsContext::new().compute(plan, &StatisticsArgs::new())?);
        if let (Some(&bytes), Some(&before)) = (
            stats.total_byte_size.get_value(),
            stats.num_rows.get_value(),
        ) {
            stats.total_byte_size = bytes
                .saturating_mul(rows)
                .checked_div(before)
                .map_or(Precision::Absent, Precision::Inexact);
        }
        stats.num_rows = Precision::Inexact(rows);
        Ok(StatisticsResult::Computed(ExtendedStatistics::new(stats)))
    }
}

/// DataFusion's built-in providers, with [`GroupedAggregateEstimate`] first.
pub fn statistics_registry() -> StatisticsRegistry {
    let mut registry = StatisticsRegistry::default_with_builtin_providers();
    registry.register(Arc::new(GroupedAggregateEstimate));
    registry
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;

    use super::*;

    /// The join of `IN (SELECT k ... GROUP BY k HAVING ...)` builds on the grouped side.
    #[tokio::test]
    async fn grouped_subquery_is_the_build_side() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let n = 10_000;
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values((0..n).map(|i| i % 1000))),
                Arc::new(Int64Array::from_iter_values(0..n)),
            ],
        )
        .unwrap();
        let ctx = crate::session::plain_context();
        ctx.register_table(
            "t",
            Arc::new(MemTable::try_new(schema, vec![vec![batch.clone()], vec![batch]]).unwrap()),
        )
        .unwrap();
        let sql = "SELECT count(*) FROM t WHERE k IN \
                   (SELECT k FROM t GROUP BY k HAVING count(DISTINCT v) > 5)";
        let plan = ctx
            .sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let text = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(false)
            .to_string();
        assert!(text.contains("join_type=RightSemi"), "{text}");
        let rows = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let count = rows[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0);
        assert_eq!(count, 2 * n);
    }
}
