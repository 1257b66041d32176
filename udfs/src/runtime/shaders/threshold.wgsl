// lo <= v <= hi as 1, else 0; one u32 per voxel (WGSL storage has no bytes).

struct Params {
    count: u32,
    row_stride: u32,
    lo: f32,
    hi: f32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * p.row_stride;
    if (i >= p.count) {
        return;
    }
    let v = src[i];
    dst[i] = select(0u, 1u, v >= p.lo && v <= p.hi);
}
