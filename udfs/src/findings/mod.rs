//! CT findings from a HU volume, without trained weights: classical, documented methods,
//! written against the runtime's ops.
//!
//! | finding | method | source |
//! |---|---|---|
//! | body | HU > −500, largest component, holes filled slice by slice | common practice |
//! | lungs | air (HU < −400) inside the body; trachea found in the most superior slice and the airways grown from it (HU < −950, stopped if it leaks); the rest split into right and left lung; holes (vessels, nodules) filled slice by slice | Hu, Hoffman & Reinhardt, IEEE TMI 20(6), 2001 |
//! | emphysema | %LAA-950: lung voxels (airways excluded) below −950 HU | Gevenois et al., AJRCCM 154, 1996 |
//! | nodules | scale-normalized Laplacian of Gaussian over 7 scales (σ 1–8 mm), maxima verified by segmenting the blob at the half-contrast threshold: it must be compact and not run out of its box (a vessel does) | Lindeberg, IJCV 30(2), 1998 |
//! | calcifications | HU ≥ 130 outside the lungs, bone (large components) excluded, lesions of ≥ 1 mm² per slice scored with Agatston's density weights | Agatston et al., JACC 15(4), 1990 |
//!
//! Limits: nodules attached to a vessel or the pleura are missed (the verification reads
//! them as vessels); part-solid nodules are called solid or ground-glass by their mean;
//! the calcium score of a non-gated chest CT is not a calcium-scoring exam (slices are not
//! 3 mm, the heart moves), so it is scaled by slice spacing / 3 mm and is an indication
//! only.
//!
//! ## Where it runs
//!
//! Every step that is a runtime op goes through the [`Backend`] it is given, so on the GPU
//! backend the volume-wide work runs there; what stays on the host is bookkeeping over
//! what the ops return, or work local to a few voxels:
//!
//! | finding | on the backend | on the host |
//! |---|---|---|
//! | body | threshold; labelling (largest component); hole filling per slice; voxel count (reduction) | component sizes; the midline from one slice |
//! | lungs | thresholds; labelling of the lung air, of each superior slice (trachea) and of the airway lumen (growing from the trachea is the trachea's component); dilation (airway rim); hole filling per slice; masked histogram (parenchyma HU); reductions (volumes, mean HU, %LAA-950) | mask arithmetic; right/left split by component; bounding box; trachea selection |
//! | nodules | Gaussian second derivatives (the LoG), per scale | crop; block averages; local maxima; verification (growing in a box around each candidate) |
//! | calcifications | threshold; labelling | component sizes; per-slice Agatston sums |
//!
//! The backends agree exactly on everything but the convolutions, whose f32 sums differ
//! in the last bits, and the GPU's reduction sums (f32 within blocks of 1024): body, lung,
//! emphysema and calcification findings are the same on both, nodules the same up to a
//! boundary voxel where a LoG maximum ties (`tests/findings_parity.rs`).

mod body;
mod calcium;
mod lungs;
mod nodules;

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::runtime::Backend;
use crate::Volume;

/// Stored with every finding; bumped whenever a method or a parameter changes, so cached
/// and materialized results are recomputed.
pub const METHOD_VERSION: &str = "ct-findings-1";

/// One finding. Columns that do not apply to a kind are `None`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Finding {
    /// "body", "lung", "emphysema", "nodule" or "calcification".
    pub kind: &'static str,
    /// The patient's "right" or "left", or "both" for whole-patient measures.
    pub side: Option<&'static str>,
    /// Centre (lesions) in LPS mm.
    pub center_lps_mm: Option<[f64; 3]>,
    /// Volume-equivalent sphere diameter (lesions), mm.
    pub diameter_mm: Option<f64>,
    /// Volume of a lesion, mm³.
    pub volume_mm3: Option<f64>,
    /// Volume of the body or a lung, ml.
    pub volume_ml: Option<f64>,
    pub mean_hu: Option<f64>,
    pub peak_hu: Option<f64>,
    /// "solid" or "ground-glass" (nodules).
    pub nodule_type: Option<&'static str>,
    /// 0–1, a heuristic ranking (contrast and compactness), not a probability.
    pub confidence: Option<f64>,
    /// Percentage of lung voxels below −950 HU (emphysema).
    pub laa950_pct: Option<f64>,
    /// Agatston-style score (calcifications; see the module's limits).
    pub agatston_score: Option<f64>,
}

/// The findings of one series, with how they were computed.
#[derive(Debug, Clone)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// [`Backend::name`] of where the filters ran.
    pub backend: String,
    /// Wall time of each stage, in order.
    pub stages: Vec<(&'static str, Duration)>,
    /// What the methods could not do as designed (no trachea found, ...): the findings
    /// stand, with this caveat.
    pub notes: Vec<String>,
}

/// A volume's voxel geometry, as the methods need it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grid {
    pub dims: [usize; 3],
    /// (slice, row, column) mm.
    pub spacing: [f64; 3],
    pub affine: [[f64; 4]; 4],
}

impl Grid {
    pub fn voxel_mm3(&self) -> f64 {
        self.spacing.iter().product()
    }

    /// LPS mm of a (slice, row, column) position (fractional allowed).
    pub fn lps(&self, k: f64, j: f64, i: f64) -> [f64; 3] {
        let a = &self.affine;
        [0, 1, 2].map(|r| a[r][0] * i + a[r][1] * j + a[r][2] * k + a[r][3])
    }

    pub fn index(&self, z: usize, y: usize, x: usize) -> usize {
        (z * self.dims[1] + y) * self.dims[2] + x
    }

    pub fn coords(&self, idx: usize) -> [usize; 3] {
        self.coords_in(idx, self.dims)
    }

    /// (slice, row, column) of `idx` in a volume of `dims` (a crop or a coarse grid).
    pub fn coords_in(&self, idx: usize, dims: [usize; 3]) -> [usize; 3] {
        let [_, ny, nx] = dims;
        [idx / (ny * nx), (idx / nx) % ny, idx % nx]
    }
}

/// All findings of one CT volume (HU).
pub fn compute(volume: &Volume, backend: &Backend) -> Result<Report> {
    let (Some(affine), Some(spacing)) = (volume.affine, volume.spacing_mm()) else {
        return Err(Error::NotAVolume(
            "no patient geometry (ImagePositionPatient / ImageOrientationPatient): findings \
             need millimetres"
                .into(),
        ));
    };
    let [nz, ny, nx] = volume.dims;
    if nz < 8 || ny < 64 || nx < 64 {
        return Err(Error::NotAVolume(format!(
            "{nz} x {ny} x {nx} voxels is too small for a chest CT"
        )));
    }
    let grid = Grid {
        dims: volume.dims,
        spacing,
        affine,
    };
    let hu = &volume.values;
    let mut stages = Vec::new();
    let mut clock = Instant::now();
    let mut stage = |name: &'static str| {
        let now = Instant::now();
        stages.push((name, now - clock));
        clock = now;
    };
    let mut findings = Vec::new();

    let body = body::segment(backend, hu, &grid)?;
    findings.push(body.finding.clone());
    stage("body");

    let lungs = lungs::segment(backend, hu, &grid, &body)?;
    let mut notes = Vec::new();
    if !lungs.airway_found {
        notes.push(
            "no trachea in the superior slices, or its growing leaked: airways were not \
             removed and count as lung"
                .to_string(),
        );
    }
    findings.extend(lungs.findings(backend, hu, &grid)?);
    stage("lungs");

    findings.extend(nodules::detect(backend, hu, &grid, &lungs)?);
    stage("nodules");

    findings.extend(calcium::detect(backend, hu, &grid, &body, &lungs)?);
    stage("calcifications");

    Ok(Report {
        findings,
        backend: backend.name(),
        stages,
        notes,
    })
}
