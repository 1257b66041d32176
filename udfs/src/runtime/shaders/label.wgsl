// One pass of connected-component labelling by minimum-label propagation (6-connected).
//
// `labels` holds a slab of `count` voxels (whole planes of an nx by ny volume) starting at
// voxel `base` of the volume: 0 for background, and for a foreground voxel the index + 1
// (in the volume) of a voxel of the same component; the host starts each voxel at its own
// index + 1. A pass lowers each voxel's label to the least of its own, its foreground
// neighbours' and the label of the voxel its label names (pointer jumping), and lowers
// that voxel's label too (hooking), all with atomics, so labels only fall and always name
// a voxel of the same component. A pass that changes nothing leaves flag `flag` at 0;
// then every component is labelled with its first voxel in raster order, + 1.
//
// With `planar` set, voxels join only within their plane (4-connected): each slice's
// components on their own, for hole filling slice by slice.

struct Params {
    count: u32,
    nx: u32,
    ny: u32,
    base: u32,
    row_stride: u32,
    flag: u32,
    planar: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read_write> labels: array<atomic<u32>>;
@group(0) @binding(1) var<storage, read_write> changed: array<atomic<u32>>;
@group(0) @binding(2) var<uniform> p: Params;

fn lowest(m: u32, j: u32) -> u32 {
    let l = atomicLoad(&labels[j]);
    return select(m, min(m, l), l != 0u);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * p.row_stride;
    if (i >= p.count) {
        return;
    }
    let own = atomicLoad(&labels[i]);
    if (own == 0u) {
        return;
    }
    let plane = p.nx * p.ny;
    let x = i % p.nx;
    let y = (i / p.nx) % p.ny;
    var m = own;
    if (x > 0u) { m = lowest(m, i - 1u); }
    if (x + 1u < p.nx) { m = lowest(m, i + 1u); }
    if (y > 0u) { m = lowest(m, i - p.nx); }
    if (y + 1u < p.ny) { m = lowest(m, i + p.nx); }
    if (p.planar == 0u) {
        if (i >= plane) { m = lowest(m, i - plane); }
        if (i + plane < p.count) { m = lowest(m, i + plane); }
    }
    // Jump: the voxel m names is in this component; its label may be lower still.
    m = min(m, atomicLoad(&labels[m - 1u - p.base]));
    if (m < own) {
        atomicMin(&labels[i], m);
        // Hook: the voxel this one was labelled with joins the lower label as well.
        atomicMin(&labels[own - 1u - p.base], m);
        atomicStore(&changed[p.flag], 1u);
    }
}
