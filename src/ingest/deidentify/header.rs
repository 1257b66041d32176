//! The profile applied to a parsed header, element by element and into every sequence item.

use dicom_core::header::Header as _;
use dicom_core::value::{DataSetSequence, C};
use dicom_core::{DataElement, DicomValue, Length, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemElement;
use dicom_object::InMemDicomObject;

use super::profile::{Op, Profile};
use super::{Deidentifier, IdKind, Identifier};
use crate::ingest::dicom::columns::clean;

/// Sequences nested deeper than this are removed (no header needs more; a crafted one
/// cannot make the walk recurse without bound).
const MAX_DEPTH: usize = 32;

/// Private attributes kept by the Retain Safe Private option: (private creator, group,
/// element within the block). medlake keeps none: every private attribute is removed.
const SAFE_PRIVATE: &[(&str, u16, u8)] = &[];

/// UIDs that name kinds of things, not instances (kept when not in the table).
const CLASS_UIDS: &[Tag] = &[
    tags::SOP_CLASS_UID,
    tags::REFERENCED_SOP_CLASS_UID,
    tags::AFFECTED_SOP_CLASS_UID,
    tags::REQUESTED_SOP_CLASS_UID,
    tags::MEDIA_STORAGE_SOP_CLASS_UID,
    tags::TRANSFER_SYNTAX_UID,
    tags::REFERENCED_TRANSFER_SYNTAX_UID_IN_FILE,
    tags::REFERENCED_SOP_CLASS_UID_IN_FILE,
    tags::RELATED_GENERAL_SOP_CLASS_UID,
    tags::ORIGINAL_SPECIALIZED_SOP_CLASS_UID,
    tags::IMPLEMENTATION_CLASS_UID,
    tags::CODING_SCHEME_UID,
    tags::MAPPING_RESOURCE_UID,
    tags::CONTEXT_UID,
];

/// Other Patient IDs (0010,1000), retired in PS3.6 but still written.
const OTHER_PATIENT_IDS: Tag = Tag(0x0010, 0x1000);

/// medlake's addition to Table E.1-1: attributes that hold a file path or a file-set
/// name, which often name the patient (DICOMDIR records such as `77654033/CR1/6154`).
/// Removed, as `file_uri` is pseudonymized.
const PATHS: &[Tag] = &[
    tags::REFERENCED_FILE_ID,
    tags::FILE_SET_ID,
    tags::FILE_SET_DESCRIPTOR_FILE_ID,
];

/// What the walk needs to know about the instance.
pub(super) struct Ctx<'a> {
    pub d: &'a Deidentifier,
    /// The patient's pseudonym (empty when the header names no patient).
    pub patient: String,
    /// Days to move dates by (with the retain-dates option).
    pub offset: Option<i64>,
    /// Private creators of the top level, for the safe-private list.
    creators: Vec<(Tag, String)>,
}

impl<'a> Ctx<'a> {
    pub fn new(d: &'a Deidentifier, patient_key: &str) -> Self {
        Ctx {
            d,
            patient: d.patient_pseudonym(patient_key),
            offset: d
                .options
                .retain_dates
                .then(|| d.date_offset_days(patient_key)),
            creators: Vec::new(),
        }
    }
}

fn text_values(e: &InMemElement) -> Vec<String> {
    e.value()
        .to_multi_str()
        .map(|v| v.iter().map(|s| clean(s).to_string()).collect())
        .unwrap_or_default()
}

/// A PN value without trailing empty components (`Doe^John^^^` is `Doe^John`).
pub(super) fn person_name(s: &str) -> String {
    clean(s).trim_end_matches(['=', '^']).to_string()
}

/// The key the patient's pseudonym and date offset derive from: PatientID, else
/// PatientName, else nothing.
pub(super) fn patient_key(obj: &InMemDicomObject) -> String {
    let get = |tag| obj.get(tag).map(text_values).unwrap_or_default().join("\\");
    let id = get(tags::PATIENT_ID);
    if !id.is_empty() {
        return id;
    }
    person_name(&get(tags::PATIENT_NAME))
}

/// The identifying values of the original header, for the lake's identifier map (the
/// report scrub): PatientID, names and their components, other IDs, AccessionNumber,
/// birth date.
pub(super) fn identifiers(d: &Deidentifier, obj: &InMemDicomObject, out: &mut Vec<Identifier>) {
    let patient = d.patient_pseudonym(&patient_key(obj));
    let mut push = |kind, value: &str, pseudonym: &str| {
        let value = clean(value);
        if !value.is_empty() {
            out.push(Identifier {
                kind,
                value: value.to_string(),
                pseudonym: pseudonym.to_string(),
            });
        }
    };
    let values = |tag| obj.get(tag).map(text_values).unwrap_or_default();
    for v in values(tags::PATIENT_ID) {
        push(IdKind::PatientId, &v, &d.patient_pseudonym(&v));
    }
    for tag in [
        tags::PATIENT_NAME,
        tags::OTHER_PATIENT_NAMES,
        tags::PATIENT_BIRTH_NAME,
        tags::PATIENT_MOTHER_BIRTH_NAME,
    ] {
        for v in values(tag) {
            let full = person_name(&v);
            push(IdKind::Name, &full, &patient);
            for group in full.split('=') {
                let group = group.trim_end_matches('^');
                push(IdKind::Name, group, &patient);
                for part in group.split('^') {
                    push(IdKind::Name, part, &patient);
                }
            }
        }
    }
    for v in values(OTHER_PATIENT_IDS) {
        push(IdKind::OtherId, &v, "");
    }
    if let Some(seq) = obj
        .get(tags::OTHER_PATIENT_I_DS_SEQUENCE)
        .and_then(|e| e.items())
    {
        for item in seq {
            for v in item
                .get(tags::PATIENT_ID)
                .map(text_values)
                .unwrap_or_default()
            {
                push(IdKind::OtherId, &v, "");
            }
        }
    }
    for v in values(tags::ACCESSION_NUMBER) {
        push(IdKind::Accession, &v, &d.accession(&v));
    }
    for v in values(tags::PATIENT_BIRTH_DATE) {
        let digits: String = v.chars().filter(|c| *c != '.').collect();
        push(IdKind::BirthDate, &digits, "");
    }
}

fn strs(tag: Tag, vr: VR, values: Vec<String>) -> InMemElement {
    if values.is_empty() {
        return DataElement::new(tag, vr, PrimitiveValue::Empty);
    }
    DataElement::new(
        tag,
        vr,
        PrimitiveValue::Strs(values.into_iter().collect::<C<String>>()),
    )
}

/// A single-valued text element, empty when `value` is.
fn one_str(tag: Tag, vr: VR, value: String) -> InMemElement {
    strs(
        tag,
        vr,
        Some(value).filter(|v| !v.is_empty()).into_iter().collect(),
    )
}

fn empty(tag: Tag, vr: VR) -> InMemElement {
    if vr == VR::SQ {
        return DataElement::new(
            tag,
            vr,
            DicomValue::Sequence(DataSetSequence::new(Vec::new(), Length::UNDEFINED)),
        );
    }
    DataElement::new(tag, vr, PrimitiveValue::Empty)
}

/// A dummy value consistent with the VR.
fn dummy(tag: Tag, vr: VR) -> InMemElement {
    let s = |v: &str| strs(tag, vr, vec![v.to_string()]);
    match vr {
        VR::DA => s("19000101"),
        VR::TM => s("000000"),
        VR::DT => s("19000101000000"),
        VR::AS => s("000Y"),
        VR::DS | VR::IS => s("0"),
        VR::PN | VR::LO | VR::SH | VR::ST | VR::LT | VR::UT | VR::UC | VR::CS | VR::AE => {
            s("REMOVED")
        }
        VR::US => DataElement::new(tag, vr, PrimitiveValue::from(0u16)),
        VR::SS => DataElement::new(tag, vr, PrimitiveValue::from(0i16)),
        VR::UL => DataElement::new(tag, vr, PrimitiveValue::from(0u32)),
        VR::SL => DataElement::new(tag, vr, PrimitiveValue::from(0i32)),
        VR::UV => DataElement::new(tag, vr, PrimitiveValue::from(0u64)),
        VR::SV => DataElement::new(tag, vr, PrimitiveValue::from(0i64)),
        VR::FL => DataElement::new(tag, vr, PrimitiveValue::from(0f32)),
        VR::FD => DataElement::new(tag, vr, PrimitiveValue::from(0f64)),
        _ => empty(tag, vr),
    }
}

/// A DA value (`YYYYMMDD`, or the retired `YYYY.MM.DD`) moved by `days`.
pub(super) fn shift_date(s: &str, days: i64) -> Option<String> {
    let digits: String = clean(s).chars().filter(|c| *c != '.').collect();
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let d = chrono::NaiveDate::parse_from_str(&digits, "%Y%m%d").ok()?;
    let moved = d.checked_add_signed(chrono::Duration::try_days(days)?)?;
    Some(moved.format("%Y%m%d").to_string())
}

/// A DT value moved by `days`: its date part, the time and offset kept. A DT without a
/// whole date cannot be moved and is dropped.
fn shift_datetime(s: &str, days: i64) -> Option<String> {
    let s = clean(s);
    let date = s.get(..8)?;
    Some(format!("{}{}", shift_date(date, days)?, &s[8..]))
}

fn shift(tag: Tag, vr: VR, e: &InMemElement, offset: i64) -> InMemElement {
    let moved: Vec<String> = match vr {
        VR::DA => text_values(e)
            .iter()
            .filter_map(|v| shift_date(v, offset))
            .collect(),
        VR::DT => text_values(e)
            .iter()
            .filter_map(|v| shift_datetime(v, offset))
            .collect(),
        _ => return e.clone(),
    };
    strs(tag, vr, moved)
}

fn is_standard_uid(v: &str) -> bool {
    v.starts_with("1.2.840.10008.")
}

impl Ctx<'_> {
    /// A cleaned copy of a data set (or sequence item).
    pub fn object(&mut self, obj: InMemDicomObject, depth: usize) -> InMemDicomObject {
        if depth == 0 {
            self.creators = obj
                .iter()
                .filter(|e| {
                    let t = e.tag();
                    t.group() % 2 == 1 && (0x10..=0xFF).contains(&t.element())
                })
                .map(|e| (e.tag(), text_values(e).join("\\")))
                .collect();
        }
        let elements: Vec<InMemElement> = obj
            .into_iter()
            .filter_map(|e| self.element(e, depth))
            .collect();
        InMemDicomObject::from_element_iter(elements)
    }

    fn safe_private(&self, tag: Tag, depth: usize) -> bool {
        if depth > 0 || SAFE_PRIVATE.is_empty() || tag.element() < 0x1000 {
            return false;
        }
        let block = tag.element() >> 8;
        let creator = self
            .creators
            .iter()
            .find(|(t, _)| t.group() == tag.group() && t.element() == block)
            .map(|(_, c)| c.as_str());
        SAFE_PRIVATE.iter().any(|(c, g, e)| {
            Some(*c) == creator && *g == tag.group() && *e == (tag.element() & 0xFF) as u8
        })
    }

    fn items(&mut self, tag: Tag, vr: VR, e: InMemElement, depth: usize) -> Option<InMemElement> {
        if depth + 1 > MAX_DEPTH {
            return None;
        }
        let items = e.into_value().into_items()?;
        let cleaned: Vec<InMemDicomObject> = items
            .into_iter()
            .map(|item| self.object(item, depth + 1))
            .collect();
        Some(DataElement::new(
            tag,
            vr,
            DicomValue::Sequence(DataSetSequence::new(cleaned, Length::UNDEFINED)),
        ))
    }

    fn uids(&self, tag: Tag, vr: VR, e: &InMemElement, keep_standard: bool) -> InMemElement {
        let mapped = text_values(e)
            .iter()
            .filter(|v| !v.is_empty())
            .map(|v| {
                if keep_standard && is_standard_uid(v) {
                    v.clone()
                } else {
                    self.d.uid(v)
                }
            })
            .collect();
        strs(tag, vr, mapped)
    }

    fn element(&mut self, e: InMemElement, depth: usize) -> Option<InMemElement> {
        let tag = e.tag();
        let vr = e.vr();
        if tag.group() % 2 == 1 {
            return self.safe_private(tag, depth).then_some(e);
        }
        if tag.element() == 0 {
            // Group lengths: wrong once anything in the group changed.
            return None;
        }
        if PATHS.contains(&tag) {
            return None;
        }
        let is_seq = matches!(e.value(), DicomValue::Sequence(_));
        match tag {
            tags::PATIENT_ID | tags::PATIENT_NAME if tag == tags::PATIENT_ID || !is_seq => {
                // An empty PatientID (or name) stays empty: no patient is made up from the
                // other one.
                let text = text_values(&e).join("\\");
                let original = if tag == tags::PATIENT_NAME {
                    person_name(&text)
                } else {
                    text
                };
                let v = if original.is_empty() {
                    String::new()
                } else if depth == 0 {
                    self.patient.clone()
                } else {
                    self.d.patient_pseudonym(&original)
                };
                return Some(one_str(tag, vr, v));
            }
            tags::ACCESSION_NUMBER if !is_seq => {
                let v = self.d.accession(&text_values(&e).join("\\"));
                return Some(one_str(tag, vr, v));
            }
            _ => {}
        }
        let Some(row) = self.d.profile.row(tag) else {
            // Not in the table: kept, except that instance UIDs are remapped and dates
            // moved or removed as the table's dates are (stricter than the profile, which
            // keeps attributes it does not list).
            if is_seq {
                return self.items(tag, vr, e, depth);
            }
            return match vr {
                VR::UI if CLASS_UIDS.contains(&tag) => Some(e),
                VR::UI => Some(self.uids(tag, vr, &e, true)),
                VR::DA | VR::DT => match self.offset {
                    Some(days) => Some(shift(tag, vr, &e, days)),
                    None => Some(empty(tag, vr)),
                },
                _ => Some(e),
            };
        };
        match Profile::op(row, self.d.options) {
            Op::Keep | Op::Dummy | Op::Uid | Op::Clean if is_seq => self.items(tag, vr, e, depth),
            Op::ShiftDates if is_seq => self.items(tag, vr, e, depth),
            Op::Keep => Some(e),
            Op::Remove | Op::Clean => None,
            Op::Empty => Some(empty(tag, vr)),
            Op::Dummy if vr == VR::UI => Some(self.uids(tag, vr, &e, false)),
            Op::Dummy => Some(dummy(tag, vr)),
            Op::Uid if vr == VR::UI => Some(self.uids(tag, vr, &e, false)),
            Op::Uid => Some(empty(tag, vr)),
            Op::ShiftDates => match (self.offset, vr) {
                (Some(days), VR::DA | VR::DT) => Some(shift(tag, vr, &e, days)),
                (Some(_), _) => Some(e),
                (None, _) => Some(empty(tag, vr)),
            },
        }
    }
}
