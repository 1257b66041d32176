//! Trilinear resampling to a target spacing (the CPU side; the GPU side is
//! [`super::gpu::Gpu::resample`], sampling with the same weights).
//!
//! Along an axis with `n` voxels of `spacing` mm, the output has
//! `floor((n - 1) · spacing / target) + 1` voxels of `target` mm, and output voxel `i` is
//! sampled at input coordinate `i · target / spacing` (voxel units, 0 = the centre of the
//! first voxel): the first output voxel is the first input voxel, and the last output
//! voxel lies within the input's extent. The few coordinates rounding past the last voxel
//! take its value (scipy's `mode="nearest"`). It is scipy's
//! `map_coordinates(v, coords, order=1, mode="nearest")` on those coordinates, or
//! `affine_transform(v, diag(target / spacing), output_shape=..., order=1,
//! mode="nearest")`.
//!
//! The CPU backend blends, per output row, the four input rows around it (contiguous,
//! vectorized) and then interpolates along the row; output planes run in parallel.

use rayon::prelude::*;

use super::Dims;
use crate::error::{Error, Result};

/// Slack, in voxels, when flooring the output length: `(n - 1) · spacing / target` that is
/// an integer up to rounding (0.1 · 3 / 0.3) keeps its last voxel.
const LENGTH_SLACK: f64 = 1e-9;

/// Where an output voxel reads along one axis: input voxels `i0` and `i1` (`i0 + 1`, or
/// `i0` at the edge), `w` the weight of `i1` (that of `i0` is `1 - w`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub i0: usize,
    pub i1: usize,
    pub w: f32,
}

/// The output geometry and the per-axis samples (slices, rows, columns).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Output (slices, rows, columns).
    pub dims: Dims,
    pub axes: [Vec<Sample>; 3],
}

/// Output voxels along an axis of `n` voxels: `floor((n - 1) · spacing / target) + 1`
/// (0 for an empty axis).
pub fn output_len(n: usize, spacing: f64, target: f64) -> usize {
    if n == 0 {
        return 0;
    }
    ((n - 1) as f64 * spacing / target + LENGTH_SLACK).floor() as usize + 1
}

/// The samples of one axis: output voxel `i` at input coordinate `i · target / spacing`,
/// clamped into `[0, n - 1]`.
pub fn samples(n: usize, spacing: f64, target: f64) -> Vec<Sample> {
    let step = target / spacing;
    (0..output_len(n, spacing, target))
        .map(|i| {
            let c = (i as f64 * step).clamp(0.0, (n - 1) as f64);
            let i0 = c.floor() as usize;
            Sample {
                i0,
                i1: (i0 + 1).min(n - 1),
                w: (c - i0 as f64) as f32,
            }
        })
        .collect()
}

/// The plan for resampling a `dims` volume of `spacing` mm (slice, row, column) to
/// `target` mm; both must be positive and finite.
pub fn plan(dims: Dims, spacing: [f64; 3], target: [f64; 3]) -> Result<Plan> {
    let ok = |s: &[f64; 3]| s.iter().all(|v| v.is_finite() && *v > 0.0);
    if !ok(&spacing) || !ok(&target) {
        return Err(Error::NotAVolume(format!(
            "resampling from spacing {spacing:?} to {target:?}: spacings must be positive"
        )));
    }
    let axes: [Vec<Sample>; 3] = std::array::from_fn(|a| samples(dims[a], spacing[a], target[a]));
    Ok(Plan {
        dims: std::array::from_fn(|a| axes[a].len()),
        axes,
    })
}

/// The affine of the resampled volume: the voxel-to-LPS affine of [`crate::Volume`]
/// (columns i = column, j = row, k = slice, then the origin) with each direction column
/// rescaled from `spacing` to `target` (column 0 by `target[2] / spacing[2]`, column 1 by
/// `target[1] / spacing[1]`, column 2 by `target[0] / spacing[0]`). The origin (the
/// centre of voxel 0) does not move, since output voxel 0 is input voxel 0.
pub fn resampled_affine(
    affine: [[f64; 4]; 4],
    spacing: [f64; 3],
    target: [f64; 3],
) -> [[f64; 4]; 4] {
    let mut a = affine;
    for row in a.iter_mut().take(3) {
        for (col, axis) in [(0, 2), (1, 1), (2, 0)] {
            row[col] *= target[axis] / spacing[axis];
        }
    }
    a
}

/// The bilinear weights of the four rows (z0 y0, z0 y1, z1 y0, z1 y1) for samples along z
/// and y, in f32 as the GPU shader computes them.
pub fn row_weights(sz: Sample, sy: Sample) -> [f32; 4] {
    [
        (1.0 - sz.w) * (1.0 - sy.w),
        (1.0 - sz.w) * sy.w,
        sz.w * (1.0 - sy.w),
        sz.w * sy.w,
    ]
}

/// Resample `src` (`dims`) on the CPU as `plan` says.
pub fn cpu(src: &[f32], dims: Dims, plan: &Plan) -> Vec<f32> {
    let [nz, ny, nx] = dims;
    assert_eq!(src.len(), nz * ny * nx);
    let [_, my, mx] = plan.dims;
    let mut out = vec![0f32; plan.dims.iter().product()];
    if out.is_empty() {
        return out;
    }
    let plane = ny * nx;
    let [az, ay, ax] = &plan.axes;
    out.par_chunks_mut(my * mx)
        .zip(az.par_iter())
        .for_each_init(
            || vec![0f32; nx],
            |blend, (o, &sz)| {
                let row = |z: usize, y: usize| &src[z * plane + y * nx..][..nx];
                for (orow, &sy) in o.chunks_exact_mut(mx).zip(ay) {
                    let [a0, a1, a2, a3] = row_weights(sz, sy);
                    let (r0, r1) = (row(sz.i0, sy.i0), row(sz.i0, sy.i1));
                    let (r2, r3) = (row(sz.i1, sy.i0), row(sz.i1, sy.i1));
                    for ((((b, v0), v1), v2), v3) in
                        blend.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3)
                    {
                        *b = a0 * v0 + a1 * v1 + a2 * v2 + a3 * v3;
                    }
                    for (v, sx) in orow.iter_mut().zip(ax) {
                        *v = blend[sx.i0] * (1.0 - sx.w) + blend[sx.i1] * sx.w;
                    }
                }
            },
        );
    out
}
