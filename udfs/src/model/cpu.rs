//! The CPU kernels of the model runtime.
//!
//! Convolution, where the CPU has AVX-512F (detected at run time; `MEDLAKE_NO_AVX512`
//! turns it off): an own kernel that keeps a block of 8 output channels by 32 output
//! positions in 16 vector registers over all of k, then applies the epilogue (bias, the
//! BatchNormalization folded in by the fusion pass, Relu or LeakyRelu) and stores. Where
//! the output rows are at least 16 wide, its B operand is read straight from the input
//! (`conv3d_direct`): the input is copied once into a zero-padded buffer whose lines are
//! split into stride phases, so that every row of the implicit im2col matrix is a run of
//! consecutive floats (no im2col, no packing); the jobs are blocks of output rows. Narrower
//! outputs (deep layers) gather im2col tiles in the kernel's panel layout instead, split
//! over output channels too when there are few tiles. Without AVX-512: im2col over
//! matrixmultiply's SGEMM, the tiles spread over rayon's threads (1×1×1 convolutions with
//! unit strides and no padding skip the gather), and the epilogue after it.
//!
//! Fresh outputs of 2 MiB and more ask for transparent huge pages; elementwise ops, the
//! normalizations and same-shape Add/Mul/PRelu run in their input's buffer when the
//! executor hands it over ([`run_owned`]).

use rayon::prelude::*;

use super::ops::{
    axis_index, broadcast, matmul_shape, CoordMode, MatMulShape, NearestMode, Op, ResizeMode,
    ResizeTarget, Window,
};
use super::Tensor;

/// Run one op. The shapes were checked when the run was planned; `out_shape` is the
/// output's.
#[allow(dead_code)] // Model::run calls run_fused; kept for callers without an epilogue
pub(super) fn run(op: &Op, ins: &[&Tensor], out_shape: &[usize]) -> Vec<f32> {
    run_fused(op, ins, out_shape, None)
}

/// An activation applied in a kernel's epilogue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Act {
    Identity,
    Relu,
    LeakyRelu(f32),
}

impl Act {
    #[inline(always)]
    fn apply(self, v: f32) -> f32 {
        match self {
            Act::Identity => v,
            Act::Relu => v.max(0.0),
            Act::LeakyRelu(a) => {
                if v < 0.0 {
                    v * a
                } else {
                    v
                }
            }
        }
    }
}

/// What a convolution's epilogue applies to each output channel `c` after the bias:
/// `act((conv + bias) * scale[c] + shift[c])`, the BatchNormalization and activation nodes
/// that followed it folded in at load (see `Model`'s fusion pass).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Epilogue {
    pub scale: Option<Vec<f32>>,
    pub shift: Option<Vec<f32>>,
    pub act: Act,
}

/// [`run`], with the epilogue of a convolution whose following nodes were fused into it.
pub(super) fn run_fused(
    op: &Op,
    ins: &[&Tensor],
    out_shape: &[usize],
    epilogue: Option<&Epilogue>,
) -> Vec<f32> {
    let x = ins[0];
    match op {
        Op::Conv { window, group } => {
            conv3d(&ConvArgs::new(ins, window, *group, out_shape), epilogue)
        }
        Op::ConvTranspose { window, group, .. } => {
            conv_transpose3d(&ConvArgs::new(ins, window, *group, out_shape))
        }
        Op::Resize {
            mode,
            coord,
            target,
        } => resize(x, *mode, *coord, target, out_shape),
        _ if in_place(op, &x.shape, out_shape) => {
            run_owned(op, copy(&x.data), &x.shape, &ins[1..], epilogue)
        }
        Op::PRelu => binary(x, ins[1], out_shape, |v, s| if v < 0.0 { v * s } else { v }),
        Op::Add => binary(x, ins[1], out_shape, |a, b| a + b),
        Op::Mul => binary(x, ins[1], out_shape, |a, b| a * b),
        Op::BatchNorm { .. }
        | Op::InstanceNorm { .. }
        | Op::GroupNorm { .. }
        | Op::Relu
        | Op::LeakyRelu { .. }
        | Op::Sigmoid
        | Op::Identity
        | Op::Flatten { .. }
        | Op::Reshape { .. } => unreachable!("computed in place"),
        Op::Concat { axis } => concat(ins, axis_index(*axis, x.shape.len()).expect("planned")),
        Op::MaxPool { window } => max_pool(x, window, out_shape),
        Op::AveragePool {
            window,
            count_include_pad,
        } => average_pool(x, window, out_shape, *count_include_pad),
        Op::GlobalAveragePool => {
            let plane: usize = x.shape[2..].iter().product();
            x.data
                .par_chunks(plane)
                .map(|p| (p.iter().map(|&v| f64::from(v)).sum::<f64>() / plane as f64) as f32)
                .collect()
        }
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => gemm(
            x,
            ins[1],
            ins.get(2).copied(),
            *alpha,
            *beta,
            *trans_a,
            *trans_b,
            out_shape,
        ),
        Op::MatMul => matmul(x, ins[1], out_shape),
        Op::Softmax { axis, legacy } => softmax(
            x,
            axis_index(*axis, x.shape.len()).expect("planned"),
            *legacy,
        ),
    }
}

/// A fresh zeroed output buffer of `n` floats; from 2 MiB on, backed by transparent huge
/// pages where the kernel allows (its 4 KiB page faults are a good part of a 64³ model's run
/// time on a VM otherwise; see [`crate::runtime::cpu::advise_huge_pages`]).
fn fresh(n: usize) -> Vec<f32> {
    let v = vec![0f32; n];
    crate::runtime::cpu::advise_huge_pages_over(&v, 2 << 20);
    v
}

/// [`fresh`], a copy of `x`.
fn copy(x: &[f32]) -> Vec<f32> {
    let mut v = fresh(x.len());
    v.par_chunks_mut(1 << 16)
        .zip(x.par_chunks(1 << 16))
        .for_each(|(v, x)| v.copy_from_slice(x));
    v
}

/// [`fresh`], filled with `value`.
fn fresh_filled(n: usize, value: f32) -> Vec<f32> {
    let mut v = fresh(n);
    v.par_chunks_mut(1 << 16).for_each(|c| c.fill(value));
    v
}

/// Whether [`run_owned`] computes `op` in its first input's buffer: elementwise ops, the
/// normalizations, reshapes, and binary ops whose output is the first input's shape.
pub(super) fn in_place(op: &Op, x_shape: &[usize], out_shape: &[usize]) -> bool {
    match op {
        Op::BatchNorm { .. }
        | Op::InstanceNorm { .. }
        | Op::GroupNorm { .. }
        | Op::Relu
        | Op::LeakyRelu { .. }
        | Op::Sigmoid
        | Op::Identity
        | Op::Flatten { .. }
        | Op::Reshape { .. } => true,
        Op::Add | Op::Mul | Op::PRelu => x_shape == out_shape,
        _ => false,
    }
}

/// Run an op for which [`in_place`] holds in its first input's buffer `data` (of shape
/// `x_shape`), the other inputs `rest`; an epilogue's activation applied after it.
pub(super) fn run_owned(
    op: &Op,
    mut data: Vec<f32>,
    x_shape: &[usize],
    rest: &[&Tensor],
    epilogue: Option<&Epilogue>,
) -> Vec<f32> {
    let act = epilogue.map_or(Act::Identity, |e| e.act);
    debug_assert!(epilogue.is_none_or(|e| e.scale.is_none() && e.shift.is_none()));
    match op {
        Op::BatchNorm { scale, shift } => {
            let plane: usize = x_shape[2..].iter().product();
            let c = scale.len();
            data.par_chunks_mut(plane.max(1))
                .enumerate()
                .for_each(|(i, p)| {
                    let (s, t) = (scale[i % c], shift[i % c]);
                    p.iter_mut().for_each(|v| *v = act.apply(*v * s + t));
                });
        }
        Op::InstanceNorm { epsilon } => {
            instance_norm(&mut data, x_shape, rest[0], rest[1], *epsilon, act)
        }
        Op::GroupNorm {
            epsilon,
            groups,
            per_group,
        } => group_norm(
            &mut data, x_shape, rest[0], rest[1], *epsilon, *groups, *per_group, act,
        ),
        Op::Relu => map_in_place(&mut data, |v| v.max(0.0)),
        Op::LeakyRelu { alpha } => {
            let a = *alpha;
            map_in_place(&mut data, move |v| if v < 0.0 { v * a } else { v })
        }
        Op::Sigmoid => map_in_place(&mut data, |v| 1.0 / (1.0 + (-v).exp())),
        Op::Identity | Op::Flatten { .. } | Op::Reshape { .. } => {}
        Op::Add => binary_in_place(&mut data, x_shape, rest[0], move |a, b| act.apply(a + b)),
        Op::Mul => binary_in_place(&mut data, x_shape, rest[0], move |a, b| act.apply(a * b)),
        Op::PRelu => binary_in_place(
            &mut data,
            x_shape,
            rest[0],
            |v, s| {
                if v < 0.0 {
                    v * s
                } else {
                    v
                }
            },
        ),
        _ => unreachable!("{} is not computed in place", op.name()),
    }
    let inline = matches!(
        op,
        Op::BatchNorm { .. } | Op::Add | Op::Mul | Op::InstanceNorm { .. } | Op::GroupNorm { .. }
    );
    if act != Act::Identity && !inline {
        map_in_place(&mut data, move |v| act.apply(v));
    }
    data
}

/// Each (n, c) plane to zero mean and unit variance (population, in f64), then scaled
/// and shifted per channel.
fn instance_norm(
    out: &mut [f32],
    shape: &[usize],
    scale: &Tensor,
    bias: &Tensor,
    epsilon: f32,
    act: Act,
) {
    let c = shape[1];
    let plane: usize = shape[2..].iter().product();
    out.par_chunks_mut(plane.max(1))
        .enumerate()
        .for_each(|(i, p)| {
            let n = p.len() as f64;
            let mean = p.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let var = p
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / n;
            let s = f64::from(scale.data[i % c]) / (var + f64::from(epsilon)).sqrt();
            let t = f64::from(bias.data[i % c]) - mean * s;
            let (s, t) = (s as f32, t as f32);
            p.iter_mut().for_each(|v| *v = act.apply(*v * s + t));
        });
}

/// Each (n, group) block of `c / groups` channels to zero mean and unit variance
/// (population, in f64), then scaled and shifted per group or per channel.
#[allow(clippy::too_many_arguments)]
fn group_norm(
    out: &mut [f32],
    shape: &[usize],
    scale: &Tensor,
    bias: &Tensor,
    epsilon: f32,
    groups: usize,
    per_group: bool,
    act: Act,
) {
    let c = shape[1];
    let cg = c / groups;
    let plane: usize = shape[2..].iter().product();
    out.par_chunks_mut((cg * plane).max(1))
        .enumerate()
        .for_each(|(i, block)| {
            let g = i % groups;
            let n = block.len() as f64;
            let mean = block.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let var = block
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / n;
            let inv = 1.0 / (var + f64::from(epsilon)).sqrt();
            for (j, p) in block.chunks_mut(plane.max(1)).enumerate() {
                let at = if per_group { g } else { g * cg + j };
                let s = f64::from(scale.data[at]) * inv;
                let t = f64::from(bias.data[at]) - mean * s;
                let (s, t) = (s as f32, t as f32);
                p.iter_mut().for_each(|v| *v = act.apply(*v * s + t));
            }
        });
}

fn map_in_place(out: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
    out.par_chunks_mut(1 << 14)
        .for_each(|c| c.iter_mut().for_each(|v| *v = f(*v)));
}

/// `a = f(a, b)` elementwise, `b` broadcast to `a`'s shape.
fn binary_in_place(
    a: &mut [f32],
    a_shape: &[usize],
    b: &Tensor,
    f: impl Fn(f32, f32) -> f32 + Sync,
) {
    if a_shape == b.shape.as_slice() {
        a.par_chunks_mut(1 << 14)
            .zip(b.data.par_chunks(1 << 14))
            .for_each(|(o, b)| o.iter_mut().zip(b).for_each(|(o, b)| *o = f(*o, *b)));
        return;
    }
    let rank = a_shape.len();
    let sb = broadcast_strides(&b.shape, a_shape);
    let last = a_shape.last().copied().unwrap_or(1).max(1);
    let lb = if rank > 0 { sb[rank - 1] } else { 0 };
    a.par_chunks_mut(last).enumerate().for_each(|(row, o)| {
        let (mut ob, mut r) = (0, row);
        for d in (0..rank.saturating_sub(1)).rev() {
            ob += r % a_shape[d] * sb[d];
            r /= a_shape[d];
        }
        if lb == 0 {
            let v = b.data[ob];
            o.iter_mut().for_each(|x| *x = f(*x, v));
        } else {
            for (j, x) in o.iter_mut().enumerate() {
                *x = f(*x, b.data[ob + j * lb]);
            }
        }
    });
}

/// The strides of `shape` (row-major) as seen from a broadcast output of rank `rank`: 0
/// along broadcast axes.
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let rank = out.len();
    let mut strides = vec![0; rank];
    let mut s = 1;
    for d in (0..shape.len()).rev() {
        let o = d + rank - shape.len();
        strides[o] = if shape[d] == 1 && out[o] != 1 { 0 } else { s };
        s *= shape[d];
    }
    strides
}

fn binary(
    a: &Tensor,
    b: &Tensor,
    out_shape: &[usize],
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Vec<f32> {
    let n: usize = out_shape.iter().product();
    if a.shape == b.shape {
        let mut out = copy(&a.data);
        out.par_chunks_mut(1 << 14)
            .zip(b.data.par_chunks(1 << 14))
            .for_each(|(o, b)| o.iter_mut().zip(b).for_each(|(o, b)| *o = f(*o, *b)));
        return out;
    }
    let rank = out_shape.len();
    let (sa, sb) = (
        broadcast_strides(&a.shape, out_shape),
        broadcast_strides(&b.shape, out_shape),
    );
    let last = out_shape.last().copied().unwrap_or(1).max(1);
    let mut out = fresh(n);
    out.par_chunks_mut(last).enumerate().for_each(|(row, o)| {
        // The row's offsets into a and b from its index over the leading axes.
        let (mut oa, mut ob, mut r) = (0, 0, row);
        for d in (0..rank.saturating_sub(1)).rev() {
            let i = r % out_shape[d];
            r /= out_shape[d];
            oa += i * sa[d];
            ob += i * sb[d];
        }
        let (la, lb) = if rank > 0 {
            (sa[rank - 1], sb[rank - 1])
        } else {
            (0, 0)
        };
        for (j, v) in o.iter_mut().enumerate() {
            *v = f(a.data[oa + j * la], b.data[ob + j * lb]);
        }
    });
    out
}

fn concat(ins: &[&Tensor], axis: usize) -> Vec<f32> {
    let shape = &ins[0].shape;
    let outer: usize = shape[..axis].iter().product();
    let total: usize = ins.iter().map(|t| t.data.len()).sum();
    let mut out = fresh(total);
    // Each outer index's block: the inputs' chunks one after the other.
    out.par_chunks_mut((total / outer.max(1)).max(1))
        .enumerate()
        .for_each(|(o, block)| {
            let mut at = 0;
            for t in ins {
                let chunk = t.data.len() / outer.max(1);
                block[at..at + chunk].copy_from_slice(&t.data[o * chunk..(o + 1) * chunk]);
                at += chunk;
            }
        });
    out
}

/// The output positions `o` along one axis whose input coordinate `o * stride + offset`
/// falls inside `0..extent`.
fn valid_range(out: usize, stride: usize, offset: i64, extent: usize) -> std::ops::Range<usize> {
    let s = stride as i64;
    // o * s + offset >= 0  <=>  o >= ceil(-offset / s)
    let lo = if offset >= 0 {
        0
    } else {
        (-offset + s - 1) / s
    };
    // o * s + offset <= extent - 1  <=>  o <= floor((extent - 1 - offset) / s)
    let top = extent as i64 - 1 - offset;
    let hi = if top < 0 { 0 } else { top / s + 1 };
    let lo = lo.clamp(0, out as i64);
    lo as usize..hi.clamp(lo, out as i64) as usize
}

/// Max pooling, one axis at a time (the max over a box is the max along x, then y, then
/// z): each (n, c) plane along x into `d * h * ow`, along y into `d * oh * ow`, then along z
/// into the output; padding is skipped (a window of padding alone is -inf, as before).
fn max_pool(x: &Tensor, w: &Window, out_shape: &[usize]) -> Vec<f32> {
    let [d, h, wd] = [x.shape[2], x.shape[3], x.shape[4]];
    let [od, oh, ow] = [out_shape[2], out_shape[3], out_shape[4]];
    let (k, s, p, dl) = (w.kernel, w.strides, w.pads, w.dilations);
    let offset = |a: usize, i: usize| (i * dl[a]) as i64 - p[a] as i64;
    let mut out = fresh_filled(out_shape.iter().product(), f32::NEG_INFINITY);
    out.par_chunks_mut(od * oh * ow)
        .zip(x.data.par_chunks(d * h * wd))
        .for_each(|(o, src)| {
            let mut along_x = vec![f32::NEG_INFINITY; d * h * ow];
            for (line, dst) in src.chunks_exact(wd).zip(along_x.chunks_exact_mut(ow)) {
                for kx in 0..k[2] {
                    let off = offset(2, kx);
                    for xo in valid_range(ow, s[2], off, wd) {
                        let v = line[(xo as i64 * s[2] as i64 + off) as usize];
                        dst[xo] = dst[xo].max(v);
                    }
                }
            }
            let mut along_y = vec![f32::NEG_INFINITY; d * oh * ow];
            for z in 0..d {
                for ky in 0..k[1] {
                    let off = offset(1, ky);
                    for yo in valid_range(oh, s[1], off, h) {
                        let iy = (yo as i64 * s[1] as i64 + off) as usize;
                        let from = &along_x[(z * h + iy) * ow..][..ow];
                        let to = &mut along_y[(z * oh + yo) * ow..][..ow];
                        to.iter_mut().zip(from).for_each(|(t, &f)| *t = t.max(f));
                    }
                }
            }
            let plane = oh * ow;
            for kz in 0..k[0] {
                let off = offset(0, kz);
                for zo in valid_range(od, s[0], off, d) {
                    let iz = (zo as i64 * s[0] as i64 + off) as usize;
                    let from = &along_y[iz * plane..][..plane];
                    let to = &mut o[zo * plane..][..plane];
                    to.iter_mut().zip(from).for_each(|(t, &f)| *t = t.max(f));
                }
            }
        });
    out
}

fn average_pool(x: &Tensor, w: &Window, out_shape: &[usize], count_include_pad: bool) -> Vec<f32> {
    let [d, h, wd] = [x.shape[2], x.shape[3], x.shape[4]];
    let [od, oh, ow] = [out_shape[2], out_shape[3], out_shape[4]];
    let (k, s, p, dl) = (w.kernel, w.strides, w.pads, w.dilations);
    let kernel_size = (k[0] * k[1] * k[2]) as f32;
    let mut out = fresh(out_shape.iter().product());
    out.par_chunks_mut(od * oh * ow)
        .zip(x.data.par_chunks(d * h * wd))
        .for_each(|(o, src)| {
            for z in 0..od {
                for y in 0..oh {
                    for xo in 0..ow {
                        let (mut sum, mut count) = (0f32, 0usize);
                        for kz in 0..k[0] {
                            let iz = (z * s[0] + kz * dl[0]) as i64 - p[0] as i64;
                            if iz < 0 || iz >= d as i64 {
                                continue;
                            }
                            for ky in 0..k[1] {
                                let iy = (y * s[1] + ky * dl[1]) as i64 - p[1] as i64;
                                if iy < 0 || iy >= h as i64 {
                                    continue;
                                }
                                let row = (iz as usize * h + iy as usize) * wd;
                                for kx in 0..k[2] {
                                    let ix = (xo * s[2] + kx * dl[2]) as i64 - p[2] as i64;
                                    if ix < 0 || ix >= wd as i64 {
                                        continue;
                                    }
                                    sum += src[row + ix as usize];
                                    count += 1;
                                }
                            }
                        }
                        o[(z * oh + y) * ow + xo] = if count_include_pad {
                            sum / kernel_size
                        } else {
                            sum / count.max(1) as f32
                        };
                    }
                }
            }
        });
    out
}

/// A raw pointer that rayon's workers may share: each job writes a disjoint region.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}
impl Shared {
    fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: callers stay inside the allocation the pointer came from.
        unsafe { self.0.add(offset) }
    }
}

/// Floats of im2col matrix a tile gathers: about 128k floats (512 KiB, L2-sized).
const TILE_FLOATS: usize = 1 << 17;

/// The number of output positions per tile for `k` rows of im2col over `p` positions,
/// cut smaller when there would be too few tiles to keep every thread busy; a multiple of
/// the kernel's panel width where there is more than one tile.
fn conv_tile(k: usize, p: usize, jobs_outside: usize) -> usize {
    let threads = rayon::current_num_threads();
    let mut tile = (TILE_FLOATS / k.max(1)).clamp(64, 4096).min(p);
    let tiles = |t: usize| jobs_outside * p.div_ceil(t);
    while tiles(tile) < 2 * threads && tile > 64 {
        tile = tile.div_ceil(2);
    }
    if tile < p {
        tile = tile.div_ceil(PANEL) * PANEL;
    }
    tile.max(1)
}

/// Output positions per panel of the packed im2col columns (two 16-float vectors).
const PANEL: usize = 32;

fn is_pointwise(w: &Window) -> bool {
    w.kernel == [1; 3] && w.strides == [1; 3] && w.pads == [0; 6]
}

/// The scratch floats [`conv3d`] allocates at once: the padded input of the im2col-free
/// path, or one im2col tile per thread (whole panels); and the AVX-512 kernel's copy of the
/// weights.
pub(super) fn conv_scratch_floats(
    x: &[usize],
    wt: &[usize],
    out: &[usize],
    w: &Window,
    group: usize,
) -> usize {
    let weights = if use_avx512() { wt.iter().product() } else { 0 };
    if use_avx512() && out[4] >= 16 {
        // conv3d_direct: the padded, phase-split copy of the input, unless it reads the
        // input as it is.
        if w.pads == [0; 6] && w.strides[2] == 1 {
            return weights;
        }
        let [dp, hp, wp] = [0, 1, 2].map(|a| x[2 + a] + w.pads[a] + w.pads[a + 3]);
        let wl = wp.div_ceil(w.strides[2]) * w.strides[2];
        return x[0] * x[1] * dp * hp * wl + weights;
    }
    if is_pointwise(w) {
        return weights;
    }
    let k = wt[1] * wt[2] * wt[3] * wt[4];
    let p = out[2] * out[3] * out[4];
    let jobs = x[0] * group;
    let tile = conv_tile(k, p, jobs);
    let tiles = jobs * p.div_ceil(tile);
    tiles.min(rayon::current_num_threads()) * k * tile.div_ceil(PANEL) * PANEL + weights
}

/// A (transposed) convolution's operands and extents: `n` images of `c` channels of
/// `pin` positions (`[d, h, wd]`) in, `m` channels of `p` positions (`[od, oh, ow]`) out,
/// `cg` and `mg` channels in and out per group.
struct ConvArgs<'a> {
    x: &'a Tensor,
    wt: &'a Tensor,
    bias: Option<&'a Tensor>,
    w: &'a Window,
    group: usize,
    n: usize,
    c: usize,
    m: usize,
    cg: usize,
    mg: usize,
    input: [usize; 3],
    output: [usize; 3],
    pin: usize,
    p: usize,
}

impl<'a> ConvArgs<'a> {
    fn new(ins: &[&'a Tensor], w: &'a Window, group: usize, out_shape: &[usize]) -> Self {
        let x = ins[0];
        let (c, m) = (x.shape[1], out_shape[1]);
        let input = [x.shape[2], x.shape[3], x.shape[4]];
        let output = [out_shape[2], out_shape[3], out_shape[4]];
        ConvArgs {
            x,
            wt: ins[1],
            bias: ins.get(2).copied(),
            w,
            group,
            n: x.shape[0],
            c,
            m,
            cg: c / group,
            mg: m / group,
            input,
            output,
            pin: input.iter().product(),
            p: output.iter().product(),
        }
    }

    /// The output, each channel filled with its bias (or zero).
    fn biased_output(&self) -> Vec<f32> {
        let mut out = fresh(self.n * self.m * self.p);
        if let Some(b) = self.bias {
            out.par_chunks_mut(self.p)
                .enumerate()
                .for_each(|(i, row)| row.fill(b.data[i % self.m]));
        }
        out
    }
}

/// The per-channel scale and shift of a convolution's output (bias and epilogue folded).
fn conv_affine(m: usize, bias: Option<&Tensor>, e: Option<&Epilogue>) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f32> = match e.and_then(|e| e.scale.as_ref()) {
        Some(s) => s.clone(),
        None => vec![1.0; m],
    };
    let shift = (0..m)
        .map(|c| {
            let b = bias.map_or(0.0, |b| b.data[c]);
            let t = e.and_then(|e| e.shift.as_ref()).map_or(0.0, |t| t[c]);
            b * scale[c] + t
        })
        .collect();
    (scale, shift)
}

/// Whether the AVX-512 convolution kernel runs here.
fn use_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ON.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::env::var_os("MEDLAKE_NO_AVX512").is_none()
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn conv3d(args: &ConvArgs, epilogue: Option<&Epilogue>) -> Vec<f32> {
    let &ConvArgs {
        x,
        wt,
        bias,
        w,
        group,
        n,
        c,
        m,
        cg,
        mg,
        input: [d, h, wd],
        output: [_, oh, ow],
        pin,
        p,
    } = args;
    let k = cg * w.kernel.iter().product::<usize>();
    let (scale, shift) = conv_affine(m, bias, epilogue);
    let act = epilogue.map_or(Act::Identity, |e| e.act);
    let mut out = fresh(n * m * p);
    let pointwise = is_pointwise(w);
    let tile = if pointwise {
        p.min(4096)
    } else {
        conv_tile(k, p, n * group)
    };
    let tiles = p.div_ceil(tile);
    let dst = Shared(out.as_mut_ptr());
    let avx512 = use_avx512();
    // The weights of each group in row blocks of the kernel's rows, k-major in a block.
    let packed_w: Vec<f32> = if avx512 {
        let mut pw = vec![0f32; m * k];
        for g in 0..group {
            for r0 in (0..mg).step_by(KERNEL_ROWS) {
                let rows = KERNEL_ROWS.min(mg - r0);
                let base = (g * mg + r0) * k;
                for kk in 0..k {
                    for r in 0..rows {
                        pw[base + kk * rows + r] = wt.data[base + r * k + kk];
                    }
                }
            }
        }
        pw
    } else {
        Vec::new()
    };
    #[cfg(target_arch = "x86_64")]
    if avx512 && ow >= 16 {
        return conv3d_direct(args, &packed_w, &scale, &shift, act);
    }
    // B's row offsets for the kernel: in a packed panel, and in the input (pointwise).
    let rows_panel: Vec<usize> = (0..k).map(|kk| kk * PANEL).collect();
    let rows_pin: Vec<usize> = (0..k).map(|kk| kk * pin).collect();
    // With too few tiles to keep every thread busy (small outputs), the AVX-512 path also
    // splits the output channels into `splits` parts of `part` rows (whole kernel blocks),
    // each gathering the tile's columns itself.
    let blocks = mg.div_ceil(KERNEL_ROWS);
    let threads = rayon::current_num_threads();
    let splits = if avx512 {
        (2 * threads).div_ceil(n * group * tiles).clamp(1, blocks)
    } else {
        1
    };
    let part = blocks.div_ceil(splits) * KERNEL_ROWS;
    let splits = mg.div_ceil(part);
    (0..n * group * tiles * splits)
        .into_par_iter()
        .for_each_init(
            || {
                if pointwise {
                    Vec::new()
                } else {
                    vec![0f32; k * tile.div_ceil(PANEL) * PANEL]
                }
            },
            |cols, job| {
                let (split, job) = (job % splits, job / splits);
                let (img, g, t) = (job / (group * tiles), job / tiles % group, job % tiles);
                let p0 = t * tile;
                let len = tile.min(p - p0);
                let src = &x.data[(img * c + g * cg) * pin..(img * c + (g + 1) * cg) * pin];
                let c_ptr = dst.at((img * m + g * mg) * p + p0);
                let (sc, sh) = (&scale[g * mg..(g + 1) * mg], &shift[g * mg..(g + 1) * mg]);
                if avx512 {
                    #[cfg(target_arch = "x86_64")]
                    {
                        // B: the packed panels of the im2col columns (row kk at kk * PANEL
                        // in a panel), or the input itself for a pointwise convolution.
                        let (b_ptr, panel_stride) = if pointwise {
                            (src[p0..].as_ptr(), PANEL)
                        } else {
                            im2col(src, [d, h, wd], cg, w, [oh, ow], p0, len, cols, true);
                            (cols.as_ptr(), k * PANEL)
                        };
                        let off = if pointwise { &rows_pin } else { &rows_panel };
                        let r0 = split * part;
                        let rows = part.min(mg - r0);
                        let a = &packed_w[(g * mg + r0) * k..(g * mg + r0 + rows) * k];
                        let (sc, sh) = (&sc[r0..r0 + rows], &sh[r0..r0 + rows]);
                        let c_ptr = dst.at((img * m + g * mg + r0) * p + p0);
                        for j in 0..len.div_ceil(PANEL) {
                            let ncols = PANEL.min(len - j * PANEL);
                            // SAFETY: B's k rows of ncols columns at b_ptr + j * panel_stride +
                            // off[kk] lie inside src or cols (masked loads read no column at
                            // or past ncols); the output rows r0.. + rows of this group, columns
                            // p0 + j * PANEL.. + ncols, belong to this job.
                            unsafe {
                                let b = b_ptr.add(j * panel_stride);
                                let o = c_ptr.add(j * PANEL);
                                let halves = [
                                    avx512::Half::new(b, o, ncols.min(16)),
                                    avx512::Half::new(
                                        b.add(16),
                                        o.add(16),
                                        ncols.saturating_sub(16),
                                    ),
                                ];
                                avx512::conv_rows(rows, k, a, off, halves, p, sc, sh, act);
                            }
                        }
                        return;
                    }
                }
                let (b_ptr, rsb) = if pointwise {
                    (src[p0..].as_ptr(), pin as isize)
                } else {
                    im2col(src, [d, h, wd], cg, w, [oh, ow], p0, len, cols, false);
                    (cols.as_ptr(), len as isize)
                };
                let a = &wt.data[g * mg * k..(g + 1) * mg * k];
                // SAFETY: a is mg x k (row stride k), b is k x len (row stride rsb) inside
                // src or cols, c is mg x len with row stride p inside `out`; the (img, g, t)
                // jobs write disjoint column ranges of disjoint row blocks.
                unsafe {
                    matrixmultiply::sgemm(
                        mg,
                        k,
                        len,
                        1.0,
                        a.as_ptr(),
                        k as isize,
                        1,
                        b_ptr,
                        rsb,
                        1,
                        0.0,
                        c_ptr,
                        p as isize,
                        1,
                    );
                }
                for r in 0..mg {
                    // SAFETY: as above, this job's own row segment.
                    let row = unsafe { std::slice::from_raw_parts_mut(c_ptr.add(r * p), len) };
                    let (s, t) = (sc[r], sh[r]);
                    row.iter_mut().for_each(|v| *v = act.apply(*v * s + t));
                }
            },
        );
    out
}

/// A convolution without im2col, on the AVX-512 kernel: the input is copied once into a
/// zero-padded buffer whose lines are split into `sx` phases (x mod sx; unless there are no
/// pads and sx is 1: then the input is read as it is), and every B row of the GEMM is a run
/// of a padded input line: row (c, kz, ky, kx) at output (z, y, x) reads the padded input at
/// (c, z * sz + kz * dz, y * sy + ky * dy, x * sx + kx * dx), which is phase (kx * dx) mod
/// sx at x + (kx * dx) / sx: consecutive in x. The kernel works
/// on two half-panels of 16 consecutive output x each (of one output row, or of two rows
/// when the rows are 16 to 31 wide), all output channels, the jobs over (image, group,
/// block of output rows).
#[cfg(target_arch = "x86_64")]
fn conv3d_direct(
    args: &ConvArgs,
    packed_w: &[f32],
    scale: &[f32],
    shift: &[f32],
    act: Act,
) -> Vec<f32> {
    let &ConvArgs {
        x,
        w,
        group,
        n,
        c,
        m,
        cg,
        mg,
        input: [d, h, wd],
        output: [od, oh, ow],
        p,
        ..
    } = args;
    let (kern, s, pad, dl) = (w.kernel, w.strides, w.pads, w.dilations);
    let [dp, hp, wp] = [0, 1, 2].map(|a| [d, h, wd][a] + pad[a] + pad[a + 3]);
    // A padded line: sx phases of wq floats each.
    let sx = s[2];
    let wq = wp.div_ceil(sx);
    let wl = sx * wq;
    let plane = dp * hp * wl;
    let padded: Vec<f32>;
    let xin: &[f32] = if pad == [0; 6] && sx == 1 {
        &x.data
    } else {
        let mut buf = fresh(n * c * plane);
        buf.par_chunks_mut(plane)
            .zip(x.data.par_chunks(d * h * wd))
            .for_each(|(dst, src)| {
                for z in 0..d {
                    for y in 0..h {
                        let line = &mut dst[((z + pad[0]) * hp + y + pad[1]) * wl..][..wl];
                        let src = &src[(z * h + y) * wd..][..wd];
                        if sx == 1 {
                            line[pad[2]..pad[2] + wd].copy_from_slice(src);
                        } else {
                            for (i, &v) in src.iter().enumerate() {
                                let px = i + pad[2];
                                line[px % sx * wq + px / sx] = v;
                            }
                        }
                    }
                }
            });
        padded = buf;
        &padded
    };
    let k = cg * kern.iter().product::<usize>();
    let mut off = Vec::with_capacity(k);
    for ch in 0..cg {
        for kz in 0..kern[0] {
            for ky in 0..kern[1] {
                for kx in 0..kern[2] {
                    let px = kx * dl[2];
                    off.push(
                        ch * plane + (kz * dl[0] * hp + ky * dl[1]) * wl + px % sx * wq + px / sx,
                    );
                }
            }
        }
    }
    let mut out = fresh(n * m * p);
    let dst = Shared(out.as_mut_ptr());
    let rows = od * oh;
    let threads = rayon::current_num_threads();
    let chunks = (8 * threads).div_ceil(n * group).clamp(1, rows);
    let per_job = rows.div_ceil(chunks);
    let chunks = rows.div_ceil(per_job);
    (0..n * group * chunks).into_par_iter().for_each(|job| {
        let (img, g, t) = (job / (group * chunks), job / chunks % group, job % chunks);
        let base = xin[(img * c + g * cg) * plane..].as_ptr();
        let a = &packed_w[g * mg * k..(g + 1) * mg * k];
        let (sc, sh) = (&scale[g * mg..(g + 1) * mg], &shift[g * mg..(g + 1) * mg]);
        let out0 = (img * m + g * mg) * p;
        // The half-panels of this job's output rows: (input offset, output offset, cols).
        let mut halves = Vec::new();
        for row in t * per_job..rows.min((t + 1) * per_job) {
            let (z, y) = (row / oh, row % oh);
            for x0 in (0..ow).step_by(16) {
                halves.push((
                    (z * s[0] * hp + y * s[1]) * wl + x0,
                    out0 + row * ow + x0,
                    16.min(ow - x0),
                ));
            }
        }
        for pair in halves.chunks(2) {
            let (i0, o0, n0) = pair[0];
            let (i1, o1, n1) = pair.get(1).copied().unwrap_or((i0, o0, 0));
            // SAFETY: each half reads, for every kk, cols < 16 padded-input floats from
            // base + i + off[kk], inside its image's padded planes (x * sx + kx * dx < wp, so
            // x + (kx * dx) / sx < wq in its phase; masked
            // loads read no column at or past the half's count); it writes output columns
            // o.. + cols of the group's channels (row stride p), rows of this job alone.
            unsafe {
                let halves = [
                    avx512::Half::new(base.add(i0), dst.at(o0), n0),
                    avx512::Half::new(base.add(i1), dst.at(o1), n1),
                ];
                avx512::conv_rows(mg, k, a, &off, halves, p, sc, sh, act);
            }
        }
    });
    out
}

/// Output channels per call of the convolution kernel.
const KERNEL_ROWS: usize = 8;

/// The AVX-512 convolution kernel: a block of up to [`KERNEL_ROWS`] output channels by two
/// half-panels of up to 16 output positions, accumulated over all of k in registers, then
/// the epilogue (scale, shift, activation) and a masked store.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Act, KERNEL_ROWS};

    /// Sixteen (or fewer) consecutive output positions: B's row kk at `b + off[kk]`, the
    /// output's row r at `out + r * rso`, `cols` of them.
    #[derive(Clone, Copy)]
    pub(super) struct Half {
        b: *const f32,
        out: *mut f32,
        mask: __mmask16,
    }

    impl Half {
        pub(super) fn new(b: *const f32, out: *mut f32, cols: usize) -> Half {
            debug_assert!(cols <= 16);
            Half {
                b,
                out,
                mask: ((1u32 << cols) - 1) as u16,
            }
        }
    }

    /// All `mg` output channels (rows of `a`, packed in blocks of [`KERNEL_ROWS`], k-major
    /// in a block) of two half-panels: row r is act((sum over kk of a[r][kk] *
    /// B[kk][col]) * scale[r] + shift[r]).
    ///
    /// # Safety
    /// AVX-512F is available; `a` holds mg * k floats, `off` k offsets; every half's B
    /// rows (`cols` floats at b + off[kk]) are readable and its output rows writable.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn conv_rows(
        mg: usize,
        k: usize,
        a: &[f32],
        off: &[usize],
        halves: [Half; 2],
        rso: usize,
        scale: &[f32],
        shift: &[f32],
        act: Act,
    ) {
        debug_assert!(a.len() >= mg * k && off.len() >= k);
        for r0 in (0..mg).step_by(KERNEL_ROWS) {
            let rows = KERNEL_ROWS.min(mg - r0);
            let (a, sc, sh) = (
                a[r0 * k..].as_ptr(),
                &scale[r0..r0 + rows],
                &shift[r0..r0 + rows],
            );
            let h = halves.map(|h| Half {
                out: h.out.add(r0 * rso),
                ..h
            });
            macro_rules! dispatch {
                ($($r:literal)*) => {
                    match rows {
                        $($r => block::<$r>(k, a, off.as_ptr(), h, rso, sc, sh, act),)*
                        _ => unreachable!("at most KERNEL_ROWS rows"),
                    }
                };
            }
            dispatch!(1 2 3 4 5 6 7 8)
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    unsafe fn block<const R: usize>(
        k: usize,
        a: *const f32,
        off: *const usize,
        h: [Half; 2],
        rso: usize,
        scale: &[f32],
        shift: &[f32],
        act: Act,
    ) {
        let mut acc0 = [_mm512_setzero_ps(); R];
        let mut acc1 = [_mm512_setzero_ps(); R];
        if h[0].mask == 0xffff && h[1].mask == 0xffff {
            for kk in 0..k {
                let o = *off.add(kk);
                let b0 = _mm512_loadu_ps(h[0].b.add(o));
                let b1 = _mm512_loadu_ps(h[1].b.add(o));
                let ak = a.add(kk * R);
                for r in 0..R {
                    let w = _mm512_set1_ps(*ak.add(r));
                    acc0[r] = _mm512_fmadd_ps(w, b0, acc0[r]);
                    acc1[r] = _mm512_fmadd_ps(w, b1, acc1[r]);
                }
            }
        } else {
            for kk in 0..k {
                let o = *off.add(kk);
                let b0 = _mm512_maskz_loadu_ps(h[0].mask, h[0].b.add(o));
                let b1 = _mm512_maskz_loadu_ps(h[1].mask, h[1].b.add(o));
                let ak = a.add(kk * R);
                for r in 0..R {
                    let w = _mm512_set1_ps(*ak.add(r));
                    acc0[r] = _mm512_fmadd_ps(w, b0, acc0[r]);
                    acc1[r] = _mm512_fmadd_ps(w, b1, acc1[r]);
                }
            }
        }
        let zero = _mm512_setzero_ps();
        for r in 0..R {
            let (s, t) = (_mm512_set1_ps(scale[r]), _mm512_set1_ps(shift[r]));
            let mut v = [
                _mm512_fmadd_ps(acc0[r], s, t),
                _mm512_fmadd_ps(acc1[r], s, t),
            ];
            for v in &mut v {
                *v = match act {
                    Act::Identity => *v,
                    Act::Relu => _mm512_max_ps(*v, zero),
                    Act::LeakyRelu(alpha) => {
                        let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(*v, zero);
                        _mm512_mask_mul_ps(*v, neg, *v, _mm512_set1_ps(alpha))
                    }
                };
            }
            _mm512_mask_storeu_ps(h[0].out.add(r * rso), h[0].mask, v[0]);
            _mm512_mask_storeu_ps(h[1].out.add(r * rso), h[1].mask, v[1]);
        }
    }
}

/// Output channels per job of [`conv_transpose3d`]: each job's columns (channels x
/// kernel x input positions) about [`TILE_FLOATS`], fewer where there would be too few
/// jobs to keep every thread busy; at least one.
fn conv_transpose_chunk(kvol: usize, pin: usize, mg: usize, jobs_outside: usize) -> usize {
    let threads = rayon::current_num_threads();
    let mut chunk = (TILE_FLOATS / (kvol * pin).max(1)).clamp(1, mg.max(1));
    while jobs_outside * mg.div_ceil(chunk) < 2 * threads && chunk > 1 {
        chunk = chunk.div_ceil(2);
    }
    chunk
}

/// The scratch floats [`conv_transpose3d`] allocates at once: one column block per thread.
pub(super) fn conv_transpose_scratch_floats(x: &[usize], wt: &[usize], group: usize) -> usize {
    let kvol = wt[2] * wt[3] * wt[4];
    let pin = x[2] * x[3] * x[4];
    let (mg, jobs) = (wt[1], x[0] * group);
    let chunk = conv_transpose_chunk(kvol, pin, mg, jobs);
    let blocks = jobs * mg.div_ceil(chunk);
    blocks.min(rayon::current_num_threads()) * chunk * kvol * pin
}

/// Transposed convolution as GEMM and col2im: for each (image, group, block of output
/// channels), the columns W^T (channels x kernel, by input channels) times the input (input
/// channels by input positions), then each column scattered (added) into the output at
/// its input position times the stride plus its kernel offset, less the begin pads. The
/// jobs write disjoint output channels.
fn conv_transpose3d(args: &ConvArgs) -> Vec<f32> {
    let &ConvArgs {
        x,
        wt,
        w,
        group,
        n,
        c,
        m,
        cg,
        mg,
        input: [d, h, wd],
        output: [od, oh, ow],
        pin,
        p,
        ..
    } = args;
    let kvol = w.kernel.iter().product::<usize>();
    let mut out = args.biased_output();
    let chunk = conv_transpose_chunk(kvol, pin, mg, n * group);
    let chunks = mg.div_ceil(chunk);
    let (k, s, pad, dl) = (w.kernel, w.strides, w.pads, w.dilations);
    let dst = Shared(out.as_mut_ptr());
    (0..n * group * chunks).into_par_iter().for_each_init(
        || vec![0f32; chunk * kvol * pin],
        |cols, job| {
            let (img, g, t) = (job / (group * chunks), job / chunks % group, job % chunks);
            let m0 = t * chunk;
            let mc = chunk.min(mg - m0);
            let rows = mc * kvol;
            let src = &x.data[(img * c + g * cg) * pin..(img * c + (g + 1) * cg) * pin];
            // W^T: row (channel m0 + r / kvol, kernel offset r % kvol), column the input
            // channel i of the group, at wt[(g * cg + i) * mg * kvol + m0 * kvol + r].
            let a = &wt.data[(g * cg * mg + m0) * kvol..];
            // SAFETY: a is rows x cg with row stride 1 and column stride mg * kvol (the
            // last element, (cg - 1) * mg * kvol + rows - 1, lies inside the group's
            // weights); src is cg x pin; cols holds at least rows x pin.
            unsafe {
                matrixmultiply::sgemm(
                    rows,
                    cg,
                    pin,
                    1.0,
                    a.as_ptr(),
                    1,
                    (mg * kvol) as isize,
                    src.as_ptr(),
                    pin as isize,
                    1,
                    0.0,
                    cols.as_mut_ptr(),
                    pin as isize,
                    1,
                );
            }
            // SAFETY: the channels (img, g * mg + m0 .. + mc) of `out` belong to this job
            // alone.
            let o = unsafe {
                std::slice::from_raw_parts_mut(dst.at((img * m + g * mg + m0) * p), mc * p)
            };
            for (mo, plane) in o.chunks_exact_mut(p).enumerate() {
                let mut row = mo * kvol;
                for kz in 0..k[0] {
                    let off_z = (kz * dl[0]) as i64 - pad[0] as i64;
                    for ky in 0..k[1] {
                        let off_y = (ky * dl[1]) as i64 - pad[1] as i64;
                        for kx in 0..k[2] {
                            let off_x = (kx * dl[2]) as i64 - pad[2] as i64;
                            let col = &cols[row * pin..(row + 1) * pin];
                            let xs = valid_range(wd, s[2], off_x, ow);
                            for z in valid_range(d, s[0], off_z, od) {
                                let oz = (z as i64 * s[0] as i64 + off_z) as usize;
                                for y in valid_range(h, s[1], off_y, oh) {
                                    let oy = (y as i64 * s[1] as i64 + off_y) as usize;
                                    let line = &col[(z * h + y) * wd..][..wd];
                                    let dst = &mut plane[(oz * oh + oy) * ow..][..ow];
                                    for ix in xs.clone() {
                                        let ox = (ix as i64 * s[2] as i64 + off_x) as usize;
                                        dst[ox] += line[ix];
                                    }
                                }
                            }
                            row += 1;
                        }
                    }
                }
            }
        },
    );
    out
}

/// The input coordinate of output coordinate `o` along an axis of `len_in` resized to
/// `len_out` at `scale`, as onnxruntime computes it (in f32). The GPU path's taps use it
/// too, so both backends sample the same input coordinates.
pub(super) fn resize_coordinate(
    coord: CoordMode,
    o: usize,
    scale: f32,
    len_in: usize,
    len_out: usize,
) -> f32 {
    let o = o as f32;
    match coord {
        CoordMode::HalfPixel => (o + 0.5) / scale - 0.5,
        CoordMode::PytorchHalfPixel if len_out > 1 => (o + 0.5) / scale - 0.5,
        CoordMode::PytorchHalfPixel => 0.0,
        CoordMode::AlignCorners if len_out == 1 => 0.0,
        CoordMode::AlignCorners => o * (len_in - 1) as f32 / (len_out - 1) as f32,
        CoordMode::Asymmetric => o / scale,
    }
}

/// Resize one axis at a time (nearest and linear are separable): each axis whose length
/// or scale changes is resampled from the previous pass's output.
fn resize(
    x: &Tensor,
    mode: ResizeMode,
    coord: CoordMode,
    target: &ResizeTarget,
    out_shape: &[usize],
) -> Vec<f32> {
    let mut shape = x.shape.clone();
    let mut data: Option<Vec<f32>> = None;
    for a in 0..shape.len() {
        let (len_in, len_out) = (shape[a], out_shape[a]);
        let scale = target.scale(a, len_in, len_out);
        if len_in == len_out && scale == 1.0 {
            continue;
        }
        // Per output coordinate: two input indices and their weights.
        let taps: Vec<(usize, usize, f32, f32)> = (0..len_out)
            .map(|o| {
                let last = len_in - 1;
                let at = resize_coordinate(coord, o, scale, len_in, len_out);
                match mode {
                    ResizeMode::Nearest(round) => {
                        let at = match round {
                            // As onnxruntime: ties (x.5) one way, the rest to the nearest.
                            NearestMode::RoundPreferFloor if at == at.floor() + 0.5 => at.floor(),
                            NearestMode::RoundPreferCeil if at == at.floor() + 0.5 => at.ceil(),
                            NearestMode::RoundPreferFloor | NearestMode::RoundPreferCeil => {
                                at.round()
                            }
                            NearestMode::Floor => at.floor(),
                            NearestMode::Ceil => at.ceil(),
                        };
                        let i = (at.max(0.0) as usize).min(last);
                        (i, i, 1.0, 0.0)
                    }
                    ResizeMode::Linear => {
                        let at = at.clamp(0.0, last as f32);
                        let i0 = (at as usize).min(last);
                        let i1 = (i0 + 1).min(last);
                        if i0 == i1 {
                            (i0, i1, 0.5, 0.5)
                        } else {
                            let f = at - i0 as f32;
                            (i0, i1, 1.0 - f, f)
                        }
                    }
                }
            })
            .collect();
        let src = data.as_deref().unwrap_or(&x.data);
        let inner: usize = shape[a + 1..].iter().product();
        let mut next = fresh(src.len() / len_in * len_out);
        next.par_chunks_mut(len_out * inner)
            .zip(src.par_chunks(len_in * inner))
            // Blocks of at least 16 Ki outputs per task (one line each where inner is 1).
            .with_min_len((1 << 14) / (len_out * inner).max(1))
            .for_each(|(o, s)| {
                if inner == 1 {
                    for (v, &(i0, i1, w0, w1)) in o.iter_mut().zip(&taps) {
                        *v = if w1 == 0.0 {
                            s[i0]
                        } else {
                            w0 * s[i0] + w1 * s[i1]
                        };
                    }
                    return;
                }
                for (j, &(i0, i1, w0, w1)) in taps.iter().enumerate() {
                    let dst = &mut o[j * inner..(j + 1) * inner];
                    let (r0, r1) = (&s[i0 * inner..][..inner], &s[i1 * inner..][..inner]);
                    if w1 == 0.0 {
                        dst.copy_from_slice(r0);
                    } else {
                        for ((v, &p), &q) in dst.iter_mut().zip(r0).zip(r1) {
                            *v = w0 * p + w1 * q;
                        }
                    }
                }
            });
        shape[a] = len_out;
        data = Some(next);
    }
    data.unwrap_or_else(|| x.data.clone())
}

/// Gather the im2col columns of output positions `p0..p0 + len` of one image and group
/// (`src`: its `cg` input channels) into `cols`, `k` rows of `len`: row (c, kz, ky, kx),
/// column the output position; zero where the window reads padding. `packed`: in panels
/// of [`PANEL`] columns instead, each `k` rows of `PANEL` (the AVX-512 kernel's B; the
/// last panel's columns past `len` are left as they are).
#[allow(clippy::too_many_arguments)]
fn im2col(
    src: &[f32],
    [d, h, wd]: [usize; 3],
    cg: usize,
    w: &Window,
    [oh, ow]: [usize; 2],
    p0: usize,
    len: usize,
    cols: &mut [f32],
    packed: bool,
) {
    let (k, s, pad, dl) = (w.kernel, w.strides, w.pads, w.dilations);
    let rows = cg * k[0] * k[1] * k[2];
    // Runs of consecutive output columns along x (and within a panel where packed):
    // (offset of row 0's first column, z, y, x0, x1), and a row's stride.
    let mut runs = Vec::new();
    let mut pos = p0;
    while pos < p0 + len {
        let (zy, x0) = (pos / ow, pos % ow);
        let mut x1 = ow.min(x0 + (p0 + len - pos));
        let j = pos - p0;
        let at = if packed {
            x1 = x1.min(x0 + (PANEL - j % PANEL));
            j / PANEL * rows * PANEL + j % PANEL
        } else {
            j
        };
        runs.push((at, zy / oh, zy % oh, x0, x1));
        pos += x1 - x0;
    }
    let row_stride = if packed { PANEL } else { len };
    let mut row = 0;
    for ch in 0..cg {
        let plane = &src[ch * d * h * wd..(ch + 1) * d * h * wd];
        for kz in 0..k[0] {
            for ky in 0..k[1] {
                for kx in 0..k[2] {
                    let dst = &mut cols[row * row_stride..];
                    let off_x = (kx * dl[2]) as i64 - pad[2] as i64;
                    let valid = valid_range(ow, s[2], off_x, wd);
                    for &(j, z, y, x0, x1) in &runs {
                        let seg = &mut dst[j..j + (x1 - x0)];
                        let iz = (z * s[0] + kz * dl[0]) as i64 - pad[0] as i64;
                        let iy = (y * s[1] + ky * dl[1]) as i64 - pad[1] as i64;
                        if iz < 0 || iz >= d as i64 || iy < 0 || iy >= h as i64 {
                            seg.fill(0.0);
                            continue;
                        }
                        let line = &plane[(iz as usize * h + iy as usize) * wd..][..wd];
                        let (v0, v1) = (valid.start.clamp(x0, x1), valid.end.clamp(x0, x1));
                        seg[..v0 - x0].fill(0.0);
                        seg[v1 - x0..].fill(0.0);
                        if v0 == v1 {
                            continue;
                        }
                        let first = (v0 as i64 * s[2] as i64 + off_x) as usize;
                        let body = &mut seg[v0 - x0..v1 - x0];
                        if s[2] == 1 {
                            body.copy_from_slice(&line[first..first + body.len()]);
                        } else {
                            for (i, v) in body.iter_mut().enumerate() {
                                *v = line[first + i * s[2]];
                            }
                        }
                    }
                    row += 1;
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn gemm(
    a: &Tensor,
    b: &Tensor,
    c: Option<&Tensor>,
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
    out_shape: &[usize],
) -> Vec<f32> {
    let (m, n) = (out_shape[0], out_shape[1]);
    let k = if trans_a { a.shape[0] } else { a.shape[1] };
    let mut out = match c {
        Some(c) if beta != 0.0 => {
            let filled = binary(
                &Tensor {
                    shape: out_shape.to_vec(),
                    data: vec![0.0; m * n],
                },
                c,
                out_shape,
                |_, c| c,
            );
            filled.into_iter().map(|v| v * beta).collect()
        }
        _ => vec![0f32; m * n],
    };
    let (rsa, csa) = if trans_a {
        (1, m as isize)
    } else {
        (k as isize, 1)
    };
    let (rsb, csb) = if trans_b {
        (1, k as isize)
    } else {
        (n as isize, 1)
    };
    // SAFETY: the strides describe a (m x k), b (k x n) and out (m x n) in their buffers.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            rsa,
            csa,
            b.data.as_ptr(),
            rsb,
            csb,
            1.0,
            out.as_mut_ptr(),
            n as isize,
            1,
        );
    }
    out
}

fn matmul(a: &Tensor, b: &Tensor, out_shape: &[usize]) -> Vec<f32> {
    let MatMulShape {
        batch,
        mkn: [m, k, n],
        ..
    } = matmul_shape(&a.shape, &b.shape).expect("planned");
    let batches: usize = batch.iter().product();
    let a_batch: Vec<usize> = a.shape[..a.shape.len().saturating_sub(2)].to_vec();
    let b_batch: Vec<usize> = b.shape[..b.shape.len().saturating_sub(2)].to_vec();
    let (sa, sb) = (
        broadcast_strides(&a_batch, &batch),
        broadcast_strides(&b_batch, &batch),
    );
    let mut out = fresh(out_shape.iter().product());
    for i in 0..batches {
        let (mut oa, mut ob, mut r) = (0, 0, i);
        for dim in (0..batch.len()).rev() {
            let j = r % batch[dim];
            r /= batch[dim];
            oa += j * sa[dim];
            ob += j * sb[dim];
        }
        // SAFETY: matrix i of a, b and out lies inside their buffers (shapes planned).
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                a.data.as_ptr().add(oa * m * k),
                k as isize,
                1,
                b.data.as_ptr().add(ob * k * n),
                n as isize,
                1,
                0.0,
                out.as_mut_ptr().add(i * m * n),
                n as isize,
                1,
            );
        }
    }
    debug_assert_eq!(
        broadcast(&a_batch, &b_batch).ok().as_deref(),
        Some(batch.as_slice())
    );
    out
}

fn softmax(x: &Tensor, axis: usize, legacy: bool) -> Vec<f32> {
    let outer: usize = x.shape[..axis].iter().product();
    let (len, inner) = if legacy {
        (x.shape[axis..].iter().product::<usize>(), 1)
    } else {
        (x.shape[axis], x.shape[axis + 1..].iter().product::<usize>())
    };
    let mut out = x.data.clone();
    out.par_chunks_mut((len * inner).max(1)).for_each(|block| {
        for i in 0..inner {
            let max = (0..len)
                .map(|j| block[j * inner + i])
                .fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for j in 0..len {
                let e = (block[j * inner + i] - max).exp();
                block[j * inner + i] = e;
                sum += e;
            }
            for j in 0..len {
                block[j * inner + i] /= sum;
            }
        }
    });
    debug_assert_eq!(out.len(), outer * len * inner);
    out
}
