//! Synthetic, standard-conformant CT series with known geometry: the demo lake's source and
//! the tests' ground truth.
//!
//! Every UID, name, date and voxel is a pure function of the specs below, so two runs give
//! byte-identical files. Each series is a chest (or abdomen) phantom: an elliptical body of
//! water, two lungs of air-filled parenchyma, and optionally a spherical nodule whose centre
//! and radius are known. Series can have gaps (a missing slice) or irregular spacing, so the
//! `series` flags can be tested against what was placed.

use std::path::{Path, PathBuf};

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;

use crate::error::{Error, Result};

/// One synthetic patient.
#[derive(Debug, Clone)]
pub struct PatientSpec {
    pub id: &'static str,
    pub name: &'static str,
    pub sex: &'static str,
    pub birth_date: &'static str,
    pub age: &'static str,
}

/// A nodule placed in a series: centre in LPS mm, radius in mm, density in HU.
#[derive(Debug, Clone, Copy)]
pub struct NoduleSpec {
    pub center_lps_mm: [f64; 3],
    pub radius_mm: f64,
    pub hu: i16,
}

/// One synthetic CT series.
#[derive(Debug, Clone)]
pub struct SeriesSpec {
    pub patient: usize,
    /// Studies of the same patient are told apart by this number.
    pub study: u32,
    pub study_date: &'static str,
    pub series_number: i32,
    pub description: &'static str,
    pub body_part: &'static str,
    pub slices: usize,
    pub spacing_mm: f64,
    pub thickness_mm: f64,
    /// Slice indices that are not written (a gap in the stack).
    pub missing: &'static [usize],
    /// Added to the position of every odd slice (mm): irregular spacing.
    pub jitter_mm: f64,
    pub nodule: Option<NoduleSpec>,
}

/// The matrix of every synthetic image (small, so the demo and tests stay fast).
pub const MATRIX: u16 = 64;
/// In-plane pixel spacing of every synthetic image, mm.
pub const PIXEL_SPACING_MM: f64 = 5.0;
const ORIGIN_X: f64 = -157.5;
const ORIGIN_Y: f64 = -157.5;

pub const DEMO_PATIENTS: &[PatientSpec] = &[
    PatientSpec {
        id: "DEMO-001",
        name: "Garcia^Maria",
        sex: "F",
        birth_date: "19620314",
        age: "062Y",
    },
    PatientSpec {
        id: "DEMO-002",
        name: "Smith^Anna",
        sex: "F",
        birth_date: "19790802",
        age: "045Y",
    },
    PatientSpec {
        id: "DEMO-003",
        name: "Okafor^James",
        sex: "M",
        birth_date: "19540120",
        age: "070Y",
    },
    PatientSpec {
        id: "DEMO-004",
        name: "Novak^Eva",
        sex: "F",
        birth_date: "19660611",
        age: "058Y",
    },
    PatientSpec {
        id: "DEMO-005",
        name: "Chen^Wei",
        sex: "M",
        birth_date: "19730905",
        age: "051Y",
    },
    PatientSpec {
        id: "DEMO-006",
        name: "Yamada^Hanako=山田^花子",
        sex: "F",
        birth_date: "19470228",
        age: "077Y",
    },
];

pub const DEMO_SERIES: &[SeriesSpec] = &[
    SeriesSpec {
        patient: 0,
        study: 1,
        study_date: "20240110",
        series_number: 2,
        description: "CHEST 1.25mm LUNG",
        body_part: "CHEST",
        slices: 40,
        spacing_mm: 1.25,
        thickness_mm: 1.25,
        missing: &[],
        jitter_mm: 0.0,
        nodule: Some(NoduleSpec {
            center_lps_mm: [-60.0, -20.0, 25.0],
            radius_mm: 6.0,
            hu: 40,
        }),
    },
    SeriesSpec {
        patient: 0,
        study: 1,
        study_date: "20240110",
        series_number: 3,
        description: "CHEST 5mm",
        body_part: "CHEST",
        slices: 10,
        spacing_mm: 5.0,
        thickness_mm: 5.0,
        missing: &[],
        jitter_mm: 0.0,
        nodule: None,
    },
    SeriesSpec {
        patient: 1,
        study: 1,
        study_date: "20240301",
        series_number: 2,
        description: "CHEST 1mm",
        body_part: "CHEST",
        slices: 30,
        spacing_mm: 1.0,
        thickness_mm: 1.0,
        missing: &[],
        jitter_mm: 0.0,
        nodule: None,
    },
    SeriesSpec {
        patient: 2,
        study: 1,
        study_date: "20240415",
        series_number: 2,
        description: "CHEST 0.625mm",
        body_part: "CHEST",
        slices: 48,
        spacing_mm: 0.625,
        thickness_mm: 0.625,
        missing: &[],
        jitter_mm: 0.0,
        nodule: Some(NoduleSpec {
            center_lps_mm: [55.0, 10.0, 15.0],
            radius_mm: 5.0,
            hu: 30,
        }),
    },
    SeriesSpec {
        patient: 3,
        study: 1,
        study_date: "20240520",
        series_number: 2,
        description: "CHEST 2.5mm",
        body_part: "CHEST",
        slices: 16,
        spacing_mm: 2.5,
        thickness_mm: 2.5,
        missing: &[7],
        jitter_mm: 0.0,
        nodule: None,
    },
    SeriesSpec {
        patient: 4,
        study: 1,
        study_date: "20240611",
        series_number: 4,
        description: "ABDOMEN 1.25mm",
        body_part: "ABDOMEN",
        slices: 20,
        spacing_mm: 1.25,
        thickness_mm: 1.25,
        missing: &[],
        jitter_mm: 0.25,
        nodule: None,
    },
    SeriesSpec {
        patient: 5,
        study: 1,
        study_date: "20241002",
        series_number: 2,
        description: "CHEST 1.25mm",
        body_part: "CHEST",
        slices: 24,
        spacing_mm: 1.25,
        thickness_mm: 1.0,
        missing: &[],
        jitter_mm: 0.0,
        nodule: None,
    },
    SeriesSpec {
        patient: 5,
        study: 2,
        study_date: "20250930",
        series_number: 2,
        description: "CHEST 1.25mm FOLLOW-UP",
        body_part: "CHEST",
        slices: 24,
        spacing_mm: 1.25,
        thickness_mm: 1.25,
        missing: &[],
        jitter_mm: 0.0,
        nodule: None,
    },
];

/// A deterministic UID under the 2.25 (UUID-derived) root of PS3.5 B.2.
pub fn uid(seed: &str) -> String {
    let h = blake3::hash(seed.as_bytes());
    let n = u128::from_le_bytes(h.as_bytes()[..16].try_into().expect("16 bytes"));
    format!("2.25.{n}")
}

pub fn study_uid(patient: &PatientSpec, study: u32) -> String {
    uid(&format!("study/{}/{study}", patient.id))
}

pub fn series_uid(patient: &PatientSpec, s: &SeriesSpec) -> String {
    ct_series_uid(patient, s.study, s.series_number)
}

/// The SeriesInstanceUID of a patient's study and series number.
pub fn ct_series_uid(patient: &PatientSpec, study: u32, series_number: i32) -> String {
    uid(&format!("series/{}/{study}/{series_number}", patient.id))
}

/// The z position (mm) of slice `i` of a series, as written.
pub fn slice_z(s: &SeriesSpec, i: usize) -> f64 {
    let jitter = if i % 2 == 1 { s.jitter_mm } else { 0.0 };
    i as f64 * s.spacing_mm + jitter
}

/// The indices of the slices a series actually writes.
pub fn written_slices(s: &SeriesSpec) -> impl Iterator<Item = usize> + '_ {
    (0..s.slices).filter(|i| !s.missing.contains(i))
}

fn phantom_hu(x: f64, y: f64, z: f64, nodule: Option<&NoduleSpec>) -> i16 {
    if let Some(n) = nodule {
        let d = [
            x - n.center_lps_mm[0],
            y - n.center_lps_mm[1],
            z - n.center_lps_mm[2],
        ];
        if (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt() <= n.radius_mm {
            return n.hu;
        }
    }
    let inside = |cx: f64, cy: f64, rx: f64, ry: f64| {
        let (u, v) = ((x - cx) / rx, (y - cy) / ry);
        u * u + v * v <= 1.0
    };
    if !inside(0.0, 0.0, 150.0, 110.0) {
        -1000
    } else if inside(-65.0, -10.0, 50.0, 75.0) || inside(65.0, -10.0, 50.0, 75.0) {
        -850
    } else {
        0
    }
}

fn strs(values: &[String]) -> PrimitiveValue {
    PrimitiveValue::Strs(values.into())
}

/// The PatientWeight written for a patient: 50 + 7 × the number in its ID (DEMO-003 → 71).
pub fn patient_weight_kg(p: &PatientSpec) -> u32 {
    50 + 7 * p.id[5..].parse::<u32>().unwrap_or(0)
}

/// Write one slice of a series; returns the file's path.
pub fn write_slice(dir: &Path, p: &PatientSpec, s: &SeriesSpec, i: usize) -> Result<PathBuf> {
    let z = slice_z(s, i);
    let n = usize::from(MATRIX);
    let mut pixels = Vec::with_capacity(n * n);
    for r in 0..n {
        for c in 0..n {
            let x = ORIGIN_X + c as f64 * PIXEL_SPACING_MM;
            let y = ORIGIN_Y + r as f64 * PIXEL_SPACING_MM;
            pixels.push(phantom_hu(x, y, z, s.nodule.as_ref()));
        }
    }
    write_ct_slice(
        dir,
        p,
        &CtSlice {
            study: s.study,
            study_date: s.study_date,
            series_number: s.series_number,
            description: s.description,
            body_part: s.body_part,
            thickness_mm: s.thickness_mm,
            instance: i,
            position_mm: [ORIGIN_X, ORIGIN_Y, z],
            matrix: MATRIX,
            pixel_spacing_mm: PIXEL_SPACING_MM,
            hu: &pixels,
        },
    )
}

/// One axial CT image to write: where it belongs and its HU (row-major, `matrix`²).
pub struct CtSlice<'a> {
    pub study: u32,
    pub study_date: &'a str,
    pub series_number: i32,
    pub description: &'a str,
    pub body_part: &'a str,
    pub thickness_mm: f64,
    /// 0-based; InstanceNumber is this + 1.
    pub instance: usize,
    /// ImagePositionPatient (the first voxel's centre, LPS mm).
    pub position_mm: [f64; 3],
    pub matrix: u16,
    pub pixel_spacing_mm: f64,
    pub hu: &'a [i16],
}

/// Write one CT image (identity orientation, stored as HU + 1024 with RescaleIntercept
/// −1024) under `dir/<PatientID>/study<n>/series<n>/`; returns the file's path. UIDs are
/// derived from the patient, study, series and instance, so rewriting gives the same file.
pub fn write_ct_slice(dir: &Path, p: &PatientSpec, s: &CtSlice) -> Result<PathBuf> {
    let series_uid = ct_series_uid(p, s.study, s.series_number);
    let sop_uid = uid(&format!("{series_uid}/{}", s.instance));
    let z = s.position_mm[2];
    let mut o = InMemDicomObject::new_empty();
    let utf8 = !p.name.is_ascii();
    if utf8 {
        o.put_str(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    }
    o.put(DataElement::new(
        tags::IMAGE_TYPE,
        VR::CS,
        strs(&["ORIGINAL", "PRIMARY", "AXIAL"].map(String::from)),
    ));
    o.put_str(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE);
    o.put_str(tags::SOP_INSTANCE_UID, VR::UI, sop_uid);
    o.put_str(tags::STUDY_DATE, VR::DA, s.study_date);
    o.put_str(tags::SERIES_DATE, VR::DA, s.study_date);
    o.put_str(tags::STUDY_TIME, VR::TM, "093000");
    o.put_str(
        tags::ACCESSION_NUMBER,
        VR::SH,
        format!("ACC{}{}", &p.id[5..], s.study),
    );
    o.put_str(tags::MODALITY, VR::CS, "CT");
    o.put_str(tags::MANUFACTURER, VR::LO, "medlake synthetic");
    o.put_str(
        tags::STUDY_DESCRIPTION,
        VR::LO,
        format!("CT {}", s.body_part),
    );
    o.put_str(tags::SERIES_DESCRIPTION, VR::LO, s.description);
    o.put_str(tags::PATIENT_NAME, VR::PN, p.name);
    o.put_str(tags::PATIENT_ID, VR::LO, p.id);
    o.put_str(tags::PATIENT_BIRTH_DATE, VR::DA, p.birth_date);
    o.put_str(tags::PATIENT_SEX, VR::CS, p.sex);
    o.put_str(tags::PATIENT_AGE, VR::AS, p.age);
    o.put_str(
        tags::PATIENT_WEIGHT,
        VR::DS,
        format!("{}", patient_weight_kg(p)),
    );
    o.put_str(tags::BODY_PART_EXAMINED, VR::CS, s.body_part);
    o.put_str(tags::SLICE_THICKNESS, VR::DS, format!("{}", s.thickness_mm));
    o.put_str(tags::KVP, VR::DS, "120");
    o.put_str(tags::PATIENT_POSITION, VR::CS, "FFS");
    o.put_str(tags::STUDY_INSTANCE_UID, VR::UI, study_uid(p, s.study));
    o.put_str(tags::SERIES_INSTANCE_UID, VR::UI, series_uid.clone());
    o.put_str(tags::STUDY_ID, VR::SH, format!("{}", s.study));
    o.put_str(tags::SERIES_NUMBER, VR::IS, format!("{}", s.series_number));
    o.put_str(tags::INSTANCE_NUMBER, VR::IS, format!("{}", s.instance + 1));
    o.put(DataElement::new(
        tags::IMAGE_POSITION_PATIENT,
        VR::DS,
        strs(&s.position_mm.map(|v| format!("{v}"))),
    ));
    o.put(DataElement::new(
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        strs(&["1", "0", "0", "0", "1", "0"].map(String::from)),
    ));
    o.put_str(
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        uid(&format!("for/{series_uid}")),
    );
    o.put_str(tags::SLICE_LOCATION, VR::DS, format!("{z}"));
    o.put(DataElement::new(
        tags::SAMPLES_PER_PIXEL,
        VR::US,
        PrimitiveValue::from(1u16),
    ));
    o.put_str(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    o.put(DataElement::new(
        tags::ROWS,
        VR::US,
        PrimitiveValue::from(s.matrix),
    ));
    o.put(DataElement::new(
        tags::COLUMNS,
        VR::US,
        PrimitiveValue::from(s.matrix),
    ));
    o.put(DataElement::new(
        tags::PIXEL_SPACING,
        VR::DS,
        strs(&[s.pixel_spacing_mm, s.pixel_spacing_mm].map(|v| format!("{v}"))),
    ));
    o.put(DataElement::new(
        tags::BITS_ALLOCATED,
        VR::US,
        PrimitiveValue::from(16u16),
    ));
    o.put(DataElement::new(
        tags::BITS_STORED,
        VR::US,
        PrimitiveValue::from(16u16),
    ));
    o.put(DataElement::new(
        tags::HIGH_BIT,
        VR::US,
        PrimitiveValue::from(15u16),
    ));
    o.put(DataElement::new(
        tags::PIXEL_REPRESENTATION,
        VR::US,
        PrimitiveValue::from(1u16),
    ));
    o.put_str(tags::WINDOW_CENTER, VR::DS, "-600");
    o.put_str(tags::WINDOW_WIDTH, VR::DS, "1500");
    o.put_str(tags::RESCALE_INTERCEPT, VR::DS, "-1024");
    o.put_str(tags::RESCALE_SLOPE, VR::DS, "1");
    o.put_str(tags::RESCALE_TYPE, VR::LO, "HU");
    let pixels: Vec<u16> = s.hu.iter().map(|v| (v + 1024) as u16).collect();
    o.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(pixels.into()),
    ));
    let file = o
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .map_err(|e| Error::Invalid(format!("synthetic slice meta: {e}")))?;
    let folder = dir
        .join(p.id)
        .join(format!("study{}", s.study))
        .join(format!("series{}", s.series_number));
    std::fs::create_dir_all(&folder).map_err(|e| Error::io(folder.display(), e))?;
    let path = folder.join(format!("{:04}.dcm", s.instance + 1));
    file.write_to_file(&path)
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    Ok(path)
}

/// Write every series of the given specs under `dir`; returns the files written.
pub fn write_corpus(
    dir: &Path,
    patients: &[PatientSpec],
    series: &[SeriesSpec],
) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for s in series {
        let p = &patients[s.patient];
        for i in written_slices(s) {
            out.push(write_slice(dir, p, s, i)?);
        }
    }
    Ok(out)
}

/// The demo corpus: [`DEMO_PATIENTS`] and [`DEMO_SERIES`].
pub fn write_demo_corpus(dir: &Path) -> Result<Vec<PathBuf>> {
    write_corpus(dir, DEMO_PATIENTS, DEMO_SERIES)
}

/// One synthetic radiology report of the demo (see [`write_demo_reports`]).
pub struct DemoReport {
    pub report_id: &'static str,
    pub patient: usize,
    /// How the report names its study: 'U' StudyInstanceUID, 'A' AccessionNumber,
    /// 'D' only PatientID and a date, 'N' nothing that matches.
    pub link: char,
    pub study: u32,
    pub report_date: &'static str,
    pub findings: &'static str,
    pub impression: &'static str,
}

/// Reports for the demo studies. They agree with the placed nodules: DEMO-001 and
/// DEMO-003 have one in their first study, and only their reports affirm a nodule.
pub const DEMO_REPORTS: &[DemoReport] = &[
    DemoReport {
        report_id: "RPT-0001",
        patient: 0,
        link: 'U',
        study: 1,
        report_date: "2024-01-10",
        findings: "A 12 mm solid nodule in the right lung. No pleural effusion.",
        impression: "Pulmonary nodule; CT follow-up in 3 months.",
    },
    DemoReport {
        report_id: "RPT-0002",
        patient: 1,
        link: 'A',
        study: 1,
        report_date: "2024-03-01",
        findings: "No pulmonary nodule. No pleural effusion or pneumothorax.",
        impression: "Normal chest CT.",
    },
    DemoReport {
        report_id: "RPT-0003",
        patient: 2,
        link: 'D',
        study: 1,
        report_date: "2024-04-16",
        findings: "Solid nodule in the left lower lobe. Small left pleural effusion.",
        impression: "Nodule, suspicious for malignancy.",
    },
    DemoReport {
        report_id: "RPT-0004",
        patient: 3,
        link: 'A',
        study: 1,
        report_date: "2024-05-20",
        findings: "Possible small nodule in the left upper lobe, cannot exclude atelectasis.",
        impression: "Indeterminate opacity; follow-up suggested.",
    },
    DemoReport {
        report_id: "RPT-0005",
        patient: 4,
        link: 'U',
        study: 1,
        report_date: "2024-06-11",
        findings: "The heart is enlarged. No free fluid.",
        impression: "No acute abnormality.",
    },
    DemoReport {
        report_id: "RPT-0006",
        patient: 5,
        link: 'D',
        study: 2,
        report_date: "2025-10-01",
        findings: "Lungs are clear. The previously seen nodule has resolved.",
        impression: "No evidence of nodule.",
    },
    DemoReport {
        report_id: "RPT-0007",
        patient: 5,
        link: 'N',
        study: 9,
        report_date: "2023-01-01",
        findings: "Outside report: nodule in the right lung.",
        impression: "Nodule.",
    },
];

/// Write [`DEMO_REPORTS`] as a CSV with the columns `ingest reports` reads by name.
pub fn write_demo_reports(path: &Path) -> Result<PathBuf> {
    write_reports(path, DEMO_PATIENTS, DEMO_REPORTS)
}

/// Write reports about `patients` (indexed by [`DemoReport::patient`]) as a CSV with the
/// columns `ingest reports` reads by name.
pub fn write_reports(
    path: &Path,
    patients: &[PatientSpec],
    reports: &[DemoReport],
) -> Result<PathBuf> {
    let mut w = csv::Writer::from_path(path)
        .map_err(|e| crate::Error::Invalid(format!("{}: {e}", path.display())))?;
    let io = |e: csv::Error| crate::Error::Invalid(format!("{}: {e}", path.display()));
    w.write_record([
        "report_id",
        "PatientID",
        "AccessionNumber",
        "StudyInstanceUID",
        "report_date",
        "modality",
        "findings",
        "impression",
    ])
    .map_err(io)?;
    for r in reports {
        let p = &patients[r.patient];
        let (pid, acc, suid) = match r.link {
            'U' => (p.id.to_string(), String::new(), study_uid(p, r.study)),
            'A' => (
                p.id.to_string(),
                format!("ACC{}{}", &p.id[5..], r.study),
                String::new(),
            ),
            'D' => (p.id.to_string(), String::new(), String::new()),
            _ => ("DEMO-999".to_string(), String::new(), String::new()),
        };
        w.write_record([
            r.report_id,
            &pid,
            &acc,
            &suid,
            r.report_date,
            "CT",
            r.findings,
            r.impression,
        ])
        .map_err(io)?;
    }
    w.flush().map_err(|e| crate::Error::io(path.display(), e))?;
    Ok(path.to_path_buf())
}

/// The 1000 Genomes excerpt of the demo (src/synth_data/README.md says where it is from).
pub const DEMO_1KG_VCF: &[u8] = include_bytes!("synth_data/1kg_chr22_50300000_50310000.vcf.gz");

/// Demo patient → 1000 Genomes sample of [`DEMO_1KG_VCF`].
pub const DEMO_GERMLINE_SAMPLES: [(&str, &str); 5] = [
    ("DEMO-001", "HG00096"),
    ("DEMO-002", "HG00097"),
    ("DEMO-003", "HG00099"),
    ("DEMO-004", "HG00100"),
    ("DEMO-005", "HG00101"),
];

/// One call of the synthetic tumor panel: (chrom, pos, ref, alt, snpEff ANN, the panel
/// samples SYN-001..SYN-006 genotypes). The gene, effect and impact are the placed ground
/// truth that the genomics `.slt` checks.
/// (chrom, pos, REF, ALT, ANN, genotypes of SYN-001..SYN-006)
pub type PanelCall = (
    &'static str,
    u32,
    &'static str,
    &'static str,
    &'static str,
    [&'static str; 6],
);

pub const DEMO_PANEL_CALLS: [PanelCall; 4] = [
    (
        "chr7",
        55249071,
        "C",
        "T",
        "T|stop_gained|HIGH|EGFR|ENSG00000146648|transcript|ENST00000275493|protein_coding|20/28|c.2369C>T|p.Thr790*|||||",
        ["0/1", "0/0", "0/0", "0/0", "0/0", "0/1"],
    ),
    (
        "chr7",
        55259515,
        "T",
        "G",
        "G|missense_variant|MODERATE|EGFR|ENSG00000146648|transcript|ENST00000275493|protein_coding|21/28|c.2573T>G|p.Leu858Arg|||||",
        ["0/0", "0/0", "0/1", "0/0", "0/0", "0/0"],
    ),
    (
        "chr12",
        25398284,
        "C",
        "A",
        "A|missense_variant|MODERATE|KRAS|ENSG00000133703|transcript|ENST00000256078|protein_coding|2/6|c.35G>T|p.Gly12Val|||||",
        ["0/0", "0/1", "0/0", "0/0", "0/0", "0/0"],
    ),
    (
        "chr17",
        7577120,
        "CT",
        "C",
        "C|frameshift_variant|HIGH|TP53|ENSG00000141510|transcript|ENST00000269305|protein_coding|8/11|c.817delA|p.Arg273fs|||||",
        ["0/0", "0/0", "0/1", "./.", "0/0", "0/0"],
    ),
];

/// Write the demo's genomics sources into `dir`: the 1000 Genomes excerpt, the synthetic
/// annotated tumor panel, and the sample → patient CSV (germline samples as
/// [`DEMO_GERMLINE_SAMPLES`], panel sample SYN-00n to DEMO-00n).
pub fn write_demo_genomics(dir: &Path) -> Result<(Vec<PathBuf>, PathBuf)> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
    let germline = dir.join("1kg_chr22_50300000_50310000.vcf.gz");
    std::fs::write(&germline, DEMO_1KG_VCF).map_err(|e| Error::io(germline.display(), e))?;
    let mut panel = String::from(
        "##fileformat=VCFv4.2\n\
         ##source=medlake synthetic demo panel\n\
         ##contig=<ID=chr7,length=159138663>\n\
         ##contig=<ID=chr12,length=133851895>\n\
         ##contig=<ID=chr17,length=81195210>\n\
         ##INFO=<ID=ANN,Number=.,Type=String,Description=\"Functional annotations: 'Allele | Annotation | Annotation_Impact | Gene_Name | Gene_ID | Feature_Type | Feature_ID | Transcript_BioType | Rank | HGVS.c | HGVS.p | cDNA.pos / cDNA.length | CDS.pos / CDS.length | AA.pos / AA.length | Distance | ERRORS / WARNINGS / INFO'\">\n\
         ##FORMAT=<ID=GT,Number=1,Type=String,Description=\"Genotype\">\n\
         #CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT",
    );
    for i in 1..=6 {
        panel.push_str(&format!("\tSYN-{i:03}"));
    }
    panel.push('\n');
    for (chrom, pos, r, a, ann, gts) in DEMO_PANEL_CALLS {
        panel.push_str(&format!(
            "{chrom}\t{pos}\t.\t{r}\t{a}\t60\tPASS\tANN={ann}\tGT\t{}\n",
            gts.join("\t")
        ));
    }
    let panel_path = dir.join("tumor_panel.vcf");
    std::fs::write(&panel_path, panel).map_err(|e| Error::io(panel_path.display(), e))?;
    let mut links = String::from("sample_id,PatientID\n");
    for (patient, sample) in DEMO_GERMLINE_SAMPLES {
        links.push_str(&format!("{sample},{patient}\n"));
    }
    for i in 1..=6 {
        links.push_str(&format!("SYN-{i:03},DEMO-{i:03}\n"));
    }
    let links_path = dir.join("sample_links.csv");
    std::fs::write(&links_path, links).map_err(|e| Error::io(links_path.display(), e))?;
    Ok((vec![germline, panel_path], links_path))
}
