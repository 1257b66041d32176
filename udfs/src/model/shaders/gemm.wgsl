// out[o_off + i * n + j] = alpha * sum_k A[i, k] B[k, j] + beta * C[i, j], A and B by
// strides (transposes are strides), C broadcast by strides (flags bit 0: C given).
// 16 x 16 output tiles, K in steps of 16 through workgroup memory.

struct Params {
    m: u32, n: u32, k: u32, a_off: u32,
    rsa: u32, csa: u32, b_off: u32, rsb: u32,
    csb: u32, o_off: u32, csm: u32, csn: u32,
    flags: u32, alpha: f32, beta: f32, _pad: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> c: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

var<workgroup> At: array<f32, 256>;
var<workgroup> Bt: array<f32, 256>;

@compute @workgroup_size(16, 16)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = wid.y * 16u + lid.y;
    let col = wid.x * 16u + lid.x;
    var acc = 0.0;
    for (var k0 = 0u; k0 < p.k; k0 += 16u) {
        var av = 0.0;
        if row < p.m && k0 + lid.x < p.k {
            av = a[p.a_off + row * p.rsa + (k0 + lid.x) * p.csa];
        }
        At[lid.y * 16u + lid.x] = av;
        var bv = 0.0;
        if k0 + lid.y < p.k && col < p.n {
            bv = b[p.b_off + (k0 + lid.y) * p.rsb + col * p.csb];
        }
        Bt[lid.y * 16u + lid.x] = bv;
        workgroupBarrier();
        for (var kk = 0u; kk < 16u; kk++) {
            acc += At[lid.y * 16u + kk] * Bt[kk * 16u + lid.x];
        }
        workgroupBarrier();
    }
    if row < p.m && col < p.n {
        var v = p.alpha * acc;
        if (p.flags & 1u) != 0u {
            v += p.beta * c[row * p.csm + col * p.csn];
        }
        out[p.o_off + row * p.n + col] = v;
    }
}
