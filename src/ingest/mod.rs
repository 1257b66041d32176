//! Turning source files into lake rows, and accounting for every file.
//!
//! Each source (DICOM now; reports and VCF later) parses files into Arrow batches plus
//! error rows and knows nothing about SQL. What they share lives here: the summary whose
//! counts always add up (seen = ingested + duplicates + errors), and the `ingest_errors`
//! table that records every file that could not be ingested, with its reason.

pub mod deidentify;
pub mod derived;
pub mod dicom;
pub mod reports;
pub mod sample_links;
pub mod sources;
pub mod vcf;

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;
use datafusion::arrow::array::{
    Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Serialize;

use crate::error::Result;
use crate::lake::Lake;
use crate::tables::INGEST_ERRORS;

/// What an ingest run did with the files it saw.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct IngestSummary {
    pub files_seen: u64,
    pub ingested: u64,
    pub duplicates: u64,
    pub errors: u64,
    pub seconds: f64,
    /// The lake version recorded at the end of the run.
    pub lake_version: i64,
}

/// One file that could not be ingested.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorRow {
    pub file_uri: String,
    pub file_size: Option<i64>,
    pub error_kind: String,
    pub message: String,
}

/// The `collection` column every ingested table starts with (`--collection`, as IDC's
/// `collection_id`), so that row policies can name it.
pub fn collection_field() -> Field {
    Field::new("collection", DataType::Utf8, false)
}

pub fn ingest_errors_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        collection_field(),
        Field::new("source", DataType::Utf8, false),
        Field::new("file_uri", DataType::Utf8, false),
        Field::new("file_size", DataType::Int64, true),
        Field::new("error_kind", DataType::Utf8, false),
        Field::new("message", DataType::Utf8, false),
        Field::new(
            "occurred_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]))
}

/// The errors already recorded, keyed by (file_uri, error_kind), so that ingesting the same
/// broken file again does not record it twice.
pub async fn recorded_errors(lake: &Lake, source: &str) -> Result<HashSet<(String, String)>> {
    let mut out = HashSet::new();
    let Some(table) = lake.table(INGEST_ERRORS).await? else {
        return Ok(out);
    };
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_table(INGEST_ERRORS, table.table_provider().await?)?;
    let df = ctx
        .sql(&format!(
            "SELECT file_uri, error_kind FROM {INGEST_ERRORS} WHERE source = '{source}'"
        ))
        .await?;
    for b in df.collect().await? {
        let uri = crate::lake::text_column(b.column(0))?;
        let kind = crate::lake::text_column(b.column(1))?;
        for i in 0..b.num_rows() {
            out.insert((uri.value(i).to_string(), kind.value(i).to_string()));
        }
    }
    Ok(out)
}

/// Commit error rows to `ingest_errors` in one atomic append.
pub async fn commit_errors(
    lake: &Lake,
    collection: &str,
    source: &str,
    rows: &[ErrorRow],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let now = Utc::now().timestamp_micros();
    let mut c = StringBuilder::new();
    let mut s = StringBuilder::new();
    let mut u = StringBuilder::new();
    let mut z = Int64Builder::new();
    let mut k = StringBuilder::new();
    let mut m = StringBuilder::new();
    let mut t = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    for r in rows {
        c.append_value(collection);
        s.append_value(source);
        u.append_value(&r.file_uri);
        z.append_option(r.file_size);
        k.append_value(&r.error_kind);
        m.append_value(&r.message);
        t.append_value(now);
    }
    let schema = ingest_errors_schema();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(c.finish()),
            Arc::new(s.finish()),
            Arc::new(u.finish()),
            Arc::new(z.finish()),
            Arc::new(k.finish()),
            Arc::new(m.finish()),
            Arc::new(t.finish()),
        ],
    )?;
    lake.append(
        INGEST_ERRORS,
        schema,
        vec![batch],
        &format!("ingest {source}"),
    )
    .await?;
    Ok(())
}
