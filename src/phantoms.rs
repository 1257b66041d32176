//! Phantom CT series: the chest phantoms of `medlake_udfs::phantom` (512 × 512, known
//! nodules, emphysema, vessels, calcifications) written as standard CT DICOM series, each
//! with its ground truth as JSON, and the reports that go with them. The demo computes
//! findings on these; the tests hold the findings table to their truth.

use std::path::{Path, PathBuf};

use medlake_udfs::phantom::{self, Phantom};

use crate::error::{Error, Result};
use crate::synth::{self, CtSlice, DemoReport, PatientSpec};

/// One phantom series: whose, which seed, in which study.
#[derive(Debug, Clone)]
pub struct PhantomSeries {
    /// Index into [`PHANTOM_PATIENTS`].
    pub patient: usize,
    pub seed: u64,
    pub study: u32,
    pub study_date: &'static str,
    pub series_number: i32,
}

pub const PHANTOM_PATIENTS: &[PatientSpec] = &[
    PatientSpec {
        id: "DEMO-007",
        name: "Berg^Lars",
        sex: "M",
        birth_date: "19610403",
        age: "063Y",
    },
    PatientSpec {
        id: "DEMO-008",
        name: "Rossi^Giulia",
        sex: "F",
        birth_date: "19580917",
        age: "066Y",
    },
];

/// The demo's phantoms. Seed 2 holds solid nodules of 12.4, 10.6, 22.8, 3.6 and 29.5 mm
/// and an 8.7 mm ground-glass one; seed 5 solid ones of 7.4, 6.5 and 29.3 mm and a 16 mm
/// ground-glass one (both 1.25 mm slices; the truth JSON has the details).
pub const DEMO_PHANTOMS: &[PhantomSeries] = &[
    PhantomSeries {
        patient: 0,
        seed: 2,
        study: 1,
        study_date: "20250114",
        series_number: 2,
    },
    PhantomSeries {
        patient: 1,
        seed: 5,
        study: 1,
        study_date: "20250302",
        series_number: 2,
    },
];

/// Reports for the phantom studies. DEMO-007's report misses what its CT shows (the
/// discordance the findings cohort looks for); DEMO-008's names its nodules.
pub const PHANTOM_REPORTS: &[DemoReport] = &[
    DemoReport {
        report_id: "RPT-0101",
        patient: 0,
        link: 'A',
        study: 1,
        report_date: "2025-01-14",
        findings: "Lungs are clear. No pulmonary nodule. No pleural effusion.",
        impression: "No acute cardiopulmonary abnormality.",
    },
    DemoReport {
        report_id: "RPT-0102",
        patient: 1,
        link: 'U',
        study: 1,
        report_date: "2025-03-02",
        findings: "A 29 mm solid nodule in the left lung and a ground-glass nodule in the \
                   right lung. Mild centrilobular emphysema.",
        impression: "Pulmonary nodules; tissue sampling recommended.",
    },
];

/// Write one phantom series under `dicom_dir` (one file per slice) and its truth as
/// `truth_dir/<SeriesInstanceUID>.json`. Returns the slice files and the truth file.
pub fn write_phantom_series(
    dicom_dir: &Path,
    truth_dir: &Path,
    s: &PhantomSeries,
) -> Result<(Vec<PathBuf>, PathBuf)> {
    write_phantom(
        dicom_dir,
        truth_dir,
        &PHANTOM_PATIENTS[s.patient],
        s,
        &phantom::generate(s.seed),
    )
}

/// Write a given phantom as the series `s` of patient `p` (`s.seed` and `s.patient` are
/// not read: the phantom is already built).
pub fn write_phantom(
    dicom_dir: &Path,
    truth_dir: &Path,
    p: &PatientSpec,
    s: &PhantomSeries,
    ph: &Phantom,
) -> Result<(Vec<PathBuf>, PathBuf)> {
    let [nz, ny, nx] = ph.dims;
    let description = format!(
        "CHEST {}mm PHANTOM {}",
        ph.spec.slice_spacing_mm, ph.spec.seed
    );
    let mut files = Vec::with_capacity(nz);
    for k in 0..nz {
        files.push(synth::write_ct_slice(
            dicom_dir,
            p,
            &CtSlice {
                study: s.study,
                study_date: s.study_date,
                series_number: s.series_number,
                description: &description,
                body_part: "CHEST",
                thickness_mm: ph.spec.slice_spacing_mm,
                instance: k,
                position_mm: ph.lps(k, 0, 0),
                matrix: ny as u16,
                pixel_spacing_mm: ph.spec.pixel_spacing_mm,
                hu: &ph.hu[k * ny * nx..(k + 1) * ny * nx],
            },
        )?);
    }
    std::fs::create_dir_all(truth_dir).map_err(|e| Error::io(truth_dir.display(), e))?;
    let uid = synth::ct_series_uid(p, s.study, s.series_number);
    let truth = truth_dir.join(format!("{uid}.json"));
    let json = serde_json::to_string_pretty(&ph.truth)
        .map_err(|e| Error::Invalid(format!("phantom truth: {e}")))?;
    std::fs::write(&truth, json).map_err(|e| Error::io(truth.display(), e))?;
    Ok((files, truth))
}

/// The SeriesInstanceUID a phantom series is written with.
pub fn phantom_series_uid(s: &PhantomSeries) -> String {
    synth::ct_series_uid(&PHANTOM_PATIENTS[s.patient], s.study, s.series_number)
}
