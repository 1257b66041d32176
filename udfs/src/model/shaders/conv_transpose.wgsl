// 3-D transposed convolution, one output voxel of one output channel per thread: the sum
// over the pass's input channels and the kernel offsets whose input position
// (o + pad - k * dilation) / stride is whole and inside the input. Passes and the
// epilogue as in conv.wgsl. Weights in ONNX's layout (C, M / group, kd, kh, kw).

struct Params {
    in_d: u32, in_h: u32, in_w: u32, in_off: i32,
    out_d: u32, out_h: u32, out_w: u32, out_off: u32,
    kd: u32, kh: u32, kw: u32, ccount: u32,
    sd: u32, sh: u32, sw: u32, mcount: u32,
    pd: u32, ph: u32, pw: u32, c0: u32,
    dd: u32, dh: u32, dw: u32, wm0: u32,
    mg: u32, bias_m0: u32, flags: u32, alpha: f32,
    wc0: u32, row: u32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

fn act(v: f32) -> f32 {
    let a = (p.flags >> 8u) & 3u;
    if a == 1u {
        return max(v, 0.0);
    }
    if a == 2u {
        return select(v, v * p.alpha, v < 0.0);
    }
    if a == 3u {
        return 1.0 / (1.0 + exp(-v));
    }
    return v;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let np = p.out_d * p.out_h * p.out_w;
    let i = gid.x + gid.y * p.row;
    if i >= np * p.mcount {
        return;
    }
    let ml = i / np;
    let n = i % np;
    let ox = n % p.out_w;
    let t = n / p.out_w;
    let oy = t % p.out_h;
    let oz = t / p.out_h;
    let kvol = p.kd * p.kh * p.kw;
    let in_plane = p.in_d * p.in_h * p.in_w;
    let wstride = p.mg * kvol;
    let xbase = i32(in_plane) * (p.in_off + i32(p.c0));
    let wbase = ((p.wc0 + p.c0) * p.mg + p.wm0 + ml) * kvol;
    var sum = 0.0;
    // The kernel taps that land on this voxel (checked once), then the channels.
    for (var kz = 0u; kz < p.kd; kz++) {
        let tz = i32(oz + p.pd) - i32(kz * p.dd);
        if tz < 0 || tz % i32(p.sd) != 0 || u32(tz) / p.sd >= p.in_d {
            continue;
        }
        let iz = u32(tz) / p.sd;
        for (var ky = 0u; ky < p.kh; ky++) {
            let ty = i32(oy + p.ph) - i32(ky * p.dh);
            if ty < 0 || ty % i32(p.sh) != 0 || u32(ty) / p.sh >= p.in_h {
                continue;
            }
            let iy = u32(ty) / p.sh;
            for (var kx = 0u; kx < p.kw; kx++) {
                let tx = i32(ox + p.pw) - i32(kx * p.dw);
                if tx < 0 || tx % i32(p.sw) != 0 || u32(tx) / p.sw >= p.in_w {
                    continue;
                }
                let ix = u32(tx) / p.sw;
                var xi = u32(xbase) + (iz * p.in_h + iy) * p.in_w + ix;
                var wi = wbase + (kz * p.kh + ky) * p.kw + kx;
                for (var c = 0u; c < p.ccount; c++) {
                    sum += x[xi] * w[wi];
                    xi += in_plane;
                    wi += wstride;
                }
            }
        }
    }
    let idx = (p.out_off + ml) * np + n;
    var v = sum;
    if (p.flags & 1u) != 0u {
        v += bias[p.bias_m0 + ml];
    } else {
        v += y[idx];
    }
    if (p.flags & 2u) != 0u {
        v = act(v);
    }
    y[idx] = v;
}
