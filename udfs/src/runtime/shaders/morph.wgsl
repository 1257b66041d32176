// One step of binary dilation (`grow` 1) or erosion (`grow` 0) by the 6-neighbour cross.
// Masks are one u32 per voxel (0 or 1).
//
// The buffers hold `nz` planes: the whole volume, or a slab of it with a halo of as many
// planes as steps are run on it. Outside the buffer counts as background, as outside the
// volume does (scipy's border_value=0): at a slab's cut that is wrong, but the error
// travels one plane per step, so it stays inside the halo, which the host discards.

struct Params {
    nx: u32,
    ny: u32,
    nz: u32,
    grow: u32,
    row_stride: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * p.row_stride;
    let plane = p.nx * p.ny;
    if (i >= plane * p.nz) {
        return;
    }
    let x = i % p.nx;
    let y = (i / p.nx) % p.ny;
    let z = i / plane;
    // Each neighbour's value, 0 where it is outside.
    var n = array<u32, 6>(0u, 0u, 0u, 0u, 0u, 0u);
    if (x > 0u) { n[0] = src[i - 1u]; }
    if (x + 1u < p.nx) { n[1] = src[i + 1u]; }
    if (y > 0u) { n[2] = src[i - p.nx]; }
    if (y + 1u < p.ny) { n[3] = src[i + p.nx]; }
    if (z > 0u) { n[4] = src[i - plane]; }
    if (z + 1u < p.nz) { n[5] = src[i + plane]; }
    var out = src[i] != 0u;
    for (var k = 0u; k < 6u; k = k + 1u) {
        if (p.grow != 0u) {
            out = out || n[k] != 0u;
        } else {
            out = out && n[k] != 0u;
        }
    }
    dst[i] = select(0u, 1u, out);
}
