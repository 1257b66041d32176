//! 3-D connected components of a mask, and binary morphology: what lung segmentation and
//! nodule candidates are built from.
//!
//! Connectivity is the face neighbours (6 in 3-D), scipy.ndimage's default structure for
//! `label`, `binary_erosion`, `binary_dilation` and `binary_fill_holes`; outside the
//! volume counts as background, as scipy's `border_value=0`.

use rayon::prelude::*;

use super::Dims;

fn find(parent: &mut [u32], mut a: u32) -> u32 {
    while parent[a as usize] != a {
        let up = parent[parent[a as usize] as usize];
        parent[a as usize] = up;
        a = up;
    }
    a
}

fn union(parent: &mut [u32], a: u32, b: u32) -> u32 {
    let (ra, rb) = (find(parent, a), find(parent, b));
    let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
    parent[hi as usize] = lo;
    lo
}

/// Label the 6-connected components of `mask`: 0 is background, components are numbered
/// 1.. in the raster order of their first voxel. Returns the labels and the count.
pub fn label(mask: &[u8], dims: Dims) -> (Vec<u32>, u32) {
    let [nz, ny, nx] = dims;
    let plane = ny * nx;
    let mut labels = vec![0u32; mask.len()];
    // parent[0] is the background; provisional labels start at 1.
    let mut parent: Vec<u32> = vec![0];
    for z in 0..nz {
        for y in 0..ny {
            let row = z * plane + y * nx;
            for x in 0..nx {
                let i = row + x;
                if mask[i] == 0 {
                    continue;
                }
                let mut l = 0u32;
                for n in [
                    (x > 0).then(|| labels[i - 1]),
                    (y > 0).then(|| labels[i - nx]),
                    (z > 0).then(|| labels[i - plane]),
                ]
                .into_iter()
                .flatten()
                .filter(|n| *n != 0)
                {
                    l = if l == 0 { n } else { union(&mut parent, l, n) };
                }
                if l == 0 {
                    l = parent.len() as u32;
                    parent.push(l);
                }
                labels[i] = l;
            }
        }
    }
    // Final numbers in order of first appearance.
    let mut number = vec![0u32; parent.len()];
    let mut next = 0u32;
    for l in labels.iter_mut() {
        if *l == 0 {
            continue;
        }
        let root = find(&mut parent, *l) as usize;
        if number[root] == 0 {
            next += 1;
            number[root] = next;
        }
        *l = number[root];
    }
    (labels, next)
}

/// Voxel count of each label 1..=count (index 0 is the background).
pub fn label_sizes(labels: &[u32], count: u32) -> Vec<u64> {
    let mut sizes = vec![0u64; count as usize + 1];
    for l in labels {
        sizes[*l as usize] += 1;
    }
    sizes
}

/// The face neighbours of voxel `i`, within the volume.
fn neighbours(i: usize, dims: Dims) -> impl Iterator<Item = usize> {
    let [nz, ny, nx] = dims;
    let plane = ny * nx;
    let (z, y, x) = (i / plane, (i / nx) % ny, i % nx);
    [
        (x > 0).then(|| i - 1),
        (x + 1 < nx).then(|| i + 1),
        (y > 0).then(|| i - nx),
        (y + 1 < ny).then(|| i + nx),
        (z > 0).then(|| i - plane),
        (z + 1 < nz).then(|| i + plane),
    ]
    .into_iter()
    .flatten()
}

fn on_border(i: usize, dims: Dims) -> bool {
    let [nz, ny, nx] = dims;
    let plane = ny * nx;
    let (z, y, x) = (i / plane, (i / nx) % ny, i % nx);
    x == 0 || y == 0 || z == 0 || x + 1 == nx || y + 1 == ny || z + 1 == nz
}

/// One step of dilation (`grow`) or erosion with the 6-neighbour cross.
fn morph_step(mask: &[u8], dims: Dims, grow: bool) -> Vec<u8> {
    (0..mask.len())
        .into_par_iter()
        .map(|i| {
            if grow {
                u8::from(mask[i] != 0 || neighbours(i, dims).any(|n| mask[n] != 0))
            } else {
                // Outside the volume is background, so a border voxel erodes.
                u8::from(
                    mask[i] != 0
                        && !on_border(i, dims)
                        && neighbours(i, dims).all(|n| mask[n] != 0),
                )
            }
        })
        .collect()
}

/// Binary dilation by the cross, `iterations` times.
pub fn dilate(mask: &[u8], dims: Dims, iterations: usize) -> Vec<u8> {
    let mut m = mask.to_vec();
    for _ in 0..iterations {
        m = morph_step(&m, dims, true);
    }
    m
}

/// Binary erosion by the cross, `iterations` times.
pub fn erode(mask: &[u8], dims: Dims, iterations: usize) -> Vec<u8> {
    let mut m = mask.to_vec();
    for _ in 0..iterations {
        m = morph_step(&m, dims, false);
    }
    m
}

/// Set every background voxel that cannot reach the border through background.
pub fn fill_holes(mask: &[u8], dims: Dims) -> Vec<u8> {
    let mut outside = vec![false; mask.len()];
    let mut stack: Vec<usize> = (0..mask.len())
        .filter(|&i| mask[i] == 0 && on_border(i, dims))
        .collect();
    for &i in &stack {
        outside[i] = true;
    }
    while let Some(i) = stack.pop() {
        for n in neighbours(i, dims) {
            if mask[n] == 0 && !outside[n] {
                outside[n] = true;
                stack.push(n);
            }
        }
    }
    outside.iter().map(|o| u8::from(!o)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_merge_through_later_rows_and_are_numbered_in_raster_order() {
        // A U shape in one plane: its arms meet only on the last row.
        #[rustfmt::skip]
        let m = [
            1, 0, 1, 0, 1,
            1, 0, 1, 0, 0,
            1, 1, 1, 0, 0,
        ];
        let (l, n) = label(&m, [1, 3, 5]);
        assert_eq!(n, 2);
        assert_eq!(l, vec![1, 0, 1, 0, 2, 1, 0, 1, 0, 0, 1, 1, 1, 0, 0]);
    }

    #[test]
    fn a_closed_shell_is_filled_and_an_open_one_is_not() {
        let dims = [5, 5, 5];
        let mut shell = vec![0u8; 125];
        for z in 1..4 {
            for y in 1..4 {
                for x in 1..4 {
                    if (z, y, x) != (2, 2, 2) {
                        shell[z * 25 + y * 5 + x] = 1;
                    }
                }
            }
        }
        assert_eq!(fill_holes(&shell, dims)[2 * 25 + 2 * 5 + 2], 1);
        shell[2 * 25 + 2 * 5 + 1] = 0; // a hole in the wall
        assert_eq!(fill_holes(&shell, dims)[2 * 25 + 2 * 5 + 2], 0);
    }
}
