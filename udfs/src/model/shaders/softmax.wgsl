// Softmax along an axis of `len` with `inner` elements after it, one thread per
// (outer, inner) line: the max, the exponentials and their sum, then the quotients.

struct Params {
    lines: u32, len: u32, inner: u32, row: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let l = gid.x + gid.y * p.row;
    if l >= p.lines {
        return;
    }
    let base = (l / p.inner) * p.len * p.inner + l % p.inner;
    var mx = bitcast<f32>(0xff800000u);
    for (var j = 0u; j < p.len; j++) {
        mx = max(mx, x[base + j * p.inner]);
    }
    var sum = 0.0;
    for (var j = 0u; j < p.len; j++) {
        let e = exp(x[base + j * p.inner] - mx);
        y[base + j * p.inner] = e;
        sum += e;
    }
    for (var j = 0u; j < p.len; j++) {
        y[base + j * p.inner] = y[base + j * p.inner] / sum;
    }
}
