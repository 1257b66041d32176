// The end of a split-K convolution (conv.wgsl, flags bit 2): each output element the sum of
// its `slices` partial sums, then the bias or what the output holds (the first pass of the
// chunks or a later one) and the activation (the last pass), flags as in conv.wgsl.

struct Params {
    np: u32, mcount: u32, slices: u32, out_off: u32,
    bias_m0: u32, flags: u32, alpha: f32, row: u32,
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
    let count = p.mcount * p.np;
    if i >= count {
        return;
    }
    var v = 0.0;
    for (var s = 0u; s < p.slices; s++) {
        v += part[s * count + i];
    }
    let m = i / p.np;
    let idx = p.out_off * p.np + i;
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
