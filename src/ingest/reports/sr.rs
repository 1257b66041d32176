//! DICOM Structured Reports as reports.
//!
//! An SR document is a tree of content items (PS3.3 C.17.3). Its text content items are
//! flattened in document order; the concept name of each CONTAINER becomes a heading, and
//! a TEXT item whose concept name differs from its container's is written as
//! `Concept: text`. Items under a concept named like a report section (Findings,
//! Impression, Indication, Comparison, and their usual variants) also fill that section.
//!
//! `ingest dicom` and `ingest reports --format dicom-sr` both call [`report_from_sr`], so
//! the two paths give the same report.

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::model::{parse_date, Report, SECTIONS};

/// SR documents have SOP classes under this root (PS3.4 B.5, "Structured Reporting").
const SR_SOP_CLASS_ROOT: &str = "1.2.840.10008.5.1.4.1.1.88.";

/// Deep trees come from broken or hostile files; real reports are a few levels deep.
const MAX_DEPTH: usize = 64;

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let v = obj.get(tag)?.to_str().ok()?;
    let t = v.trim_end_matches(['\0', ' ']).trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// Whether a data set is a Structured Report.
pub fn is_sr(obj: &InMemDicomObject) -> bool {
    text(obj, tags::SOP_CLASS_UID).is_some_and(|c| c.starts_with(SR_SOP_CLASS_ROOT))
        || text(obj, tags::MODALITY).as_deref() == Some("SR")
}

fn concept_name(item: &InMemDicomObject) -> Option<String> {
    let seq = item.get(tags::CONCEPT_NAME_CODE_SEQUENCE)?.items()?;
    text(seq.first()?, tags::CODE_MEANING)
}

/// The report section a concept name stands for.
fn section_of(concept: &str) -> Option<usize> {
    let c = concept.to_ascii_lowercase();
    let name = if c.starts_with("finding") {
        "findings"
    } else if c.starts_with("impression") || c.starts_with("conclusion") || c == "summary" {
        "impression"
    } else if c.starts_with("indication") || c.contains("history") || c.starts_with("reason for") {
        "indication"
    } else if c.starts_with("comparison") || c.starts_with("prior") {
        "comparison"
    } else {
        return None;
    };
    SECTIONS.iter().position(|s| *s == name)
}

struct Flattener {
    text: String,
    sections: [Option<String>; 4],
    depth_exceeded: bool,
}

impl Flattener {
    fn line(&mut self, s: &str, section: Option<usize>) {
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        self.text.push_str(s);
        if let Some(i) = section {
            let body = self.sections[i].get_or_insert_with(String::new);
            if !body.is_empty() {
                body.push('\n');
            }
            body.push_str(s);
        }
    }

    fn walk(
        &mut self,
        items: &[InMemDicomObject],
        parent: Option<&str>,
        section: Option<usize>,
        depth: usize,
    ) {
        if depth > MAX_DEPTH {
            self.depth_exceeded = true;
            return;
        }
        for item in items {
            let concept = concept_name(item);
            let value_type = text(item, tags::VALUE_TYPE).unwrap_or_default();
            let here = concept.as_deref().and_then(section_of).or(section);
            match value_type.as_str() {
                "CONTAINER" => {
                    if let Some(c) = &concept {
                        // A section heading, in the text only: the section holds the body.
                        self.line(&format!("{c}:"), None);
                    }
                }
                "TEXT" => {
                    if let Some(v) = text(item, tags::TEXT_VALUE) {
                        let v = v.replace("\r\n", "\n").replace('\r', "\n");
                        match concept.as_deref() {
                            Some(c)
                                if Some(c) != parent
                                    && concept.as_deref().and_then(section_of).is_none() =>
                            {
                                self.line(&format!("{c}: {v}"), here)
                            }
                            _ => self.line(&v, here),
                        }
                    }
                }
                _ => {}
            }
            if let Some(children) = item.get(tags::CONTENT_SEQUENCE).and_then(|e| e.items()) {
                let p = concept.as_deref().or(parent);
                self.walk(children, p, here, depth + 1);
            }
        }
    }
}

/// The report an SR document holds; `Ok(None)` when the data set is not an SR.
pub fn report_from_sr(
    obj: &InMemDicomObject,
    uri: &str,
    language: &str,
) -> Result<Option<Report>, String> {
    if !is_sr(obj) {
        return Ok(None);
    }
    let Some(report_id) = text(obj, tags::SOP_INSTANCE_UID) else {
        return Err("the SR document has no SOPInstanceUID".into());
    };
    let mut f = Flattener {
        text: String::new(),
        sections: Default::default(),
        depth_exceeded: false,
    };
    let title = concept_name(obj);
    let root_section = title.as_deref().and_then(section_of);
    if let Some(items) = obj.get(tags::CONTENT_SEQUENCE).and_then(|e| e.items()) {
        f.walk(items, title.as_deref(), root_section, 0);
    }
    if f.depth_exceeded {
        return Err(format!(
            "content tree deeper than {MAX_DEPTH} levels under (0040,A730) ContentSequence"
        ));
    }
    let date = text(obj, tags::CONTENT_DATE).or_else(|| text(obj, tags::STUDY_DATE));
    Ok(Some(Report {
        report_id,
        patient_id: text(obj, tags::PATIENT_ID),
        accession_number: text(obj, tags::ACCESSION_NUMBER),
        study_instance_uid: text(obj, tags::STUDY_INSTANCE_UID),
        report_date: date.as_deref().and_then(parse_date),
        modality: None,
        title,
        sections: f.sections,
        text: f.text,
        language: language.to_string(),
        source_uri: uri.to_string(),
    }))
}
