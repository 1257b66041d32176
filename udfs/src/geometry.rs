//! Series geometry from per-slice position and orientation.
//!
//! Slices are ordered by ImagePositionPatient projected onto the slice normal (the cross
//! product of the two ImageOrientationPatient direction cosines), never by InstanceNumber
//! or SliceLocation: those are optional, often absent, and sometimes wrong. The spacing
//! between slices is measured from those projections, not copied from SliceThickness
//! (thickness is the reconstructed slab width, which differs from the spacing in
//! overlapping or gapped reconstructions).

/// Position and orientation of one image (one slice, or one frame).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SliceGeometry {
    /// ImagePositionPatient: the centre of the first transmitted voxel, in LPS mm.
    pub position: [f64; 3],
    /// ImageOrientationPatient: row direction cosines, then column direction cosines.
    pub orientation: [f64; 6],
}

/// What a set of slices says about the volume they form.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesGeometry {
    /// Distinct slice positions along the normal (duplicates are other echoes or phases).
    pub slice_count: usize,
    /// Median distance between neighbouring distinct slice positions, in mm.
    pub slice_spacing_mm: Option<f64>,
    /// Largest absolute difference between any neighbouring spacing and the median.
    pub spacing_max_deviation_mm: Option<f64>,
    /// A gap wider than 1.5 times the median spacing: a slice is probably missing.
    pub has_missing_slices: bool,
    /// Not every slice has the same orientation (within [`ORIENTATION_TOLERANCE`]).
    pub has_mixed_orientation: bool,
    /// Lower corner of the bounding box of all voxel centres, LPS mm.
    pub extent_min_lps_mm: Option<[f64; 3]>,
    /// Upper corner of the bounding box of all voxel centres, LPS mm.
    pub extent_max_lps_mm: Option<[f64; 3]>,
}

/// Direction cosines that differ by less than this are the same orientation.
pub const ORIENTATION_TOLERANCE: f64 = 1e-4;
/// Slice positions closer than this (mm) along the normal are the same position.
pub const POSITION_TOLERANCE_MM: f64 = 1e-3;
/// A neighbour gap this many times the median spacing counts as a missing slice.
pub const MISSING_SLICE_FACTOR: f64 = 1.5;

/// Unit normal of a slice: row cosines × column cosines. `None` for degenerate input.
pub fn slice_normal(orientation: &[f64; 6]) -> Option<[f64; 3]> {
    let r = [orientation[0], orientation[1], orientation[2]];
    let c = [orientation[3], orientation[4], orientation[5]];
    let n = [
        r[1] * c[2] - r[2] * c[1],
        r[2] * c[0] - r[0] * c[2],
        r[0] * c[1] - r[1] * c[0],
    ];
    let len = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
    if !len.is_finite() || len < 1e-6 {
        return None;
    }
    Some([n[0] / len, n[1] / len, n[2] / len])
}

fn dot(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub(crate) fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Derive the geometry of a series.
///
/// `pixel_spacing` is PixelSpacing (row spacing, column spacing, in mm) and `rows`/`columns`
/// the image matrix; with them the extent covers every voxel centre, without them it covers
/// only the slice origins.
pub fn series_geometry(
    slices: &[SliceGeometry],
    pixel_spacing: Option<[f64; 2]>,
    rows: Option<u32>,
    columns: Option<u32>,
) -> SeriesGeometry {
    let empty = SeriesGeometry {
        slice_count: 0,
        slice_spacing_mm: None,
        spacing_max_deviation_mm: None,
        has_missing_slices: false,
        has_mixed_orientation: false,
        extent_min_lps_mm: None,
        extent_max_lps_mm: None,
    };
    let Some(first) = slices.first() else {
        return empty;
    };
    let has_mixed_orientation = slices.iter().any(|s| {
        s.orientation
            .iter()
            .zip(first.orientation.iter())
            .any(|(a, b)| (a - b).abs() > ORIENTATION_TOLERANCE)
    });
    let extent = extent(slices, pixel_spacing, rows, columns);
    let Some(normal) = slice_normal(&first.orientation) else {
        return SeriesGeometry {
            slice_count: slices.len(),
            has_mixed_orientation,
            extent_min_lps_mm: extent.map(|e| e.0),
            extent_max_lps_mm: extent.map(|e| e.1),
            ..empty
        };
    };
    let mut along: Vec<f64> = slices.iter().map(|s| dot(&s.position, &normal)).collect();
    along.sort_by(f64::total_cmp);
    along.dedup_by(|b, a| (*b - *a).abs() < POSITION_TOLERANCE_MM);
    let gaps: Vec<f64> = along.windows(2).map(|w| w[1] - w[0]).collect();
    let (spacing, deviation, missing) = if gaps.is_empty() {
        (None, None, false)
    } else {
        let mut sorted = gaps.clone();
        sorted.sort_by(f64::total_cmp);
        let m = median(&sorted);
        let dev = gaps.iter().map(|g| (g - m).abs()).fold(0.0, f64::max);
        let missing = gaps.iter().any(|g| *g > MISSING_SLICE_FACTOR * m);
        (Some(m), Some(dev), missing)
    };
    SeriesGeometry {
        slice_count: along.len(),
        slice_spacing_mm: spacing,
        spacing_max_deviation_mm: deviation,
        has_missing_slices: missing,
        has_mixed_orientation,
        extent_min_lps_mm: extent.map(|e| e.0),
        extent_max_lps_mm: extent.map(|e| e.1),
    }
}

type Extent = ([f64; 3], [f64; 3]);

fn extent(
    slices: &[SliceGeometry],
    pixel_spacing: Option<[f64; 2]>,
    rows: Option<u32>,
    columns: Option<u32>,
) -> Option<Extent> {
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for s in slices {
        let r = [s.orientation[0], s.orientation[1], s.orientation[2]];
        let c = [s.orientation[3], s.orientation[4], s.orientation[5]];
        // Row direction steps across columns (column spacing); column direction steps
        // down rows (row spacing): PS3.3 C.7.6.2.1.1.
        let (du, dv) = match (pixel_spacing, rows, columns) {
            (Some([row_sp, col_sp]), Some(nr), Some(nc)) if nr > 0 && nc > 0 => {
                (col_sp * f64::from(nc - 1), row_sp * f64::from(nr - 1))
            }
            _ => (0.0, 0.0),
        };
        for (a, b) in [(0.0, 0.0), (du, 0.0), (0.0, dv), (du, dv)] {
            for k in 0..3 {
                let p = s.position[k] + a * r[k] + b * c[k];
                lo[k] = lo[k].min(p);
                hi[k] = hi[k].max(p);
            }
        }
    }
    lo.iter()
        .chain(hi.iter())
        .all(|v| v.is_finite())
        .then_some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AXIAL: [f64; 6] = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];

    fn stack(zs: &[f64]) -> Vec<SliceGeometry> {
        zs.iter()
            .map(|z| SliceGeometry {
                position: [-100.0, -120.0, *z],
                orientation: AXIAL,
            })
            .collect()
    }

    #[test]
    fn regular_stack_in_any_order() {
        let g = series_geometry(&stack(&[5.0, 0.0, 2.5, 7.5, 10.0]), None, None, None);
        assert_eq!(g.slice_count, 5);
        assert_eq!(g.slice_spacing_mm, Some(2.5));
        assert_eq!(g.spacing_max_deviation_mm, Some(0.0));
        assert!(!g.has_missing_slices);
        assert!(!g.has_mixed_orientation);
    }

    #[test]
    fn a_gap_is_a_missing_slice() {
        let g = series_geometry(&stack(&[0.0, 1.0, 2.0, 4.0, 5.0]), None, None, None);
        assert_eq!(g.slice_spacing_mm, Some(1.0));
        assert_eq!(g.spacing_max_deviation_mm, Some(1.0));
        assert!(g.has_missing_slices);
    }

    #[test]
    fn spacing_is_measured_along_the_normal_of_an_oblique_stack() {
        // Sagittal slices: rows along +Y, columns along -Z; normal is -X... or +X by sign.
        let sag = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0];
        let n = slice_normal(&sag).unwrap();
        assert!((n[0].abs() - 1.0).abs() < 1e-12);
        let s: Vec<_> = (0..4)
            .map(|i| SliceGeometry {
                position: [f64::from(i) * 3.0, 10.0, 20.0],
                orientation: sag,
            })
            .collect();
        let g = series_geometry(&s, Some([0.5, 0.5]), Some(11), Some(21));
        assert_eq!(g.slice_spacing_mm, Some(3.0));
        assert_eq!(g.extent_min_lps_mm, Some([0.0, 10.0, 15.0]));
        assert_eq!(g.extent_max_lps_mm, Some([9.0, 20.0, 20.0]));
    }

    #[test]
    fn mixed_orientation_is_flagged() {
        let mut s = stack(&[0.0, 1.0]);
        s[1].orientation = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0];
        assert!(series_geometry(&s, None, None, None).has_mixed_orientation);
    }

    #[test]
    fn repeated_positions_count_once() {
        let g = series_geometry(&stack(&[0.0, 0.0, 2.0, 2.0, 4.0]), None, None, None);
        assert_eq!(g.slice_count, 3);
        assert_eq!(g.slice_spacing_mm, Some(2.0));
    }
}
