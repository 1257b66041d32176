//! Running a script of SQL statements against a session, one statement at a time.

use std::time::Instant;

use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::DFParser;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use futures::StreamExt;

use super::output::Sink;
use crate::error::Result;

/// Split a script into statements with DataFusion's parser (so `;` inside strings is safe).
pub fn split(sql: &str) -> Result<Vec<datafusion::sql::parser::Statement>> {
    Ok(DFParser::parse_sql_with_dialect(sql, &GenericDialect {})?
        .into_iter()
        .collect())
}

/// Plan and start one statement; DDL runs to completion here and yields no rows.
pub async fn execute(
    ctx: &SessionContext,
    stmt: datafusion::sql::parser::Statement,
) -> Result<SendableRecordBatchStream> {
    // One copy of the session state serves planning and execution: copying it is a
    // measurable part of a sub-millisecond search statement.
    let state = ctx.state();
    let plan = state.statement_to_plan(stmt).await?;
    if matches!(
        plan,
        datafusion::logical_expr::LogicalPlan::Ddl(_)
            | datafusion::logical_expr::LogicalPlan::Statement(_)
    ) {
        // DDL and SET change the context itself.
        let df = ctx.execute_logical_plan(plan).await?;
        return Ok(df.execute_stream().await?);
    }
    let physical = state.create_physical_plan(&plan).await?;
    Ok(datafusion::physical_plan::execute_stream(
        physical,
        state.task_ctx(),
    )?)
}

/// Run every statement of a script, writing the rows of each query to the sink.
pub async fn run_all(ctx: &SessionContext, sql: &str, sink: &mut Sink) -> Result<()> {
    let timing = std::env::var("MEDLAKE_TIMING").is_ok_and(|v| v == "1");
    let metrics = ctx
        .state()
        .config()
        .get_extension::<crate::functions::ct_findings::ComputeMetrics>();
    for stmt in split(sql)? {
        let started = Instant::now();
        let counts_before = metrics.as_ref().map(|m| m.counts());
        let is_query = matches!(
            &stmt,
            datafusion::sql::parser::Statement::Statement(s)
                if matches!(**s, datafusion::sql::sqlparser::ast::Statement::Query(_)
                    | datafusion::sql::sqlparser::ast::Statement::ShowTables { .. }
                    | datafusion::sql::sqlparser::ast::Statement::ShowColumns { .. }
                    | datafusion::sql::sqlparser::ast::Statement::ExplainTable { .. }
                    | datafusion::sql::sqlparser::ast::Statement::Explain { .. })
        ) || matches!(&stmt, datafusion::sql::parser::Statement::Explain(_));
        let mut stream = execute(ctx, stmt).await?;
        // The time reported is planning and execution; writing the output is left out.
        let mut writing = std::time::Duration::ZERO;
        let mut write = |f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
            let t = Instant::now();
            f()?;
            writing += t.elapsed();
            Ok(())
        };
        if is_query {
            write(&mut || sink.begin(stream.schema()))?;
        }
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            if is_query {
                write(&mut || sink.write(&batch))?;
            }
        }
        if is_query {
            write(&mut || sink.end())?;
        }
        if timing {
            eprintln!(
                "elapsed_ms: {:.3}",
                (started.elapsed() - writing).as_secs_f64() * 1000.0
            );
        }
        // Where compute functions ran, next to the results (not in them).
        if let (Some(m), Some((c0, t0, f0))) = (&metrics, counts_before) {
            let (c, t, f) = m.counts();
            if (c, t, f) != (c0, t0, f0) {
                eprintln!(
                    "compute (ct_findings, embed, predict): {} series computed on {}, {} read \
                     from findings/embeddings, {} failed (see compute_errors)",
                    c - c0,
                    m.backends().join(", "),
                    t - t0,
                    f - f0
                );
            }
        }
    }
    Ok(())
}
