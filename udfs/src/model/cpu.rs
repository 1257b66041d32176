//! The CPU kernels of the model runtime. Convolution is im2col over matrixmultiply's
//! SGEMM: the output positions of each (image, group) are cut into tiles, each tile's
//! columns are gathered into a small matrix (sized to stay in L2) and multiplied by the
//! group's weights straight into the output, the tiles spread over rayon's threads.
//! 1×1×1 convolutions with unit strides and no padding skip the gather.

use rayon::prelude::*;

use super::ops::{
    axis_index, broadcast, matmul_shape, CoordMode, MatMulShape, NearestMode, Op, ResizeMode,
    ResizeTarget, Window,
};
use super::Tensor;

/// Run one op. The shapes were checked when the run was planned; `out_shape` is the
/// output's.
pub(super) fn run(op: &Op, ins: &[&Tensor], out_shape: &[usize]) -> Vec<f32> {
    let x = ins[0];
    match op {
        Op::Conv { window, group } => conv3d(&ConvArgs::new(ins, window, *group, out_shape)),
        Op::ConvTranspose { window, group, .. } => {
            conv_transpose3d(&ConvArgs::new(ins, window, *group, out_shape))
        }
        Op::Resize {
            mode,
            coord,
            target,
        } => resize(x, *mode, *coord, target, out_shape),
        Op::BatchNorm { scale, shift } => {
            let mut out = x.data.clone();
            let plane: usize = x.shape[2..].iter().product();
            let c = scale.len();
            out.par_chunks_mut(plane.max(1))
                .enumerate()
                .for_each(|(i, p)| {
                    let (s, t) = (scale[i % c], shift[i % c]);
                    p.iter_mut().for_each(|v| *v = *v * s + t);
                });
            out
        }
        Op::InstanceNorm { epsilon } => instance_norm(x, ins[1], ins[2], *epsilon),
        Op::GroupNorm {
            epsilon,
            groups,
            per_group,
        } => group_norm(x, ins[1], ins[2], *epsilon, *groups, *per_group),
        Op::PRelu => binary(x, ins[1], out_shape, |v, s| if v < 0.0 { v * s } else { v }),
        Op::Relu => unary(x, |v| v.max(0.0)),
        Op::LeakyRelu { alpha } => {
            let a = *alpha;
            unary(x, move |v| if v < 0.0 { v * a } else { v })
        }
        Op::Sigmoid => unary(x, |v| 1.0 / (1.0 + (-v).exp())),
        Op::Identity | Op::Flatten { .. } | Op::Reshape { .. } => x.data.clone(),
        Op::Add => binary(x, ins[1], out_shape, |a, b| a + b),
        Op::Mul => binary(x, ins[1], out_shape, |a, b| a * b),
        Op::Concat { axis } => concat(ins, axis_index(*axis, x.shape.len()).expect("planned")),
        Op::MaxPool { window } => pool(x, window, out_shape, Pool::Max),
        Op::AveragePool {
            window,
            count_include_pad,
        } => pool(
            x,
            window,
            out_shape,
            Pool::Average {
                count_include_pad: *count_include_pad,
            },
        ),
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

/// Each (n, c) plane to zero mean and unit variance (population, in f64), then scaled
/// and shifted per channel.
fn instance_norm(x: &Tensor, scale: &Tensor, bias: &Tensor, epsilon: f32) -> Vec<f32> {
    let c = x.shape[1];
    let plane: usize = x.shape[2..].iter().product();
    let mut out = x.data.clone();
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
            p.iter_mut().for_each(|v| *v = *v * s + t);
        });
    out
}

/// Each (n, group) block of `c / groups` channels to zero mean and unit variance
/// (population, in f64), then scaled and shifted per group or per channel.
fn group_norm(
    x: &Tensor,
    scale: &Tensor,
    bias: &Tensor,
    epsilon: f32,
    groups: usize,
    per_group: bool,
) -> Vec<f32> {
    let c = x.shape[1];
    let cg = c / groups;
    let plane: usize = x.shape[2..].iter().product();
    let mut out = x.data.clone();
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
                p.iter_mut().for_each(|v| *v = *v * s + t);
            }
        });
    out
}

fn unary(x: &Tensor, f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = x.data.clone();
    out.par_chunks_mut(1 << 14)
        .for_each(|c| c.iter_mut().for_each(|v| *v = f(*v)));
    out
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
        let mut out = a.data.clone();
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
    let mut out = vec![0f32; n];
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
    let mut out = Vec::with_capacity(total);
    for o in 0..outer {
        for t in ins {
            let chunk = t.data.len() / outer.max(1);
            out.extend_from_slice(&t.data[o * chunk..(o + 1) * chunk]);
        }
    }
    out
}

#[derive(Clone, Copy)]
enum Pool {
    Max,
    Average { count_include_pad: bool },
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

fn pool(x: &Tensor, w: &Window, out_shape: &[usize], kind: Pool) -> Vec<f32> {
    let [d, h, wd] = [x.shape[2], x.shape[3], x.shape[4]];
    let [od, oh, ow] = [out_shape[2], out_shape[3], out_shape[4]];
    let (k, s, p, dl) = (w.kernel, w.strides, w.pads, w.dilations);
    let kernel_size = (k[0] * k[1] * k[2]) as f32;
    let mut out = vec![0f32; out_shape.iter().product()];
    out.par_chunks_mut(od * oh * ow)
        .zip(x.data.par_chunks(d * h * wd))
        .for_each(|(o, src)| {
            for z in 0..od {
                for y in 0..oh {
                    for xo in 0..ow {
                        let (mut max, mut sum, mut count) = (f32::NEG_INFINITY, 0f32, 0usize);
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
                                    let v = src[row + ix as usize];
                                    max = max.max(v);
                                    sum += v;
                                    count += 1;
                                }
                            }
                        }
                        o[(z * oh + y) * ow + xo] = match kind {
                            Pool::Max => max,
                            Pool::Average {
                                count_include_pad: true,
                            } => sum / kernel_size,
                            Pool::Average {
                                count_include_pad: false,
                            } => sum / count.max(1) as f32,
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
/// cut smaller when there would be too few tiles to keep every thread busy.
fn conv_tile(k: usize, p: usize, jobs_outside: usize) -> usize {
    let threads = rayon::current_num_threads();
    let mut tile = (TILE_FLOATS / k.max(1)).clamp(64, 4096).min(p);
    let tiles = |t: usize| jobs_outside * p.div_ceil(t);
    while tiles(tile) < 2 * threads && tile > 64 {
        tile = tile.div_ceil(2);
    }
    tile.max(1)
}

fn is_pointwise(w: &Window) -> bool {
    w.kernel == [1; 3] && w.strides == [1; 3] && w.pads == [0; 6]
}

/// The scratch floats [`conv3d`] allocates at once: one im2col tile per thread.
pub(super) fn conv_scratch_floats(
    x: &[usize],
    wt: &[usize],
    out: &[usize],
    w: &Window,
    group: usize,
) -> usize {
    if is_pointwise(w) {
        return 0;
    }
    let k = wt[1] * wt[2] * wt[3] * wt[4];
    let p = out[2] * out[3] * out[4];
    let jobs = x[0] * group;
    let tile = conv_tile(k, p, jobs);
    let tiles = jobs * p.div_ceil(tile);
    tiles.min(rayon::current_num_threads()) * k * tile
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
        let mut out = vec![0f32; self.n * self.m * self.p];
        if let Some(b) = self.bias {
            out.par_chunks_mut(self.p)
                .enumerate()
                .for_each(|(i, row)| row.fill(b.data[i % self.m]));
        }
        out
    }
}

fn conv3d(args: &ConvArgs) -> Vec<f32> {
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
    let mut out = args.biased_output();
    let beta = if bias.is_some() { 1.0 } else { 0.0 };
    let pointwise = is_pointwise(w);
    let tile = if pointwise {
        p.min(4096)
    } else {
        conv_tile(k, p, n * group)
    };
    let tiles = p.div_ceil(tile);
    let dst = Shared(out.as_mut_ptr());
    (0..n * group * tiles).into_par_iter().for_each_init(
        || {
            if pointwise {
                Vec::new()
            } else {
                vec![0f32; k * tile]
            }
        },
        |cols, job| {
            let (img, g, t) = (job / (group * tiles), job / tiles % group, job % tiles);
            let p0 = t * tile;
            let len = tile.min(p - p0);
            let src = &x.data[(img * c + g * cg) * pin..(img * c + (g + 1) * cg) * pin];
            let (b_ptr, rsb) = if pointwise {
                (src[p0..].as_ptr(), pin as isize)
            } else {
                im2col(src, [d, h, wd], cg, w, [oh, ow], p0, len, cols);
                (cols.as_ptr(), len as isize)
            };
            let a = &wt.data[g * mg * k..(g + 1) * mg * k];
            let c_ptr = dst.at((img * m + g * mg) * p + p0);
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
                    beta,
                    c_ptr,
                    p as isize,
                    1,
                );
            }
        },
    );
    out
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
/// `len_out` at `scale`, as onnxruntime computes it (in f32).
fn resize_coordinate(coord: CoordMode, o: usize, scale: f32, len_in: usize, len_out: usize) -> f32 {
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
        let mut next = vec![0f32; src.len() / len_in * len_out];
        next.par_chunks_mut(len_out * inner)
            .zip(src.par_chunks(len_in * inner))
            .for_each(|(o, s)| {
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
/// column the output position; zero where the window reads padding.
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
) {
    let (k, s, pad, dl) = (w.kernel, w.strides, w.pads, w.dilations);
    // Runs of consecutive output columns along x: (column in tile, z, y, x0, x1).
    let mut runs = Vec::new();
    let mut pos = p0;
    while pos < p0 + len {
        let (zy, x0) = (pos / ow, pos % ow);
        let x1 = ow.min(x0 + (p0 + len - pos));
        runs.push((pos - p0, zy / oh, zy % oh, x0, x1));
        pos += x1 - x0;
    }
    let mut row = 0;
    for ch in 0..cg {
        let plane = &src[ch * d * h * wd..(ch + 1) * d * h * wd];
        for kz in 0..k[0] {
            for ky in 0..k[1] {
                for kx in 0..k[2] {
                    let dst = &mut cols[row * len..(row + 1) * len];
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
    let mut out = vec![0f32; out_shape.iter().product()];
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
