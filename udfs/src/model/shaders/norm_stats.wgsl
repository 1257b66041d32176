// The statistics of a normalization: one workgroup per group of `gsize` consecutive
// channel planes of a chunk (1 for InstanceNormalization, channels / groups for a group
// normalization), mean then variance (two passes, population), then for each plane of the
// group its (s, t) = (scale[c] / sqrt(var + eps), bias[c] - mean * s), c the plane's
// channel; pointwise.wgsl applies them.

struct Params {
    plane: u32, gsize: u32, pbase: u32, channels: u32,
    eps: f32, groups: u32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> scale: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> st: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

var<workgroup> red: array<f32, 256>;

fn reduce(li: u32) -> f32 {
    for (var s = 128u; s > 0u; s >>= 1u) {
        if li < s {
            red[li] += red[li + s];
        }
        workgroupBarrier();
    }
    let v = red[0];
    workgroupBarrier();
    return v;
}

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let g = wid.x + wid.y * nwg.x;
    if g >= p.groups {
        return;
    }
    let count = p.gsize * p.plane;
    let start = g * count;
    var s = 0.0;
    for (var i = li; i < count; i += 256u) {
        s += x[start + i];
    }
    red[li] = s;
    workgroupBarrier();
    let mean = reduce(li) / f32(count);
    var s2 = 0.0;
    for (var i = li; i < count; i += 256u) {
        let d = x[start + i] - mean;
        s2 += d * d;
    }
    red[li] = s2;
    workgroupBarrier();
    let var_ = reduce(li) / f32(count);
    let inv = 1.0 / sqrt(var_ + p.eps);
    for (var q = li; q < p.gsize; q += 256u) {
        let plane = g * p.gsize + q;
        let c = (p.pbase + plane) % p.channels;
        let sc = scale[c] * inv;
        st[2u * plane] = sc;
        st[2u * plane + 1u] = bias[c] - mean * sc;
    }
}
