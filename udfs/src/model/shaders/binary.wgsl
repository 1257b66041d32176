// out[i] = f(a[ia], b[ib]) with numpy broadcasting: element i of the output chunk is
// element base + i of the output; an operand of the output's shape ("direct", flags bits
// 0 and 1) is read at i in its matching chunk, another one, whole in one binding, at the
// dot product of the output coordinates with its broadcast strides (0 along broadcast
// axes). f: 0 add, 1 mul, 2 prelu (a < 0 ? a * b : a); then act as in conv.wgsl.

struct Params {
    count: u32, row: u32, base: u32, rank: u32,
    op: u32, act: u32, alpha: f32, flags: u32,
    dims: array<vec4<u32>, 2>,
    sa: array<vec4<u32>, 2>,
    sb: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * p.row;
    if i >= p.count {
        return;
    }
    var ia = i;
    var ib = i;
    if (p.flags & 3u) != 3u {
        var rem = p.base + i;
        var oa = 0u;
        var ob = 0u;
        for (var d = i32(p.rank) - 1; d >= 0; d--) {
            let dim = p.dims[d / 4][d % 4];
            let c = rem % dim;
            rem = rem / dim;
            oa += c * p.sa[d / 4][d % 4];
            ob += c * p.sb[d / 4][d % 4];
        }
        if (p.flags & 1u) == 0u {
            ia = oa;
        }
        if (p.flags & 2u) == 0u {
            ib = ob;
        }
    }
    let av = a[ia];
    let bv = b[ib];
    var v: f32;
    if p.op == 0u {
        v = av + bv;
    } else if p.op == 1u {
        v = av * bv;
    } else {
        v = select(av, av * bv, av < 0.0);
    }
    if p.act == 1u {
        v = max(v, 0.0);
    } else if p.act == 2u {
        v = select(v, v * p.alpha, v < 0.0);
    } else if p.act == 3u {
        v = 1.0 / (1.0 + exp(-v));
    }
    out[i] = v;
}
