//! De-identification at ingest: `--deidentify basic` on `ingest dicom`, `ingest reports`
//! and `link samples`.
//!
//! Why at ingest: a lake that never receives identifiers cannot leak them, through SQL, an
//! export, a Parquet file copied elsewhere or the search index. Removing them afterwards
//! would leave them in every older Delta version and in the index's history.
//!
//! What is applied: DICOM PS3.15 Annex E, the Basic Application Level Confidentiality
//! Profile, from its Table E.1-1 kept as data (`annex_e.tsv`, parsed once), with two of its
//! options: Retain Longitudinal Temporal Information with Modified Dates (`--retain-dates`)
//! and Retain Patient Characteristics (`--retain-patient-characteristics`). The profile runs
//! on the parsed header before anything is derived from it, so the typed `instances` columns,
//! `dicom_json` (every element, into every sequence item), the frame geometry and the
//! derived `series`/`studies`/`patients` all see the same de-identified header.
//!
//! - **Pseudonyms** are keyed: HMAC-SHA256 under the lake's secret of a domain-separated
//!   input. PatientID becomes `P` + 15 base32 characters; PatientName becomes the same
//!   pseudonym (so `PatientName = PatientID`, and the name can never be guessed back);
//!   AccessionNumber `A` + 15; a report's id `R` + 15. The same input gives the same
//!   pseudonym in every run, so DICOM, reports and `sample_links` join on PatientID, and
//!   reports link to studies by AccessionNumber. (Z on PatientID, PatientName and
//!   AccessionNumber is met with these dummy values; a zero-length value would break joins.)
//! - **UIDs** (action U, and every non-standard UID of an attribute the table does not
//!   list) become `2.25.<the first 128 bits of the HMAC as a decimal>`, the UUID-derived form
//!   of PS3.5 B.2. The mapping is a function of the UID, so Study, Series and SOP Instance
//!   UIDs and every reference to them in sequences stay consistent across files and runs.
//!   UIDs of classes (SOP Class, Transfer Syntax, coding schemes) are kept.
//! - **Dates**: without `--retain-dates` they are emptied or removed as the table says;
//!   with it, every DA and DT is moved by the patient's offset (1 to 365 days either way,
//!   from the HMAC of the patient), so intervals within a patient are kept; times are kept.
//!   Dates of attributes the table does not list are treated the same way (stricter than
//!   the profile, which keeps them). PatientBirthDate is removed either way.
//! - **Compound actions** (X/Z, Z/D, X/Z/D...) depend on the attribute's Type in each IOD;
//!   the lake writes no DICOM files, so the least informative choice is made: Z where it is
//!   allowed, D (a dummy consistent with the VR) only for D and X/D. C on free text removes
//!   it (see [`profile::Op::Clean`]); C on a coded sequence cleans its items.
//! - **Private attributes** are removed, private creators included. The safe-private list
//!   (`header::SAFE_PRIVATE`) is empty: no private attribute is kept.
//! - **Burned-in annotation** cannot be removed from a header: every instance gets
//!   `burned_in_annotation_risk` (see [`burned_in`]).
//! - **`file_uri`** would name the source file, and paths often hold a patient's name or
//!   ID, so it becomes `deidentified:<hex>` (a keyed pseudonym of the URI; a `#fragment`
//!   such as a report line number is kept). A de-identified lake therefore cannot read pixel
//!   data back: `compute findings` and `embed` record a `read` error for its series. The
//!   same holds for `reports.source_uri`, `sample_links.source_uri` and `ingest_errors`.
//!   `content_hash` becomes a keyed hash, so it cannot confirm a guess about a file.
//! - **Reports**: PatientID, AccessionNumber, StudyInstanceUID and report_id as above,
//!   report_date moved (or removed), and the title, sections and text scrubbed
//!   ([`text`]): the identifiers the lake learned during DICOM ingest and the report's own,
//!   then generic patterns. The search index is built from the scrubbed report. DICOM SR
//!   documents met by `ingest dicom` become reports the same way (their Content Sequence,
//!   X in the profile, is removed from `dicom_json`; the report text is scrubbed).
//! - **Sample links**: the CSV's PatientID gets the same pseudonym.
//!
//! The secret and the identifiers live under `_secrets/` in the lake root, never in a
//! table: `_secrets/deidentify.key` (32 random bytes made on first use through the lake's
//! object store, mode 0600 on a local disk; `MEDLAKE_DEID_SECRET` overrides it) and
//! `_secrets/deidentify.identifiers` (JSON lines: kind, original value, pseudonym), which
//! the report scrub reads. Whoever holds `_secrets/` can re-identify the lake: share the
//! lake without it. Ingest DICOM before the reports that mention its patients, so their
//! names are known to the scrub.
//!
//! Not covered: VCF sample names and `variants`/`genotypes` (genomic data is identifying by
//! nature), pixel data, and names in free text the lake has never seen without a title or
//! label before them.

pub mod burned_in;
mod header;
pub mod profile;
mod secrets;
pub mod text;

use std::sync::Arc;

use dicom_object::InMemDicomObject;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

pub use profile::ProfileOptions;
pub use text::Scrubber;

use crate::error::{Error, Result};
use crate::ingest::dicom::columns::clean;
use crate::ingest::reports::Report;
use crate::ingest::ErrorRow;
use crate::lake::Lake;
use profile::Profile;

/// The environment variable that, when set, is the secret (its bytes) instead of
/// `_secrets/deidentify.key`.
pub const SECRET_ENV: &str = "MEDLAKE_DEID_SECRET";

/// The profiles `--deidentify` accepts.
pub const PROFILES: [&str; 1] = ["basic"];

/// Which kind of identifying value an [`Identifier`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdKind {
    PatientId,
    /// A patient's name, a component group or a component.
    Name,
    Accession,
    /// `YYYYMMDD`.
    BirthDate,
    OtherId,
}

/// An identifying value seen during DICOM ingest, and its pseudonym (empty when the value
/// has none: names and birth dates are replaced by placeholders).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identifier {
    pub kind: IdKind,
    pub value: String,
    pub pseudonym: String,
}

/// A header after the profile.
pub struct CleanHeader {
    pub obj: InMemDicomObject,
    pub sop_instance_uid: String,
    /// The identifying values of the original header.
    pub identifiers: Vec<Identifier>,
}

/// The lake's de-identification: its secret and the options of a run.
pub struct Deidentifier {
    key: Vec<u8>,
    pub options: ProfileOptions,
    profile: &'static Profile,
}

impl std::fmt::Debug for Deidentifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deidentifier")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

impl Deidentifier {
    /// The lake's secret (made on first use) with these options.
    pub async fn open(lake: &Lake, options: ProfileOptions) -> Result<Arc<Self>> {
        let key = secrets::key(lake).await?;
        Ok(Arc::new(Self::with_key(key, options)?))
    }

    /// A de-identifier with a given secret.
    pub fn with_key(key: Vec<u8>, options: ProfileOptions) -> Result<Self> {
        if key.len() < 16 {
            return Err(Error::Invalid(format!(
                "the de-identification secret has {} bytes; it needs at least 16",
                key.len()
            )));
        }
        Ok(Deidentifier {
            key,
            options,
            profile: Profile::get()?,
        })
    }

    fn mac(&self, domain: &str, value: &str) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC takes any key length");
        m.update(domain.as_bytes());
        m.update(&[0]);
        m.update(value.as_bytes());
        m.finalize().into_bytes().into()
    }

    fn code(&self, prefix: char, domain: &str, value: &str) -> String {
        let v = clean(value);
        if v.is_empty() {
            return String::new();
        }
        let h = self.mac(domain, v);
        let bits = u128::from_be_bytes(h[..16].try_into().expect("16 bytes"));
        let mut out = String::with_capacity(16);
        out.push(prefix);
        for i in 0..15 {
            out.push(BASE32[((bits >> (123 - 5 * i)) & 31) as usize] as char);
        }
        out
    }

    /// The pseudonym of a patient (by PatientID, or PatientName when there is none).
    pub fn patient_pseudonym(&self, patient_key: &str) -> String {
        self.code('P', "patient", patient_key)
    }

    pub fn accession(&self, v: &str) -> String {
        self.code('A', "accession", v)
    }

    pub fn report_id(&self, v: &str) -> String {
        self.code('R', "report", v)
    }

    /// A UID's remapping: `2.25.` and 128 bits of the HMAC in decimal.
    pub fn uid(&self, v: &str) -> String {
        let v = clean(v);
        if v.is_empty() {
            return String::new();
        }
        let h = self.mac("uid", v);
        format!(
            "2.25.{}",
            u128::from_be_bytes(h[..16].try_into().expect("16 bytes"))
        )
    }

    /// A URI's pseudonym, its `#fragment` kept.
    pub fn uri(&self, uri: &str) -> String {
        let (base, fragment) = match uri.split_once('#') {
            Some((b, f)) => (b, Some(f)),
            None => (uri, None),
        };
        let h = self.mac("uri", base);
        let mut out = format!("deidentified:{}", hex(&h[..16]));
        if let Some(f) = fragment {
            out.push('#');
            out.push_str(f);
        }
        out
    }

    /// The patient's date offset in days: 1 to 365, either way; never 0.
    pub fn date_offset_days(&self, patient_key: &str) -> i64 {
        let h = self.mac("date-shift", clean(patient_key));
        let n = u64::from_be_bytes(h[..8].try_into().expect("8 bytes"));
        let days = 1 + (n % 365) as i64;
        if n >> 63 == 1 {
            -days
        } else {
            days
        }
    }

    /// The key of `content_hash` (a keyed BLAKE3 of the header bytes).
    pub fn content_hash_key(&self) -> [u8; 32] {
        self.mac("content-hash", "")
    }

    /// Apply the profile to a header. `sop_instance_uid` is the one the reader settled on
    /// (it may come from the file meta group).
    pub fn header(&self, obj: InMemDicomObject, sop_instance_uid: &str) -> CleanHeader {
        let mut identifiers = Vec::new();
        header::identifiers(self, &obj, &mut identifiers);
        let key = header::patient_key(&obj);
        let mut ctx = header::Ctx::new(self, &key);
        let obj = ctx.object(obj, 0);
        CleanHeader {
            obj,
            sop_instance_uid: self.uid(sop_instance_uid),
            identifiers,
        }
    }

    /// A report with its identifiers replaced and its text scrubbed.
    pub fn report(&self, mut r: Report, scrubber: &Scrubber) -> Report {
        let key = r
            .patient_id
            .as_deref()
            .map(|p| clean(p).to_string())
            .unwrap_or_default();
        let mut own = Vec::new();
        if !key.is_empty() {
            own.push(Identifier {
                kind: IdKind::PatientId,
                value: key.clone(),
                pseudonym: self.patient_pseudonym(&key),
            });
        }
        if let Some(a) = r.accession_number.as_deref().map(clean) {
            if !a.is_empty() {
                own.push(Identifier {
                    kind: IdKind::Accession,
                    value: a.to_string(),
                    pseudonym: self.accession(a),
                });
            }
        }
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        r.patient_id = non_empty(self.patient_pseudonym(&key));
        r.accession_number = r
            .accession_number
            .as_deref()
            .and_then(|a| non_empty(self.accession(a)));
        r.study_instance_uid = r
            .study_instance_uid
            .as_deref()
            .and_then(|u| non_empty(self.uid(u)));
        r.report_date = match (self.options.retain_dates, r.report_date) {
            (true, Some(d)) => chrono::Duration::try_days(self.date_offset_days(&key))
                .and_then(|o| d.checked_add_signed(o)),
            _ => None,
        };
        r.report_id = self.report_id(&r.report_id);
        r.title = r.title.map(|t| scrubber.scrub(&t, &own));
        for s in r.sections.iter_mut() {
            *s = s.take().map(|t| scrubber.scrub(&t, &own));
        }
        r.text = scrubber.scrub(&r.text, &own);
        r.source_uri = self.uri(&r.source_uri);
        r
    }

    /// An error row as a de-identified lake records it: the file's URI pseudonymized, the
    /// message scrubbed.
    pub fn error_row(&self, mut row: ErrorRow, scrubber: &Scrubber) -> ErrorRow {
        row.file_uri = self.uri(&row.file_uri);
        row.message = scrubber.scrub(&row.message, &[]);
        row
    }

    /// The identifiers recorded in the lake so far.
    pub async fn identifiers(lake: &Lake) -> Result<Vec<Identifier>> {
        secrets::identifiers(lake).await
    }

    /// Add identifiers to the lake's map (those already there are not written twice).
    pub async fn record_identifiers(lake: &Lake, new: &[Identifier]) -> Result<()> {
        secrets::add_identifiers(lake, new).await
    }

    /// The scrubber for the identifiers the lake knows.
    pub async fn scrubber(lake: &Lake) -> Result<Scrubber> {
        Ok(Scrubber::new(&secrets::identifiers(lake).await?))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::value::DataSetSequence;
    use dicom_core::{DataElement, DicomValue, Length, PrimitiveValue, Tag, VR};
    use dicom_dictionary_std::tags;

    fn d(options: ProfileOptions) -> Deidentifier {
        Deidentifier::with_key(b"0123456789abcdef0123456789abcdef".to_vec(), options).unwrap()
    }

    fn put(o: &mut InMemDicomObject, tag: Tag, vr: VR, v: &str) {
        o.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
    }

    fn text(o: &InMemDicomObject, tag: Tag) -> Option<String> {
        o.get(tag).map(|e| {
            e.value()
                .to_str()
                .map(|s| s.to_string())
                .unwrap_or_default()
        })
    }

    fn sample() -> InMemDicomObject {
        let mut o = InMemDicomObject::new_empty();
        put(
            &mut o,
            tags::SOP_CLASS_UID,
            VR::UI,
            "1.2.840.10008.5.1.4.1.1.2",
        );
        put(&mut o, tags::SOP_INSTANCE_UID, VR::UI, "1.2.3.4.5");
        put(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3.4");
        put(&mut o, tags::PATIENT_ID, VR::LO, "98890234");
        put(&mut o, tags::PATIENT_NAME, VR::PN, "Doe^Peter^^^");
        put(&mut o, tags::PATIENT_BIRTH_DATE, VR::DA, "19400305");
        put(&mut o, tags::PATIENT_SEX, VR::CS, "M");
        put(&mut o, tags::PATIENT_AGE, VR::AS, "061Y");
        put(&mut o, tags::ACCESSION_NUMBER, VR::SH, "FUJI95706");
        put(&mut o, tags::STUDY_DATE, VR::DA, "20010101");
        put(&mut o, tags::STUDY_TIME, VR::TM, "101010");
        put(
            &mut o,
            tags::ACQUISITION_DATE_TIME,
            VR::DT,
            "20010102030405.5+0100",
        );
        put(
            &mut o,
            tags::INSTITUTION_NAME,
            VR::LO,
            "St. Nowhere Hospital",
        );
        put(&mut o, tags::MODALITY, VR::CS, "CT");
        put(&mut o, Tag(0x0009, 0x0010), VR::LO, "ACME 1.0");
        put(&mut o, Tag(0x0009, 0x1001), VR::LO, "Doe^Peter");
        put(&mut o, tags::FRAME_OF_REFERENCE_UID, VR::UI, "1.2.3.9");
        let mut item = InMemDicomObject::new_empty();
        put(
            &mut item,
            tags::REFERENCED_SOP_CLASS_UID,
            VR::UI,
            "1.2.840.10008.5.1.4.1.1.2",
        );
        put(
            &mut item,
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            "1.2.3.4.6",
        );
        put(&mut item, tags::PATIENT_NAME, VR::PN, "Doe^Peter");
        o.put(DataElement::new(
            tags::REFERENCED_IMAGE_SEQUENCE,
            VR::SQ,
            DicomValue::Sequence(DataSetSequence::new(vec![item], Length::UNDEFINED)),
        ));
        o
    }

    #[test]
    fn the_basic_profile_on_a_header() {
        let de = d(ProfileOptions::default());
        let c = de.header(sample(), "1.2.3.4.5");
        let o = &c.obj;
        let pid = text(o, tags::PATIENT_ID).unwrap();
        assert!(pid.starts_with('P') && pid.len() == 16, "{pid}");
        assert_eq!(text(o, tags::PATIENT_NAME).unwrap(), pid);
        assert_eq!(pid, de.patient_pseudonym("98890234"));
        assert_eq!(text(o, tags::PATIENT_BIRTH_DATE).as_deref(), Some(""));
        assert_eq!(text(o, tags::PATIENT_SEX).as_deref(), Some(""));
        assert_eq!(text(o, tags::PATIENT_AGE), None);
        assert_eq!(
            text(o, tags::ACCESSION_NUMBER).unwrap(),
            de.accession("FUJI95706")
        );
        assert_eq!(text(o, tags::STUDY_DATE).as_deref(), Some(""));
        assert_eq!(text(o, tags::STUDY_TIME).as_deref(), Some(""));
        assert_eq!(
            text(o, tags::ACQUISITION_DATE_TIME).as_deref(),
            Some("19000101000000")
        );
        assert_eq!(text(o, tags::INSTITUTION_NAME).as_deref(), Some(""));
        assert_eq!(text(o, tags::MODALITY).as_deref(), Some("CT"));
        assert_eq!(text(o, Tag(0x0009, 0x0010)), None);
        assert_eq!(text(o, Tag(0x0009, 0x1001)), None);
        let sop = text(o, tags::SOP_INSTANCE_UID).unwrap();
        assert_eq!(sop, c.sop_instance_uid);
        assert_eq!(sop, de.uid("1.2.3.4.5"));
        assert!(sop.starts_with("2.25.") && sop.len() <= 64);
        assert_eq!(
            text(o, tags::FRAME_OF_REFERENCE_UID).unwrap(),
            de.uid("1.2.3.9")
        );
        assert_eq!(
            text(o, tags::SOP_CLASS_UID).as_deref(),
            Some("1.2.840.10008.5.1.4.1.1.2")
        );
        let items = o
            .get(tags::REFERENCED_IMAGE_SEQUENCE)
            .unwrap()
            .items()
            .unwrap();
        assert_eq!(
            text(&items[0], tags::REFERENCED_SOP_INSTANCE_UID).unwrap(),
            de.uid("1.2.3.4.6")
        );
        assert_eq!(
            text(&items[0], tags::REFERENCED_SOP_CLASS_UID).as_deref(),
            Some("1.2.840.10008.5.1.4.1.1.2")
        );
        assert_eq!(
            text(&items[0], tags::PATIENT_NAME).unwrap(),
            de.patient_pseudonym("Doe^Peter")
        );
        let json = dicom_json::to_string(o).unwrap();
        for leak in [
            "98890234",
            "Doe",
            "Peter",
            "19400305",
            "FUJI95706",
            "Nowhere",
            "ACME",
        ] {
            assert!(!json.contains(leak), "{leak} in {json}");
        }
        let kinds: Vec<(IdKind, &str)> = c
            .identifiers
            .iter()
            .map(|i| (i.kind, i.value.as_str()))
            .collect();
        for want in [
            (IdKind::PatientId, "98890234"),
            (IdKind::Name, "Doe^Peter"),
            (IdKind::Name, "Doe"),
            (IdKind::Name, "Peter"),
            (IdKind::Accession, "FUJI95706"),
            (IdKind::BirthDate, "19400305"),
        ] {
            assert!(kinds.contains(&want), "{want:?} not in {kinds:?}");
        }
    }

    #[test]
    fn options_move_dates_and_keep_characteristics() {
        let de = d(ProfileOptions {
            retain_dates: true,
            retain_patient_characteristics: true,
        });
        let days = de.date_offset_days("98890234");
        assert!(days != 0 && days.abs() <= 365);
        let o = de.header(sample(), "1.2.3.4.5").obj;
        let moved = |s: &str| header::shift_date(s, days).unwrap();
        assert_eq!(text(&o, tags::STUDY_DATE).unwrap(), moved("20010101"));
        assert_eq!(text(&o, tags::STUDY_TIME).as_deref(), Some("101010"));
        assert_eq!(
            text(&o, tags::ACQUISITION_DATE_TIME).unwrap(),
            format!("{}030405.5+0100", moved("20010102"))
        );
        assert_eq!(text(&o, tags::PATIENT_BIRTH_DATE).as_deref(), Some(""));
        assert_eq!(text(&o, tags::PATIENT_SEX).as_deref(), Some("M"));
        assert_eq!(text(&o, tags::PATIENT_AGE).as_deref(), Some("061Y"));
        assert_eq!(
            header::shift_date("20010101", -1).as_deref(),
            Some("20001231")
        );
        assert_eq!(header::shift_date("2001", 3), None);
    }

    #[test]
    fn pseudonyms_are_keyed_and_stable() {
        let a = d(ProfileOptions::default());
        let b = Deidentifier::with_key(vec![7; 32], ProfileOptions::default()).unwrap();
        assert_eq!(a.patient_pseudonym("X1 "), a.patient_pseudonym("X1"));
        assert_ne!(a.patient_pseudonym("X1"), b.patient_pseudonym("X1"));
        assert_ne!(a.patient_pseudonym("X1"), a.accession("X1"));
        assert_eq!(a.patient_pseudonym(""), "");
        assert_eq!(a.uid("1.2.3\0"), a.uid("1.2.3"));
        assert_eq!(
            a.uri("file:///a/b.csv#line=3").split_once('#').unwrap().1,
            "line=3"
        );
        assert_eq!(
            a.uri("file:///a/b.csv#line=3").split_once('#').unwrap().0,
            a.uri("file:///a/b.csv")
        );
        assert!(Deidentifier::with_key(vec![1; 8], ProfileOptions::default()).is_err());
    }

    #[test]
    fn reports_are_pseudonymized_and_scrubbed() {
        let de = d(ProfileOptions {
            retain_dates: true,
            ..Default::default()
        });
        let scrub = Scrubber::new(&[Identifier {
            kind: IdKind::Name,
            value: "Lestrade".into(),
            pseudonym: String::new(),
        }]);
        let r = Report {
            report_id: "r1".into(),
            patient_id: Some("ID1".into()),
            accession_number: Some("ACC123".into()),
            study_instance_uid: Some("1.2.3".into()),
            report_date: chrono::NaiveDate::from_ymd_opt(2020, 1, 10),
            text: "Mr. Lestrade (ID1, ACC123) seen 2020-01-10. No effusion.".into(),
            source_uri: "file:///x/Lestrade.csv#line=2".into(),
            ..Default::default()
        };
        let out = de.report(r, &scrub);
        assert_eq!(out.patient_id, Some(de.patient_pseudonym("ID1")));
        assert_eq!(out.accession_number, Some(de.accession("ACC123")));
        assert_eq!(out.study_instance_uid, Some(de.uid("1.2.3")));
        assert_eq!(
            out.report_date,
            chrono::NaiveDate::from_ymd_opt(2020, 1, 10)
                .unwrap()
                .checked_add_signed(chrono::Duration::days(de.date_offset_days("ID1")))
        );
        assert_eq!(
            out.text,
            format!(
                "Mr. [NAME] ({}, {}) seen [DATE]. No effusion.",
                de.patient_pseudonym("ID1"),
                de.accession("ACC123")
            )
        );
        assert!(out.source_uri.starts_with("deidentified:") && out.source_uri.ends_with("#line=2"));
        assert_eq!(out.report_id, de.report_id("r1"));
    }
}
