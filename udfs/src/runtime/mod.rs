//! The compute runtime: a small set of volume ops, each with a native CPU implementation
//! and (where written) a wgpu one, that findings and networks are written against.
//!
//! Volumes are dense f32 arrays in (slice, row, column) order, the layout
//! [`crate::Volume`] holds; masks are one byte per voxel (0 or 1). Filters work in voxel
//! units: callers turn millimetres into voxels with the volume's spacing.
//!
//! | op | CPU | GPU |
//! |---|---|---|
//! | separable convolution along an axis (Gaussian, derivatives, LoG) | `cpu` | `gpu` |
//! | threshold to a mask | `cpu` | `gpu` |
//! | histograms (masked: [`Backend::histogram_masked`]) | `cpu` | `gpu` |
//! | reductions (sum, min, max, count; masked) | `cpu` | `gpu_labels` |
//! | connected components (of a mask, or of a threshold without one), erosion, dilation, hole filling (3-D) | `labels` | `gpu_labels` |
//! | hole filling per slice (background labelled within each slice) | `labels` | `gpu_labels` |
//! | largest component ([`largest_component`]: labels on the backend, sizes on the host) | `labels` | `gpu_labels` |
//! | trilinear resampling to a target spacing | `resample` | `gpu` |
//! | Hessian eigenvalues (from the Gaussian second derivatives) | `hessian` | `gpu` |
//!
//! Host-only helpers, over what the ops return: [`labels::label_sizes`] and
//! [`labels::neighbours`].

pub mod cpu;
pub mod gpu;
mod gpu_labels;
pub mod hessian;
pub mod kernels;
pub mod labels;
pub mod resample;

pub use hessian::symmetric_eigenvalues_3x3;

use std::sync::Arc;

use crate::error::{Error, Result};

/// (slices, rows, columns).
pub type Dims = [usize; 3];

/// Sum, extremes and count of a set of voxels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reduction {
    pub sum: f64,
    pub min: f32,
    pub max: f32,
    pub count: u64,
}

impl Reduction {
    pub const EMPTY: Reduction = Reduction {
        sum: 0.0,
        min: f32::INFINITY,
        max: f32::NEG_INFINITY,
        count: 0,
    };

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

/// What a computation gains from a GPU: how `auto` chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Workload {
    /// Volume passes with a host round trip per op (findings, model preprocessing). On an
    /// H100 these ran 8x slower than on the machine's 16 CPU cores (BENCHMARKS.md, "CT
    /// findings and the built-in embedding per backend"), so `auto` keeps them on the
    /// CPU; `gpu` still runs them there.
    VolumeOps,
    /// Networks whose activations stay on the device (registered ONNX models): `auto`
    /// takes a hardware GPU (51x the CPU on a 3-D ResNet-18 on that H100).
    Network,
}

/// Where ops run.
#[derive(Clone)]
pub enum Backend {
    Cpu,
    Gpu(Arc<gpu::Gpu>),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl Backend {
    /// The backend `MEDLAKE_DEVICE` asks for: `cpu`; `gpu` (any adapter, a software one
    /// included, or an error); `auto` or unset: a hardware GPU when there is one, else the
    /// CPU (a software adapter is slower than the CPU backend, so it is not chosen).
    pub fn from_env() -> Result<Backend> {
        Self::choose(std::env::var("MEDLAKE_DEVICE").ok().as_deref())
    }

    /// As [`Backend::from_env`], for a given setting.
    pub fn choose(setting: Option<&str>) -> Result<Backend> {
        Self::choose_for(setting, Workload::Network)
    }

    /// As [`Backend::choose`], where `auto` depends on the workload ([`Workload`]).
    pub fn choose_for(setting: Option<&str>, workload: Workload) -> Result<Backend> {
        match setting.map(str::trim).unwrap_or("auto") {
            "auto" | "" if workload == Workload::VolumeOps => Ok(Backend::Cpu),
            "cpu" => Ok(Backend::Cpu),
            "gpu" => Ok(Backend::Gpu(Arc::new(gpu::Gpu::open(
                gpu::AdapterChoice::AnyIncludingSoftware,
            )?))),
            "auto" | "" => Ok(gpu::Gpu::open(gpu::AdapterChoice::HardwareOnly)
                .map(|g| Backend::Gpu(Arc::new(g)))
                .unwrap_or(Backend::Cpu)),
            other => Err(Error::Device(format!(
                "MEDLAKE_DEVICE={other:?}: expected cpu, gpu or auto"
            ))),
        }
    }

    /// Run one op, and with `MEDLAKE_TRACE_OPS=1` print its name, backend and wall time
    /// to stderr (`medlake-op<TAB>name<TAB>backend<TAB>ms`): where a pipeline's time
    /// goes, per op, on either backend.
    fn traced<T>(&self, op: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if !*TRACE.get_or_init(|| std::env::var_os("MEDLAKE_TRACE_OPS").is_some()) {
            return f();
        }
        let t = std::time::Instant::now();
        let out = f();
        let kind = match self {
            Backend::Cpu => "cpu",
            Backend::Gpu(_) => "gpu",
        };
        eprintln!(
            "medlake-op\t{op}\t{kind}\t{:.3}",
            t.elapsed().as_secs_f64() * 1e3
        );
        out
    }

    /// "cpu", or "gpu: <adapter>", for query metrics and error rows.
    pub fn name(&self) -> String {
        match self {
            Backend::Cpu => "cpu".into(),
            Backend::Gpu(g) => format!("gpu: {}", g.describe()),
        }
    }

    pub fn convolve_axis(
        &self,
        src: &[f32],
        dims: Dims,
        axis: usize,
        k: &[f32],
    ) -> Result<Vec<f32>> {
        self.traced("convolve_axis", || match self {
            Backend::Cpu => Ok(cpu::convolve_axis(src, dims, axis, k)),
            Backend::Gpu(g) => g.convolve_axis(src, dims, axis, k),
        })
    }

    pub fn threshold(&self, src: &[f32], lo: f32, hi: f32) -> Result<Vec<u8>> {
        self.traced("threshold", || match self {
            Backend::Cpu => Ok(cpu::threshold(src, lo, hi)),
            Backend::Gpu(g) => g.threshold(src, lo, hi),
        })
    }

    pub fn histogram(&self, src: &[f32], bins: usize, lo: f32, hi: f32) -> Result<Vec<u64>> {
        self.traced("histogram", || match self {
            Backend::Cpu => Ok(cpu::histogram(src, None, bins, lo, hi)),
            Backend::Gpu(g) => g.histogram(src, bins, lo, hi),
        })
    }

    /// Counts of the values where `mask` is set in `bins` equal bins over `[lo, hi)`:
    /// [`cpu::histogram`] with a mask. Both backends bin in f32 alike, so the counts agree.
    pub fn histogram_masked(
        &self,
        src: &[f32],
        mask: &[u8],
        bins: usize,
        lo: f32,
        hi: f32,
    ) -> Result<Vec<u64>> {
        self.traced("histogram_masked", || match self {
            Backend::Cpu => Ok(cpu::histogram(src, Some(mask), bins, lo, hi)),
            Backend::Gpu(g) => g.histogram_masked(src, Some(mask), bins, lo, hi),
        })
    }

    /// Sum, minimum, maximum and count of the voxels where `mask` is set (all without
    /// one). On the GPU the sum is f32 within blocks of 1024 values, f64 across them.
    pub fn reduce(&self, src: &[f32], mask: Option<&[u8]>) -> Result<Reduction> {
        self.traced("reduce", || match self {
            Backend::Cpu => Ok(cpu::reduce(src, mask)),
            Backend::Gpu(g) => g.reduce(src, mask),
        })
    }

    /// The 6-connected components of `mask`, numbered 1.. in the raster order of their
    /// first voxel (scipy's `label`), and their count: [`labels::label`].
    pub fn label(&self, mask: &[u8], dims: Dims) -> Result<(Vec<u32>, u32)> {
        self.traced("label", || match self {
            Backend::Cpu => Ok(labels::label(mask, dims)),
            Backend::Gpu(g) => g.label(mask, dims),
        })
    }

    /// [`Backend::label`] of the mask `lo <= v <= hi` ([`Backend::threshold`]): on the
    /// CPU without the mask, runs found straight from the values
    /// ([`labels::label_threshold`]); on the GPU the threshold then the labelling.
    pub fn label_threshold(
        &self,
        src: &[f32],
        dims: Dims,
        lo: f32,
        hi: f32,
    ) -> Result<(Vec<u32>, u32)> {
        self.traced("label_threshold", || match self {
            Backend::Cpu => Ok(labels::label_threshold(src, dims, lo, hi)),
            Backend::Gpu(g) => g.label(&g.threshold(src, lo, hi)?, dims),
        })
    }

    /// Binary dilation by the 6-neighbour cross, `iterations` times: [`labels::dilate`].
    pub fn dilate(&self, mask: &[u8], dims: Dims, iterations: usize) -> Result<Vec<u8>> {
        self.traced("dilate", || match self {
            Backend::Cpu => Ok(labels::dilate(mask, dims, iterations)),
            Backend::Gpu(g) => g.dilate(mask, dims, iterations),
        })
    }

    /// Binary erosion by the 6-neighbour cross, `iterations` times, outside the volume
    /// counting as background: [`labels::erode`].
    pub fn erode(&self, mask: &[u8], dims: Dims, iterations: usize) -> Result<Vec<u8>> {
        self.traced("erode", || match self {
            Backend::Cpu => Ok(labels::erode(mask, dims, iterations)),
            Backend::Gpu(g) => g.erode(mask, dims, iterations),
        })
    }

    /// Set the background voxels that cannot reach the border through 6-connected
    /// background: [`labels::fill_holes`].
    pub fn fill_holes(&self, mask: &[u8], dims: Dims) -> Result<Vec<u8>> {
        self.traced("fill_holes", || match self {
            Backend::Cpu => Ok(labels::fill_holes(mask, dims)),
            Backend::Gpu(g) => g.fill_holes(mask, dims),
        })
    }

    /// Fill the holes of each slice on its own (4-connected background reaching the
    /// slice's edge is outside): [`labels::fill_holes_per_slice`].
    pub fn fill_holes_per_slice(&self, mask: &[u8], dims: Dims) -> Result<Vec<u8>> {
        self.traced("fill_holes_per_slice", || match self {
            Backend::Cpu => Ok(labels::fill_holes_per_slice(mask, dims)),
            Backend::Gpu(g) => g.fill_holes_per_slice(mask, dims),
        })
    }
}

/// Keep only the largest 6-connected component of `mask` (all zero if it is empty; of
/// equal sizes, the one numbered last): [`Backend::label`], then the sizes counted on the
/// host. Both backends number alike, so they keep the same component.
pub fn largest_component(backend: &Backend, mask: &[u8], dims: Dims) -> Result<Vec<u8>> {
    use rayon::prelude::*;

    let (labels, count) = backend.label(mask, dims)?;
    let sizes = labels::label_sizes(&labels, count);
    let Some(best) = (1..sizes.len()).max_by_key(|&l| sizes[l]) else {
        return Ok(vec![0; mask.len()]);
    };
    Ok(labels
        .par_iter()
        .map(|l| u8::from(*l as usize == best))
        .collect())
}

/// Gaussian smoothing (or a derivative of it: `order` per axis, 0–2) with `sigma` voxels
/// per axis; an axis with sigma 0 and order 0 is left alone. scipy's
/// `gaussian_filter(input, sigma, order, mode="nearest")`.
pub fn gaussian(
    backend: &Backend,
    src: &[f32],
    dims: Dims,
    sigma: [f64; 3],
    order: [usize; 3],
) -> Result<Vec<f32>> {
    let passes: Vec<(usize, Vec<f32>)> = (0..3)
        .filter(|&axis| sigma[axis] > 0.0 || order[axis] != 0)
        .map(|axis| (axis, kernels::gaussian(sigma[axis], order[axis])))
        .collect();
    if passes.is_empty() {
        return Ok(src.to_vec());
    }
    if let Backend::Gpu(_) = backend {
        let mut out: Option<Vec<f32>> = None;
        for (axis, k) in &passes {
            let input = out.as_deref().unwrap_or(src);
            out = Some(backend.convolve_axis(input, dims, *axis, k)?);
        }
        return Ok(out.expect("at least one pass"));
    }
    // Two buffers, passes ping-ponging between them.
    let mut a = vec![0f32; src.len()];
    let mut b = if passes.len() > 1 {
        vec![0f32; src.len()]
    } else {
        Vec::new()
    };
    cpu::convolve_axis_into(src, dims, passes[0].0, &passes[0].1, &mut a);
    for (axis, k) in &passes[1..] {
        cpu::convolve_axis_into(&a, dims, *axis, k, &mut b);
        std::mem::swap(&mut a, &mut b);
    }
    Ok(a)
}

/// The Laplacian of Gaussian: the sum of the three second derivatives, as scipy's
/// `gaussian_laplace(input, sigma, mode="nearest")`.
pub fn laplacian_of_gaussian(
    backend: &Backend,
    src: &[f32],
    dims: Dims,
    sigma: [f64; 3],
) -> Result<Vec<f32>> {
    if let Backend::Cpu = backend {
        return Ok(cpu_laplacian_of_gaussian(src, dims, sigma));
    }
    let mut sum = vec![0f32; src.len()];
    for axis in 0..3 {
        let mut order = [0; 3];
        order[axis] = 2;
        let d = gaussian(backend, src, dims, sigma, order)?;
        for (s, v) in sum.iter_mut().zip(d) {
            *s += v;
        }
    }
    Ok(sum)
}

/// The Laplacian of Gaussian on the CPU in 8 passes and three buffers: the z-smoothed
/// volume is shared by the y and x terms, and the last pass of each term adds into the
/// sum. The same sums as [`laplacian_of_gaussian`]'s, in the same order per term.
fn cpu_laplacian_of_gaussian(src: &[f32], dims: Dims, sigma: [f64; 3]) -> Vec<f32> {
    let k = |axis: usize, order: usize| kernels::gaussian(sigma[axis], order);
    let n = src.len();
    let (mut a, mut b, mut sum) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    // d²/dz²: z order 2, then y, x smoothing.
    cpu::convolve_axis_into(src, dims, 0, &k(0, 2), &mut a);
    cpu::convolve_axis_into(&a, dims, 1, &k(1, 0), &mut b);
    cpu::convolve_axis_into(&b, dims, 2, &k(2, 0), &mut sum);
    // The y and x terms share the z smoothing.
    cpu::convolve_axis_into(src, dims, 0, &k(0, 0), &mut a);
    cpu::convolve_axis_into(&a, dims, 1, &k(1, 2), &mut b);
    cpu::convolve_axis_add(&b, dims, 2, &k(2, 0), &mut sum);
    cpu::convolve_axis_into(&a, dims, 1, &k(1, 0), &mut b);
    cpu::convolve_axis_add(&b, dims, 2, &k(2, 2), &mut sum);
    sum
}

/// Trilinear resampling of `src` (`dims`, voxels of `spacing` mm per axis) to voxels of
/// `target` mm: the resampled volume and its dims. Along each axis the output has
/// `floor((n - 1) · spacing / target) + 1` voxels and output voxel `i` samples input
/// coordinate `i · target / spacing` (voxel 0 on voxel 0, edges clamped), as scipy's
/// `map_coordinates(v, coords, order=1, mode="nearest")`; see [`resample`] (the module).
///
/// The affine changes only in its direction columns, each rescaled to the new spacing
/// (column i, for columns, by `target[2] / spacing[2]`; j by `target[1] / spacing[1]`; k
/// by `target[0] / spacing[0]`); the origin stays: [`resample::resampled_affine`].
pub fn resample(
    backend: &Backend,
    src: &[f32],
    dims: Dims,
    spacing: [f64; 3],
    target: [f64; 3],
) -> Result<(Vec<f32>, Dims)> {
    let plan = resample::plan(dims, spacing, target)?;
    let out = match backend {
        Backend::Cpu => resample::cpu(src, dims, &plan),
        Backend::Gpu(g) => g.resample(src, dims, &plan)?,
    };
    Ok((out, plan.dims))
}

/// The eigenvalues of the Hessian of Gaussian at scale `sigma` (voxels per axis), per
/// voxel and ascending (λ1 ≤ λ2 ≤ λ3): the six second derivatives from [`gaussian`]
/// (scipy's `gaussian_filter(v, sigma, order=...)`), then each voxel's symmetric 3×3
/// matrix (`numpy.linalg.eigvalsh`); see [`hessian`]. Holds six derivative volumes at once.
pub fn hessian_eigenvalues(
    backend: &Backend,
    src: &[f32],
    dims: Dims,
    sigma: [f64; 3],
) -> Result<[Vec<f32>; 3]> {
    let mut h = Vec::with_capacity(6);
    for order in hessian::DERIVATIVES {
        h.push(gaussian(backend, src, dims, sigma, order)?);
    }
    let h: [&[f32]; 6] = std::array::from_fn(|k| h[k].as_slice());
    match backend {
        Backend::Cpu => Ok(hessian::cpu_eigenvalues(h, dims[1] * dims[2])),
        Backend::Gpu(g) => g.symmetric_eigenvalues(h),
    }
}
