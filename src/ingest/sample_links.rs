//! `medlake link samples <CSV>`: which patient each genomic sample came from.
//!
//! The CSV has a header row with a `sample_id` column and a `PatientID` column
//! (`patient_id` is accepted too). A mapping already in `sample_links` is skipped; one
//! that gives a sample a different patient than the lake (or an earlier row) does is a
//! conflict: it is not applied, and it gets an `ingest_errors` row naming both patients
//! and the CSV line. So running the same file again changes nothing, and a sample never
//! silently changes patient. Links belong to a collection (`--collection`, that of the
//! samples' VCF ingest): a sample ID is unique within its collection, and row policies on
//! `collection` apply to links as to every other table.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use datafusion::arrow::array::{RecordBatch, StringBuilder, TimestampMicrosecondBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Serialize;

use super::ErrorRow;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::tables::SAMPLE_LINKS;

const SOURCE: &str = "sample_links";

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LinkSummary {
    pub rows_seen: u64,
    pub linked: u64,
    pub already_linked: u64,
    pub conflicts: u64,
    pub invalid: u64,
    pub lake_version: i64,
}

pub fn sample_links_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        super::collection_field(),
        Field::new("sample_id", DataType::Utf8, false),
        Field::new("PatientID", DataType::Utf8, false),
        Field::new("source_uri", DataType::Utf8, false),
        Field::new(
            "linked_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]))
}

/// sample_id → PatientID, for the links of one collection.
async fn existing(lake: &Lake, collection: &str) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    let Some(table) = lake.table(SAMPLE_LINKS).await? else {
        return Ok(out);
    };
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_table(SAMPLE_LINKS, table.table_provider().await?)?;
    let sql = format!(
        "SELECT sample_id, \"PatientID\" FROM {SAMPLE_LINKS} WHERE collection = {}",
        crate::lake::quote(collection)
    );
    for b in ctx.sql(&sql).await?.collect().await? {
        let s = crate::lake::text_column(b.column(0))?;
        let p = crate::lake::text_column(b.column(1))?;
        for i in 0..b.num_rows() {
            out.insert(s.value(i).to_string(), p.value(i).to_string());
        }
    }
    Ok(out)
}

/// Link samples to patients from a CSV file.
pub async fn link_samples(
    lake: &Lake,
    csv_path: &std::path::Path,
    collection: &str,
) -> Result<LinkSummary> {
    link_samples_with(lake, csv_path, collection, None).await
}

/// [`link_samples`], with de-identification (`--deidentify basic`): each PatientID becomes
/// its pseudonym, the one `ingest dicom --deidentify` gives the same patient, and the CSV's
/// location is pseudonymized.
pub async fn link_samples_with(
    lake: &Lake,
    csv_path: &std::path::Path,
    collection: &str,
    deidentify: Option<&crate::ingest::deidentify::Deidentifier>,
) -> Result<LinkSummary> {
    let uri = url::Url::from_file_path(
        std::fs::canonicalize(csv_path).map_err(|e| Error::io(csv_path.display(), e))?,
    )
    .map(|u| u.to_string())
    .unwrap_or_else(|_| csv_path.display().to_string());
    let uri = deidentify.map_or(uri.clone(), |d| d.uri(&uri));
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(csv_path)
        .map_err(|e| Error::Invalid(format!("{}: {e}", csv_path.display())))?;
    let headers = reader
        .headers()
        .map_err(|e| Error::Invalid(format!("{}: {e}", csv_path.display())))?
        .clone();
    let col = |names: &[&str]| headers.iter().position(|h| names.contains(&h.trim()));
    let (Some(si), Some(pi)) = (
        col(&["sample_id", "SampleID", "sample"]),
        col(&["PatientID", "patient_id"]),
    ) else {
        return Err(Error::Invalid(format!(
            "{}: the header row needs a sample_id and a PatientID column (found: {})",
            csv_path.display(),
            headers.iter().collect::<Vec<_>>().join(", ")
        )));
    };
    let mut known = existing(lake, collection).await?;
    let mut summary = LinkSummary::default();
    let mut errors = Vec::new();
    let mut new_rows: Vec<(String, String)> = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let line = i + 2;
        summary.rows_seen += 1;
        let at = format!("{uri}#line={line}");
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                summary.invalid += 1;
                errors.push(ErrorRow {
                    file_uri: at,
                    file_size: None,
                    error_kind: "malformed_line".into(),
                    message: e.to_string(),
                });
                continue;
            }
        };
        let sample = rec.get(si).unwrap_or("").trim();
        let patient = rec.get(pi).unwrap_or("").trim();
        let pseudonym = deidentify.map(|d| d.patient_pseudonym(patient));
        let patient = pseudonym.as_deref().unwrap_or(patient);
        if sample.is_empty() || patient.is_empty() {
            summary.invalid += 1;
            errors.push(ErrorRow {
                file_uri: at,
                file_size: None,
                error_kind: "missing_id".into(),
                message: "an empty sample_id or PatientID".into(),
            });
            continue;
        }
        match known.get(sample) {
            Some(p) if p == patient => summary.already_linked += 1,
            Some(p) => {
                summary.conflicts += 1;
                errors.push(ErrorRow {
                    file_uri: at,
                    file_size: None,
                    error_kind: "conflicting_link".into(),
                    message: format!(
                        "sample {sample} is linked to patient {p}; this row says {patient} (not applied)"
                    ),
                });
            }
            None => {
                known.insert(sample.to_string(), patient.to_string());
                new_rows.push((sample.to_string(), patient.to_string()));
                summary.linked += 1;
            }
        }
    }
    if !new_rows.is_empty() {
        let now = Utc::now().timestamp_micros();
        let mut c = StringBuilder::new();
        let mut s = StringBuilder::new();
        let mut p = StringBuilder::new();
        let mut u = StringBuilder::new();
        let mut t = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        for (sample, patient) in &new_rows {
            c.append_value(collection);
            s.append_value(sample);
            p.append_value(patient);
            u.append_value(&uri);
            t.append_value(now);
        }
        let schema = sample_links_schema();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(c.finish()),
                Arc::new(s.finish()),
                Arc::new(p.finish()),
                Arc::new(u.finish()),
                Arc::new(t.finish()),
            ],
        )?;
        lake.append(SAMPLE_LINKS, schema, vec![batch], "link samples")
            .await?;
    }
    let recorded = super::recorded_errors(lake, SOURCE).await?;
    let errors: Vec<ErrorRow> = errors
        .into_iter()
        .filter(|r| !recorded.contains(&(r.file_uri.clone(), r.error_kind.clone())))
        .collect();
    super::commit_errors(lake, collection, SOURCE, &errors).await?;
    summary.lake_version = lake.record_version("link samples").await?.lake_version;
    Ok(summary)
}
