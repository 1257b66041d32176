//! Nodule candidates: maxima of the scale-normalized Laplacian of Gaussian (Lindeberg
//! 1998) inside the lungs, each verified by segmenting it at half its contrast.
//!
//! A bright ball of radius r gives its strongest normalized response, about 0.92 of its
//! contrast, at σ = r/√3; a tube gives about 0.73 of its contrast, so vessels produce
//! maxima too. What tells them apart is the verification: a nodule's half-contrast region
//! is compact and closes inside a box of twice its radius, a vessel's runs out of it.

use std::collections::HashSet;

use rayon::prelude::*;

use super::lungs::Lungs;
use super::{Finding, Grid};
use crate::error::Result;
use crate::runtime::{self, Backend};

/// Scales (σ, mm): nodules of 3 to 30 mm have σ = r/√3 of 0.87 to 8.7 mm.
const SIGMAS_MM: [f64; 7] = [1.0, 1.41, 2.0, 2.83, 4.0, 5.66, 8.0];
/// At a scale, voxels are averaged in blocks of up to σ / this (in mm) before filtering:
/// large scales run on a coarse grid at a fraction of the cost.
const VOXELS_PER_SIGMA: f64 = 1.5;
/// Normalized responses below this (HU) are not candidates: a 4 mm ground-glass nodule
/// (contrast ≈ 250 HU) gives about 200.
const MIN_RESPONSE: f32 = 60.0;
/// Candidates verified, strongest first.
const MAX_CANDIDATES: usize = 5000;
/// A blob must stand this far (HU) above the parenchyma.
const MIN_CONTRAST: f64 = 100.0;
/// Smaller regions are noise, not nodules, mm.
const MIN_DIAMETER_MM: f64 = 2.5;
/// Mean HU at or above which a nodule is solid rather than ground-glass.
const SOLID_HU: f64 = -300.0;
/// A region whose farthest voxel lies beyond 1 / this of its equivalent radius is not
/// compact (an elongated vessel piece).
const MIN_COMPACTNESS: f64 = 0.5;

struct Candidate {
    /// Full-volume voxel (slice, row, column).
    at: [usize; 3],
    sigma_mm: f64,
    response: f32,
}

pub(crate) fn detect(
    backend: &Backend,
    hu: &[f32],
    grid: &Grid,
    lungs: &Lungs,
) -> Result<Vec<Finding>> {
    let Some((lo, hi)) = lungs.bbox else {
        return Ok(Vec::new());
    };
    let cdims = [0, 1, 2].map(|a| hi[a] - lo[a]);
    let bg = lungs.parenchyma_hu;
    // The lungs' box with everything outside the lungs set to parenchyma, so the pleura
    // and mediastinum give no response; bright values clipped, so a calcified nodule and a
    // solid one rank alike.
    let mut crop = vec![0f32; cdims.iter().product()];
    crop.par_chunks_mut(cdims[1] * cdims[2])
        .enumerate()
        .for_each(|(z, p)| {
            for y in 0..cdims[1] {
                for x in 0..cdims[2] {
                    let idx = grid.index(z + lo[0], y + lo[1], x + lo[2]);
                    p[y * cdims[2] + x] = if lungs.side[idx] != 0 {
                        hu[idx].clamp(-1000.0, 100.0)
                    } else {
                        bg
                    };
                }
            }
        });
    let mut candidates = Vec::new();
    for sigma in SIGMAS_MM {
        let block =
            [0, 1, 2].map(|a| ((sigma / (VOXELS_PER_SIGMA * grid.spacing[a])) as usize).max(1));
        let (coarse, dims) = block_mean(&crop, cdims, block);
        if dims.iter().any(|d| *d < 3) {
            continue;
        }
        // σ left to apply after the block average's own blur ((b² − 1)/12 voxels²), in
        // coarse voxels; and the per-axis normalization σ² (in those voxels) that makes
        // the response scale-free.
        let step = [0, 1, 2].map(|a| grid.spacing[a] * block[a] as f64);
        let filter_sigma = [0, 1, 2].map(|a| {
            let s = grid.spacing[a];
            let b = block[a] as f64;
            let left = sigma * sigma - (b * b - 1.0) / 12.0 * s * s;
            left.max((0.3 * step[a]).powi(2)).sqrt() / step[a]
        });
        let mut response = vec![0f32; coarse.len()];
        for axis in 0..3 {
            let mut order = [0; 3];
            order[axis] = 2;
            let d2 = runtime::gaussian(backend, &coarse, dims, filter_sigma, order)?;
            let w = ((sigma / step[axis]).powi(2)) as f32;
            for (r, v) in response.iter_mut().zip(d2) {
                *r -= w * v;
            }
        }
        for at in local_maxima(&response, dims, MIN_RESPONSE) {
            let [z, y, x] = grid.coords_in(at, dims);
            let full = [0, 1, 2].map(|a| {
                let c = [z, y, x][a] * block[a] + block[a] / 2;
                (c + lo[a]).min(hi[a] - 1)
            });
            if lungs.side[grid.index(full[0], full[1], full[2])] != 0 {
                candidates.push(Candidate {
                    at: full,
                    sigma_mm: sigma,
                    response: response[at],
                });
            }
        }
    }
    candidates.sort_by(|a, b| b.response.total_cmp(&a.response));
    candidates.truncate(MAX_CANDIDATES);
    let mut taken: HashSet<usize> = HashSet::new();
    let mut found = Vec::new();
    for c in &candidates {
        if taken.contains(&grid.index(c.at[0], c.at[1], c.at[2])) {
            continue;
        }
        if let Some((finding, region)) = verify(hu, grid, lungs, f64::from(bg), c) {
            if region.iter().any(|i| taken.contains(i)) {
                continue;
            }
            taken.extend(region);
            found.push(finding);
        }
    }
    Ok(found)
}

/// Block averages of `src` (partial blocks at the far edges averaged over what they hold).
fn block_mean(src: &[f32], dims: [usize; 3], block: [usize; 3]) -> (Vec<f32>, [usize; 3]) {
    if block == [1, 1, 1] {
        return (src.to_vec(), dims);
    }
    let out_dims = [0, 1, 2].map(|a| dims[a].div_ceil(block[a]));
    let [oz, oy, ox] = out_dims;
    let mut out = vec![0f32; oz * oy * ox];
    out.par_chunks_mut(oy * ox).enumerate().for_each(|(z, p)| {
        let zs = z * block[0]..((z + 1) * block[0]).min(dims[0]);
        for y in 0..oy {
            let ys = y * block[1]..((y + 1) * block[1]).min(dims[1]);
            for x in 0..ox {
                let xs = x * block[2]..((x + 1) * block[2]).min(dims[2]);
                let (mut sum, mut n) = (0f32, 0usize);
                for zz in zs.clone() {
                    for yy in ys.clone() {
                        let row = (zz * dims[1] + yy) * dims[2];
                        for v in &src[row + xs.start..row + xs.end] {
                            sum += v;
                            n += 1;
                        }
                    }
                }
                p[y * ox + x] = sum / n as f32;
            }
        }
    });
    (out, out_dims)
}

/// Voxels above `floor` that no face, edge or corner neighbour exceeds (ties go to the
/// first in raster order).
fn local_maxima(v: &[f32], dims: [usize; 3], floor: f32) -> Vec<usize> {
    let [nz, ny, nx] = dims;
    (0..nz)
        .into_par_iter()
        .flat_map_iter(|z| {
            let mut out = Vec::new();
            for y in 0..ny {
                for x in 0..nx {
                    let i = (z * ny + y) * nx + x;
                    let value = v[i];
                    if value < floor {
                        continue;
                    }
                    let mut best = true;
                    'n: for dz in -1i64..=1 {
                        for dy in -1i64..=1 {
                            for dx in -1i64..=1 {
                                let (qz, qy, qx) = (z as i64 + dz, y as i64 + dy, x as i64 + dx);
                                if (dz, dy, dx) == (0, 0, 0)
                                    || qz < 0
                                    || qy < 0
                                    || qx < 0
                                    || qz >= nz as i64
                                    || qy >= ny as i64
                                    || qx >= nx as i64
                                {
                                    continue;
                                }
                                let j = (qz as usize * ny + qy as usize) * nx + qx as usize;
                                if v[j] > value || (v[j] == value && j < i) {
                                    best = false;
                                    break 'n;
                                }
                            }
                        }
                    }
                    if best {
                        out.push(i);
                    }
                }
            }
            out
        })
        .collect()
}

/// Segment a candidate at half its contrast over the parenchyma; the finding and its
/// voxels if the region is a compact blob that closes inside its box.
fn verify(
    hu: &[f32],
    grid: &Grid,
    lungs: &Lungs,
    bg: f64,
    c: &Candidate,
) -> Option<(Finding, Vec<usize>)> {
    let s = grid.spacing;
    let radius = c.sigma_mm * 3f64.sqrt();
    let core_r = (0.5 * radius).max(s[1].max(s[2]));
    let reach = [0, 1, 2].map(|a| (core_r / s[a]).floor() as i64);
    let at = c.at.map(|v| v as i64);
    let inside = |p: [i64; 3]| (0..3).all(|a| p[a] >= 0 && p[a] < grid.dims[a] as i64);
    let idx = |p: [i64; 3]| grid.index(p[0] as usize, p[1] as usize, p[2] as usize);
    let mut core = Vec::new();
    for dz in -reach[0]..=reach[0] {
        for dy in -reach[1]..=reach[1] {
            for dx in -reach[2]..=reach[2] {
                let d2 = (dz as f64 * s[0]).powi(2)
                    + (dy as f64 * s[1]).powi(2)
                    + (dx as f64 * s[2]).powi(2);
                let p = [at[0] + dz, at[1] + dy, at[2] + dx];
                if d2 <= core_r * core_r && inside(p) {
                    core.push(idx(p));
                }
            }
        }
    }
    let core_hu = core.iter().map(|i| f64::from(hu[*i])).sum::<f64>() / core.len().max(1) as f64;
    let contrast = core_hu - bg;
    if contrast < MIN_CONTRAST {
        return None;
    }
    let threshold = (bg + contrast / 2.0) as f32;
    let start = core
        .iter()
        .copied()
        .filter(|i| hu[*i] > threshold && lungs.side[*i] != 0)
        .min_by_key(|i| {
            let p = grid.coords(*i);
            (0..3).map(|a| (p[a] as i64 - at[a]).pow(2)).sum::<i64>()
        })?;
    // The box: twice the scale's radius and 3 mm beyond, per axis.
    let half = [0, 1, 2].map(|a| ((2.0 * radius + 3.0) / s[a]).ceil() as i64);
    let box_lo = [0, 1, 2].map(|a| at[a] - half[a]);
    let box_hi = [0, 1, 2].map(|a| at[a] + half[a]);
    let mut region = vec![start];
    let mut seen: HashSet<usize> = HashSet::from([start]);
    let mut k = 0;
    while k < region.len() {
        let p = grid.coords(region[k]).map(|v| v as i64);
        k += 1;
        for (a, d) in [(0, -1), (0, 1), (1, -1), (1, 1), (2, -1), (2, 1)] {
            let mut q = p;
            q[a] += d;
            if q[a] < box_lo[a] || q[a] > box_hi[a] || !inside(q) {
                // Ran out of its box (or off the volume): a vessel or a wall, not a blob.
                return None;
            }
            let j = idx(q);
            if lungs.airway[j] != 0 {
                // Against the removed airway lumen: a bronchial wall, not a nodule.
                return None;
            }
            if hu[j] > threshold && lungs.side[j] != 0 && seen.insert(j) {
                region.push(j);
            }
        }
    }
    let n = region.len() as f64;
    let mut centre = [0f64; 3];
    let mut sum_hu = 0f64;
    let mut peak = f32::MIN;
    for i in &region {
        let p = grid.coords(*i);
        for a in 0..3 {
            centre[a] += p[a] as f64 / n;
        }
        sum_hu += f64::from(hu[*i]);
        peak = peak.max(hu[*i]);
    }
    let volume = n * grid.voxel_mm3();
    let diameter = (6.0 * volume / std::f64::consts::PI).cbrt();
    if diameter < MIN_DIAMETER_MM {
        return None;
    }
    let farthest = region
        .iter()
        .map(|i| {
            let p = grid.coords(*i);
            (0..3)
                .map(|a| ((p[a] as f64 - centre[a]) * s[a]).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .fold(0.0, f64::max);
    let half_voxel = 0.5 * (s[0] * s[0] + s[1] * s[1] + s[2] * s[2]).sqrt();
    let compactness = ((diameter / 2.0 + half_voxel) / farthest.max(1e-9)).min(1.0);
    if compactness < MIN_COMPACTNESS {
        return None;
    }
    let mean_hu = sum_hu / n;
    let side = match lungs.side[region[0]] {
        1 => "right",
        _ => "left",
    };
    Some((
        Finding {
            kind: "nodule",
            side: Some(side),
            center_lps_mm: Some(grid.lps(centre[0], centre[1], centre[2])),
            diameter_mm: Some(diameter),
            volume_mm3: Some(volume),
            mean_hu: Some(mean_hu),
            peak_hu: Some(f64::from(peak)),
            nodule_type: Some(if mean_hu >= SOLID_HU {
                "solid"
            } else {
                "ground-glass"
            }),
            confidence: Some(compactness * (1.0 - (-contrast / 150.0).exp())),
            ..Default::default()
        },
        region,
    ))
}
