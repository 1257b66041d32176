//! The wgpu versions of the reductions and of [`super::labels`]: masked sum, extremes and
//! count; connected components; erosion, dilation and hole filling. An `impl Gpu` beside
//! [`super::gpu`], with its shaders in `shaders/` (`reduce.wgsl`, `morph.wgsl`,
//! `label.wgsl`).
//!
//! - **Masks.** WGSL storage has no bytes, so a mask goes to the GPU as one u32 per voxel
//!   (0 or 1, any nonzero byte counting as 1), the layout `threshold.wgsl` writes, and
//!   comes back as bytes. Four bytes a voxel, like the f32 volumes, so a mask slab is as
//!   many planes as a value slab.
//! - **Results** equal the CPU backend's: labels, eroded, dilated and filled masks to the
//!   voxel, minimum, maximum and count exactly; sums are f32 within a workgroup's 1024
//!   values and f64 across workgroups, so they differ from the CPU's f64 sum by rounding
//!   only (a few 1e-7 of the sum of magnitudes).
//! - **Labelling** is minimum-label propagation (`label.wgsl`): each foreground voxel
//!   starts with its own index + 1 and passes lower it to the least label among its
//!   neighbours, with pointer jumping and hooking, until a pass changes nothing (an
//!   atomic flag per pass, read back every [`LABEL_BATCH`] passes). Each component ends
//!   labelled with its first voxel in raster order, so numbering by first appearance
//!   gives scipy's numbers, as [`super::labels::label`] does.
//! - **Large volumes.** A volume past one storage binding is labelled in slabs of whole
//!   planes, each on its own; the labels are a forest of voxel indices (a root names
//!   itself), and the host joins the components that touch across each cut with
//!   union-find over the two planes, lower root winning, before numbering. Erosion and
//!   dilation run on slabs with a halo of as many planes as steps per round (a quarter of
//!   a slab at most; more steps take more rounds). Hole filling labels the background;
//!   per slice, it labels it in `label.wgsl`'s planar mode (no joins between slices, so
//!   no joins at the cuts either) and the components touching a slice's edge are outside.

use super::gpu::{bytes_u32, f32_bytes, gpu_error, u32_bytes, Gpu};
use super::{Dims, Reduction};
use crate::error::Result;

/// Values each invocation of `reduce.wgsl` folds (its `PER_THREAD`).
const REDUCE_PER_THREAD: usize = 16;
/// Values per workgroup of `reduce.wgsl`: one partial each.
const REDUCE_GROUP: usize = 64 * REDUCE_PER_THREAD;
/// Labelling passes run between reads of the change flags.
const LABEL_BATCH: usize = 4;

/// The pipelines of this module, compiled with the others by [`Gpu::open`].
pub(super) struct Pipelines {
    reduce: wgpu::ComputePipeline,
    morph: wgpu::ComputePipeline,
    label: wgpu::ComputePipeline,
}

impl Pipelines {
    pub(super) fn new(pipeline: &dyn Fn(&str, &str) -> wgpu::ComputePipeline) -> Pipelines {
        Pipelines {
            reduce: pipeline("reduce", include_str!("shaders/reduce.wgsl")),
            morph: pipeline("morph", include_str!("shaders/morph.wgsl")),
            label: pipeline("label", include_str!("shaders/label.wgsl")),
        }
    }
}

/// A mask as one little-endian u32 (0 or 1) per voxel.
pub(super) fn mask_words(mask: &[u8]) -> Vec<u8> {
    mask.iter()
        .flat_map(|&v| [u8::from(v != 0), 0, 0, 0])
        .collect()
}

/// The root of `i` in the label forest (`labels[i] - 1` is `i`'s parent, a root its own),
/// halving the path on the way.
fn find(labels: &mut [u32], mut i: usize) -> usize {
    loop {
        let parent = labels[i] as usize - 1;
        if parent == i {
            return i;
        }
        labels[i] = labels[parent];
        i = parent;
    }
}

/// Number the trees of a label forest whose parents come before their children, in the
/// raster order of their roots: 1.. in place, background staying 0. Returns the count.
fn renumber(labels: &mut [u32]) -> u32 {
    let mut next = 0;
    for i in 0..labels.len() {
        if labels[i] == 0 {
            continue;
        }
        let parent = labels[i] as usize - 1;
        labels[i] = if parent == i {
            next += 1;
            next
        } else {
            // Numbered already: parents come first.
            labels[parent]
        };
    }
    next
}

impl Gpu {
    /// Whole planes of `plane` voxels, 4 bytes each, that fit one binding.
    fn planes_per_binding(&self, plane: usize) -> usize {
        (self.max_binding / (plane as u64 * 4)) as usize
    }

    /// As [`super::cpu::reduce`]: sum, minimum, maximum and count of the values where
    /// `mask` is set (all of them without one).
    pub fn reduce(&self, src: &[f32], mask: Option<&[u8]>) -> Result<Reduction> {
        if let Some(m) = mask {
            assert_eq!(m.len(), src.len());
        }
        let placeholder = self.storage(&[0; 4], "no mask");
        let mut total = Reduction::EMPTY;
        for start in (0..src.len()).step_by(self.chunk()) {
            let range = start..(start + self.chunk()).min(src.len());
            let values = self.storage(&f32_bytes(&src[range.clone()]), "values");
            let mask = mask.map(|m| self.storage(&mask_words(&m[range.clone()]), "mask"));
            let bytes = (range.len().div_ceil(REDUCE_GROUP) * 16) as u64;
            let partials = self.output(bytes, "partials");
            self.run(
                &self.labels.reduce,
                range.len().div_ceil(REDUCE_PER_THREAD) as u64,
                &[&values, mask.as_ref().unwrap_or(&placeholder), &partials],
                |_| self.uniform(&[range.len() as u32, u32::from(mask.is_some()), 0, 0]),
            );
            let words: Vec<u32> = bytes_u32(&self.read(&partials, bytes)?).collect();
            for p in words.chunks_exact(4) {
                total.sum += f64::from(f32::from_bits(p[0]));
                total.min = total.min.min(f32::from_bits(p[1]));
                total.max = total.max.max(f32::from_bits(p[2]));
                total.count += u64::from(p[3]);
            }
        }
        Ok(total)
    }

    /// As [`super::labels::dilate`].
    pub fn dilate(&self, mask: &[u8], dims: Dims, iterations: usize) -> Result<Vec<u8>> {
        self.morph(mask, dims, iterations, true)
    }

    /// As [`super::labels::erode`].
    pub fn erode(&self, mask: &[u8], dims: Dims, iterations: usize) -> Result<Vec<u8>> {
        self.morph(mask, dims, iterations, false)
    }

    fn morph(&self, mask: &[u8], dims: Dims, iterations: usize, grow: bool) -> Result<Vec<u8>> {
        let [nz, ny, nx] = dims;
        let plane = ny * nx;
        assert_eq!(mask.len(), nz * plane);
        let mut m: Vec<u8> = mask.iter().map(|&v| u8::from(v != 0)).collect();
        if m.is_empty() || iterations == 0 {
            return Ok(m);
        }
        let fit = self.planes_per_binding(plane);
        let mut left = iterations;
        while left > 0 {
            // Steps this round, and the halo of planes they need on each side of a slab.
            let (steps, halo) = if fit >= nz {
                (left, 0)
            } else if fit >= 3 {
                let h = left.min((fit / 4).max(1));
                (h, h)
            } else {
                return Err(gpu_error(format!(
                    "morphology on {ny}x{nx} planes: a plane and its halo of one on each \
                     side do not fit a {}-byte binding",
                    self.max_binding
                )));
            };
            let slab = (fit - 2 * halo).min(nz);
            let mut next = Vec::with_capacity(m.len());
            for z0 in (0..nz).step_by(slab) {
                let z1 = (z0 + slab).min(nz);
                let (in0, in1) = (z0.saturating_sub(halo), (z1 + halo).min(nz));
                let voxels = (in1 - in0) * plane;
                let mut a = self.storage(&mask_words(&m[in0 * plane..in1 * plane]), "mask");
                let mut b = self.output(voxels as u64 * 4, "mask");
                for _ in 0..steps {
                    self.run(&self.labels.morph, voxels as u64, &[&a, &b], |stride| {
                        self.uniform(&[
                            nx as u32,
                            ny as u32,
                            (in1 - in0) as u32,
                            u32::from(grow),
                            stride,
                            0,
                            0,
                            0,
                        ])
                    });
                    std::mem::swap(&mut a, &mut b);
                }
                let words = self.read(&a, voxels as u64 * 4)?;
                let core = &words[(z0 - in0) * plane * 4..(z1 - in0) * plane * 4];
                next.extend(core.chunks_exact(4).map(|w| w[0]));
            }
            m = next;
            left -= steps;
        }
        Ok(m)
    }

    /// As [`super::labels::label`]: the 6-connected components of `mask`, numbered 1.. in
    /// the raster order of their first voxel, and their count.
    pub fn label(&self, mask: &[u8], dims: Dims) -> Result<(Vec<u32>, u32)> {
        self.label_components(mask, dims, false)
    }

    /// [`Gpu::label`], or with `planar` the 4-connected components of each slice on its
    /// own (no slice joins the next): slabs then need no joining at their cuts.
    fn label_components(&self, mask: &[u8], dims: Dims, planar: bool) -> Result<(Vec<u32>, u32)> {
        let [nz, ny, nx] = dims;
        let plane = ny * nx;
        let n = nz * plane;
        assert_eq!(mask.len(), n);
        if n >= u32::MAX as usize {
            return Err(gpu_error(format!(
                "labelling {n} voxels: labels are u32 voxel indices + 1"
            )));
        }
        if n == 0 {
            return Ok((Vec::new(), 0));
        }
        let slab = self.planes_per_binding(plane).min(nz);
        if slab == 0 {
            return Err(gpu_error(format!(
                "labelling {ny}x{nx} planes: a plane does not fit a {}-byte binding",
                self.max_binding
            )));
        }
        let mut labels: Vec<u32> = Vec::with_capacity(n);
        for z0 in (0..nz).step_by(slab) {
            let base = z0 * plane;
            let count = ((z0 + slab).min(nz) - z0) * plane;
            let start: Vec<u32> = (base..base + count)
                .map(|i| if mask[i] != 0 { i as u32 + 1 } else { 0 })
                .collect();
            let buffer = self.storage(&u32_bytes(&start), "labels");
            self.propagate(&buffer, count, [ny, nx], base, planar)?;
            labels.extend(bytes_u32(&self.read(&buffer, count as u64 * 4)?));
        }
        // Join the components that meet across each cut between slabs.
        let cuts = if planar { 0..0 } else { slab..nz };
        for cut in cuts.step_by(slab) {
            for k in 0..plane {
                let (a, b) = ((cut - 1) * plane + k, cut * plane + k);
                if labels[a] != 0 && labels[b] != 0 {
                    let (ra, rb) = (find(&mut labels, a), find(&mut labels, b));
                    let (lo, hi) = (ra.min(rb), ra.max(rb));
                    labels[hi] = lo as u32 + 1;
                }
            }
        }
        let count = renumber(&mut labels);
        Ok((labels, count))
    }

    /// Run `label.wgsl` over the `count` voxels of `labels` (voxel `base` of the volume
    /// first) until a pass changes nothing.
    fn propagate(
        &self,
        labels: &wgpu::Buffer,
        count: usize,
        [ny, nx]: [usize; 2],
        base: usize,
        planar: bool,
    ) -> Result<()> {
        loop {
            let flags = self.storage(&[0; LABEL_BATCH * 4], "changed");
            for pass in 0..LABEL_BATCH {
                self.run(
                    &self.labels.label,
                    count as u64,
                    &[labels, &flags],
                    |stride| {
                        self.uniform(&[
                            count as u32,
                            nx as u32,
                            ny as u32,
                            base as u32,
                            stride,
                            pass as u32,
                            u32::from(planar),
                            0,
                        ])
                    },
                );
            }
            let changed: Vec<u32> =
                bytes_u32(&self.read(&flags, LABEL_BATCH as u64 * 4)?).collect();
            if changed.contains(&0) {
                return Ok(());
            }
        }
    }

    /// As [`super::labels::fill_holes`]: set every background voxel that cannot reach the
    /// border through 6-connected background. The background is labelled on the GPU; the
    /// components with a voxel on the border are outside.
    pub fn fill_holes(&self, mask: &[u8], dims: Dims) -> Result<Vec<u8>> {
        let background: Vec<u8> = mask.iter().map(|&v| u8::from(v == 0)).collect();
        let labelled = self.label(&background, dims)?;
        Ok(fill_inside(labelled, |i| super::labels::on_border(i, dims)))
    }

    /// As [`super::labels::fill_holes_per_slice`]: the holes of each slice filled on their
    /// own (4-connected background reaching the slice's edge is outside). The background
    /// is labelled slice by slice on the GPU (`label.wgsl`'s planar mode); the components
    /// with a voxel on their slice's edge are outside. (Labelling a slice as a volume of
    /// one plane would not do for [`Gpu::fill_holes`]: every voxel of it is on that
    /// volume's border.)
    pub fn fill_holes_per_slice(&self, mask: &[u8], dims: Dims) -> Result<Vec<u8>> {
        let [_, ny, nx] = dims;
        let background: Vec<u8> = mask.iter().map(|&v| u8::from(v == 0)).collect();
        let labelled = self.label_components(&background, dims, true)?;
        Ok(fill_inside(labelled, |i| {
            let (y, x) = ((i / nx) % ny, i % nx);
            y == 0 || x == 0 || y + 1 == ny || x + 1 == nx
        }))
    }
}

/// The filled mask from the labelled background: set where the background is not, and on
/// the background components that have no voxel where `edge` holds.
fn fill_inside((labels, count): (Vec<u32>, u32), edge: impl Fn(usize) -> bool) -> Vec<u8> {
    let mut outside = vec![false; count as usize + 1];
    for (i, &l) in labels.iter().enumerate() {
        if l != 0 && edge(i) {
            outside[l as usize] = true;
        }
    }
    labels
        .iter()
        .map(|&l| u8::from(l == 0 || !outside[l as usize]))
        .collect()
}
