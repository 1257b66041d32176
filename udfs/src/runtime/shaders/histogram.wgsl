// Counts of values in `bins` equal bins over [lo, hi); the bin is computed in f32 exactly
// as the CPU backend computes it: u32((v - lo) * scale), capped at the last bin.
//
// Only values where the mask is set count when `masked` is 1; the mask is one u32 per
// voxel (0 or 1), as `threshold.wgsl` writes it. Without a mask the binding is a one-word
// placeholder that is never read.

struct Params {
    count: u32,
    row_stride: u32,
    bins: u32,
    masked: u32,
    lo: f32,
    hi: f32,
    scale: f32,
    _pad1: f32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read> mask: array<u32>;
@group(0) @binding(2) var<storage, read_write> counts: array<atomic<u32>>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * p.row_stride;
    if (i >= p.count || (p.masked != 0u && mask[i] == 0u)) {
        return;
    }
    let v = src[i];
    if (v >= p.lo && v < p.hi) {
        let b = min(u32((v - p.lo) * p.scale), p.bins - 1u);
        atomicAdd(&counts[b], 1u);
    }
}
