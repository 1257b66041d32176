//! `count(DISTINCT ...)` per group, without one hash set per group.
//!
//! DataFusion 55 rewrites an aggregate into two plain aggregations only when every
//! DISTINCT aggregate has the same argument and the other aggregates are `sum`, `min` or
//! `max` (`single_distinct_aggregation_to_group_by`). Anything else (a `count(*)` next to
//! a `count(DISTINCT x)`, or the common idiom of several conditional distinct counts,
//! `count(DISTINCT CASE WHEN cond THEN x END)`) runs on the per-group accumulator path,
//! which builds one hash set per group and is 10–30x slower when there are many groups.
//!
//! This rule handles the grouped aggregates whose DISTINCT aggregates all range over the
//! values of one *base*:
//!
//! * every DISTINCT argument is the same expression `e` (the base is `e`), or
//! * every DISTINCT argument reads exactly one column `c` and yields either `c` or NULL,
//!   e.g. `c`, `CASE WHEN <cond on c> THEN c END`, `CASE c WHEN 'A' THEN c ELSE NULL END`
//!   (the base is `c`).
//!
//! ```text
//! Aggregate: groupBy=[G], aggr=[f(DISTINCT arg_j)..., g_i(x_i)...]
//! ```
//! becomes
//! ```text
//! Projection: <original names and types>
//!   Aggregate: groupBy=[G'], aggr=[f(arg_j)..., merge_i(__medlake_p_i)...]
//!     Aggregate: groupBy=[G, base], aggr=[g_i(x_i) AS __medlake_p_i...]
//! ```
//! The inner aggregate leaves each (group, base value) once, so within a group the
//! non-NULL values of `arg_j` are already distinct and the DISTINCT can be dropped: every
//! `arg_j` maps distinct base values to distinct values or to NULL, and all aggregates
//! taken (`count`, `sum`, `avg`, `min`, `max`) ignore NULLs, as their DISTINCT forms do.
//! The other aggregates must be decomposable: `count` (merged with `sum`, then
//! `coalesce(.., 0)`), `sum`, `min`, `max`, each with its FILTER kept in the inner
//! aggregate. Grouping keys may be NULL: both aggregates group NULL keys together.
//!
//! The rule leaves alone: aggregates without GROUP BY (one hash set in all, already fast),
//! grouping sets, DISTINCT aggregates with FILTER or ORDER BY, volatile arguments, other
//! aggregate functions, and DISTINCT arguments over several bases.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result};
use datafusion::functions::expr_fn::coalesce;
use datafusion::functions_aggregate::expr_fn::{max, min, sum};
use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams, Case};
use datafusion::logical_expr::logical_plan::{Aggregate, Projection};
use datafusion::logical_expr::{cast, lit, Expr, LogicalPlan};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// The optimizer rule; see the module documentation.
#[derive(Debug, Default)]
pub struct MultiDistinctToGroupBy;

impl MultiDistinctToGroupBy {
    pub fn new() -> Self {
        Self
    }
}

impl OptimizerRule for MultiDistinctToGroupBy {
    fn name(&self) -> &str {
        "medlake_multi_distinct_to_group_by"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(agg) = &plan else {
            return Ok(Transformed::no(plan));
        };
        match rewrite_aggregate(agg)? {
            Some(new_plan) => Ok(Transformed::yes(new_plan)),
            None => Ok(Transformed::no(plan)),
        }
    }
}

/// How one aggregate of the original list is computed after the rewrite.
enum Kind {
    /// `f(DISTINCT arg)`: `f(arg)` in the outer aggregate.
    Distinct,
    /// A decomposable aggregate: itself in the inner one, merged in the outer one.
    Count,
    Sum,
    Min,
    Max,
}

/// The values the DISTINCT aggregates range over.
enum Base {
    Column(Column),
    Expr(Expr),
}

const BASE_ALIAS: &str = "__medlake_distinct_base";

fn rewrite_aggregate(agg: &Aggregate) -> Result<Option<LogicalPlan>> {
    if agg.group_expr.is_empty()
        || agg
            .group_expr
            .iter()
            .any(|e| matches!(e, Expr::GroupingSet(_)))
    {
        return Ok(None);
    }

    // Classify every aggregate; give up on anything unsupported.
    let mut kinds = Vec::with_capacity(agg.aggr_expr.len());
    let mut funcs = Vec::with_capacity(agg.aggr_expr.len());
    let mut distinct_args: Vec<&Expr> = Vec::new();
    for e in &agg.aggr_expr {
        let Expr::AggregateFunction(f) = strip_alias(e) else {
            return Ok(None);
        };
        let AggregateFunctionParams {
            args,
            distinct,
            filter,
            order_by,
            ..
        } = &f.params;
        if !order_by.is_empty()
            || args.iter().any(Expr::is_volatile)
            || filter.as_deref().is_some_and(Expr::is_volatile)
        {
            return Ok(None);
        }
        let name = f.func.name().to_ascii_lowercase();
        let kind = if *distinct {
            if filter.is_some()
                || args.len() != 1
                || !matches!(name.as_str(), "count" | "sum" | "avg" | "min" | "max")
            {
                return Ok(None);
            }
            distinct_args.push(&args[0]);
            Kind::Distinct
        } else {
            match name.as_str() {
                "count" => Kind::Count,
                "sum" if args.len() == 1 => Kind::Sum,
                "min" if args.len() == 1 => Kind::Min,
                "max" if args.len() == 1 => Kind::Max,
                _ => return Ok(None),
            }
        };
        kinds.push(kind);
        funcs.push(f);
    }
    let Some(base) = find_base(&distinct_args) else {
        return Ok(None);
    };
    let base_expr = match &base {
        Base::Column(c) => Expr::Column(c.clone()),
        Base::Expr(e) => e.clone(),
    };
    if agg.group_expr.iter().any(|g| strip_alias(g) == &base_expr) {
        return Ok(None);
    }

    // Inner aggregate: GROUP BY (G, base), with the decomposable aggregates.
    let mut inner_group = Vec::with_capacity(agg.group_expr.len() + 1);
    let mut outer_group = Vec::with_capacity(agg.group_expr.len());
    for (i, g) in agg.group_expr.iter().enumerate() {
        if let Expr::Column(c) = g {
            inner_group.push(g.clone());
            outer_group.push(Expr::Column(c.clone()));
        } else {
            let alias = format!("__medlake_group_{i}");
            inner_group.push(g.clone().alias(alias.clone()));
            outer_group.push(Expr::Column(Column::new_unqualified(alias)));
        }
    }
    inner_group.push(match &base {
        Base::Column(c) => Expr::Column(c.clone()),
        Base::Expr(e) => e.clone().alias(BASE_ALIAS),
    });
    let mut inner_aggr = Vec::new();
    let mut outer_aggr = Vec::with_capacity(funcs.len());
    for (i, (f, kind)) in funcs.iter().zip(&kinds).enumerate() {
        let partial = Column::new_unqualified(format!("__medlake_partial_{i}"));
        let outer = match kind {
            Kind::Distinct => {
                let arg = match &base {
                    Base::Column(_) => f.params.args[0].clone(),
                    Base::Expr(_) => Expr::Column(Column::new_unqualified(BASE_ALIAS)),
                };
                Expr::AggregateFunction(AggregateFunction::new_udf(
                    Arc::clone(&f.func),
                    vec![arg],
                    false,
                    None,
                    vec![],
                    f.params.null_treatment,
                ))
            }
            Kind::Count | Kind::Sum | Kind::Min | Kind::Max => {
                inner_aggr.push(Expr::AggregateFunction((*f).clone()).alias(partial.name()));
                let p = Expr::Column(partial);
                match kind {
                    Kind::Count | Kind::Sum => sum(p),
                    Kind::Min => min(p),
                    _ => max(p),
                }
            }
        };
        outer_aggr.push(outer.alias(format!("__medlake_aggr_{i}")));
    }
    let inner = LogicalPlan::Aggregate(Aggregate::try_new(
        Arc::clone(&agg.input),
        inner_group,
        inner_aggr,
    )?);
    let outer = Aggregate::try_new(Arc::new(inner), outer_group, outer_aggr)?;

    // Back to the original output: same qualifiers, names and types.
    let n_group = agg.group_expr.len();
    let mut exprs = Vec::with_capacity(agg.schema.fields().len());
    for (i, (qualifier, field)) in agg.schema.iter().enumerate() {
        let (q, f) = outer.schema.qualified_field(i);
        let mut e = Expr::Column(Column::new(q.cloned(), f.name()));
        if i >= n_group && matches!(kinds[i - n_group], Kind::Count) {
            e = coalesce(vec![e, lit(0i64)]);
        }
        if f.data_type() != field.data_type() {
            e = cast(e, field.data_type().clone());
        }
        exprs.push(e.alias_qualified(qualifier.cloned(), field.name()));
    }
    let projection = Projection::try_new(exprs, Arc::new(LogicalPlan::Aggregate(outer)))?;
    Ok(Some(LogicalPlan::Projection(projection)))
}

fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip_alias(&a.expr),
        _ => e,
    }
}

/// The one base all DISTINCT arguments range over, if there is one.
fn find_base(args: &[&Expr]) -> Option<Base> {
    let first = *args.first()?;
    if args.iter().all(|a| *a == first) {
        return Some(match first {
            Expr::Column(c) => Base::Column(c.clone()),
            e => Base::Expr(e.clone()),
        });
    }
    // Several arguments: each must read one and the same column and yield it or NULL.
    let refs: HashSet<&Column> = first.column_refs();
    if refs.len() != 1 {
        return None;
    }
    let c = *refs.iter().next()?;
    for a in args {
        if a.column_refs() != refs || !yields_column_or_null(a, c) {
            return None;
        }
    }
    Some(Base::Column(c.clone()))
}

/// Whether `e` always evaluates to the value of column `c` or to NULL.
fn yields_column_or_null(e: &Expr, c: &Column) -> bool {
    match e {
        Expr::Column(x) => x == c,
        Expr::Literal(v, _) => v.is_null(),
        Expr::Case(Case {
            when_then_expr,
            else_expr,
            ..
        }) => {
            when_then_expr
                .iter()
                .all(|(_, then)| yields_column_or_null(then, c))
                && else_expr
                    .as_deref()
                    .is_none_or(|e| yields_column_or_null(e, c))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::{MemTable, TableProvider};
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    fn config() -> SessionConfig {
        SessionConfig::new()
            .with_target_partitions(3)
            .with_batch_size(4)
            .set_bool("datafusion.sql_parser.enable_ident_normalization", false)
    }

    fn table() -> Arc<MemTable> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Int32, true),
            Field::new("h", DataType::Utf8, true),
            Field::new("v", DataType::Utf8, true),
            Field::new("x", DataType::Int64, true),
        ]));
        let g = [
            Some(1),
            Some(1),
            Some(1),
            Some(2),
            Some(2),
            None,
            None,
            Some(3),
            Some(1),
            Some(2),
            None,
            Some(4),
        ];
        let h = [
            Some("a"),
            Some("b"),
            Some("a"),
            None,
            Some("a"),
            Some("b"),
            None,
            Some("c"),
            Some("a"),
            None,
            Some("b"),
            Some("d"),
        ];
        let v = [
            Some("CT"),
            Some("CT"),
            Some("SEG"),
            Some("MR"),
            None,
            Some("CT"),
            Some("PT"),
            None,
            Some("RTSTRUCT"),
            Some("MR"),
            Some("SEG"),
            Some("CT"),
        ];
        let x = [
            Some(5),
            Some(5),
            None,
            Some(3),
            Some(7),
            Some(1),
            None,
            None,
            Some(2),
            Some(3),
            Some(1),
            Some(9),
        ];
        let batches = (0..3)
            .map(|k| {
                let r = k * 4..k * 4 + 4;
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Int32Array::from(g[r.clone()].to_vec())),
                        Arc::new(StringArray::from(h[r.clone()].to_vec())),
                        Arc::new(StringArray::from(v[r.clone()].to_vec())),
                        Arc::new(Int64Array::from(x[r].to_vec())),
                    ],
                )
                .unwrap()
            })
            .collect::<Vec<_>>();
        Arc::new(
            MemTable::try_new(schema, vec![batches[..2].to_vec(), batches[2..].to_vec()]).unwrap(),
        )
    }

    fn contexts() -> (SessionContext, SessionContext) {
        let plain = SessionContext::new_with_config(config());
        let state = SessionStateBuilder::new()
            .with_config(config())
            .with_default_features()
            .with_optimizer_rule(Arc::new(MultiDistinctToGroupBy::new()))
            .build();
        let ruled = SessionContext::new_with_state(state);
        for ctx in [&plain, &ruled] {
            ctx.register_table("t", table()).unwrap();
            ctx.register_table(
                "empty",
                Arc::new(MemTable::try_new(table().schema(), vec![vec![]]).unwrap()),
            )
            .unwrap();
        }
        (plain, ruled)
    }

    async fn rows(ctx: &SessionContext, sql: &str) -> (Vec<String>, Vec<(String, DataType)>) {
        let df = ctx.sql(sql).await.unwrap();
        let fields = df
            .schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect();
        let batches = df.collect().await.unwrap();
        let text = pretty_format_batches(&batches).unwrap().to_string();
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with('|'))
            .skip(1)
            .map(str::to_string)
            .collect();
        lines.sort();
        (lines, fields)
    }

    async fn fired(ctx: &SessionContext, sql: &str) -> bool {
        let plan = ctx.state().create_logical_plan(sql).await.unwrap();
        let optimized = ctx.state().optimize(&plan).unwrap();
        let text = optimized.display_indent().to_string();
        text.contains("__medlake_aggr_")
    }

    /// Same rows and schema with and without the rule; returns whether the rule fired.
    async fn check(sql: &str) -> bool {
        let (plain, ruled) = contexts();
        let a = rows(&plain, sql).await;
        let b = rows(&ruled, sql).await;
        assert_eq!(a, b, "{sql}");
        assert!(!fired(&plain, sql).await);
        fired(&ruled, sql).await
    }

    #[tokio::test]
    async fn conditional_distinct_counts() {
        assert!(
            check(
                "SELECT g, count(*) AS n, \
                 count(DISTINCT CASE WHEN v IN ('CT', 'MR', 'PT') THEN v END) AS acq, \
                 count(DISTINCT CASE WHEN v IN ('SEG', 'RTSTRUCT') THEN v ELSE NULL END) AS ann, \
                 count(DISTINCT v) AS all_v \
                 FROM t GROUP BY g"
            )
            .await
        );
        assert!(
            check(
                "SELECT count(*) AS n, sum(n_rows) AS s FROM (SELECT g, count(*) AS n_rows FROM t \
                 GROUP BY g HAVING count(DISTINCT CASE WHEN v IN ('CT', 'MR') THEN v END) >= 1 \
                 AND count(DISTINCT CASE WHEN v = 'SEG' THEN v END) >= 1) s"
            )
            .await
        );
    }

    #[tokio::test]
    async fn distinct_with_mixed_aggregates() {
        assert!(
            check(
                "SELECT h, count(*) AS n, count(x) AS nx, sum(x) AS sx, min(x) AS lo, \
                 max(x) AS hi, count(DISTINCT v) AS dv, \
                 count(x) FILTER (WHERE x > 2) AS big, min(v) FILTER (WHERE x > 2) AS mv \
                 FROM t GROUP BY h"
            )
            .await
        );
        // Two grouping keys, one an expression, both with NULLs; DISTINCT over an expression.
        assert!(
            check(
                "SELECT g % 2 AS parity, h, count(*) AS n, count(DISTINCT x) AS dx, \
                 sum(DISTINCT x) AS sdx, min(DISTINCT x) AS mdx \
                 FROM t GROUP BY g % 2, h"
            )
            .await
        );
        // avg's argument is a cast to Float64: the base is that expression.
        assert!(
            check(
                "SELECT g % 2 AS parity, count(*) AS n, avg(DISTINCT x) AS adx \
                 FROM t GROUP BY g % 2"
            )
            .await
        );
        assert!(
            check(
                "SELECT g, count(*) AS n, count(DISTINCT x + 1) AS d1, sum(DISTINCT x + 1) AS s1 \
                 FROM t GROUP BY g"
            )
            .await
        );
        // Decimal sum: the merged sum has a wider type and is cast back.
        assert!(
            check(
                "SELECT g, sum(CAST(x AS DECIMAL(10, 2))) AS s, count(*) AS n, \
                 count(DISTINCT v) AS dv FROM t GROUP BY g"
            )
            .await
        );
    }

    #[tokio::test]
    async fn empty_inputs() {
        assert!(
            check("SELECT g, count(*) AS n, count(DISTINCT v) AS dv FROM empty GROUP BY g").await
        );
        assert!(
            check(
                "SELECT g, count(*) AS n, count(DISTINCT v) AS dv FROM t WHERE x > 100 GROUP BY g"
            )
            .await
        );
    }

    #[tokio::test]
    async fn left_alone() {
        // No GROUP BY: one hash set per partition, already fast.
        assert!(!check("SELECT count(*) AS n, count(DISTINCT v) AS dv FROM t").await);
        assert!(!check("SELECT count(*) AS n, count(DISTINCT v) AS dv FROM empty").await);
        // DISTINCT over two different columns.
        assert!(
            !check("SELECT g, count(DISTINCT v) AS dv, count(DISTINCT x) AS dx FROM t GROUP BY g")
                .await
        );
        // A condition on another column: (g, v) pairs would not be distinct in CASE values.
        assert!(
            !check(
                "SELECT g, count(DISTINCT CASE WHEN x > 2 THEN v END) AS a, \
                 count(DISTINCT v) AS b FROM t GROUP BY g"
            )
            .await
        );
        // A CASE that maps several values to one.
        assert!(
            !check(
                "SELECT g, count(DISTINCT CASE WHEN v = 'CT' THEN 'ct' ELSE v END) AS a, \
                 count(DISTINCT v) AS b FROM t GROUP BY g"
            )
            .await
        );
        // Non-decomposable aggregate alongside.
        assert!(!check("SELECT g, avg(x) AS a, count(DISTINCT v) AS b FROM t GROUP BY g").await);
        // The distinct column is a grouping key.
        assert!(!check("SELECT v, count(*) AS n, count(DISTINCT v) AS b FROM t GROUP BY v").await);
        // DataFusion's own rule handles a single DISTINCT next to sum/min/max.
        assert!(!check("SELECT g, sum(x) AS s, count(DISTINCT v) AS b FROM t GROUP BY g").await);
    }
}
