// Sum, minimum, maximum and count of the values where the mask is set (of all values when
// `masked` is 0): one partial per workgroup, which the host adds up in f64.
//
// Each invocation folds PER_THREAD values (strided by the workgroup size, so neighbouring
// invocations read neighbouring words), then the workgroup folds its 64 partials as a
// tree in shared memory. Sums are f32 within a workgroup's 1024 values.
//
// The mask is one u32 per voxel (0 or 1), as `threshold.wgsl` writes it; without a mask
// the binding is a one-word placeholder that is never read.

const PER_THREAD: u32 = 16u;

struct Params {
    count: u32,
    masked: u32,
    _pad0: u32,
    _pad1: u32,
}

struct Partial {
    sum: f32,
    lo: f32,
    hi: f32,
    count: u32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read> mask: array<u32>;
@group(0) @binding(2) var<storage, read_write> partials: array<Partial>;
@group(0) @binding(3) var<uniform> p: Params;

var<workgroup> shared_sum: array<f32, 64>;
var<workgroup> shared_lo: array<f32, 64>;
var<workgroup> shared_hi: array<f32, 64>;
var<workgroup> shared_count: array<u32, 64>;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let group = wid.x + wid.y * groups.x;
    let base = group * 64u * PER_THREAD;
    let infinity = bitcast<f32>(0x7f800000u);
    var sum = 0.0;
    var lo = infinity;
    var hi = -infinity;
    var count = 0u;
    for (var k = 0u; k < PER_THREAD; k = k + 1u) {
        let i = base + k * 64u + t;
        if (i < p.count) {
            if (p.masked == 0u || mask[i] != 0u) {
                let v = src[i];
                sum = sum + v;
                lo = min(lo, v);
                hi = max(hi, v);
                count = count + 1u;
            }
        }
    }
    shared_sum[t] = sum;
    shared_lo[t] = lo;
    shared_hi[t] = hi;
    shared_count[t] = count;
    workgroupBarrier();
    for (var half = 32u; half > 0u; half = half / 2u) {
        if (t < half) {
            shared_sum[t] = shared_sum[t] + shared_sum[t + half];
            shared_lo[t] = min(shared_lo[t], shared_lo[t + half]);
            shared_hi[t] = max(shared_hi[t], shared_hi[t + half]);
            shared_count[t] = shared_count[t] + shared_count[t + half];
        }
        workgroupBarrier();
    }
    if (t == 0u && group < arrayLength(&partials)) {
        partials[group] = Partial(shared_sum[0], shared_lo[0], shared_hi[0], shared_count[0]);
    }
}
