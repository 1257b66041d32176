//! One report as the lake stores it, whatever format it came from, and the `reports`
//! table's schema.
//!
//! Every source format (CSV, JSONL, Parquet, IU XML, DICOM SR) produces a [`Report`]; the
//! content hash covers what the report *says*, not where it was read from, so the same
//! report read from two files is one report.

use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{
    ArrayRef, Date32Builder, Int32Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::Result;

/// The sections a report may have, in the order a radiologist writes them. Each is a column
/// of `reports` and a field of the search index.
pub const SECTIONS: [&str; 4] = ["indication", "comparison", "findings", "impression"];

/// Languages with analyzers and negation rules.
pub const LANGUAGES: [&str; 3] = ["en", "es", "zh"];

/// A report, ready for the lake.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub report_id: String,
    pub patient_id: Option<String>,
    pub accession_number: Option<String>,
    pub study_instance_uid: Option<String>,
    pub report_date: Option<NaiveDate>,
    pub modality: Option<String>,
    pub title: Option<String>,
    /// indication, comparison, findings, impression (see [`SECTIONS`]).
    pub sections: [Option<String>; 4],
    pub text: String,
    pub language: String,
    pub source_uri: String,
}

impl Report {
    pub fn section(&self, name: &str) -> Option<&str> {
        SECTIONS
            .iter()
            .position(|s| *s == name)
            .and_then(|i| self.sections[i].as_deref())
    }

    /// When a source gives sections but no full text, the text is the sections under their
    /// headings, so that a search of `text` finds everything the report says.
    pub fn fill_text_from_sections(&mut self) {
        if !self.text.trim().is_empty() {
            return;
        }
        let mut text = String::new();
        for (name, body) in SECTIONS.iter().zip(&self.sections) {
            if let Some(body) = body.as_deref().filter(|b| !b.trim().is_empty()) {
                if !text.is_empty() {
                    text.push_str("\n\n");
                }
                text.push_str(&name.to_uppercase());
                text.push_str(": ");
                text.push_str(body.trim());
            }
        }
        self.text = text;
    }

    /// A fingerprint of what the report says (not of where it was read from).
    pub fn content_hash(&self) -> String {
        let mut h = blake3::Hasher::new();
        let mut put = |tag: &str, v: Option<&str>| {
            h.update(tag.as_bytes());
            match v {
                Some(v) => {
                    h.update(&(v.len() as u64).to_le_bytes());
                    h.update(v.as_bytes());
                }
                None => {
                    h.update(&u64::MAX.to_le_bytes());
                }
            }
        };
        put("id", Some(&self.report_id));
        put("pid", self.patient_id.as_deref());
        put("acc", self.accession_number.as_deref());
        put("suid", self.study_instance_uid.as_deref());
        let date = self.report_date.map(|d| d.to_string());
        put("date", date.as_deref());
        put("mod", self.modality.as_deref());
        put("title", self.title.as_deref());
        for (name, s) in SECTIONS.iter().zip(&self.sections) {
            put(name, s.as_deref());
        }
        put("text", Some(&self.text));
        put("lang", Some(&self.language));
        h.finalize().to_hex().to_string()
    }
}

/// The schema of `reports`.
pub fn reports_schema() -> SchemaRef {
    let s = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    let mut fields = vec![
        s("collection", false),
        s("report_id", false),
        s("PatientID", true),
        s("AccessionNumber", true),
        s("StudyInstanceUID", true),
        Field::new("report_date", DataType::Date32, true),
        s("modality", true),
        s("title", true),
    ];
    fields.extend(SECTIONS.iter().map(|n| s(n, true)));
    fields.extend([
        s("text", false),
        s("language", false),
        s("source_uri", false),
        // Linking to imaging uses this window (days either side of report_date) when a
        // report has neither StudyInstanceUID nor AccessionNumber that match.
        Field::new("link_window_days", DataType::Int32, false),
        s("content_hash", false),
        Field::new(
            "ingested_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]);
    Arc::new(Schema::new(fields))
}

/// Rows of one commit to `reports`.
pub struct ReportBatch {
    collection: StringBuilder,
    id: StringBuilder,
    pid: StringBuilder,
    acc: StringBuilder,
    suid: StringBuilder,
    date: Date32Builder,
    modality: StringBuilder,
    title: StringBuilder,
    sections: [StringBuilder; 4],
    text: StringBuilder,
    language: StringBuilder,
    uri: StringBuilder,
    window: Int32Builder,
    hash: StringBuilder,
    at: TimestampMicrosecondBuilder,
    pub rows: usize,
}

impl Default for ReportBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl ReportBatch {
    pub fn new() -> Self {
        ReportBatch {
            collection: StringBuilder::new(),
            id: StringBuilder::new(),
            pid: StringBuilder::new(),
            acc: StringBuilder::new(),
            suid: StringBuilder::new(),
            date: Date32Builder::new(),
            modality: StringBuilder::new(),
            title: StringBuilder::new(),
            sections: std::array::from_fn(|_| StringBuilder::new()),
            text: StringBuilder::new(),
            language: StringBuilder::new(),
            uri: StringBuilder::new(),
            window: Int32Builder::new(),
            hash: StringBuilder::new(),
            at: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            rows: 0,
        }
    }

    pub fn push(&mut self, collection: &str, r: &Report, hash: &str, window_days: i32, now: i64) {
        self.collection.append_value(collection);
        self.id.append_value(&r.report_id);
        self.pid.append_option(r.patient_id.as_deref());
        self.acc.append_option(r.accession_number.as_deref());
        self.suid.append_option(r.study_instance_uid.as_deref());
        self.date.append_option(r.report_date.map(days_since_epoch));
        self.modality.append_option(r.modality.as_deref());
        self.title.append_option(r.title.as_deref());
        for (b, s) in self.sections.iter_mut().zip(&r.sections) {
            b.append_option(s.as_deref());
        }
        self.text.append_value(&r.text);
        self.language.append_value(&r.language);
        self.uri.append_value(&r.source_uri);
        self.window.append_value(window_days);
        self.hash.append_value(hash);
        self.at.append_value(now);
        self.rows += 1;
    }

    pub fn finish(mut self) -> Result<RecordBatch> {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(self.collection.finish()),
            Arc::new(self.id.finish()),
            Arc::new(self.pid.finish()),
            Arc::new(self.acc.finish()),
            Arc::new(self.suid.finish()),
            Arc::new(self.date.finish()),
            Arc::new(self.modality.finish()),
            Arc::new(self.title.finish()),
        ];
        for s in &mut self.sections {
            cols.push(Arc::new(s.finish()));
        }
        cols.push(Arc::new(self.text.finish()));
        cols.push(Arc::new(self.language.finish()));
        cols.push(Arc::new(self.uri.finish()));
        cols.push(Arc::new(self.window.finish()));
        cols.push(Arc::new(self.hash.finish()));
        cols.push(Arc::new(self.at.finish()));
        Ok(RecordBatch::try_new(reports_schema(), cols)?)
    }
}

fn days_since_epoch(d: NaiveDate) -> i32 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date")).num_days() as i32
}

/// A report date as sources write it: DICOM `YYYYMMDD`, ISO `YYYY-MM-DD` (optionally with
/// a time), or `YYYY/MM/DD`. `None` for anything else.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    let t = s.trim();
    let head = t.get(..10).unwrap_or(t);
    for fmt in ["%Y-%m-%d", "%Y/%m/%d"] {
        if let Ok(d) = NaiveDate::parse_from_str(head, fmt) {
            return Some(d);
        }
    }
    // DICOM DA, and numbers that a CSV reader turned into floats ("20140915.0").
    let digits = t.strip_suffix(".0").unwrap_or(t);
    if digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit()) {
        return NaiveDate::parse_from_str(digits, "%Y%m%d").ok();
    }
    None
}

/// A field value: trimmed, with empty strings read as absent.
pub fn non_empty(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_the_forms_sources_write() {
        let d = NaiveDate::from_ymd_opt(2014, 9, 15);
        assert_eq!(parse_date("20140915"), d);
        assert_eq!(parse_date("2014-09-15"), d);
        assert_eq!(parse_date("2014-09-15T10:00:00Z"), d);
        assert_eq!(parse_date("2014/09/15"), d);
        assert_eq!(parse_date("20140915.0"), d);
        assert_eq!(parse_date("20141315"), None);
        assert_eq!(parse_date("soon"), None);
        assert_eq!(parse_date(""), None);
    }

    #[test]
    fn text_from_sections_and_hash_ignores_the_source() {
        let mut a = Report {
            report_id: "r1".into(),
            sections: [
                None,
                None,
                Some("Small effusion.".into()),
                Some("Effusion.".into()),
            ],
            language: "en".into(),
            source_uri: "file:///a.csv".into(),
            ..Default::default()
        };
        a.fill_text_from_sections();
        assert_eq!(a.text, "FINDINGS: Small effusion.\n\nIMPRESSION: Effusion.");
        let mut b = a.clone();
        b.source_uri = "file:///b.csv".into();
        assert_eq!(a.content_hash(), b.content_hash());
        b.sections[3] = Some("No effusion.".into());
        assert_ne!(a.content_hash(), b.content_hash());
    }
}
