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
/// 1.. in the raster order of their first voxel (as scipy's `label`). Returns the labels
/// and the count.
///
/// Works on runs, not voxels: each row's runs of set voxels are found in parallel, runs
/// are joined (union-find) with the overlapping runs of the row above and of the same row
/// in the plane before, and the numbers are written back run by run, in parallel. A CT
/// body mask has a few runs per 512-voxel row, so the union-find touches a few hundred
/// thousand runs instead of tens of millions of voxels.
pub fn label(mask: &[u8], dims: Dims) -> (Vec<u32>, u32) {
    let [nz, ny, nx] = dims;
    let rows = nz * ny;
    // Runs of each row: (start, end) column ranges, end exclusive.
    let row_runs: Vec<Vec<(u32, u32)>> = (0..rows)
        .into_par_iter()
        .map(|row| {
            let m = &mask[row * nx..(row + 1) * nx];
            let mut runs = Vec::new();
            let mut x = 0;
            while x < nx {
                if m[x] == 0 {
                    x += 1;
                    continue;
                }
                let start = x;
                while x < nx && m[x] != 0 {
                    x += 1;
                }
                runs.push((start as u32, x as u32));
            }
            runs
        })
        .collect();
    // Global run numbers: row r's runs start at first[r].
    let mut first = Vec::with_capacity(rows + 1);
    let mut total = 0usize;
    for r in &row_runs {
        first.push(total);
        total += r.len();
    }
    first.push(total);
    let mut parent: Vec<u32> = (0..total as u32).collect();
    // Join the runs of `row` with the overlapping runs of `other` (an earlier row).
    let join = |parent: &mut [u32], row: usize, other: usize| {
        let (a, b) = (&row_runs[row], &row_runs[other]);
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            if a[i].0 < b[j].1 && b[j].0 < a[i].1 {
                union(parent, (first[row] + i) as u32, (first[other] + j) as u32);
            }
            if a[i].1 < b[j].1 {
                i += 1;
            } else {
                j += 1;
            }
        }
    };
    for row in 0..rows {
        let (z, y) = (row / ny, row % ny);
        if y > 0 {
            join(&mut parent, row, row - 1);
        }
        if z > 0 {
            join(&mut parent, row, row - ny);
        }
    }
    // Numbers in raster order of each component's first run.
    let mut number = vec![0u32; total];
    let mut next = 0u32;
    for run in 0..total {
        let root = find(&mut parent, run as u32) as usize;
        if number[root] == 0 {
            next += 1;
            number[root] = next;
        }
        number[run] = number[root];
    }
    let mut labels = vec![0u32; mask.len()];
    labels
        .par_chunks_mut(nx)
        .enumerate()
        .for_each(|(row, out)| {
            for (k, &(s, e)) in row_runs[row].iter().enumerate() {
                out[s as usize..e as usize].fill(number[first[row] + k]);
            }
        });
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
pub fn neighbours(i: usize, dims: Dims) -> impl Iterator<Item = usize> {
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

pub(super) fn on_border(i: usize, dims: Dims) -> bool {
    let [nz, ny, nx] = dims;
    let plane = ny * nx;
    let (z, y, x) = (i / plane, (i / nx) % ny, i % nx);
    x == 0 || y == 0 || z == 0 || x + 1 == nx || y + 1 == ny || z + 1 == nz
}

/// One step of dilation (`grow`) or erosion with the 6-neighbour cross: a voxel and its
/// face neighbours, OR-ed (dilation) or AND-ed (erosion), outside the volume counting as
/// background (so a border voxel erodes). Plane by plane in parallel, row by row within.
fn morph_step(mask: &[u8], dims: Dims, grow: bool) -> Vec<u8> {
    let [nz, ny, nx] = dims;
    let plane = ny * nx;
    let mut out = vec![0u8; mask.len()];
    if mask.is_empty() {
        return out;
    }
    let combine = |a: bool, b: bool| if grow { a || b } else { a && b };
    out.par_chunks_mut(plane).enumerate().for_each(|(z, o)| {
        let at = |dz: usize| &mask[dz * plane..(dz + 1) * plane];
        let (p, below, above) = (
            at(z),
            (z > 0).then(|| at(z - 1)),
            (z + 1 < nz).then(|| at(z + 1)),
        );
        for y in 0..ny {
            for x in 0..nx {
                let i = y * nx + x;
                let set = |m: Option<&[u8]>, j: usize| m.is_some_and(|m| m[j] != 0);
                let neighbours = [
                    (x > 0).then(|| i - 1),
                    (x + 1 < nx).then(|| i + 1),
                    (y > 0).then(|| i - nx),
                    (y + 1 < ny).then(|| i + nx),
                ];
                let mut v = p[i] != 0;
                for n in neighbours {
                    v = combine(v, n.is_some_and(|j| p[j] != 0));
                }
                v = combine(v, set(below, i));
                v = combine(v, set(above, i));
                o[i] = u8::from(v);
            }
        }
    });
    out
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

/// Fill the holes of each slice on its own (4-connected background reaching the slice's
/// edge is outside). What a body or lung outline needs: a lung touching the first or last
/// slice is not a 3-D hole of the body, but it is enclosed in every slice.
pub fn fill_holes_per_slice(mask: &[u8], dims: Dims) -> Vec<u8> {
    let [_, ny, nx] = dims;
    let plane = ny * nx;
    let mut out = vec![0u8; mask.len()];
    out.par_chunks_mut(plane)
        .zip(mask.par_chunks(plane))
        .for_each_init(Vec::new, |stack, (o, m)| {
            // o: 1 = outside (background reached from the edge), filled in afterwards.
            for y in 0..ny {
                for x in 0..nx {
                    let i = y * nx + x;
                    if (y == 0 || x == 0 || y + 1 == ny || x + 1 == nx) && m[i] == 0 {
                        o[i] = 1;
                        stack.push(i);
                    }
                }
            }
            while let Some(i) = stack.pop() {
                let (y, x) = (i / nx, i % nx);
                let mut visit = |n: usize| {
                    if m[n] == 0 && o[n] == 0 {
                        o[n] = 1;
                        stack.push(n);
                    }
                };
                if x > 0 {
                    visit(i - 1);
                }
                if x + 1 < nx {
                    visit(i + 1);
                }
                if y > 0 {
                    visit(i - nx);
                }
                if y + 1 < ny {
                    visit(i + nx);
                }
            }
            for v in o.iter_mut() {
                *v = 1 - *v;
            }
        });
    out
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

    #[test]
    fn slices_are_filled_on_their_own() {
        // A tube along z: open at both ends in 3-D, a ring in every slice.
        let dims = [3, 5, 5];
        let mut tube = vec![0u8; 75];
        for z in 0..3 {
            for y in 1..4 {
                for x in 1..4 {
                    if (y, x) != (2, 2) {
                        tube[z * 25 + y * 5 + x] = 1;
                    }
                }
            }
        }
        assert_eq!(fill_holes(&tube, dims)[25 + 12], 0);
        let filled = fill_holes_per_slice(&tube, dims);
        assert!((0..3).all(|z| filled[z * 25 + 12] == 1));
        assert_eq!(filled.iter().map(|v| *v as usize).sum::<usize>(), 27);
    }
}
