// Resize of the three trailing axes, one output voxel per thread: along each axis two
// taps (i0, i1, w0, w1) per output coordinate from `taps` (the d axis's, then h's, then
// w's), as the CPU computes them; a tap of weight 0 is not read.

struct Params {
    in_d: u32, in_h: u32, in_w: u32, in_off: u32,
    out_d: u32, out_h: u32, out_w: u32, out_off: u32,
    count: u32, row: u32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> taps: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * p.row;
    if i >= p.count {
        return;
    }
    let np = p.out_d * p.out_h * p.out_w;
    let q = i / np;
    let n = i % np;
    let ox = n % p.out_w;
    let t = n / p.out_w;
    let oy = t % p.out_h;
    let oz = t / p.out_h;
    let tz = taps[oz];
    let ty = taps[p.out_d + oy];
    let tx = taps[p.out_d + p.out_h + ox];
    let base = (p.in_off + q) * p.in_d * p.in_h * p.in_w;
    var v = 0.0;
    for (var a = 0u; a < 2u; a++) {
        let wz = bitcast<f32>(tz[2u + a]);
        if a == 1u && wz == 0.0 {
            continue;
        }
        for (var b = 0u; b < 2u; b++) {
            let wy = bitcast<f32>(ty[2u + b]);
            if b == 1u && wy == 0.0 {
                continue;
            }
            let rowb = base + (tz[a] * p.in_h + ty[b]) * p.in_w;
            let x0 = x[rowb + tx[0]];
            var vx = bitcast<f32>(tx[2]) * x0;
            let wx1 = bitcast<f32>(tx[3]);
            if wx1 != 0.0 {
                vx += wx1 * x[rowb + tx[1]];
            }
            v += wz * wy * vx;
        }
    }
    y[(p.out_off + q) * np + n] = v;
}
