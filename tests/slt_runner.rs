//! Runs `tests/slt/*.slt` against a lake built from synthetic series (see `common`).
//!
//! Each file gets a fresh session over the same lake. The example cohorts in
//! `sql/cohorts/*.sql` are available to the files as `${cohort_NAME}`, so the .slt files
//! test the very SQL that ships.

// The integration tests' helpers; this binary uses only the test lake.
#[allow(dead_code)]
mod common;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::StreamExt;
use sqllogictest::{DBOutput, DefaultColumnType};

struct Db {
    ctx: datafusion::prelude::SessionContext,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct DbError(String);

fn column_type(t: &DataType) -> DefaultColumnType {
    match t {
        t if t.is_integer() => DefaultColumnType::Integer,
        t if t.is_floating() || matches!(t, DataType::Decimal128(..)) => {
            DefaultColumnType::FloatingPoint
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DefaultColumnType::Text,
        _ => DefaultColumnType::Any,
    }
}

fn render(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, DbError> {
    let opts = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for b in batches {
        let fmts = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| DbError(e.to_string()))?;
        for i in 0..b.num_rows() {
            rows.push(
                fmts.iter()
                    .map(|f| {
                        let s = f.value(i).to_string();
                        if s.is_empty() {
                            "(empty)".to_string()
                        } else {
                            s
                        }
                    })
                    .collect(),
            );
        }
    }
    Ok(rows)
}

#[async_trait]
impl sqllogictest::AsyncDB for Db {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        let err = |e: medlake::Error| DbError(e.to_string());
        let mut out = Vec::new();
        let mut schema = None;
        for stmt in medlake::cli::statements::split(sql).map_err(err)? {
            let mut stream = medlake::cli::statements::execute(&self.ctx, stmt)
                .await
                .map_err(err)?;
            schema = Some(stream.schema());
            out.clear();
            while let Some(b) = stream.next().await {
                out.push(b.map_err(|e| DbError(e.to_string()))?);
            }
        }
        let schema = schema.ok_or_else(|| DbError("no statement".into()))?;
        if schema.fields().is_empty() || sql.trim_start().to_lowercase().starts_with("create") {
            return Ok(DBOutput::StatementComplete(0));
        }
        Ok(DBOutput::Rows {
            types: schema
                .fields()
                .iter()
                .map(|f| column_type(f.data_type()))
                .collect(),
            rows: render(&out)?,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "medlake"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let failed = rt.block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let lake = common::build_test_lake(tmp.path()).await;
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("tests/slt"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "slt"))
            .collect();
        files.sort();
        let cohorts: Vec<(String, String)> = std::fs::read_dir(root.join("sql/cohorts"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                let sql = std::fs::read_to_string(&p).unwrap();
                (name, sql.trim().trim_end_matches(';').to_string())
            })
            .collect();
        let mut failed = 0;
        let mut passed = 0;
        for f in &files {
            let lake = lake.clone();
            let mut runner = sqllogictest::Runner::new(move || {
                let lake = lake.clone();
                async move {
                    let s = medlake::open_session(&lake, None)
                        .await
                        .map_err(|e| DbError(e.to_string()))?;
                    Ok::<_, DbError>(Db { ctx: s.ctx })
                }
            });
            for (name, sql) in &cohorts {
                runner.set_var(format!("cohort_{name}"), sql.clone());
            }
            match runner.run_file_async(f).await {
                Ok(()) => {
                    passed += 1;
                    println!("ok    {}", f.display());
                }
                Err(e) => {
                    failed += 1;
                    println!("FAIL  {}\n{e}", f.display());
                }
            }
        }
        println!("slt: {passed} passed, {failed} failed");
        failed
    });
    if failed > 0 {
        std::process::exit(1);
    }
}
