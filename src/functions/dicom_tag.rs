//! `dicom_tag(dicom_json, path)`: read any element of a header from SQL.
//!
//! `instances.dicom_json` holds every data element of the header (private tags and
//! sequences included) in the DICOM JSON model of PS3.18 F.2, so it is also readable by any
//! engine that reads JSON. The path names an element by keyword (`PatientWeight`), by tag
//! (`(0010,1030)` or `00101030`), and steps into sequences with `[item]` and `.`:
//! `(0040,0275)[0].(0032,1060)` or `RequestAttributesSequence[0].RequestedProcedureDescription`.
//!
//! The result is text (NULL when the element is absent or empty): values joined by `\` as
//! DICOM writes them, person names as their alphabetic group (with `=ideographic` and
//! `=phonetic` groups when present), bulk data as base64, and a sequence (a path that ends
//! on one) as its JSON. Cast the text for arithmetic: `CAST(dicom_tag(..) AS DOUBLE)`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use dicom_core::dictionary::DataDictionary;
use dicom_core::Tag;
use dicom_dictionary_std::StandardDataDictionary;
use serde_json::Value;

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DicomTag {
    signature: Signature,
}

impl Default for DicomTag {
    fn default() -> Self {
        Self::new()
    }
}

impl DicomTag {
    pub fn new() -> Self {
        DicomTag {
            signature: Signature::string(2, Volatility::Immutable),
        }
    }
}

/// One step of a path: an element, and optionally which value or item of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub tag: Tag,
    pub index: Option<usize>,
}

/// Parse a path such as `(0040,0275)[0].RequestedProcedureDescription`.
pub fn parse_path(path: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    let mut rest = path.trim();
    while !rest.is_empty() {
        let (name, after) = if let Some(r) = rest.strip_prefix('(') {
            let close = r
                .find(')')
                .ok_or_else(|| format!("unclosed '(' in {path:?}"))?;
            (&r[..close], &r[close + 1..])
        } else {
            let end = rest.find(['[', '.']).unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        let tag =
            parse_tag(name).ok_or_else(|| format!("unknown DICOM tag or keyword {name:?}"))?;
        let mut after = after;
        let mut index = None;
        if let Some(r) = after.strip_prefix('[') {
            let close = r
                .find(']')
                .ok_or_else(|| format!("unclosed '[' in {path:?}"))?;
            index = Some(
                r[..close]
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| format!("bad index {:?} in {path:?}", &r[..close]))?,
            );
            after = &r[close + 1..];
        }
        steps.push(Step { tag, index });
        rest = match after.strip_prefix('.') {
            Some(r) if !r.is_empty() => r,
            Some(_) => return Err(format!("path {path:?} ends with '.'")),
            None if after.is_empty() => "",
            None => return Err(format!("unexpected {after:?} in {path:?}")),
        };
    }
    if steps.is_empty() {
        return Err("empty path".into());
    }
    Ok(steps)
}

fn parse_tag(name: &str) -> Option<Tag> {
    let hex: String = name.chars().filter(|c| !matches!(c, ',' | ' ')).collect();
    if hex.len() == 8 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        let g = u16::from_str_radix(&hex[..4], 16).ok()?;
        let e = u16::from_str_radix(&hex[4..], 16).ok()?;
        return Some(Tag(g, e));
    }
    StandardDataDictionary.by_name(name).map(|e| e.tag.inner())
}

fn key(tag: Tag) -> String {
    format!("{:04X}{:04X}", tag.group(), tag.element())
}

/// Follow a path through a DICOM JSON data set and render what it reaches.
pub fn lookup(dataset: &Value, steps: &[Step]) -> Option<String> {
    let (last, inner) = steps.split_last()?;
    let mut node = dataset;
    for step in inner {
        let items = node.get(key(step.tag))?.get("Value")?.as_array()?;
        node = items.get(step.index.unwrap_or(0))?;
    }
    let elem = node.get(key(last.tag))?;
    if let Some(b64) = elem.get("InlineBinary").and_then(Value::as_str) {
        return Some(b64.to_string());
    }
    if let Some(uri) = elem.get("BulkDataURI").and_then(Value::as_str) {
        return Some(uri.to_string());
    }
    let values = elem.get("Value")?.as_array()?;
    let is_sequence = elem.get("vr").and_then(Value::as_str) == Some("SQ");
    if is_sequence {
        return match last.index {
            Some(i) => values.get(i).map(|v| v.to_string()),
            None => Some(Value::Array(values.clone()).to_string()),
        };
    }
    let render = |v: &Value| -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            Value::Object(pn) => ["Alphabetic", "Ideographic", "Phonetic"]
                .iter()
                .map(|g| pn.get(*g).and_then(Value::as_str).unwrap_or(""))
                .collect::<Vec<_>>()
                .join("=")
                .trim_end_matches('=')
                .to_string(),
            other => other.to_string(),
        }
    };
    let text = match last.index {
        Some(i) => render(values.get(i)?),
        None => values.iter().map(render).collect::<Vec<_>>().join("\\"),
    };
    (!text.is_empty()).then_some(text)
}

impl ScalarUDFImpl for DicomTag {
    fn name(&self) -> &str {
        "dicom_tag"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let [json, path] = args.args.as_slice() else {
            return exec_err!("dicom_tag takes two arguments: dicom_json and a path");
        };
        let to_utf8 = |v: &ColumnarValue| -> Result<ArrayRef> {
            Ok(cast(&v.to_array(rows)?, &DataType::Utf8)?)
        };
        let json = to_utf8(json)?;
        let json = datafusion::common::cast::as_string_array(&json)?;
        // The path is almost always a literal: parse it once.
        let constant_path = match path {
            ColumnarValue::Scalar(s) => Some(match s {
                ScalarValue::Utf8(p) | ScalarValue::LargeUtf8(p) | ScalarValue::Utf8View(p) => {
                    match p {
                        Some(p) => Some(parse_path(p).map_err(|e| {
                            datafusion::error::DataFusionError::Plan(format!("dicom_tag: {e}"))
                        })?),
                        None => None,
                    }
                }
                _ => return exec_err!("dicom_tag: the path must be text"),
            }),
            ColumnarValue::Array(_) => None,
        };
        let paths = to_utf8(path)?;
        let paths = datafusion::common::cast::as_string_array(&paths)?;
        let mut out = StringBuilder::with_capacity(rows, rows * 8);
        for i in 0..rows {
            if json.is_null(i) {
                out.append_null();
                continue;
            }
            let steps = match &constant_path {
                Some(Some(steps)) => steps.clone(),
                Some(None) => {
                    out.append_null();
                    continue;
                }
                None if paths.is_null(i) => {
                    out.append_null();
                    continue;
                }
                None => parse_path(paths.value(i)).map_err(|e| {
                    datafusion::error::DataFusionError::Execution(format!("dicom_tag: {e}"))
                })?,
            };
            let parsed: Value = match serde_json::from_str(json.value(i)) {
                Ok(v) => v,
                Err(_) => {
                    out.append_null();
                    continue;
                }
            };
            out.append_option(lookup(&parsed, &steps));
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let p = parse_path("(0040,0275)[0].(0032,1060)").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].tag, Tag(0x0040, 0x0275));
        assert_eq!(p[0].index, Some(0));
        assert_eq!(p[1].tag, Tag(0x0032, 0x1060));
        assert_eq!(
            parse_path("PatientWeight").unwrap()[0].tag,
            Tag(0x0010, 0x1030)
        );
        assert_eq!(parse_path("00291010").unwrap()[0].tag, Tag(0x0029, 0x1010));
        assert!(parse_path("NoSuchKeyword").is_err());
        assert!(parse_path("PatientWeight.").is_err());
    }

    #[test]
    fn lookups() {
        let ds: Value = serde_json::json!({
            "00101030": {"vr": "DS", "Value": [72.5]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}]},
            "00280030": {"vr": "DS", "Value": [0.5, 0.6]},
            "00400275": {"vr": "SQ", "Value": [{"00321060": {"vr": "LO", "Value": ["CT CHEST"]}}]},
            "00291010": {"vr": "OB", "InlineBinary": "AAEC"}
        });
        let get = |p: &str| lookup(&ds, &parse_path(p).unwrap());
        assert_eq!(get("PatientWeight").as_deref(), Some("72.5"));
        assert_eq!(
            get("PatientName").as_deref(),
            Some("Yamada^Tarou=山田^太郎")
        );
        assert_eq!(get("PixelSpacing").as_deref(), Some("0.5\\0.6"));
        assert_eq!(get("PixelSpacing[1]").as_deref(), Some("0.6"));
        assert_eq!(
            get("(0040,0275)[0].(0032,1060)").as_deref(),
            Some("CT CHEST")
        );
        assert_eq!(get("(0029,1010)").as_deref(), Some("AAEC"));
        assert_eq!(get("PatientAge"), None);
    }
}
