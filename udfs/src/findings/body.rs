//! The body outline: what is not air around the patient.

use super::{Finding, Grid};
use crate::error::Result;
use crate::runtime::{self, Backend};

/// HU above which a voxel is tissue rather than air (fat is about −100, lung −850).
const TISSUE_HU: f32 = -500.0;

pub(crate) struct Body {
    /// 1 inside the body outline (lungs included), else 0.
    pub mask: Vec<u8>,
    pub finding: Finding,
    /// Mean LPS x of the body: the patient's midline.
    pub midline_x_mm: f64,
}

pub(crate) fn segment(backend: &Backend, hu: &[f32], grid: &Grid) -> Result<Body> {
    let tissue = backend.threshold(hu, TISSUE_HU, f32::MAX)?;
    // The largest component drops the table and blankets; the lungs are holes in every
    // slice, filled there.
    let body = runtime::largest_component(backend, &tissue, grid.dims)?;
    let mask = backend.fill_holes_per_slice(&body, grid.dims)?;
    let (mut count, mut sum_x) = (0u64, 0f64);
    let [nz, ny, nx] = grid.dims;
    // The midline from the middle slice's outline (x does not depend on it for axial CT,
    // and one slice is enough to place it).
    let z = nz / 2;
    for y in 0..ny {
        for x in 0..nx {
            if mask[grid.index(z, y, x)] != 0 {
                count += 1;
                sum_x += grid.lps(z as f64, y as f64, x as f64)[0];
            }
        }
    }
    let voxels = backend.reduce(hu, Some(&mask))?.count;
    Ok(Body {
        finding: Finding {
            kind: "body",
            side: Some("both"),
            volume_ml: Some(voxels as f64 * grid.voxel_mm3() / 1000.0),
            ..Default::default()
        },
        midline_x_mm: if count > 0 { sum_x / count as f64 } else { 0.0 },
        mask,
    })
}
