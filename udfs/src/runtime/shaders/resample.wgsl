// Trilinear resampling (runtime/resample.rs): output voxel (z, y, x) blends the four
// input rows around it with the bilinear z-y weights, at columns i0 and i1 of its x
// sample, then blends those two along x, in the CPU backend's order of operations.
//
// The per-axis samples are computed by the host (in f64, as the CPU backend does) and
// passed as three words each: i0, i1, bitcast<u32>(w); z samples first, then y, then x.
// A large volume is resampled in slabs of output planes [out_z0, out_z0 + planes): the
// input buffer holds the input planes [in_z0, ...) that slab reads.

struct Params {
    nx: u32,         // input columns
    ny: u32,         // input rows
    mx: u32,         // output columns
    my: u32,         // output rows
    mz: u32,         // output planes in the whole volume (where the y samples start)
    out_z0: u32,
    planes: u32,     // output planes in this slab
    in_z0: u32,
    row_stride: u32, // invocations per dispatch row (workgroups in x * 64)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct Sample {
    i0: u32,
    i1: u32,
    w: f32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read> samples: array<u32>;
@group(0) @binding(3) var<uniform> p: Params;

fn sample(k: u32) -> Sample {
    return Sample(samples[3u * k], samples[3u * k + 1u], bitcast<f32>(samples[3u * k + 2u]));
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * p.row_stride;
    let mplane = p.mx * p.my;
    if (i >= mplane * p.planes) {
        return;
    }
    let x = i % p.mx;
    let y = (i / p.mx) % p.my;
    let z = i / mplane + p.out_z0;
    let sz = sample(z);
    let sy = sample(p.mz + y);
    let sx = sample(p.mz + p.my + x);
    let a0 = (1.0 - sz.w) * (1.0 - sy.w);
    let a1 = (1.0 - sz.w) * sy.w;
    let a2 = sz.w * (1.0 - sy.w);
    let a3 = sz.w * sy.w;
    let plane = p.nx * p.ny;
    let z0 = (sz.i0 - p.in_z0) * plane;
    let z1 = (sz.i1 - p.in_z0) * plane;
    let r0 = z0 + sy.i0 * p.nx;
    let r1 = z0 + sy.i1 * p.nx;
    let r2 = z1 + sy.i0 * p.nx;
    let r3 = z1 + sy.i1 * p.nx;
    let b0 = a0 * src[r0 + sx.i0] + a1 * src[r1 + sx.i0] + a2 * src[r2 + sx.i0] + a3 * src[r3 + sx.i0];
    let b1 = a0 * src[r0 + sx.i1] + a1 * src[r1 + sx.i1] + a2 * src[r2 + sx.i1] + a3 * src[r3 + sx.i1];
    dst[i] = b0 * (1.0 - sx.w) + b1 * sx.w;
}
