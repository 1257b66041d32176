//! Calcifications outside the lungs, scored Agatston-style (Agatston et al. 1990): per
//! slice, each lesion section of at least 1 mm² at ≥ 130 HU adds its area times a weight
//! for its peak (130–199: 1, 200–299: 2, 300–399: 3, ≥ 400: 4).
//!
//! Agatston's score is defined on ECG-gated 3 mm slices; here the sum is scaled by slice
//! spacing / 3 mm so thin and thick series are comparable, and it stays an indication
//! from a chest CT, not a calcium-scoring exam.

use std::collections::BTreeMap;

use super::body::Body;
use super::lungs::Lungs;
use super::{Finding, Grid};
use crate::error::Result;
use crate::runtime::{labels, Backend};

const CALCIUM_HU: f32 = 130.0;
const MIN_AREA_MM2: f64 = 1.0;
/// Components larger than this are bone (the spine, ribs, sternum), not calcifications.
const MAX_LESION_MM3: f64 = 3000.0;

fn weight(peak: f32) -> f64 {
    match peak {
        p if p >= 400.0 => 4.0,
        p if p >= 300.0 => 3.0,
        p if p >= 200.0 => 2.0,
        _ => 1.0,
    }
}

pub(crate) fn detect(
    backend: &Backend,
    hu: &[f32],
    grid: &Grid,
    body: &Body,
    lungs: &Lungs,
) -> Result<Vec<Finding>> {
    let mut mask = backend.threshold(hu, CALCIUM_HU, f32::MAX)?;
    for ((m, b), l) in mask.iter_mut().zip(&body.mask).zip(&lungs.side) {
        *m &= *b & u8::from(*l == 0);
    }
    let (labels, count) = backend.label(&mask, grid.dims)?;
    drop(mask);
    let sizes = labels::label_sizes(&labels, count);
    let max_voxels = (MAX_LESION_MM3 / grid.voxel_mm3()) as u64;
    let mut voxels: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, l) in labels.iter().enumerate() {
        if *l != 0 && sizes[*l as usize] <= max_voxels {
            voxels.entry(*l).or_default().push(i);
        }
    }
    let pixel_mm2 = grid.spacing[1] * grid.spacing[2];
    let mut out = Vec::new();
    for region in voxels.values() {
        // Per slice: (pixels, peak HU).
        let mut slices: BTreeMap<usize, (usize, f32)> = BTreeMap::new();
        let (mut centre, mut sum, mut peak) = ([0f64; 3], 0f64, f32::MIN);
        let n = region.len() as f64;
        for i in region {
            let p = grid.coords(*i);
            let e = slices.entry(p[0]).or_insert((0, f32::MIN));
            e.0 += 1;
            e.1 = e.1.max(hu[*i]);
            for a in 0..3 {
                centre[a] += p[a] as f64 / n;
            }
            sum += f64::from(hu[*i]);
            peak = peak.max(hu[*i]);
        }
        let score: f64 = slices
            .values()
            .map(|(pixels, peak)| (*pixels as f64 * pixel_mm2, *peak))
            .filter(|(area, _)| *area >= MIN_AREA_MM2)
            .map(|(area, peak)| area * weight(peak))
            .sum::<f64>()
            * grid.spacing[0]
            / 3.0;
        if score == 0.0 {
            continue;
        }
        let volume = n * grid.voxel_mm3();
        out.push(Finding {
            kind: "calcification",
            center_lps_mm: Some(grid.lps(centre[0], centre[1], centre[2])),
            diameter_mm: Some((6.0 * volume / std::f64::consts::PI).cbrt()),
            volume_mm3: Some(volume),
            mean_hu: Some(sum / n),
            peak_hu: Some(f64::from(peak)),
            agatston_score: Some(score),
            ..Default::default()
        });
    }
    Ok(out)
}
