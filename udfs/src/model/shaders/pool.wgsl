// MaxPool and AveragePool (mode 0 max, 1 average counting the padding, 2 average over the
// voxels inside), one output voxel per thread, `count` voxels of consecutive planes.

struct Params {
    in_d: u32, in_h: u32, in_w: u32, in_off: u32,
    out_d: u32, out_h: u32, out_w: u32, out_off: u32,
    kd: u32, kh: u32, kw: u32, count: u32,
    sd: u32, sh: u32, sw: u32, row: u32,
    pd: u32, ph: u32, pw: u32, mode: u32,
    dd: u32, dh: u32, dw: u32, _pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * p.row;
    if i >= p.count {
        return;
    }
    let np = p.out_d * p.out_h * p.out_w;
    let q = i / np;
    let n = i % np;
    let ox = n % p.out_w;
    let t = n / p.out_w;
    let oy = t % p.out_h;
    let oz = t / p.out_h;
    let base = (p.in_off + q) * p.in_d * p.in_h * p.in_w;
    var mx = bitcast<f32>(0xff800000u);
    var sum = 0.0;
    var cnt = 0u;
    for (var kz = 0u; kz < p.kd; kz++) {
        let iz = i32(oz * p.sd + kz * p.dd) - i32(p.pd);
        if iz < 0 || iz >= i32(p.in_d) {
            continue;
        }
        for (var ky = 0u; ky < p.kh; ky++) {
            let iy = i32(oy * p.sh + ky * p.dh) - i32(p.ph);
            if iy < 0 || iy >= i32(p.in_h) {
                continue;
            }
            let rowb = base + (u32(iz) * p.in_h + u32(iy)) * p.in_w;
            for (var kx = 0u; kx < p.kw; kx++) {
                let ix = i32(ox * p.sw + kx * p.dw) - i32(p.pw);
                if ix < 0 || ix >= i32(p.in_w) {
                    continue;
                }
                let v = x[rowb + u32(ix)];
                mx = max(mx, v);
                sum += v;
                cnt += 1u;
            }
        }
    }
    var v = mx;
    if p.mode == 1u {
        v = sum / f32(p.kd * p.kh * p.kw);
    } else if p.mode == 2u {
        v = sum / f32(max(cnt, 1u));
    }
    y[(p.out_off + q) * np + n] = v;
}
