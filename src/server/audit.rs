//! The audit log: every statement a server runs, in the append-only `audit_log` table.
//!
//! Each statement gets two rows with one `query_id`: `start` (user, role, client, SQL
//! text, tables named) before it runs, and `end` (status, rows returned, error, duration)
//! before the client is told it completed. Both are committed to the lake before the
//! server goes on, so a statement whose results a client saw has its `start` row, and a
//! statement a client saw complete has its `end` row, whatever happens to the server
//! afterwards. Rows from concurrent connections share commits (group commit): one writer
//! task takes everything waiting and appends it in one Delta commit.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    Float64Builder, Int64Builder, ListBuilder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use tokio::sync::{mpsc, oneshot};

use super::access::AUDIT_LOG;
use crate::lake::Lake;

pub fn audit_log_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("query_id", DataType::Utf8, false),
        Field::new("event", DataType::Utf8, false),
        Field::new("at", ts, false),
        Field::new("user", DataType::Utf8, false),
        Field::new("role", DataType::Utf8, false),
        Field::new("client", DataType::Utf8, false),
        Field::new("sql", DataType::Utf8, false),
        Field::new(
            "tables",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
        Field::new("status", DataType::Utf8, false),
        Field::new("rows_returned", DataType::Int64, true),
        Field::new("error", DataType::Utf8, true),
        Field::new("duration_ms", DataType::Float64, true),
    ]))
}

/// One row of `audit_log`.
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub query_id: String,
    /// `start` or `end`.
    pub event: &'static str,
    pub at: DateTime<Utc>,
    pub user: String,
    pub role: String,
    pub client: String,
    pub sql: String,
    pub tables: Vec<String>,
    /// `started`, `ok`, `error` or `refused`.
    pub status: &'static str,
    pub rows_returned: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: Option<f64>,
}

fn batch(rows: &[AuditRow]) -> RecordBatch {
    let mut query_id = StringBuilder::new();
    let mut event = StringBuilder::new();
    let mut at = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut user = StringBuilder::new();
    let mut role = StringBuilder::new();
    let mut client = StringBuilder::new();
    let mut sql = StringBuilder::new();
    let mut tables = ListBuilder::new(StringBuilder::new());
    let mut status = StringBuilder::new();
    let mut rows_returned = Int64Builder::new();
    let mut error = StringBuilder::new();
    let mut duration = Float64Builder::new();
    for r in rows {
        query_id.append_value(&r.query_id);
        event.append_value(r.event);
        at.append_value(r.at.timestamp_micros());
        user.append_value(&r.user);
        role.append_value(&r.role);
        client.append_value(&r.client);
        sql.append_value(&r.sql);
        for t in &r.tables {
            tables.values().append_value(t);
        }
        tables.append(true);
        status.append_value(r.status);
        rows_returned.append_option(r.rows_returned);
        error.append_option(r.error.as_deref());
        duration.append_option(r.duration_ms);
    }
    RecordBatch::try_new(
        audit_log_schema(),
        vec![
            Arc::new(query_id.finish()),
            Arc::new(event.finish()),
            Arc::new(at.finish()),
            Arc::new(user.finish()),
            Arc::new(role.finish()),
            Arc::new(client.finish()),
            Arc::new(sql.finish()),
            Arc::new(tables.finish()),
            Arc::new(status.finish()),
            Arc::new(rows_returned.finish()),
            Arc::new(error.finish()),
            Arc::new(duration.finish()),
        ],
    )
    .expect("columns match the schema")
}

type Pending = (AuditRow, oneshot::Sender<Result<(), String>>);

/// The writer of `audit_log`; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::UnboundedSender<Pending>,
}

impl AuditLog {
    /// Start the writer task for a lake.
    pub fn start(lake: Lake) -> AuditLog {
        let (tx, mut rx) = mpsc::unbounded_channel::<Pending>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut group = vec![first];
                while let Ok(more) = rx.try_recv() {
                    group.push(more);
                }
                let rows: Vec<AuditRow> = group.iter().map(|(r, _)| r.clone()).collect();
                let outcome = lake
                    .append(AUDIT_LOG, audit_log_schema(), vec![batch(&rows)], "audit")
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                for (_, done) in group {
                    let _ = done.send(outcome.clone());
                }
            }
        });
        AuditLog { tx }
    }

    /// Append a row; returns once it is committed.
    pub async fn record(&self, row: AuditRow) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send((row, done))
            .map_err(|_| "the audit writer has stopped".to_string())?;
        wait.await
            .map_err(|_| "the audit writer has stopped".to_string())?
    }
}

/// A new query id: 128 random bits in hex.
pub fn query_id() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}
