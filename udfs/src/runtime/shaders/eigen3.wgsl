// Eigenvalues of per-voxel symmetric 3x3 matrices (runtime/hessian.rs), ascending.
//
// The input holds six volumes of `count` values back to back, the matrix's upper
// triangle in the order hzz, hzy, hzx, hyy, hyx, hxx; the output three volumes of
// `count` values, smallest eigenvalue first. (Two bindings rather than nine: WebGPU's
// default is 8 storage buffers per stage.)
//
// The CPU backend uses the closed-form trigonometric solution in f64. In f32 that
// solution loses up to sqrt(eps) (~3e-4) of the matrix's scale where two eigenvalues
// nearly coincide, so this shader diagonalizes by cyclic Jacobi rotations, accurate to
// a few eps of the matrix's norm: sweeps of the three rotations until the off-diagonal
// part is below rounding (it shrinks quadratically), at most 8.

struct Params {
    count: u32,
    row_stride: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> h: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

// One Jacobi rotation in the (p, q) plane, zeroing apq: the new app and aqq, and the
// new (r, p) and (r, q) entries from the old ones (arp, arq), r being the third index.
struct Rotated {
    app: f32,
    aqq: f32,
    arp: f32,
    arq: f32,
}

fn rotate(app: f32, aqq: f32, apq: f32, arp: f32, arq: f32) -> Rotated {
    if (apq == 0.0) {
        return Rotated(app, aqq, arp, arq);
    }
    // t = tan of the angle: the smaller root of t^2 + 2 theta t - 1 = 0.
    let theta = (aqq - app) / (2.0 * apq);
    var t: f32;
    if (abs(theta) > 1e10) {
        t = 0.5 / theta; // theta * theta would overflow; t ~ 1 / (2 theta)
    } else {
        t = 1.0 / (abs(theta) + sqrt(theta * theta + 1.0));
        t = select(t, -t, theta < 0.0);
    }
    let c = 1.0 / sqrt(t * t + 1.0);
    let s = t * c;
    return Rotated(app - t * apq, aqq + t * apq, c * arp - s * arq, s * arp + c * arq);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * p.row_stride;
    let n = p.count;
    if (i >= n) {
        return;
    }
    // The diagonal, and the off-diagonal entries by the index they leave out:
    // o[0] = a12, o[1] = a02, o[2] = a01.
    var d = array<f32, 3>(h[i], h[3u * n + i], h[5u * n + i]);
    var o = array<f32, 3>(h[4u * n + i], h[2u * n + i], h[n + i]);
    for (var sweep = 0; sweep < 8; sweep = sweep + 1) {
        let off = abs(o[0]) + abs(o[1]) + abs(o[2]);
        if (off == 0.0 || off <= 1e-9 * (abs(d[0]) + abs(d[1]) + abs(d[2]))) {
            break;
        }
        // (p, q) = (0, 1), (0, 2), (1, 2): r, the index left out, = 2, 1, 0. Entry
        // (r, p) leaves out q, and (r, q) leaves out p.
        for (var r = 2; r >= 0; r = r - 1) {
            let ip = select(0, 1, r == 0);
            let iq = select(2, 1, r == 2);
            let x = rotate(d[ip], d[iq], o[r], o[iq], o[ip]);
            d[ip] = x.app;
            d[iq] = x.aqq;
            o[r] = 0.0;
            o[iq] = x.arp;
            o[ip] = x.arq;
        }
    }
    dst[i] = min(d[0], min(d[1], d[2]));
    dst[n + i] = max(min(d[0], d[1]), min(max(d[0], d[1]), d[2]));
    dst[2u * n + i] = max(d[0], max(d[1], d[2]));
}
