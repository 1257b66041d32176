// One pass of a separable filter: each output voxel is the kernel (already reversed by the
// host, so this is a correlation, as the CPU backend does) applied along one axis, with
// the edge voxel repeated beyond the volume (scipy's mode="nearest").
//
// The input buffer holds planes [in_z0, in_z0 + nz_in) of the volume and the output
// planes [out_z0, out_z0 + nz_out): a volume larger than one storage binding is processed
// in slabs, the input slab carrying a halo of `r` planes when filtering along z.

struct Params {
    nx: u32,
    ny: u32,
    nz: u32,      // planes in the whole volume (for clamping along z)
    axis: u32,    // 0 = z, 1 = y, 2 = x
    r: u32,       // kernel radius
    in_z0: u32,
    nz_in: u32,
    out_z0: u32,
    nz_out: u32,
    row_stride: u32, // invocations per dispatch row (workgroups in x * 64)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read> weights: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * p.row_stride;
    let plane = p.nx * p.ny;
    if (i >= plane * p.nz_out) {
        return;
    }
    let x = i % p.nx;
    let y = (i / p.nx) % p.ny;
    let z = i / plane + p.out_z0;
    var acc = 0.0;
    let n = 2u * p.r + 1u;
    for (var j = 0u; j < n; j = j + 1u) {
        // Position j - r along the axis, clamped into the volume.
        var sx = x;
        var sy = y;
        var sz = z;
        if (p.axis == 2u) {
            sx = u32(clamp(i32(x + j) - i32(p.r), 0, i32(p.nx) - 1));
        } else if (p.axis == 1u) {
            sy = u32(clamp(i32(y + j) - i32(p.r), 0, i32(p.ny) - 1));
        } else {
            sz = u32(clamp(i32(z + j) - i32(p.r), 0, i32(p.nz) - 1));
        }
        acc = acc + weights[j] * src[(sz - p.in_z0) * plane + sy * p.nx + sx];
    }
    dst[i] = acc;
}
