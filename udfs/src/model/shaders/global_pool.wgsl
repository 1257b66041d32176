// GlobalAveragePool: one workgroup per channel plane, its mean.

struct Params {
    plane: u32, planes: u32, in_off: u32, out_off: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let q = wid.x + wid.y * nwg.x;
    if q >= p.planes {
        return;
    }
    let start = (p.in_off + q) * p.plane;
    var s = 0.0;
    for (var i = li; i < p.plane; i += 256u) {
        s += x[start + i];
    }
    red[li] = s;
    workgroupBarrier();
    for (var k = 128u; k > 0u; k >>= 1u) {
        if li < k {
            red[li] += red[li + k];
        }
        workgroupBarrier();
    }
    if li == 0u {
        y[p.out_off + q] = red[0] / f32(p.plane);
    }
}
