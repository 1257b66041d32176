//! Reading report files: CSV, JSONL and Parquet through a column mapping, the Open-i /
//! Indiana University XML format, and DICOM Structured Reports.
//!
//! Each reader turns one file into [`Item`]s: a report (perhaps with warnings, such as text
//! decoded with replacement characters), or an error naming the file and the line or row.
//! A bad record never stops the file, and a bad file never stops the run.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::DataType;

use super::model::{non_empty, parse_date, Report, SECTIONS};
use crate::ingest::sources::SourceFile;
use crate::ingest::ErrorRow;

/// The formats `ingest reports` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Jsonl,
    Parquet,
    /// Open-i / Indiana University chest X-ray report XML.
    IuXml,
    /// DICOM Structured Report.
    DicomSr,
}

impl Format {
    /// The format a file name implies (after a `.gz` suffix is removed).
    pub fn from_name(name: &str) -> Option<Format> {
        let lower = name.to_ascii_lowercase();
        let base = lower.strip_suffix(".gz").unwrap_or(&lower);
        let ext = base.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
        Some(match ext {
            "csv" | "tsv" => Format::Csv,
            "jsonl" | "ndjson" | "json" => Format::Jsonl,
            "parquet" => Format::Parquet,
            "xml" => Format::IuXml,
            "dcm" | "dicom" => Format::DicomSr,
            _ => return None,
        })
    }
}

/// The report columns a tabular source can fill, by their names in `reports`.
pub const TARGETS: [&str; 13] = [
    "report_id",
    "PatientID",
    "AccessionNumber",
    "StudyInstanceUID",
    "report_date",
    "modality",
    "title",
    "indication",
    "comparison",
    "findings",
    "impression",
    "text",
    "language",
];

/// Which source field fills which report column. A column without an explicit mapping is
/// filled from the source field of the same name, compared case-insensitively.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    explicit: HashMap<String, String>,
}

impl Mapping {
    /// Parse `--map column=field` arguments.
    pub fn parse(args: &[String]) -> Result<Mapping, String> {
        let mut explicit = HashMap::new();
        for a in args {
            let Some((col, field)) = a.split_once('=') else {
                return Err(format!("--map {a:?}: expected <column>=<source field>"));
            };
            let col = col.trim();
            let Some(target) = TARGETS.iter().find(|t| t.eq_ignore_ascii_case(col)) else {
                return Err(format!(
                    "--map {a:?}: {col:?} is not a report column; one of {}",
                    TARGETS.join(", ")
                ));
            };
            explicit.insert(target.to_string(), field.trim().to_string());
        }
        Ok(Mapping { explicit })
    }

    /// For each target, the index of its source field among `names`. Errors name a mapped
    /// field that the source lacks.
    fn resolve(&self, names: &[String]) -> Result<[Option<usize>; 13], String> {
        let mut out = [None; 13];
        for (i, target) in TARGETS.iter().enumerate() {
            out[i] = match self.explicit.get(*target) {
                Some(field) => Some(names.iter().position(|n| n == field).ok_or_else(|| {
                    format!(
                        "--map {target}={field}: the source has no field {field:?} (it has: {})",
                        preview(names)
                    )
                })?),
                None => names.iter().position(|n| n.eq_ignore_ascii_case(target)),
            };
        }
        if out[0].is_none() {
            return Err(format!(
                "no report_id field: map one with --map report_id=<field> (fields: {})",
                preview(names)
            ));
        }
        Ok(out)
    }
}

fn preview(names: &[String]) -> String {
    let mut s = names
        .iter()
        .take(12)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > 12 {
        s.push_str(", ...");
    }
    s
}

/// What reading produced.
#[derive(Debug)]
pub enum Item {
    Report {
        report: Box<Report>,
        /// Problems that did not stop the report (recorded in `ingest_errors`).
        warnings: Vec<ErrorRow>,
    },
    Error(ErrorRow),
}

/// Settings shared by every file of a run.
pub struct ReadOptions<'a> {
    pub format: Option<Format>,
    pub mapping: &'a Mapping,
    pub language: &'a str,
}

fn error(uri: &str, size: Option<u64>, kind: &str, message: String) -> ErrorRow {
    ErrorRow {
        file_uri: uri.to_string(),
        file_size: size.map(|s| s as i64),
        error_kind: kind.to_string(),
        message,
    }
}

/// Read one file, handing every report and every error to `emit`.
pub fn read_file(file: &SourceFile, opts: &ReadOptions<'_>, emit: &mut dyn FnMut(Item)) {
    let uri = file.uri();
    let (reader, size) = match file.open() {
        Ok(x) => x,
        Err(e) => return emit(Item::Error(error(&uri, None, "io", e.to_string()))),
    };
    let format = match opts.format.or_else(|| Format::from_name(&uri)) {
        Some(f) => f,
        None => {
            return emit(Item::Error(error(
                &uri,
                Some(size),
                "unsupported_format",
                "cannot tell the report format from the file name; pass --format".into(),
            )))
        }
    };
    let gz = uri.to_ascii_lowercase().ends_with(".gz");
    let reader: Box<dyn Read + Send> = if gz {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(reader)))
    } else {
        reader
    };
    let ctx = FileCtx {
        uri: &uri,
        size,
        language: opts.language,
    };
    match format {
        Format::Csv => read_csv(reader, &ctx, opts.mapping, emit),
        Format::Jsonl => read_jsonl(reader, &ctx, opts.mapping, emit),
        Format::Parquet => match file {
            // A local Parquet file is read in place, row group by row group.
            SourceFile::Local(path) if !gz => match std::fs::File::open(path) {
                Ok(f) => parquet_rows(f, &ctx, opts.mapping, emit),
                Err(e) => emit(Item::Error(ctx.error("io", e.to_string()))),
            },
            _ => match read_capped(reader, MAX_PARQUET_BYTES) {
                Ok(bytes) => parquet_rows(bytes::Bytes::from(bytes), &ctx, opts.mapping, emit),
                Err(e) => emit(Item::Error(ctx.error(e.0, e.1))),
            },
        },
        Format::IuXml => read_iu_xml(reader, &ctx, emit),
        Format::DicomSr => read_sr(reader, &ctx, emit),
    }
}

struct FileCtx<'a> {
    uri: &'a str,
    size: u64,
    language: &'a str,
}

impl FileCtx<'_> {
    fn error(&self, kind: &str, message: String) -> ErrorRow {
        error(self.uri, Some(self.size), kind, message)
    }

    /// An error in one record of the file: the URI gets a fragment naming the record
    /// (`#line=12`, `#row=7`), so that every bad record is its own row in `ingest_errors`.
    fn record_error(&self, kind: &str, at: &str, message: String) -> ErrorRow {
        let uri = match at.split_once(' ') {
            Some((unit @ ("line" | "row"), n)) if n.bytes().all(|b| b.is_ascii_digit()) => {
                format!("{}#{unit}={n}", self.uri)
            }
            _ => self.uri.to_string(),
        };
        error(&uri, Some(self.size), kind, message)
    }
}

/// Decode text, replacing invalid UTF-8 and saying where.
fn decode(bytes: &[u8], what: &dyn Fn() -> String, warnings: &mut Vec<String>) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(e) => {
            warnings.push(format!(
                "{}: invalid UTF-8 at byte {} of the field; decoded with replacement characters",
                what(),
                e.valid_up_to()
            ));
            String::from_utf8_lossy(bytes).into_owned()
        }
    }
}

/// Build a report from mapped field values, or say why there is none. `at` names the
/// record (a line or row) in messages.
fn mapped_report(
    values: [Option<String>; 13],
    ctx: &FileCtx<'_>,
    at: &str,
    mut warnings: Vec<String>,
    emit: &mut dyn FnMut(Item),
) {
    let [id, pid, acc, suid, date, modality, title, ind, cmp, fnd, imp, text, lang] = values;
    let Some(report_id) = id.as_deref().and_then(non_empty) else {
        return emit(Item::Error(ctx.record_error(
            "missing_id",
            at,
            format!("{at}: the report has no report_id"),
        )));
    };
    let report_date = match date.as_deref().and_then(non_empty) {
        Some(d) => {
            let parsed = parse_date(&d);
            if parsed.is_none() {
                warnings.push(format!(
                    "{at}: report_date {d:?} is not a date (YYYYMMDD or YYYY-MM-DD); stored as null"
                ));
            }
            parsed
        }
        None => None,
    };
    let mut report = Report {
        report_id,
        patient_id: pid.as_deref().and_then(non_empty),
        accession_number: acc.as_deref().and_then(non_empty),
        study_instance_uid: suid.as_deref().and_then(non_empty),
        report_date,
        modality: modality.as_deref().and_then(non_empty),
        title: title.as_deref().and_then(non_empty),
        sections: [ind, cmp, fnd, imp].map(|s| s.as_deref().and_then(non_empty)),
        text: text.unwrap_or_default(),
        language: lang
            .as_deref()
            .and_then(non_empty)
            .map(|l| l.to_ascii_lowercase())
            .unwrap_or_else(|| ctx.language.to_string()),
        source_uri: ctx.uri.to_string(),
    };
    finish_report(&mut report, ctx, at, warnings, emit);
}

fn finish_report(
    report: &mut Report,
    ctx: &FileCtx<'_>,
    at: &str,
    warnings: Vec<String>,
    emit: &mut dyn FnMut(Item),
) {
    report.fill_text_from_sections();
    if report.text.trim().is_empty() {
        return emit(Item::Error(ctx.record_error(
            "empty_text",
            at,
            format!("{at}: report {:?} has no text", report.report_id),
        )));
    }
    let warnings = warnings
        .into_iter()
        .map(|m| {
            let kind = if m.contains("UTF-8") {
                "invalid_utf8"
            } else {
                "invalid_value"
            };
            ctx.record_error(kind, at, m)
        })
        .collect();
    emit(Item::Report {
        report: Box::new(std::mem::take(report)),
        warnings,
    });
}

fn read_csv(
    reader: Box<dyn Read + Send>,
    ctx: &FileCtx<'_>,
    map: &Mapping,
    emit: &mut dyn FnMut(Item),
) {
    let tab = ctx.uri.to_ascii_lowercase().contains(".tsv");
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(if tab { b'\t' } else { b',' })
        .flexible(true)
        .from_reader(reader);
    let headers = match rdr.byte_headers() {
        Ok(h) => h
            .iter()
            .map(|f| String::from_utf8_lossy(f).trim().to_string())
            .collect::<Vec<_>>(),
        Err(e) => {
            return emit(Item::Error(
                ctx.error("malformed", format!("CSV header: {e}")),
            ))
        }
    };
    let cols = match map.resolve(&headers) {
        Ok(c) => c,
        Err(m) => return emit(Item::Error(ctx.error("missing_column", m))),
    };
    let mut record = csv::ByteRecord::new();
    loop {
        match rdr.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map(|p| p.line()).unwrap_or(0);
                let at = format!("line {line}");
                let mut warnings = Vec::new();
                let values = std::array::from_fn(|i| {
                    cols[i].and_then(|c| record.get(c)).map(|b| {
                        decode(
                            b,
                            &|| format!("line {line}, field {}", TARGETS[i]),
                            &mut warnings,
                        )
                    })
                });
                mapped_report(values, ctx, &at, warnings, emit);
            }
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                let at = format!("line {line}");
                emit(Item::Error(ctx.record_error(
                    "malformed",
                    &at,
                    format!("{at}: {e}"),
                )));
                // An I/O error (e.g. a truncated .gz) ends the file; a bad record does not.
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    break;
                }
            }
        }
    }
}

fn json_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn read_jsonl(
    reader: Box<dyn Read + Send>,
    ctx: &FileCtx<'_>,
    map: &Mapping,
    emit: &mut dyn FnMut(Item),
) {
    let mut rdr = BufReader::new(reader);
    let mut buf = Vec::new();
    let mut line = 0u64;
    loop {
        buf.clear();
        match rdr.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                emit(Item::Error(
                    ctx.error("io", format!("after line {line}: {e}")),
                ));
                break;
            }
        }
        line += 1;
        let mut warnings = Vec::new();
        let text = decode(&buf, &|| format!("line {line}"), &mut warnings);
        if text.trim().is_empty() {
            continue;
        }
        let obj = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Object(o)) => o,
            Ok(_) => {
                let at = format!("line {line}");
                emit(Item::Error(ctx.record_error(
                    "malformed",
                    &at,
                    format!("{at}: expected a JSON object"),
                )));
                continue;
            }
            Err(e) => {
                let at = format!("line {line}");
                emit(Item::Error(ctx.record_error(
                    "malformed",
                    &at,
                    format!("{at}: {e}"),
                )));
                continue;
            }
        };
        let names: Vec<String> = obj.keys().cloned().collect();
        let cols = match map.resolve(&names) {
            Ok(c) => c,
            Err(m) if m.starts_with("--map") => {
                // A mapped field absent from one object is that object's problem.
                let at = format!("line {line}");
                emit(Item::Error(ctx.record_error(
                    "missing_column",
                    &at,
                    format!("{at}: {m}"),
                )));
                continue;
            }
            Err(_) => [None; 13],
        };
        let values = std::array::from_fn(|i| cols[i].and_then(|c| json_text(&obj[&names[c]])));
        mapped_report(values, ctx, &format!("line {line}"), warnings, emit);
    }
}

/// Whole-file formats are read into memory; these caps keep a huge or mislabelled file
/// from becoming a huge allocation.
const MAX_XML_BYTES: u64 = 64 * 1024 * 1024;
const MAX_PARQUET_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Read a whole file, refusing one larger than `cap` bytes: (error kind, message).
fn read_capped(reader: Box<dyn Read + Send>, cap: u64) -> Result<Vec<u8>, (&'static str, String)> {
    let mut bytes = Vec::new();
    reader
        .take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ("io", e.to_string()))?;
    if bytes.len() as u64 > cap {
        return Err((
            "too_large",
            format!(
                "larger than {} MiB; split it, or use CSV or JSONL",
                cap >> 20
            ),
        ));
    }
    Ok(bytes)
}

fn parquet_rows<T: datafusion::parquet::file::reader::ChunkReader + 'static>(
    source: T,
    ctx: &FileCtx<'_>,
    map: &Mapping,
    emit: &mut dyn FnMut(Item),
) {
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let builder = match ParquetRecordBatchReaderBuilder::try_new(source) {
        Ok(b) => b,
        Err(e) => return emit(Item::Error(ctx.error("malformed", format!("Parquet: {e}")))),
    };
    let names: Vec<String> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let cols = match map.resolve(&names) {
        Ok(c) => c,
        Err(m) => return emit(Item::Error(ctx.error("missing_column", m))),
    };
    let batches = match builder.with_batch_size(8192).build() {
        Ok(r) => r,
        Err(e) => return emit(Item::Error(ctx.error("malformed", format!("Parquet: {e}")))),
    };
    let mut row = 0usize;
    for batch in batches {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                emit(Item::Error(
                    ctx.error("malformed", format!("after row {row}: {e}")),
                ));
                return;
            }
        };
        let mut strings = Vec::with_capacity(13);
        for c in cols {
            let col = match c {
                Some(c) => match datafusion::arrow::compute::cast(batch.column(c), &DataType::Utf8)
                {
                    Ok(a) => Some(a),
                    Err(e) => {
                        emit(Item::Error(ctx.error(
                            "malformed",
                            format!("column {:?} cannot be read as text: {e}", names[c]),
                        )));
                        return;
                    }
                },
                None => None,
            };
            strings.push(col);
        }
        for i in 0..batch.num_rows() {
            row += 1;
            let values = std::array::from_fn(|t| {
                strings[t].as_ref().and_then(|a| {
                    let a = a.as_string::<i32>();
                    a.is_valid(i).then(|| a.value(i).to_string())
                })
            });
            mapped_report(values, ctx, &format!("row {row}"), Vec::new(), emit);
        }
    }
}

/// The Open-i / Indiana University report XML: `<uId id="CXR1"/>`, and the sections in
/// `<AbstractText Label="FINDINGS">` elements. The text is the sections in document order.
fn read_iu_xml(reader: Box<dyn Read + Send>, ctx: &FileCtx<'_>, emit: &mut dyn FnMut(Item)) {
    use quick_xml::events::Event;
    let bytes = match read_capped(reader, MAX_XML_BYTES) {
        Ok(b) => b,
        Err(e) => return emit(Item::Error(ctx.error(e.0, e.1))),
    };
    let mut warnings = Vec::new();
    let text = decode(&bytes, &|| "the file".to_string(), &mut warnings);
    let mut xml = quick_xml::Reader::from_str(&text);
    let mut id: Option<String> = None;
    let mut label: Option<String> = None;
    let mut sections: Vec<(String, String)> = Vec::new();
    let mut date: (Option<String>, Option<String>, Option<String>) = (None, None, None);
    let mut path: Vec<String> = Vec::new();
    let mut root_seen = false;
    loop {
        match xml.read_event() {
            Ok(Event::Start(e)) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                root_seen = true;
                if name == "AbstractText" {
                    label = attr(&e, b"Label");
                }
                path.push(name);
            }
            Ok(Event::Empty(e)) => {
                root_seen = true;
                if e.name().as_ref() == b"uId" {
                    id = attr(&e, b"id");
                }
            }
            Ok(Event::Text(t)) => {
                let Some(top) = path.last() else { continue };
                let value = match t.decode() {
                    Ok(v) => match quick_xml::escape::unescape(&v) {
                        Ok(u) => u.into_owned(),
                        Err(_) => v.into_owned(),
                    },
                    Err(_) => continue,
                };
                if top == "AbstractText" {
                    if let Some(l) = &label {
                        sections.push((l.clone(), value));
                    }
                } else if path.iter().any(|p| p == "PubDate") {
                    match top.as_str() {
                        "Year" => date.0 = Some(value),
                        "Month" => date.1 = Some(value),
                        "Day" => date.2 = Some(value),
                        _ => {}
                    }
                }
            }
            Ok(Event::GeneralRef(r)) => {
                // quick-xml reports entity references apart from the text around them.
                if path.last().map(String::as_str) == Some("AbstractText") {
                    if let (Some(l), Ok(name)) = (&label, r.decode()) {
                        let ch = quick_xml::escape::resolve_predefined_entity(&name).unwrap_or("");
                        match sections.last_mut() {
                            Some((last, body)) if last == l => body.push_str(ch),
                            _ => sections.push((l.clone(), ch.to_string())),
                        }
                    }
                }
            }
            Ok(Event::End(_)) => {
                path.pop();
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => {
                return emit(Item::Error(ctx.error(
                    "malformed_xml",
                    format!("at byte {}: {e}", xml.error_position()),
                )))
            }
        }
    }
    if !root_seen {
        return emit(Item::Error(
            ctx.error("malformed_xml", "no XML elements".into()),
        ));
    }
    // Text split by entity references arrives in pieces; join the pieces of each section.
    let mut merged: Vec<(String, String)> = Vec::new();
    for (l, v) in sections {
        match merged.last_mut() {
            Some((last, body)) if *last == l => body.push_str(&v),
            _ => merged.push((l, v)),
        }
    }
    let mut report = Report {
        report_id: id.unwrap_or_default(),
        language: ctx.language.to_string(),
        source_uri: ctx.uri.to_string(),
        ..Default::default()
    };
    if report.report_id.is_empty() {
        return emit(Item::Error(
            ctx.error("missing_id", "no <uId id=...> element".into()),
        ));
    }
    let mut text = String::new();
    for (label, body) in &merged {
        let body = body.trim();
        if body.is_empty() {
            continue;
        }
        if let Some(i) = SECTIONS.iter().position(|s| s.eq_ignore_ascii_case(label)) {
            report.sections[i] = Some(body.to_string());
        }
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&label.to_uppercase());
        text.push_str(": ");
        text.push_str(body);
    }
    report.text = text;
    if let (Some(y), Some(m), Some(d)) = date {
        report.report_date = parse_date(&format!("{y}-{m}-{d}"));
    }
    finish_report(&mut report, ctx, "the report", warnings, emit);
}

fn attr(e: &quick_xml::events::BytesStart<'_>, key: &[u8]) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == key)
        .map(|a| String::from_utf8_lossy(&a.value).into_owned())
}

fn read_sr(reader: Box<dyn Read + Send>, ctx: &FileCtx<'_>, emit: &mut dyn FnMut(Item)) {
    let mut src = crate::ingest::dicom::read::Source::new(reader, ctx.size);
    let header = match crate::ingest::dicom::read::read_header(&mut src) {
        Ok(h) => h,
        Err(f) => return emit(Item::Error(ctx.error(f.kind, f.message))),
    };
    match super::sr::report_from_sr(&header.obj, ctx.uri, ctx.language) {
        Ok(Some(mut report)) => {
            finish_report(&mut report, ctx, "the SR document", Vec::new(), emit)
        }
        Ok(None) => emit(Item::Error(ctx.error(
            "not_a_report",
            "a DICOM file, but not a Structured Report".into(),
        ))),
        Err(m) => emit(Item::Error(ctx.error("malformed_sr", m))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_str(name: &str, body: &[u8], format: Option<Format>, map: &[&str]) -> Vec<Item> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        let mapping =
            Mapping::parse(&map.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let opts = ReadOptions {
            format,
            mapping: &mapping,
            language: "en",
        };
        let mut out = Vec::new();
        read_file(&SourceFile::Local(p), &opts, &mut |i| out.push(i));
        out
    }

    fn reports(items: &[Item]) -> Vec<&Report> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Report { report, .. } => Some(report.as_ref()),
                _ => None,
            })
            .collect()
    }

    fn errors(items: &[Item]) -> Vec<(String, String)> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Error(e) => Some((e.error_kind.clone(), e.message.clone())),
                Item::Report { warnings, .. } => warnings
                    .first()
                    .map(|e| (e.error_kind.clone(), e.message.clone())),
            })
            .collect()
    }

    #[test]
    fn csv_with_mapping_quoted_newlines_and_bad_rows() {
        let body = b"ImageID,Report,StudyDate\n\
            a1,\"no pleural effusion.\nsmall nodule\",20140915\n\
            ,orphan text,20140915\n\
            a3,,20140915\n\
            a4,caf\xe9 text,notadate\n";
        let items = read_str(
            "r.csv",
            body,
            None,
            &["report_id=ImageID", "text=Report", "report_date=StudyDate"],
        );
        let r = reports(&items);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].report_id, "a1");
        assert_eq!(r[0].text, "no pleural effusion.\nsmall nodule");
        assert_eq!(r[0].report_date.unwrap().to_string(), "2014-09-15");
        assert_eq!(r[1].text, "caf\u{fffd} text");
        assert_eq!(r[1].report_date, None);
        let e = errors(&items);
        assert!(
            e.iter()
                .any(|(k, m)| k == "missing_id" && m.contains("line 4")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|(k, m)| k == "empty_text" && m.contains("line 5")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|(k, m)| k == "invalid_utf8" && m.contains("line 6")),
            "{e:?}"
        );
    }

    #[test]
    fn csv_mapping_to_a_missing_field_is_a_file_error() {
        let items = read_str("r.csv", b"a,b\n1,2\n", None, &["report_id=nope"]);
        assert!(reports(&items).is_empty());
        assert_eq!(errors(&items)[0].0, "missing_column");
    }

    #[test]
    fn jsonl_same_names_and_malformed_lines() {
        let body =
            b"{\"report_id\": \"j1\", \"findings\": \"Small effusion.\", \"PatientID\": 42}\n\
            {not json}\n\
            [1,2]\n\
            {\"report_id\": \"j2\", \"text\": \"Clear lungs.\"}\n";
        let items = read_str("r.jsonl", body, None, &[]);
        let r = reports(&items);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].patient_id.as_deref(), Some("42"));
        assert_eq!(r[0].section("findings"), Some("Small effusion."));
        assert_eq!(r[0].text, "FINDINGS: Small effusion.");
        assert_eq!(errors(&items).len(), 2);
    }

    #[test]
    fn parquet_with_mapping_and_typed_columns() {
        use datafusion::arrow::array::{Date32Array, RecordBatch, StringArray};
        use datafusion::arrow::datatypes::{Field, Schema};
        use std::sync::Arc;
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("body", DataType::Utf8, true),
            Field::new("d", DataType::Date32, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![Some("p1"), None, Some("p3")])),
                Arc::new(StringArray::from(vec![
                    Some("Clear lungs."),
                    Some("x"),
                    None,
                ])),
                Arc::new(Date32Array::from(vec![Some(16328), None, None])),
            ],
        )
        .unwrap();
        let mut buf = Vec::new();
        let mut w =
            datafusion::parquet::arrow::ArrowWriter::try_new(&mut buf, schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let items = read_str(
            "r.parquet",
            &buf,
            None,
            &["report_id=id", "text=body", "report_date=d"],
        );
        let r = reports(&items);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].report_id, "p1");
        assert_eq!(r[0].report_date.unwrap().to_string(), "2014-09-15");
        let e = errors(&items);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e
            .iter()
            .any(|(k, m)| k == "missing_id" && m.contains("row 2")));
        assert!(e
            .iter()
            .any(|(k, m)| k == "empty_text" && m.contains("row 3")));
    }

    #[test]
    fn gzipped_csv_is_read_directly() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"report_id,text\nz1,Heart is enlarged.\n")
            .unwrap();
        let items = read_str("r.csv.gz", &gz.finish().unwrap(), None, &[]);
        assert_eq!(reports(&items)[0].text, "Heart is enlarged.");
    }

    #[test]
    fn iu_xml_sections_in_document_order_and_malformed_xml() {
        let body = br#"<?xml version="1.0" encoding="utf-8"?>
<eCitation><uId id="CXR9"/><MedlineCitation><Article><Journal><JournalIssue><PubDate>
<Year>2013</Year><Month>08</Month><Day>01</Day></PubDate></JournalIssue></Journal>
<Abstract><AbstractText Label="COMPARISON">None.</AbstractText>
<AbstractText Label="INDICATION">Cough &amp; fever</AbstractText>
<AbstractText Label="FINDINGS">No pleural effusion.</AbstractText>
<AbstractText Label="IMPRESSION"/></Abstract></Article></MedlineCitation></eCitation>"#;
        let items = read_str("9.xml", body, None, &[]);
        let r = reports(&items);
        assert_eq!(r.len(), 1, "{:?}", errors(&items));
        assert_eq!(r[0].report_id, "CXR9");
        assert_eq!(r[0].section("indication"), Some("Cough & fever"));
        assert_eq!(r[0].section("impression"), None);
        assert_eq!(
            r[0].text,
            "COMPARISON: None.\n\nINDICATION: Cough & fever\n\nFINDINGS: No pleural effusion."
        );
        assert_eq!(r[0].report_date.unwrap().to_string(), "2013-08-01");
        let bad = read_str(
            "bad.xml",
            b"<eCitation><uId id=\"x\"/><Abstract></eCitation>",
            None,
            &[],
        );
        assert!(reports(&bad).is_empty());
        assert_eq!(errors(&bad)[0].0, "malformed_xml");
    }
}
