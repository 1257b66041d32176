//! The schemas of `findings` and `compute_errors`, and their rows as Arrow batches.
//!
//! `findings` has one row per finding: the series, the finding's kind and side, its
//! measurements as nullable columns (only those that apply to its kind are set), and how
//! it was computed (`method_version`, `backend`, the `instance_count` it was computed
//! from, `computed_at`). Every computed series has at least its `body` row, so "computed"
//! is "has rows".

use std::sync::Arc;

use chrono::Utc;
use datafusion::arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::{ComputeError, Computed};
use crate::error::Result;
use medlake_udfs::findings::METHOD_VERSION;

fn computed_at() -> Field {
    Field::new(
        "computed_at",
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    )
}

pub fn findings_schema() -> SchemaRef {
    let f = |name: &str| Field::new(name, DataType::Float64, true);
    Arc::new(Schema::new(vec![
        Field::new("collection", DataType::Utf8, false),
        Field::new("SeriesInstanceUID", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("side", DataType::Utf8, true),
        f("center_x_mm"),
        f("center_y_mm"),
        f("center_z_mm"),
        f("diameter_mm"),
        f("volume_mm3"),
        f("volume_ml"),
        f("mean_hu"),
        f("peak_hu"),
        Field::new("nodule_type", DataType::Utf8, true),
        f("confidence"),
        f("laa950_pct"),
        f("agatston_score"),
        Field::new("method_version", DataType::Utf8, false),
        Field::new("backend", DataType::Utf8, false),
        Field::new("instance_count", DataType::Int64, false),
        computed_at(),
    ]))
}

pub fn compute_errors_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("collection", DataType::Utf8, false),
        Field::new("SeriesInstanceUID", DataType::Utf8, false),
        Field::new("error_kind", DataType::Utf8, false),
        Field::new("message", DataType::Utf8, false),
        Field::new("method_version", DataType::Utf8, false),
        Field::new("backend", DataType::Utf8, false),
        computed_at(),
    ]))
}

pub(crate) fn findings_batch(done: &[Computed]) -> Result<RecordBatch> {
    let now = Utc::now().timestamp_micros();
    let mut collection = StringBuilder::new();
    let mut series = StringBuilder::new();
    let mut kind = StringBuilder::new();
    let mut side = StringBuilder::new();
    let mut floats: Vec<Float64Builder> = (0..11).map(|_| Float64Builder::new()).collect();
    let mut nodule_type = StringBuilder::new();
    let mut method = StringBuilder::new();
    let mut backend = StringBuilder::new();
    let mut instances = Int64Builder::new();
    let mut at = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    for d in done {
        for f in &d.report.findings {
            collection.append_value(&d.collection);
            series.append_value(&d.series_uid);
            kind.append_value(f.kind);
            side.append_option(f.side);
            let c = f.center_lps_mm;
            let values = [
                c.map(|c| c[0]),
                c.map(|c| c[1]),
                c.map(|c| c[2]),
                f.diameter_mm,
                f.volume_mm3,
                f.volume_ml,
                f.mean_hu,
                f.peak_hu,
                f.confidence,
                f.laa950_pct,
                f.agatston_score,
            ];
            for (b, v) in floats.iter_mut().zip(values) {
                b.append_option(v);
            }
            nodule_type.append_option(f.nodule_type);
            method.append_value(METHOD_VERSION);
            backend.append_value(&d.report.backend);
            instances.append_value(d.instance_count);
            at.append_value(now);
        }
    }
    let mut floats: Vec<ArrayRef> = floats
        .into_iter()
        .map(|mut b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    // nodule_type (a string) sits between peak_hu and confidence.
    let tail = floats.split_off(8);
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(collection.finish()),
        Arc::new(series.finish()),
        Arc::new(kind.finish()),
        Arc::new(side.finish()),
    ];
    columns.extend(floats);
    columns.push(Arc::new(nodule_type.finish()));
    columns.extend(tail);
    columns.extend([
        Arc::new(method.finish()) as ArrayRef,
        Arc::new(backend.finish()),
        Arc::new(instances.finish()),
        Arc::new(at.finish()),
    ]);
    Ok(RecordBatch::try_new(findings_schema(), columns)?)
}

pub(crate) fn errors_batch(
    errors: &[ComputeError],
    backend_name: &str,
    method_version: &str,
) -> Result<RecordBatch> {
    let now = Utc::now().timestamp_micros();
    let mut collection = StringBuilder::new();
    let mut series = StringBuilder::new();
    let mut kind = StringBuilder::new();
    let mut message = StringBuilder::new();
    let mut method = StringBuilder::new();
    let mut backend = StringBuilder::new();
    let mut at = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    for e in errors {
        collection.append_value(&e.collection);
        series.append_value(&e.series_uid);
        kind.append_value(e.error_kind);
        message.append_value(&e.message);
        method.append_value(method_version);
        backend.append_value(backend_name);
        at.append_value(now);
    }
    Ok(RecordBatch::try_new(
        compute_errors_schema(),
        vec![
            Arc::new(collection.finish()),
            Arc::new(series.finish()),
            Arc::new(kind.finish()),
            Arc::new(message.finish()),
            Arc::new(method.finish()),
            Arc::new(backend.finish()),
            Arc::new(at.finish()),
        ],
    )?)
}
