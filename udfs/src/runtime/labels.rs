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

/// Join the two sets; the root of the union is the smaller root, so a component's root
/// is always its first run in raster order and `parent[i] <= i` holds throughout.
fn union(parent: &mut [u32], a: u32, b: u32) -> u32 {
    let (ra, rb) = (find(parent, a), find(parent, b));
    let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
    parent[hi as usize] = lo;
    lo
}

/// A run of set voxels in a row: columns `start..end`.
type Run = (u32, u32);

/// Join the runs `a` (numbered from `a0` in `parent`) with the overlapping runs `b` (numbered
/// from `b0`) of a face-adjacent row: two runs overlap when they share a column.
fn join(parent: &mut [u32], a: &[Run], a0: usize, b: &[Run], b0: usize) {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].0 < b[j].1 && b[j].0 < a[i].1 {
            union(parent, (a0 + i) as u32, (b0 + j) as u32);
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
}

/// The first column at or after `from` whose bit is `set`, or `words.len() * 64`.
fn next_bit(words: &[u64], from: usize, set: bool) -> usize {
    let mut w = from / 64;
    if w >= words.len() {
        return words.len() * 64;
    }
    let word = |w: usize| if set { words[w] } else { !words[w] };
    let mut cur = word(w) & (!0u64 << (from % 64));
    loop {
        if cur != 0 {
            return w * 64 + cur.trailing_zeros() as usize;
        }
        w += 1;
        if w == words.len() {
            return w * 64;
        }
        cur = word(w);
    }
}

/// Append the runs of a row of `nx` voxels given as bits (bit k of word w is column
/// 64·w + k; bits past `nx` are 0).
fn runs_from_bits(words: &[u64], nx: usize, runs: &mut Vec<Run>) {
    let mut x = 0;
    loop {
        let start = next_bit(words, x, true);
        if start >= nx {
            return;
        }
        let end = next_bit(words, start, false).min(nx);
        runs.push((start as u32, end as u32));
        x = end;
    }
}

/// A row of a mask as bits: set where the byte is not 0.
fn mask_row_bits(row: &[u8], words: &mut [u64]) {
    for (w, chunk) in words.iter_mut().zip(row.chunks(64)) {
        #[cfg(target_arch = "x86_64")]
        if chunk.len() == 64 {
            // SSE2 is part of x86_64: 16 bytes compared to 0 per instruction.
            use std::arch::x86_64::*;
            let mut bits = 0u64;
            for k in 0..4 {
                // SAFETY: SSE2 is always there on x86_64; the 16 bytes at 16·k lie within
                // the 64-byte chunk.
                let zero = unsafe {
                    let v = _mm_loadu_si128(chunk.as_ptr().add(16 * k).cast());
                    _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_setzero_si128()))
                };
                bits |= u64::from(!(zero as u16)) << (16 * k);
            }
            *w = bits;
            continue;
        }
        *w = chunk
            .iter()
            .enumerate()
            .fold(0, |bits, (k, v)| bits | (u64::from(*v != 0) << k));
    }
}

/// A row of values as bits: set where `lo <= v <= hi` (never for NaN), as
/// [`super::cpu::threshold`].
fn threshold_row_bits(row: &[f32], lo: f32, hi: f32, words: &mut [u64]) {
    for (w, chunk) in words.iter_mut().zip(row.chunks(64)) {
        #[cfg(target_arch = "x86_64")]
        if chunk.len() == 64 {
            // SSE2 is part of x86_64: 4 values compared per instruction; the ordered
            // comparisons are false for NaN, as `>=` and `<=` are.
            use std::arch::x86_64::*;
            let mut bits = 0u64;
            for k in 0..16 {
                // SAFETY: SSE is always there on x86_64; the 4 values at 4·k lie within
                // the 64-value chunk.
                let inside = unsafe {
                    let v = _mm_loadu_ps(chunk.as_ptr().add(4 * k));
                    let (l, h) = (_mm_set1_ps(lo), _mm_set1_ps(hi));
                    _mm_movemask_ps(_mm_and_ps(_mm_cmpge_ps(v, l), _mm_cmple_ps(v, h)))
                };
                bits |= (inside as u64) << (4 * k);
            }
            *w = bits;
            continue;
        }
        *w = chunk.iter().enumerate().fold(0, |bits, (k, v)| {
            bits | (u64::from(*v >= lo && *v <= hi) << k)
        });
    }
}

/// The runs of a slab of consecutive planes, joined with each other within the slab.
struct Slab {
    /// First plane.
    z0: usize,
    /// All runs, row after row.
    runs: Vec<Run>,
    /// Row r of the slab holds `runs[row_start[r]..row_start[r + 1]]`.
    row_start: Vec<u32>,
    /// The root of each run within the slab (slab-local numbers, fully compressed).
    parent: Vec<u32>,
}

/// The runs of row `r` of a slab and the number of the first.
fn slab_row<'a>(runs: &'a [Run], row_start: &[u32], r: usize) -> (&'a [Run], usize) {
    let (s, e) = (row_start[r] as usize, row_start[r + 1] as usize);
    (&runs[s..e], s)
}

impl Slab {
    fn row(&self, r: usize) -> (&[Run], usize) {
        slab_row(&self.runs, &self.row_start, r)
    }
}

/// Seconds spent in each phase of the labelling: runs found and joined within slabs of
/// planes (parallel), slabs joined and components numbered (sequential), labels written
/// (parallel).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default)]
pub struct LabelPhases {
    pub runs_and_slab_unions: f64,
    pub stitch_and_number: f64,
    pub write: f64,
}

/// The labelling on rows given as bits by `row_bits(row, words)` (row = z·ny + y).
///
/// The planes are cut into slabs, a few per thread. Each slab, in parallel: its rows'
/// runs found into one flat list, and joined (union-find, slab-local numbers) with the
/// overlapping runs of the row above and of the same row in the plane before. Then,
/// sequentially: the slabs' run lists numbered one after the other, each slab's first
/// plane joined with the previous slab's last, and the components numbered by their root
/// (their first run, so raster order) in one pass. Then the labels written plane by plane in
/// parallel, run by run, into a zeroed buffer.
fn label_rows(
    dims: Dims,
    row_bits: impl Fn(usize, &mut [u64]) + Sync,
    phases: Option<&mut LabelPhases>,
) -> (Vec<u32>, u32) {
    let [nz, ny, nx] = dims;
    let n = nz * ny * nx;
    if n == 0 {
        return (Vec::new(), 0);
    }
    let clock = std::time::Instant::now();
    let words = nx.div_ceil(64);
    let slabs = (rayon::current_num_threads() * 4).clamp(1, nz);
    let parts: Vec<Slab> = (0..slabs)
        .into_par_iter()
        .map(|s| {
            let (z0, z1) = (s * nz / slabs, (s + 1) * nz / slabs);
            let mut bits = vec![0u64; words];
            let mut slab = Slab {
                z0,
                runs: Vec::new(),
                row_start: Vec::with_capacity((z1 - z0) * ny + 1),
                parent: Vec::new(),
            };
            slab.row_start.push(0);
            for z in z0..z1 {
                for y in 0..ny {
                    let r = (z - z0) * ny + y;
                    row_bits(z * ny + y, &mut bits);
                    runs_from_bits(&bits, nx, &mut slab.runs);
                    let end = slab.runs.len();
                    assert!(end < u32::MAX as usize, "more than 2^32 - 1 runs in a slab");
                    slab.row_start.push(end as u32);
                    slab.parent.extend(slab.row_start[r]..end as u32);
                    let (here, h0) = slab_row(&slab.runs, &slab.row_start, r);
                    if y > 0 {
                        let (above, a0) = slab_row(&slab.runs, &slab.row_start, r - 1);
                        join(&mut slab.parent, here, h0, above, a0);
                    }
                    if z > z0 {
                        let (before, b0) = slab_row(&slab.runs, &slab.row_start, r - ny);
                        join(&mut slab.parent, here, h0, before, b0);
                    }
                }
            }
            // parent[i] <= i, so one pass in order leaves every run pointing at its root.
            for i in 0..slab.parent.len() {
                slab.parent[i] = slab.parent[slab.parent[i] as usize];
            }
            slab
        })
        .collect();
    let t_runs = clock.elapsed().as_secs_f64();

    // Global run numbers: slab s's runs start at base[s].
    let mut base = Vec::with_capacity(slabs + 1);
    let mut total = 0usize;
    for p in &parts {
        base.push(total);
        total += p.runs.len();
    }
    base.push(total);
    assert!(total < u32::MAX as usize, "more than 2^32 - 1 runs");
    let mut parent = Vec::with_capacity(total);
    for (p, &b) in parts.iter().zip(&base) {
        parent.extend(p.parent.iter().map(|r| r + b as u32));
    }
    for s in 1..slabs {
        let (prev, here) = (&parts[s - 1], &parts[s]);
        let last = (here.z0 - 1 - prev.z0) * ny;
        for y in 0..ny {
            let (a, a0) = here.row(y);
            let (b, b0) = prev.row(last + y);
            join(&mut parent, a, base[s] + a0, b, base[s - 1] + b0);
        }
    }
    // Roots in increasing order are the components in raster order of their first voxel;
    // a run's parent comes before it, so it already holds its component's number.
    let mut count = 0u32;
    for i in 0..total {
        let p = parent[i] as usize;
        parent[i] = if p == i {
            count += 1;
            count
        } else {
            parent[p]
        };
    }
    let number = parent;
    let t_stitch = clock.elapsed().as_secs_f64();

    // Which slab each plane is in.
    let mut slab_of = vec![0usize; nz];
    for (s, p) in parts.iter().enumerate() {
        let z1 = parts.get(s + 1).map_or(nz, |q| q.z0);
        slab_of[p.z0..z1].fill(s);
    }
    let mut labels = zeroed_labels(n);
    labels
        .par_chunks_mut(ny * nx)
        .enumerate()
        .for_each(|(z, out)| {
            let s = slab_of[z];
            let p = &parts[s];
            for (y, row) in out.chunks_exact_mut(nx).enumerate() {
                let (runs, r0) = p.row((z - p.z0) * ny + y);
                let numbers = &number[base[s] + r0..base[s] + r0 + runs.len()];
                for (&(a, b), &l) in runs.iter().zip(numbers) {
                    row[a as usize..b as usize].fill(l);
                }
            }
        });
    if let Some(phases) = phases {
        let t_write = clock.elapsed().as_secs_f64();
        *phases = LabelPhases {
            runs_and_slab_unions: t_runs,
            stitch_and_number: t_stitch - t_runs,
            write: t_write - t_stitch,
        };
    }
    (labels, count)
}

/// A zeroed buffer of `n` labels, backed by huge pages where the kernel gives them
/// ([`super::cpu::advise_huge_pages`]).
#[doc(hidden)]
pub fn zeroed_labels(n: usize) -> Vec<u32> {
    let labels = vec![0u32; n];
    super::cpu::advise_huge_pages(&labels);
    labels
}

/// Label the 6-connected components of `mask`: 0 is background, components are numbered
/// 1.. in the raster order of their first voxel (as scipy's `label`). Returns the labels
/// and the count.
///
/// Works on runs, not voxels: a CT body mask has a few runs per 512-voxel row, so the
/// union-find touches a few hundred thousand runs instead of tens of millions of voxels.
/// Runs are found and joined within slabs of planes in parallel, the slabs joined at their
/// boundaries, and the labels written back run by run in parallel (see `label_rows`).
pub fn label(mask: &[u8], dims: Dims) -> (Vec<u32>, u32) {
    assert_eq!(mask.len(), dims.iter().product::<usize>());
    let nx = dims[2];
    label_rows(
        dims,
        |row, words| mask_row_bits(&mask[row * nx..(row + 1) * nx], words),
        None,
    )
}

/// [`label`] of the mask `lo <= v <= hi` ([`super::cpu::threshold`]) without the mask: the
/// runs are found straight from the values, so the volume is read once and no mask is
/// written. Same labels and count as `label(&threshold(src, lo, hi), dims)`.
pub fn label_threshold(src: &[f32], dims: Dims, lo: f32, hi: f32) -> (Vec<u32>, u32) {
    label_threshold_phases(src, dims, lo, hi, None)
}

/// [`label_threshold`], timing its phases into `phases` (`udfs/examples/label_phases.rs`).
#[doc(hidden)]
pub fn label_threshold_phases(
    src: &[f32],
    dims: Dims,
    lo: f32,
    hi: f32,
    phases: Option<&mut LabelPhases>,
) -> (Vec<u32>, u32) {
    assert_eq!(src.len(), dims.iter().product::<usize>());
    let nx = dims[2];
    label_rows(
        dims,
        |row, words| threshold_row_bits(&src[row * nx..(row + 1) * nx], lo, hi, words),
        phases,
    )
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

    /// Voxel-by-voxel labelling (union-find over voxels, numbered in raster order of the
    /// first voxel): what the run-based one must reproduce.
    fn reference_label(mask: &[u8], dims: Dims) -> (Vec<u32>, u32) {
        let [_, ny, nx] = dims;
        let mut parent: Vec<u32> = (0..mask.len() as u32).collect();
        for i in 0..mask.len() {
            if mask[i] == 0 {
                continue;
            }
            let x = i % nx;
            let y = (i / nx) % ny;
            let z = i / (nx * ny);
            if x > 0 && mask[i - 1] != 0 {
                union(&mut parent, i as u32, (i - 1) as u32);
            }
            if y > 0 && mask[i - nx] != 0 {
                union(&mut parent, i as u32, (i - nx) as u32);
            }
            if z > 0 && mask[i - nx * ny] != 0 {
                union(&mut parent, i as u32, (i - nx * ny) as u32);
            }
        }
        let mut number = vec![0u32; mask.len()];
        let mut count = 0;
        let mut labels = vec![0u32; mask.len()];
        for i in 0..mask.len() {
            if mask[i] == 0 {
                continue;
            }
            let root = find(&mut parent, i as u32) as usize;
            if number[root] == 0 {
                count += 1;
                number[root] = count;
            }
            labels[i] = number[root];
        }
        (labels, count)
    }

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn unit(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32
        }
    }

    #[test]
    fn random_masks_match_the_voxel_reference_and_the_fused_threshold() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // Columns below, at and across the 64-voxel words; enough planes for several slabs
        // per thread, so components cross slab boundaries.
        for dims in [
            [1, 1, 1],
            [1, 3, 5],
            [9, 7, 64],
            [17, 5, 70],
            [12, 4, 130],
            [40, 3, 3],
        ] {
            for density in [0.05f32, 0.3, 0.55, 0.8, 1.0] {
                let n = dims.iter().product::<usize>();
                let mut v: Vec<f32> = (0..n).map(|_| rng.unit()).collect();
                if n > 4 {
                    v[n / 2] = f32::NAN;
                }
                let mask = super::super::cpu::threshold(&v, 0.0, density);
                let expected = reference_label(&mask, dims);
                assert_eq!(label(&mask, dims), expected, "{dims:?} {density}");
                assert_eq!(
                    label_threshold(&v, dims, 0.0, density),
                    expected,
                    "{dims:?} {density}"
                );
            }
        }
    }

    #[test]
    fn row_bits_match_the_scalar_tests() {
        let mut rng = Rng(7);
        for nx in [1usize, 63, 64, 65, 128, 200] {
            let row: Vec<f32> = (0..nx).map(|_| rng.unit() * 4.0 - 2.0).collect();
            let mask: Vec<u8> = row.iter().map(|v| (*v > 0.0) as u8 * 3).collect();
            let mut a = vec![0u64; nx.div_ceil(64)];
            let mut b = a.clone();
            threshold_row_bits(&row, -1.0, 0.5, &mut a);
            mask_row_bits(&mask, &mut b);
            for x in 0..nx {
                let bit = |w: &[u64]| (w[x / 64] >> (x % 64)) & 1 == 1;
                assert_eq!(bit(&a), (-1.0..=0.5).contains(&row[x]), "{nx} {x}");
                assert_eq!(bit(&b), mask[x] != 0, "{nx} {x}");
            }
            if nx % 64 != 0 {
                // Nothing past the row's end.
                assert_eq!(a[a.len() - 1] >> (nx % 64), 0);
                assert_eq!(b[b.len() - 1] >> (nx % 64), 0);
            }
        }
    }

    #[test]
    fn a_u_shape_merges_late_across_planes_and_slabs() {
        // Two pillars along z, at both ends of row 0, and a third one starting in the
        // second plane on row 1 between them: all joined only by a bar on row 1 of the last
        // plane, so the union happens in the last slab, long after the numbers' runs.
        let dims = [24, 2, 9];
        let plane = 18;
        let mut m = vec![0u8; 24 * plane];
        for z in 0..24 {
            m[z * plane] = 1;
            m[z * plane + 8] = 1;
            if (1..23).contains(&z) {
                m[z * plane + 9 + 4] = 1;
            }
        }
        m[23 * plane + 9..23 * plane + 18].fill(1);
        let (l, n) = label(&m, dims);
        assert_eq!(n, 1);
        assert_eq!((l[0], l[8], l[plane + 13], l[23 * plane + 9]), (1, 1, 1, 1));
        // Without the last plane's bar: three components, in raster order.
        m[23 * plane + 9..23 * plane + 18].fill(0);
        m[23 * plane + 9 + 4] = 0;
        let (l, n) = label(&m, dims);
        assert_eq!(n, 3);
        assert_eq!((l[0], l[8], l[plane + 13]), (1, 2, 3));
        assert_eq!(label(&m, dims), reference_label(&m, dims));
    }

    #[test]
    fn components_spanning_slab_boundaries_keep_raster_numbers() {
        // A staircase through all planes (one component, first voxel in plane 0), and a
        // dot in every plane away from it, on row 2 or 3 by turns so that dots of
        // neighbouring planes do not touch (a component each), numbered after the stairs'
        // first voxel in plane order.
        let dims = [30, 4, 4];
        let plane = 16;
        let mut m = vec![0u8; 30 * plane];
        for z in 0..30 {
            let y = z % 4;
            m[z * plane + y * 4..z * plane + y * 4 + 2].fill(1);
            if z > 0 {
                // Column 0 from the plane before's step to this one's: above that step.
                let p = (z - 1) % 4;
                for r in p.min(y)..=p.max(y) {
                    m[z * plane + r * 4] = 1;
                }
            }
            m[z * plane + (2 + z % 2) * 4 + 3] = 1;
        }
        let (l, n) = label(&m, dims);
        assert_eq!(n, 31);
        assert!((0..30).all(|z| l[z * plane + (z % 4) * 4] == 1));
        assert!((0..30).all(|z| l[z * plane + (2 + z % 2) * 4 + 3] == z as u32 + 2));
        assert_eq!((l.clone(), n), reference_label(&m, dims));
    }

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
