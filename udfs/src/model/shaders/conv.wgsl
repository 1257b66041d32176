// 3-D convolution as an implicit GEMM: out[m, n] = sum_k W[m, k] * cols[k, n], M the output
// channels of the dispatch, N the output voxels, K = input channels of this pass x kernel
// volume. The im2col matrix is never built: each workgroup gathers a TK x TN tile of it
// straight from the input (`ktab` turns a row k into its channel and kernel offsets). A
// workgroup of 256 threads computes a TM x TN output tile, RM x RN per thread (register
// blocking), from tiles in workgroup memory, K in steps of TK. This is a template:
// `GpuModel` fills in the tile sizes and the unrolled per-thread blocks (`//@` lines)
// for each variant (64 x 64, 128 x 128, 16 x 256, 256 x 16, 64 x 256).
//
// A pass covers the input channels of one chunk: the first pass adds the bias, later ones
// add to what the output holds, the last applies the activation (flags bits 0, 1; the
// activation in bits 8-9: 1 relu, 2 leaky relu by alpha, 3 sigmoid).
//
// Row k of K reads input voxel q * s - pad + offset(k) (pad biased by 512, as the
// offsets are); a transposed convolution runs as one such GEMM per output phase (the
// residues of the output coordinates modulo the strides), s 1 and its taps' offsets.
//
// Split K (flags bit 2): workgroup z is a slice of `kslice` rows of K, and the tile's raw
// sums go to y[(z * mcount + m) * np + n] (out_off 0) for splitk_reduce.wgsl to add up
// and finish; otherwise workgroup z continues x (more output tiles than one dimension
// takes).
//
// Weights are resident, transposed: wt[(g * K_group + k) * mg + m_in_group].

struct Params {
    in_d: u32, in_h: u32, in_w: u32, in_off: i32,
    out_d: u32, out_h: u32, out_w: u32, out_off: u32,
    sd: u32, sh: u32, sw: u32, kpass: u32,
    pd: u32, ph: u32, pw: u32, mcount: u32,
    w_k0: u32, w_m0: u32, mg: u32, bias_m0: u32,
    k0: u32, flags: u32, alpha: f32, kslice: u32,
    // The GEMM's N: a grid of q_d x q_h x q_w voxels; voxel q is output voxel
    // q * os + or (a transposed convolution's phase; 1 and 0 for a convolution).
    q_d: u32, q_h: u32, q_w: u32, _p0: u32,
    os_d: u32, os_h: u32, os_w: u32, _p1: u32,
    or_d: u32, or_h: u32, or_w: u32, _p2: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> wt: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
// Per row k of the group: (channel in group, dz | dy << 10 | dx << 20), dilations applied.
@group(0) @binding(3) var<storage, read> ktab: array<vec2<u32>>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

const TM: u32 = @TMu;
const TN: u32 = @TNu;
const TK: u32 = 16u;
const RM: u32 = @RMu;
const RN: u32 = @RNu;
// Threads along n.
const TXN: u32 = TN / RN;

var<workgroup> As: array<vec4<f32>, @AS>; // [k][m / 4]
var<workgroup> Bs: array<vec4<f32>, @BS>; // [k][n / 4]

fn act(v: f32) -> f32 {
    let a = (p.flags >> 8u) & 3u;
    if a == 1u {
        return max(v, 0.0);
    }
    if a == 2u {
        return select(v, v * p.alpha, v < 0.0);
    }
    if a == 3u {
        return 1.0 / (1.0 + exp(-v));
    }
    return v;
}

// The output plane offset of GEMM column n.
fn out_index(n: u32) -> u32 {
    let qx = n % p.q_w;
    let t = n / p.q_w;
    let qy = t % p.q_h;
    let qz = t / p.q_h;
    return ((qz * p.os_d + p.or_d) * p.out_h + qy * p.os_h + p.or_h) * p.out_w + qx * p.os_w
        + p.or_w;
}

fn store(m: u32, n0: u32, nq: u32, v: vec4<f32>, slice: u32) {
    if m >= p.mcount {
        return;
    }
    if (p.flags & 4u) != 0u {
        for (var j = 0u; j < 4u; j++) {
            let nn = n0 + j;
            if nn >= nq {
                return;
            }
            y[(slice * p.mcount + m) * nq + nn] = v[j];
        }
        return;
    }
    let np = p.out_d * p.out_h * p.out_w;
    let first = (p.flags & 1u) != 0u;
    let last = (p.flags & 2u) != 0u;
    for (var j = 0u; j < 4u; j++) {
        let nn = n0 + j;
        if nn >= nq {
            return;
        }
        let idx = (p.out_off + m) * np + out_index(nn);
        var r = v[j];
        if first {
            r += bias[p.bias_m0 + m];
        } else {
            r += y[idx];
        }
        if last {
            r = act(r);
        }
        y[idx] = r;
    }
}

// Row `ak + 256 / TM * r` of the A tile at K offset kb: this thread's weight.
fn load_a(kb: u32, r: u32, ak: u32, m_ok: bool, wcol: u32, kpass: u32) -> f32 {
    let k = kb + ak + 256u / TM * r;
    if k < kpass && m_ok {
        return wt[(p.w_k0 + k) * p.mg + wcol];
    }
    return 0.0;
}

// Row `bk + 256 / TN * r` of the B tile at K offset kb: this thread's input voxel (whose
// window starts at z0, y0, x0), 0 in the padding.
fn load_b(kb: u32, r: u32, bk: u32, n_ok: bool, z0: i32, y0: i32, x0: i32, kpass: u32) -> f32 {
    let k = kb + bk + 256u / TN * r;
    if k < kpass && n_ok {
        let e = ktab[p.k0 + k];
        // Unsigned, a coordinate before the start is past the end: one compare per axis.
        let iz = u32(z0 + i32(e.y & 1023u));
        let iy = u32(y0 + i32((e.y >> 10u) & 1023u));
        let ix = u32(x0 + i32(e.y >> 20u));
        if iz < p.in_d && iy < p.in_h && ix < p.in_w {
            let plane = u32(p.in_off + i32(e.x));
            return x[((plane * p.in_d + iz) * p.in_h + iy) * p.in_w + ix];
        }
    }
    return 0.0;
}

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let nq = p.q_d * p.q_h * p.q_w;
    let split = (p.flags & 4u) != 0u;
    var n_tile = (wid.x + wid.z * nwg.x) * TN;
    var k_begin = 0u;
    var kpass = p.kpass;
    if split {
        n_tile = wid.x * TN;
        k_begin = wid.z * p.kslice;
        kpass = min(p.kpass, k_begin + p.kslice);
    }
    let m_tile = wid.y * TM;
    if n_tile >= nq {
        return;
    }

    // This thread's column of the B tile (an output voxel), rows kb + 256 / TN * r.
    let bn = li % TN;
    let bk = li / TN;
    let n = n_tile + bn;
    let n_ok = n < nq;
    let ox = n % p.q_w;
    let t = n / p.q_w;
    let oy = t % p.q_h;
    let oz = t / p.q_h;
    let z0 = i32(oz * p.sd) - i32(p.pd);
    let y0 = i32(oy * p.sh) - i32(p.ph);
    let x0 = i32(ox * p.sw) - i32(p.pw);
    // This thread's column of the A tile (an output channel), rows ak + 256 / TM * r.
    let am = li % TM;
    let ak = li / TM;
    let m_ok = m_tile + am < p.mcount;
    let wcol = p.w_m0 + m_tile + am;

    let tx = li % TXN;
    let ty = li / TXN;
    // This thread's first vec4 of each row of the A and B tiles.
    let ab = ty * (RM / 4u);
    let bb = tx * (RN / 4u);
//@DECL

    // The first K tile's values in registers; each step stores them to workgroup memory,
    // then loads the next tile's while it multiplies.
//@LOAD0
    for (var kb = k_begin; kb < kpass; kb += TK) {
//@SHARED
        workgroupBarrier();
        if kb + TK < kpass {
//@LOADN
        }
//@INNER
        workgroupBarrier();
    }
    let slice = wid.z;
//@STORE
}
