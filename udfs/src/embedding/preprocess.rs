//! [`preprocess`]: a volume to a model's input tensor.

use super::{Crop, Normalize, Preprocess, MIN_SLICES};
use crate::error::{Error, Result};
use crate::model::Tensor;
use crate::runtime::{self, Backend, Dims};
use crate::Volume;

/// The HU above which a voxel may be body for [`Crop::Mask`].
const BODY_HU: f32 = -500.0;

/// The model input for `volume`, shape `[1, 1, D, H, W]`, in this order:
///
/// 1. resample to `spec.spacing_mm` (trilinear, [`runtime::resample`] on `backend`);
/// 2. with [`Crop::Mask`], find the body (largest component above −500 HU, on `backend`)
///    on the resampled values;
/// 3. clip to `spec.window`, then normalize;
/// 4. crop or pad to `spec.size` around the centre (of the body's bounding box, or of the
///    volume), padding with the nearest edge voxel (replicating the first and last slices,
///    and the in-plane edges, which are air on CT).
///
/// A series with fewer than [`MIN_SLICES`] slices, rows or columns, an empty one, or one
/// with non-finite values in its spacing is refused with the reason.
pub fn preprocess(volume: &Volume, spec: &Preprocess, backend: &Backend) -> Result<Tensor> {
    let dims = volume.dims;
    if dims.contains(&0) || volume.values.is_empty() {
        return Err(Error::NotAVolume(format!(
            "an empty series ({}×{}×{} voxels) cannot be embedded",
            dims[0], dims[1], dims[2]
        )));
    }
    if volume.values.len() != dims.iter().product::<usize>() {
        return Err(Error::NotAVolume(format!(
            "{} values for {dims:?} voxels",
            volume.values.len()
        )));
    }
    if dims.iter().any(|&n| n < MIN_SLICES) {
        return Err(Error::NotAVolume(format!(
            "{}×{}×{} voxels (slices×rows×columns): an embedding needs at least {MIN_SLICES} \
             of each",
            dims[0], dims[1], dims[2]
        )));
    }
    let (mut values, mut dims) = match spec.spacing_mm {
        None => (volume.values.clone(), dims),
        Some(target) => {
            let spacing = volume.spacing_mm().ok_or_else(|| {
                Error::NotAVolume(
                    "the series has no patient geometry (no affine), so it cannot be \
                     resampled to a spacing"
                        .into(),
                )
            })?;
            runtime::resample(backend, &volume.values, dims, spacing, target)?
        }
    };
    if dims.iter().any(|&n| n < 2) {
        return Err(Error::NotAVolume(format!(
            "resampled to {dims:?} voxels: too small to embed"
        )));
    }
    let centre = match (spec.size, spec.crop) {
        (None, _) => None,
        (Some(_), Crop::Center) => Some(dims.map(|n| n as f64 / 2.0)),
        (Some(_), Crop::Mask) => Some(body_centre(backend, &values, dims)?),
    };
    if let Some([lo, hi]) = spec.window {
        if lo >= hi || lo.is_nan() || hi.is_nan() {
            return Err(Error::Model(format!("window [{lo}, {hi}] is empty")));
        }
        for v in values.iter_mut() {
            *v = v.clamp(lo, hi);
        }
    }
    let (shift, scale) = match spec.normalize {
        Normalize::None => (0.0, 1.0),
        Normalize::Scale { lo, hi } => {
            if hi <= lo || lo.is_nan() || hi.is_nan() {
                return Err(Error::Model(format!("scale [{lo}, {hi}] is empty")));
            }
            (f64::from(lo), 1.0 / f64::from(hi - lo))
        }
        Normalize::MeanStd { mean, std } => {
            if std <= 0.0 || std.is_nan() {
                return Err(Error::Model(format!("std {std} is not positive")));
            }
            (f64::from(mean), 1.0 / f64::from(std))
        }
        Normalize::ZScore => {
            let n = values.len() as f64;
            let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let var = values
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / n;
            (mean, 1.0 / var.sqrt().max(1e-6))
        }
    };
    let norm = |v: f32| ((f64::from(v) - shift) * scale) as f32;
    if !matches!(spec.normalize, Normalize::None) {
        for v in values.iter_mut() {
            *v = norm(*v);
        }
    }
    if let (Some(size), Some(centre)) = (spec.size, centre) {
        if size.contains(&0) {
            return Err(Error::Model(format!("size {size:?} has an empty axis")));
        }
        values = crop_or_pad(&values, dims, size, centre);
        dims = size;
    }
    Tensor::new(vec![1, 1, dims[0], dims[1], dims[2]], values)
}

/// The centre (voxels, per axis) of the bounding box of the body: the largest component
/// above [`BODY_HU`]; the volume's centre where nothing is.
fn body_centre(backend: &Backend, values: &[f32], dims: Dims) -> Result<[f64; 3]> {
    let mask = backend.threshold(values, BODY_HU, f32::INFINITY)?;
    let body = runtime::largest_component(backend, &mask, dims)?;
    let (mut lo, mut hi) = ([usize::MAX; 3], [0usize; 3]);
    let plane = dims[1] * dims[2];
    for (idx, _) in body.iter().enumerate().filter(|(_, m)| **m != 0) {
        let p = [idx / plane, idx / dims[2] % dims[1], idx % dims[2]];
        for a in 0..3 {
            lo[a] = lo[a].min(p[a]);
            hi[a] = hi[a].max(p[a]);
        }
    }
    if lo[0] == usize::MAX {
        return Ok(dims.map(|n| n as f64 / 2.0));
    }
    // The box's centre in the convention of `dims / 2` for the whole volume: the middle
    // of the half-open range lo..hi + 1.
    Ok(std::array::from_fn(|a| (lo[a] + hi[a] + 1) as f64 / 2.0))
}

/// The `size` window of `values` whose centre is `centre` (so it starts at
/// `round(centre - size / 2)`); outside the volume, the nearest edge voxel's value
/// (a scan's anatomy continues past its first and last slices; its in-plane edges are
/// air).
fn crop_or_pad(values: &[f32], dims: Dims, size: Dims, centre: [f64; 3]) -> Vec<f32> {
    use rayon::prelude::*;

    let start: [i64; 3] =
        std::array::from_fn(|a| (centre[a] - size[a] as f64 / 2.0).round() as i64);
    let clamp = |i: usize, a: usize| (i as i64 + start[a]).clamp(0, dims[a] as i64 - 1) as usize;
    let columns: Vec<usize> = (0..size[2]).map(|x| clamp(x, 2)).collect();
    let mut out = vec![0f32; size.iter().product()];
    let plane = size[1] * size[2];
    out.par_chunks_mut(plane).enumerate().for_each(|(z, o)| {
        let sz = clamp(z, 0);
        for y in 0..size[1] {
            let row = (sz * dims[1] + clamp(y, 1)) * dims[2];
            for (v, &sx) in o[y * size[2]..(y + 1) * size[2]].iter_mut().zip(&columns) {
                *v = values[row + sx];
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_and_pad_place_the_window() {
        let dims = [2, 2, 3];
        let values: Vec<f32> = (0..12).map(|v| v as f32).collect();
        // Centre of the volume, same size: identity.
        let same = crop_or_pad(&values, dims, dims, [1.0, 1.0, 1.5]);
        assert_eq!(same, values);
        // Padded by one on each side along x, edges replicated.
        let wide = crop_or_pad(&values, dims, [2, 2, 5], [1.0, 1.0, 1.5]);
        assert_eq!(&wide[..5], &[0.0, 0.0, 1.0, 2.0, 2.0]);
        // Cropped to the last column.
        let narrow = crop_or_pad(&values, dims, [2, 2, 1], [1.0, 1.0, 2.5]);
        assert_eq!(narrow, vec![2.0, 5.0, 8.0, 11.0]);
    }
}
