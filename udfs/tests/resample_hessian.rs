//! Trilinear resampling and Hessian eigenvalues against scipy
//! (`tests/oracle/resample_hessian_scipy.py`: `map_coordinates` / `affine_transform`,
//! `gaussian_filter` + `numpy.linalg.eigvalsh`), and the wgpu backend against the CPU
//! backend (on lavapipe in CI), whole and in slabs. The volume has unequal dimensions so
//! that a mixed-up axis shows, and blobs, tubes (one along x, whose cross-section makes
//! two eigenvalues nearly equal on its axis; one oblique) and noise.

use std::path::Path;

use crate::common::gpu;
use crate::common::oracle::{python, python_has, read_npy, worst, Scratch};
use medlake_udfs::runtime::{self, resample, symmetric_eigenvalues_3x3, Backend, Dims};

const DIMS: Dims = [19, 27, 33];

/// Resampling cases: (spacing, target), slice, row, column mm.
const RESAMPLE: [([f64; 3], [f64; 3]); 3] = [
    ([2.5, 0.7, 0.7], [1.0, 1.0, 1.0]), // upsampling z, downsampling y and x
    ([2.5, 0.7, 0.7], [3.0, 1.5, 2.0]), // downsampling all three
    ([1.0, 1.0, 1.0], [0.4, 0.6, 0.9]), // upsampling all three
];

/// Hessian scales, voxels per axis.
const SIGMAS: [[f64; 3]; 2] = [[1.5, 1.5, 1.5], [1.5, 1.0, 2.0]];

/// Blobs of 1.0 (a ball, a shell), a tube along x and an oblique one, thin walls touching
/// the border, on a background of 0, plus deterministic noise of ±0.2.
fn phantom() -> Vec<f32> {
    let [nz, ny, nx] = DIMS;
    let mut v = vec![0f32; nz * ny * nx];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    // The oblique tube's axis: through (9, 13, 16), along (0.3, 0.5, 1) normalized.
    let dir = {
        let d = [0.3f64, 0.5, 1.0];
        let n = d.iter().map(|x| x * x).sum::<f64>().sqrt();
        d.map(|x| x / n)
    };
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let p = [z as f64, y as f64, x as f64];
                let d = |c: [f64; 3]| (0..3).map(|a| (p[a] - c[a]).powi(2)).sum::<f64>().sqrt();
                let mut value = 0.0;
                if d([6.0, 8.0, 8.0]) <= 4.5 {
                    value = 1.0;
                }
                if d([12.0, 18.0, 22.0]) <= 5.5 && d([12.0, 18.0, 22.0]) > 2.5 {
                    value = 1.0;
                }
                if (z as f64 - 4.0).powi(2) + (y as f64 - 20.0).powi(2) <= 2.5f64.powi(2) {
                    value = 1.0; // along x, through both x borders
                }
                let q: [f64; 3] = std::array::from_fn(|a| p[a] - [9.0, 13.0, 16.0][a]);
                let along: f64 = (0..3).map(|a| q[a] * dir[a]).sum();
                let across = (q.iter().map(|x| x * x).sum::<f64>() - along * along).sqrt();
                if across <= 1.8 {
                    value = 0.8;
                }
                if x == 30 && z > 10 {
                    value = 1.0;
                }
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let noise = (seed >> 40) as f64 / (1u64 << 24) as f64 * 0.4 - 0.2;
                v[(z * ny + y) * nx + x] = (value + noise) as f32;
            }
        }
    }
    v
}

/// Run the scipy oracle on `v`, or `None` (skip) where python3 lacks scipy; in CI
/// (`CI=true`) a missing scipy fails the test.
fn scipy(v: &[f32], test: &str) -> Option<Scratch> {
    if !python_has("numpy, scipy") {
        return None;
    }
    let dir = std::env::temp_dir().join(format!(
        "medlake-resample-hessian-{}-{test}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let dir = Scratch(dir);
    let input = dir.0.join("v.f32");
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(&input, bytes).unwrap();
    let triple = |t: [f64; 3]| format!("{},{},{}", t[0], t[1], t[2]);
    let mut cmd = std::process::Command::new(python());
    cmd.arg(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/oracle/resample_hessian_scipy.py"),
    )
    .args(["--in", input.to_str().unwrap()])
    .args(["--dims", &format!("{},{},{}", DIMS[0], DIMS[1], DIMS[2])])
    .args(["--out", dir.0.to_str().unwrap()]);
    for (spacing, target) in RESAMPLE {
        cmd.arg(format!("--resample={}:{}", triple(spacing), triple(target)));
    }
    for sigma in SIGMAS {
        cmd.arg(format!("--sigma={}", triple(sigma)));
    }
    let run = cmd.output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    Some(dir)
}

/// Within 1e-4 of scipy's value range (scipy computes in f64).
fn close(name: &str, ours: &[f32], theirs: &[f64]) {
    let (worst, tol) = worst(ours, theirs, 1e-4);
    eprintln!("{name}: worst difference from scipy {worst:.3e} (tolerance {tol:.3e})");
    assert!(worst <= tol, "{name}: worst difference {worst:e} > {tol:e}");
}

#[test]
fn resampling_matches_scipy() {
    let v = phantom();
    let Some(dir) = scipy(&v, "resample") else {
        return;
    };
    for (k, (spacing, target)) in RESAMPLE.into_iter().enumerate() {
        let (out, dims) = runtime::resample(&Backend::Cpu, &v, DIMS, spacing, target).unwrap();
        let reference = read_npy(&dir.0.join(format!("resample_{k}.npy")));
        assert_eq!(reference.shape, dims, "{spacing:?} -> {target:?}");
        close(
            &format!("resample {spacing:?} -> {target:?}"),
            &out,
            &reference.values,
        );
    }
}

#[test]
fn resampling_geometry() {
    // floor((n - 1) * spacing / target) + 1 voxels; the first on the first voxel.
    let v = phantom();
    let (out, dims) =
        runtime::resample(&Backend::Cpu, &v, DIMS, [2.5, 0.7, 0.7], [1.0, 1.0, 1.0]).unwrap();
    assert_eq!(dims, [46, 19, 23]);
    assert_eq!(out[0], v[0]);
    // The same spacing: the volume, exactly.
    let (same, dims) =
        runtime::resample(&Backend::Cpu, &v, DIMS, [1.2, 0.8, 0.8], [1.2, 0.8, 0.8]).unwrap();
    assert_eq!((same, dims), (v.clone(), DIMS));
    // Doubling the spacing: every other voxel, exactly.
    let (half, dims) = runtime::resample(&Backend::Cpu, &v, DIMS, [1.0; 3], [2.0; 3]).unwrap();
    assert_eq!(dims, [10, 14, 17]);
    let [_, ny, nx] = DIMS;
    assert_eq!(half[(3 * 14 + 5) * 17 + 7], v[(6 * ny + 10) * nx + 14]);
    // An integer output length up to rounding keeps its last voxel.
    assert_eq!(resample::output_len(4, 0.1, 0.3), 2);
    assert_eq!(resample::output_len(31, 0.1, 0.3), 11);
    assert!(runtime::resample(&Backend::Cpu, &v, DIMS, [0.0, 1.0, 1.0], [1.0; 3]).is_err());
    // The affine: direction columns rescaled (i = column, j = row, k = slice), origin kept.
    let affine = [
        [0.0, 0.7, 0.0, -10.0],
        [0.7, 0.0, 0.0, 20.0],
        [0.0, 0.0, -2.5, 30.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let r = resample::resampled_affine(affine, [2.5, 0.7, 0.7], [1.0, 2.0, 3.0]);
    let expect = [
        [0.0, 2.0, 0.0, -10.0],
        [3.0, 0.0, 0.0, 20.0],
        [0.0, 0.0, -1.0, 30.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    for (a, b) in r.iter().flatten().zip(expect.iter().flatten()) {
        assert!((a - b).abs() < 1e-12, "{r:?}");
    }
}

#[test]
fn symmetric_eigenvalues_of_known_matrices() {
    let close = |h: [f64; 6], expect: [f64; 3]| {
        let got = symmetric_eigenvalues_3x3(h);
        for (a, b) in got.iter().zip(expect) {
            assert!(
                (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
                "{h:?}: {got:?} != {expect:?}"
            );
        }
    };
    close([3.0, 0.0, 0.0, -1.0, 0.0, 2.0], [-1.0, 2.0, 3.0]); // diagonal
    close([2.0, 0.0, 0.0, 2.0, 0.0, 2.0], [2.0; 3]); // scalar
    close([2.0, 1.0, 0.0, 2.0, 0.0, 5.0], [1.0, 3.0, 5.0]); // a 2x2 block
    close([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 3.0]); // rank one, a double root
    close([0.0, 1.0, 1.0, 0.0, 1.0, 0.0], [-1.0, -1.0, 2.0]);
    // Q diag(-4, 1, 7) Qᵀ for a rotation Q about (1, 2, 2)/3 by 0.7 rad.
    let (c, s) = (0.7f64.cos(), 0.7f64.sin());
    let u = [1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0];
    let q: [[f64; 3]; 3] = std::array::from_fn(|i| {
        std::array::from_fn(|j| {
            let cross = [[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]];
            let eye = if i == j { 1.0 } else { 0.0 };
            c * eye + s * cross[i][j] + (1.0 - c) * u[i] * u[j]
        })
    });
    let l = [-4.0, 1.0, 7.0];
    let m = |i: usize, j: usize| (0..3).map(|k| q[i][k] * l[k] * q[j][k]).sum::<f64>();
    close([m(0, 0), m(0, 1), m(0, 2), m(1, 1), m(1, 2), m(2, 2)], l);
}

#[test]
fn hessian_eigenvalues_match_scipy() {
    let v = phantom();
    let Some(dir) = scipy(&v, "hessian") else {
        return;
    };
    let n = v.len();
    for (k, sigma) in SIGMAS.into_iter().enumerate() {
        let ours = runtime::hessian_eigenvalues(&Backend::Cpu, &v, DIMS, sigma).unwrap();
        let reference = read_npy(&dir.0.join(format!("hessian_{k}.npy")));
        assert_eq!(reference.shape, [3, DIMS[0], DIMS[1], DIMS[2]]);
        for (i, l) in ours.iter().enumerate() {
            close(
                &format!("hessian sigma {sigma:?}: eigenvalue {}", i + 1),
                l,
                &reference.values[i * n..(i + 1) * n],
            );
        }
        assert!((0..n).all(|j| ours[0][j] <= ours[1][j] && ours[1][j] <= ours[2][j]));
    }
}

/// GPU output within 1e-5 of the CPU output's value range: the shaders may fuse
/// multiply-adds where the CPU rounds twice, and the eigenvalues come from Jacobi
/// rotations in f32 on the GPU, the closed form in f64 on the CPU.
fn parity(name: &str, gpu: &[f32], cpu: &[f32]) {
    let cpu64: Vec<f64> = cpu.iter().map(|v| f64::from(*v)).collect();
    let (worst, tol) = worst(gpu, &cpu64, 1e-5);
    eprintln!("{name}: GPU vs CPU worst difference {worst:.3e} (tolerance {tol:.3e})");
    assert!(
        worst <= tol,
        "{name}: GPU and CPU differ by {worst:e} (> {tol:e})"
    );
}

#[test]
fn gpu_resampling_and_hessian_match_the_cpu_backend() {
    let v = phantom();
    let cpu = Backend::Cpu;
    let plane = (DIMS[1] * DIMS[2] * 4) as u64;
    // One binding for everything; 16 planes (slabs for the convolutions, with their
    // halos, and chunks for the eigenvalues); 3 planes (resampling only: a Gaussian's
    // halo does not fit), a slab of output planes per one to three input planes.
    for (limit, hessian) in [
        (None, true),
        (Some(16 * plane), true),
        (Some(3 * plane), false),
    ] {
        let Some(gpu) = gpu(limit) else { return };
        let label = |op: String| format!("{op} (binding limit {limit:?})");
        for (spacing, target) in RESAMPLE {
            let (g, gd) = runtime::resample(&gpu, &v, DIMS, spacing, target).unwrap();
            let (c, cd) = runtime::resample(&cpu, &v, DIMS, spacing, target).unwrap();
            assert_eq!(gd, cd);
            parity(
                &label(format!("resample {spacing:?} -> {target:?}")),
                &g,
                &c,
            );
        }
        if !hessian {
            continue;
        }
        for sigma in SIGMAS {
            let g = runtime::hessian_eigenvalues(&gpu, &v, DIMS, sigma).unwrap();
            let c = runtime::hessian_eigenvalues(&cpu, &v, DIMS, sigma).unwrap();
            for i in 0..3 {
                parity(
                    &label(format!("hessian {sigma:?} eigenvalue {}", i + 1)),
                    &g[i],
                    &c[i],
                );
            }
        }
    }
}

#[test]
fn gpu_eigenvalues_of_nearly_degenerate_matrices() {
    // Where the closed form in f32 would lose √ε of the scale: double roots, and pairs a
    // hair apart, against the f64 closed form.
    let Some(Backend::Gpu(gpu)) = gpu(None) else {
        return;
    };
    let mut cases: Vec<[f64; 6]> = vec![
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        [0.0, 1.0, 1.0, 0.0, 1.0, 0.0],
        [2.0, 0.0, 0.0, 2.0, 0.0, 2.0],
        [5.0, 0.0, 0.0, -3.0, 0.0, 0.0],
    ];
    for k in 0..200 {
        let e = 1e-3 * f64::from(k) / 200.0;
        let t = f64::from(k) * 0.1;
        // Eigenvalues (-1, -1 + e, 2) in a basis turning with k: q = Rx(t) Rz(t).
        let (c, s) = (t.cos(), t.sin());
        let b = [[c, -s, 0.0], [s * c, c * c, -s], [s * s, s * c, c]];
        let l = [-1.0, -1.0 + e, 2.0];
        let m = |i: usize, j: usize| (0..3).map(|k| b[i][k] * l[k] * b[j][k]).sum::<f64>();
        cases.push([m(0, 0), m(0, 1), m(0, 2), m(1, 1), m(1, 2), m(2, 2)]);
    }
    let h: [Vec<f32>; 6] = std::array::from_fn(|k| cases.iter().map(|c| c[k] as f32).collect());
    let got = gpu
        .symmetric_eigenvalues(std::array::from_fn(|k| h[k].as_slice()))
        .unwrap();
    let mut worst_rel = 0f64;
    for (j, case) in cases.iter().enumerate() {
        // The reference from the f32-rounded matrix the GPU saw.
        let m: [f64; 6] = std::array::from_fn(|k| f64::from(h[k][j]));
        let expect = symmetric_eigenvalues_3x3(m);
        let scale = m.iter().map(|x| x.abs()).fold(0.0, f64::max);
        for i in 0..3 {
            let d = (f64::from(got[i][j]) - expect[i]).abs() / scale;
            worst_rel = worst_rel.max(d);
            assert!(d <= 2e-6, "{case:?}: GPU {} vs {}", got[i][j], expect[i]);
        }
    }
    eprintln!("nearly degenerate: GPU vs f64 closed form, worst {worst_rel:.3e} of the scale");
}
