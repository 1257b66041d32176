// The end of a split-K convolution (or a phase of a transposed one) (conv.wgsl, flags bit 2): each output element the sum of
// its `slices` partial sums, then the bias or what the output holds (the first pass of the
// chunks or a later one) and the activation (the last pass), flags as in conv.wgsl.

struct Params {
    nq: u32, mcount: u32, slices: u32, out_off: u32,
    bias_m0: u32, flags: u32, alpha: f32, row: u32,
    // The GEMM's columns as in conv.wgsl: q grid, output stride and phase, output plane.
    q_h: u32, q_w: u32, out_h: u32, out_w: u32,
    os_d: u32, os_h: u32, os_w: u32, np: u32,
    or_d: u32, or_h: u32, or_w: u32, _p0: u32,
}

@group(0) @binding(0) var<storage, read> part: array<f32>;
@group(0) @binding(1) var<storage, read> bias: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

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

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * p.row;
    let count = p.mcount * p.nq;
    if i >= count {
        return;
    }
    var v = 0.0;
    for (var s = 0u; s < p.slices; s++) {
        v += part[s * count + i];
    }
    let m = i / p.nq;
    let n = i % p.nq;
    let qx = n % p.q_w;
    let t = n / p.q_w;
    let qy = t % p.q_h;
    let qz = t / p.q_h;
    let o = ((qz * p.os_d + p.or_d) * p.out_h + qy * p.os_h + p.or_h) * p.out_w + qx * p.os_w
        + p.or_w;
    let idx = (p.out_off + m) * p.np + o;
    if (p.flags & 1u) != 0u {
        v += bias[p.bias_m0 + m];
    } else {
        v += y[idx];
    }
    if (p.flags & 2u) != 0u {
        v = act(v);
    }
    y[idx] = v;
}
