//! Lung segmentation (Hu, Hoffman & Reinhardt 2001, simplified): air inside the body, the
//! airways grown from the trachea and removed, the rest split into right and left lung.

use super::body::Body;
use super::{Finding, Grid};
use crate::error::Result;
use crate::runtime::{labels, Backend};

/// Air and lung below this HU; soft tissue above (the midpoint of lung, −850, and soft
/// tissue, ≈ 40, the usual −400 to −500 range).
const AIR_HU: f32 = -400.0;
/// Emphysema: %LAA-950.
pub(crate) const LAA_HU: f32 = -950.0;
/// Airway lumen thresholds, tried in turn while the growing leaks into the lung.
const AIRWAY_HU: [f32; 3] = [-950.0, -975.0, -990.0];
/// An airway tree larger than this has leaked into the parenchyma.
const AIRWAY_MAX_ML: f64 = 300.0;
/// A trachea's cross-section, mm² (adults: about 150–400), and its distance from the
/// midline, mm.
const TRACHEA_AREA_MM2: (f64, f64) = (30.0, 1200.0);
const TRACHEA_OFF_MIDLINE_MM: f64 = 30.0;
/// Air components smaller than this fraction of all lung air are not lung (oesophagus,
/// bowel, leftovers of the airway rim).
const MIN_LUNG_FRACTION: f64 = 0.01;

pub(crate) struct Lungs {
    /// 0 outside, 1 right lung, 2 left lung (vessels and nodules inside included).
    pub side: Vec<u8>,
    /// 1 on the removed airway lumen and its one-voxel rim.
    pub airway: Vec<u8>,
    pub airway_found: bool,
    /// Bounding box of both lungs, (lo, hi) per axis, hi exclusive; None without lungs.
    pub bbox: Option<([usize; 3], [usize; 3])>,
    /// The most common lung HU (the parenchyma's), the background nodules stand out from.
    pub parenchyma_hu: f32,
}

fn lps_x(grid: &Grid, z: usize, y: usize, x: usize) -> f64 {
    let a = &grid.affine;
    a[0][0] * x as f64 + a[0][1] * y as f64 + a[0][2] * z as f64 + a[0][3]
}

pub(crate) fn segment(backend: &Backend, hu: &[f32], grid: &Grid, body: &Body) -> Result<Lungs> {
    let [nz, ny, nx] = grid.dims;
    let plane = ny * nx;
    let mut air = backend.threshold(hu, f32::MIN, AIR_HU)?;
    for (a, b) in air.iter_mut().zip(&body.mask) {
        *a &= *b;
    }
    let superior_first = grid.lps(0.0, 0.0, 0.0)[2] > grid.lps((nz - 1) as f64, 0.0, 0.0)[2];
    let (airway, airway_found) =
        airways(backend, hu, grid, &air, body.midline_x_mm, superior_first)?;
    let mut lung_air = air;
    for (a, w) in lung_air.iter_mut().zip(&airway) {
        *a &= 1 - *w;
    }
    let (labels, count) = backend.label(&lung_air, grid.dims)?;
    drop(lung_air);
    let sizes = labels::label_sizes(&labels, count);
    let total: u64 = sizes[1..].iter().sum();
    // Per kept component, its voxels right (x < midline) and left of the midline.
    let mut sides = vec![[0u64; 2]; count as usize + 1];
    for (idx, l) in labels.iter().enumerate() {
        let l = *l as usize;
        if l != 0 && sizes[l] as f64 >= MIN_LUNG_FRACTION * total as f64 {
            let [z, y, x] = grid.coords(idx);
            let left = lps_x(grid, z, y, x) >= body.midline_x_mm;
            sides[l][usize::from(left)] += 1;
        }
    }
    // A component almost all on one side is that side's lung; one spanning both (lungs
    // joined at an anterior junction) is split at the midline.
    let whole: Vec<Option<u8>> = sides
        .iter()
        .map(|[r, l]| {
            let n = r + l;
            if n == 0 {
                Some(0)
            } else if (*r.min(l) as f64) < 0.05 * n as f64 {
                Some(if r > l { 1 } else { 2 })
            } else {
                None
            }
        })
        .collect();
    let mut side = vec![0u8; hu.len()];
    for (idx, l) in labels.iter().enumerate() {
        if *l == 0 {
            continue;
        }
        side[idx] = match whole[*l as usize] {
            Some(s) => s,
            None => {
                let [z, y, x] = grid.coords(idx);
                if lps_x(grid, z, y, x) >= body.midline_x_mm {
                    2
                } else {
                    1
                }
            }
        };
    }
    drop(labels);
    // Vessels, nodules and the intrapulmonary airway are holes in each lung's slices.
    for s in [1u8, 2] {
        let mask: Vec<u8> = side.iter().map(|v| u8::from(*v == s)).collect();
        let filled = backend.fill_holes_per_slice(&mask, grid.dims)?;
        for (v, f) in side.iter_mut().zip(filled) {
            if f != 0 && *v == 0 {
                *v = s;
            }
        }
    }
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    for (z, p) in side.chunks(plane).enumerate() {
        for (j, row) in p.chunks(nx).enumerate() {
            if let Some(first) = row.iter().position(|v| *v != 0) {
                let last = row.iter().rposition(|v| *v != 0).unwrap_or(first);
                for (d, (a, b)) in [(z, z), (j, j), (first, last)].into_iter().enumerate() {
                    lo[d] = lo[d].min(a);
                    hi[d] = hi[d].max(b + 1);
                }
            }
        }
    }
    let bbox = (lo[0] != usize::MAX).then_some((lo, hi));
    let parenchyma: Vec<u8> = side
        .iter()
        .zip(&airway)
        .map(|(s, a)| u8::from(*s != 0 && *a == 0))
        .collect();
    let bins = 100;
    let histogram = backend.histogram_masked(hu, &parenchyma, bins, -1000.0, -500.0)?;
    let mode = (0..bins).max_by_key(|&b| histogram[b]).unwrap_or(30);
    let parenchyma_hu = -1000.0 + (mode as f32 + 0.5) * 5.0;
    Ok(Lungs {
        side,
        airway,
        airway_found,
        bbox,
        parenchyma_hu,
    })
}

/// The airway lumen (with a one-voxel rim), grown from the trachea found in the superior
/// slices; all zero, `false` if no trachea was found or every threshold leaked.
///
/// Growing is labelling: the lumen at a threshold is the component that holds the
/// trachea in the trachea and the air below the threshold ([`Backend::label`]), exactly
/// what a flood fill from the trachea reaches; its rim is one dilation of it, kept to air
/// ([`Backend::dilate`]).
fn airways(
    backend: &Backend,
    hu: &[f32],
    grid: &Grid,
    air: &[u8],
    midline_x: f64,
    superior_first: bool,
) -> Result<(Vec<u8>, bool)> {
    let [nz, ny, nx] = grid.dims;
    let plane = ny * nx;
    let pixel_mm2 = grid.spacing[1] * grid.spacing[2];
    let mut seed: Option<Vec<usize>> = None;
    for step in 0..5.min(nz) {
        let z = if superior_first { step } else { nz - 1 - step };
        let slice = &air[z * plane..(z + 1) * plane];
        let (l, count) = backend.label(slice, [1, ny, nx])?;
        let mut stats =
            vec![(0usize, 0f64, usize::MAX, 0usize, usize::MAX, 0usize); count as usize + 1];
        for (i, v) in l.iter().enumerate() {
            if *v != 0 {
                let s = &mut stats[*v as usize];
                let (y, x) = (i / nx, i % nx);
                s.0 += 1;
                s.1 += lps_x(grid, z, y, x);
                s.2 = s.2.min(y);
                s.3 = s.3.max(y);
                s.4 = s.4.min(x);
                s.5 = s.5.max(x);
            }
        }
        let best = (1..stats.len())
            .filter(|&c| {
                let (n, sx, y0, y1, x0, x1) = stats[c];
                let area = n as f64 * pixel_mm2;
                let box_n = (y1 - y0 + 1) * (x1 - x0 + 1);
                (TRACHEA_AREA_MM2.0..=TRACHEA_AREA_MM2.1).contains(&area)
                    && (sx / n as f64 - midline_x).abs() <= TRACHEA_OFF_MIDLINE_MM
                    && n as f64 >= 0.5 * box_n as f64
            })
            .min_by(|&a, &b| {
                let off = |c: usize| (stats[c].1 / stats[c].0 as f64 - midline_x).abs();
                off(a).total_cmp(&off(b))
            });
        if let Some(c) = best {
            seed = Some(
                l.iter()
                    .enumerate()
                    .filter(|(_, v)| **v == c as u32)
                    .map(|(i, _)| z * plane + i)
                    .collect(),
            );
            break;
        }
    }
    let Some(seed) = seed else {
        return Ok((vec![0u8; hu.len()], false));
    };
    let max_voxels = (AIRWAY_MAX_ML * 1000.0 / grid.voxel_mm3()) as u64;
    for threshold in AIRWAY_HU {
        // Air below the threshold, and the trachea's voxels whatever their HU.
        let mut lumen = backend.threshold(hu, f32::NEG_INFINITY, threshold.next_down())?;
        for (l, a) in lumen.iter_mut().zip(air) {
            *l &= *a;
        }
        for &i in &seed {
            lumen[i] = 1;
        }
        let (labels, _) = backend.label(&lumen, grid.dims)?;
        let tree = labels[seed[0]];
        let mut grown = 0u64;
        for (l, v) in lumen.iter_mut().zip(&labels) {
            *l = u8::from(*v == tree);
            grown += u64::from(*l);
        }
        drop(labels);
        if grown <= max_voxels {
            // The rim: partial-volume voxels around the lumen, still below the air threshold.
            let mut airway = backend.dilate(&lumen, grid.dims, 1)?;
            for (w, a) in airway.iter_mut().zip(air) {
                *w &= *a;
            }
            return Ok((airway, true));
        }
    }
    Ok((vec![0u8; hu.len()], false))
}

impl Lungs {
    /// Volume and mean HU per lung and in total, and %LAA-950 per lung and in total: per
    /// lung, reductions over its voxels, its parenchyma (no airway) and the parenchyma
    /// below −950 HU ([`Backend::reduce`]); the totals are their sums.
    pub fn findings(&self, backend: &Backend, hu: &[f32], grid: &Grid) -> Result<Vec<Finding>> {
        let low = backend.threshold(hu, f32::NEG_INFINITY, LAA_HU.next_down())?;
        // Per side (both, right, left): (voxels, HU sum, parenchyma voxels, of which below
        // −950).
        let mut acc = [(0u64, 0f64, 0u64, 0u64); 3];
        for k in [1u8, 2] {
            let mut mask: Vec<u8> = self.side.iter().map(|s| u8::from(*s == k)).collect();
            let all = backend.reduce(hu, Some(&mask))?;
            for (m, a) in mask.iter_mut().zip(&self.airway) {
                *m &= 1 - *a;
            }
            let parenchyma = backend.reduce(hu, Some(&mask))?.count;
            for (m, l) in mask.iter_mut().zip(&low) {
                *m &= *l;
            }
            let below = backend.reduce(hu, Some(&mask))?.count;
            acc[k as usize] = (all.count, all.sum, parenchyma, below);
        }
        let (r, l) = (acc[1], acc[2]);
        acc[0] = (r.0 + l.0, r.1 + l.1, r.2 + l.2, r.3 + l.3);
        let names = ["both", "right", "left"];
        let mut out = Vec::new();
        for k in [1, 2, 0] {
            let (n, sum, parenchyma, low) = acc[k];
            if n == 0 {
                continue;
            }
            out.push(Finding {
                kind: "lung",
                side: Some(names[k]),
                volume_ml: Some(n as f64 * grid.voxel_mm3() / 1000.0),
                mean_hu: Some(sum / n as f64),
                ..Default::default()
            });
            out.push(Finding {
                kind: "emphysema",
                side: Some(names[k]),
                laa950_pct: Some(100.0 * low as f64 / parenchyma.max(1) as f64),
                ..Default::default()
            });
        }
        Ok(out)
    }
}
