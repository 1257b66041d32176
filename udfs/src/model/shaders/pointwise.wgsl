// y = act(x * s[q] + t[q]) (flags bit 0: the affine step; q = (pbase + i / plane) %
// modulus, (s, t) pairs in `st`), act as in conv.wgsl: BatchNormalization, the second
// half of the normalizations, Relu, LeakyRelu, Sigmoid.

struct Params {
    count: u32, row: u32, plane: u32, pbase: u32,
    modulus: u32, flags: u32, act: u32, alpha: f32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> st: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * p.row;
    if i >= p.count {
        return;
    }
    var v = x[i];
    if (p.flags & 1u) != 0u {
        let q = (p.pbase + i / p.plane) % p.modulus;
        v = v * st[2u * q] + st[2u * q + 1u];
    }
    if p.act == 1u {
        v = max(v, 0.0);
    } else if p.act == 2u {
        v = select(v, v * p.alpha, v < 0.0);
    } else if p.act == 3u {
        v = 1.0 / (1.0 + exp(-v));
    }
    y[i] = v;
}
