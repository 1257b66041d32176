//! The compute runtime's CPU ops against scipy.ndimage (`tests/oracle/ndimage_scipy.py`)
//! on a volume with blobs, a hollow shell and noise, with unequal dimensions so that a
//! mixed-up axis shows.

use std::path::Path;

use crate::common::{python, python_has, read_npy, Npy};
use medlake_udfs::runtime::{self, cpu, labels, Backend, Dims};

const DIMS: Dims = [19, 27, 33];
const SIGMA: f64 = 1.5;

/// Blobs of 1.0 (two touching through one corner row, one with a hole inside) on a
/// background of 0, plus deterministic noise of ±0.2.
fn phantom() -> Vec<f32> {
    let [nz, ny, nx] = DIMS;
    let mut v = vec![0f32; nz * ny * nx];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let d = |c: [f64; 3]| {
                    ((z as f64 - c[0]).powi(2)
                        + (y as f64 - c[1]).powi(2)
                        + (x as f64 - c[2]).powi(2))
                    .sqrt()
                };
                let mut value = 0.0;
                if d([6.0, 8.0, 8.0]) <= 4.5 {
                    value = 1.0;
                }
                if d([12.0, 18.0, 22.0]) <= 5.5 && d([12.0, 18.0, 22.0]) > 2.5 {
                    value = 1.0; // a shell: its inside is a hole
                }
                if (x == 30 || y == 2) && z > 10 {
                    value = 1.0; // thin walls, touching the border
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

fn scipy(v: &[f32]) -> Option<tempfile::TempDir> {
    if !python_has("scipy, numpy") {
        if std::env::var("CI").is_ok_and(|c| c == "true") {
            panic!("scipy is needed: pip install -r tests/oracle/requirements.txt");
        }
        eprintln!("skipping: scipy not installed");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("v.f32");
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(&input, bytes).unwrap();
    let run = std::process::Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/ndimage_scipy.py"))
        .args(["--in", input.to_str().unwrap()])
        .args(["--dims", &format!("{},{},{}", DIMS[0], DIMS[1], DIMS[2])])
        .args(["--out", dir.path().to_str().unwrap()])
        .args(["--sigma", &SIGMA.to_string()])
        .args(["--threshold=0.5,10", "--bins=24", "--range=-0.3,1.3"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    Some(dir)
}

fn load(dir: &tempfile::TempDir, name: &str) -> Npy {
    let a = read_npy(&dir.path().join(name));
    assert!(
        a.shape.is_empty() || a.shape == DIMS || a.shape.len() == 1,
        "{name}: {:?}",
        a.shape
    );
    a
}

/// Within 1e-4 of the reference's value range (scipy accumulates in f64).
fn close(name: &str, ours: &[f32], theirs: &Npy) {
    let (lo, hi) = theirs
        .values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    let tol = 1e-4 * (hi - lo).max(1e-12);
    assert_eq!(ours.len(), theirs.values.len(), "{name}");
    let worst = ours
        .iter()
        .zip(&theirs.values)
        .map(|(a, b)| (f64::from(*a) - b).abs())
        .fold(0.0, f64::max);
    assert!(worst <= tol, "{name}: worst difference {worst:e} > {tol:e}");
}

fn same<T: Copy + Into<f64>>(name: &str, ours: &[T], theirs: &Npy) {
    assert_eq!(ours.len(), theirs.values.len(), "{name}");
    if let Some(i) = ours
        .iter()
        .zip(&theirs.values)
        .position(|(a, b)| (*a).into() != *b)
    {
        panic!(
            "{name}: voxel {i} is {} here, {} in scipy",
            ours[i].into(),
            theirs.values[i]
        );
    }
}

#[test]
fn filters_match_scipy_ndimage() {
    let v = phantom();
    let Some(dir) = scipy(&v) else { return };
    let s = [SIGMA; 3];
    let cpu = Backend::Cpu;
    let g = |order| runtime::gaussian(&cpu, &v, DIMS, s, order).unwrap();
    close("gaussian", &g([0, 0, 0]), &load(&dir, "gaussian.npy"));
    for (axis, name) in ["d_z.npy", "d_y.npy", "d_x.npy"].iter().enumerate() {
        let mut order = [0; 3];
        order[axis] = 1;
        close(name, &g(order), &load(&dir, name));
    }
    close("dd_x", &g([0, 0, 2]), &load(&dir, "dd_x.npy"));
    let log = runtime::laplacian_of_gaussian(&cpu, &v, DIMS, s).unwrap();
    close("log", &log, &load(&dir, "log.npy"));
}

#[test]
fn masks_labels_and_morphology_match_scipy_ndimage() {
    let v = phantom();
    let Some(dir) = scipy(&v) else { return };
    let mask = cpu::threshold(&v, 0.5, 10.0);
    same("mask", &mask, &load(&dir, "mask.npy"));
    let (l, n) = labels::label(&mask, DIMS);
    assert!(n >= 3, "{n} components");
    same("labels", &l, &load(&dir, "labels.npy"));
    same(
        "eroded",
        &labels::erode(&mask, DIMS, 1),
        &load(&dir, "eroded.npy"),
    );
    same(
        "dilated",
        &labels::dilate(&mask, DIMS, 1),
        &load(&dir, "dilated.npy"),
    );
    let filled = labels::fill_holes(&mask, DIMS);
    assert!(
        filled.iter().map(|x| u64::from(*x)).sum::<u64>()
            > mask.iter().map(|x| u64::from(*x)).sum::<u64>()
    );
    same("filled", &filled, &load(&dir, "filled.npy"));
    let h = cpu::histogram(&v, None, 24, -0.3, 1.3);
    let h: Vec<f64> = h.iter().map(|c| *c as f64).collect();
    same("histogram", &h, &load(&dir, "histogram.npy"));
    let r = cpu::reduce(&v, Some(&mask));
    assert_eq!(
        r.count as f64,
        load(&dir, "mask.npy").values.iter().sum::<f64>()
    );
    assert!(r.min >= 0.5 && r.max <= 1.2);
}

/// The GPU backend on any adapter (lavapipe in CI), or `None` to skip; in CI (`CI=true`)
/// a missing adapter fails the test.
fn gpu(limit_binding: Option<u64>) -> Option<Backend> {
    use medlake_udfs::runtime::gpu::{AdapterChoice, Gpu};
    match Gpu::open(AdapterChoice::AnyIncludingSoftware) {
        Ok(mut g) => {
            if let Some(bytes) = limit_binding {
                g.limit_binding(bytes);
            }
            eprintln!("GPU backend on {}", g.describe());
            Some(Backend::Gpu(std::sync::Arc::new(g)))
        }
        Err(e) if std::env::var("CI").is_ok_and(|c| c == "true") => {
            panic!("{e} (CI needs an adapter: apt-get install mesa-vulkan-drivers)")
        }
        Err(e) => {
            eprintln!("skipping: {e}");
            None
        }
    }
}

/// GPU output within 1e-5 of the CPU output's value range (the shaders may fuse
/// multiply-adds where the CPU rounds twice).
fn parity(name: &str, gpu: &[f32], cpu: &[f32]) {
    assert_eq!(gpu.len(), cpu.len(), "{name}");
    let (lo, hi) = cpu
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    let tol = 1e-5 * f64::from(hi - lo).max(1e-12);
    let worst = gpu
        .iter()
        .zip(cpu)
        .map(|(a, b)| f64::from(a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= tol,
        "{name}: GPU and CPU differ by {worst:e} (> {tol:e})"
    );
}

#[test]
fn gpu_ops_match_the_cpu_backend() {
    let v = phantom();
    let cpu = Backend::Cpu;
    // Whole volume in one binding, then slabs of a few planes (halos along z).
    let slab = (DIMS[1] * DIMS[2] * 4 * 16) as u64;
    for limit in [None, Some(slab)] {
        let Some(gpu) = gpu(limit) else { return };
        let label = |op: &str| format!("{op} (binding limit {limit:?})");
        for order in [
            [0, 0, 0],
            [1, 0, 0],
            [0, 1, 0],
            [0, 0, 1],
            [2, 0, 0],
            [0, 0, 2],
        ] {
            let s = [SIGMA, 1.0, 2.0];
            parity(
                &label(&format!("gaussian {order:?}")),
                &runtime::gaussian(&gpu, &v, DIMS, s, order).unwrap(),
                &runtime::gaussian(&cpu, &v, DIMS, s, order).unwrap(),
            );
        }
        parity(
            &label("laplacian of gaussian"),
            &runtime::laplacian_of_gaussian(&gpu, &v, DIMS, [SIGMA; 3]).unwrap(),
            &runtime::laplacian_of_gaussian(&cpu, &v, DIMS, [SIGMA; 3]).unwrap(),
        );
        assert_eq!(
            gpu.threshold(&v, 0.5, 10.0).unwrap(),
            cpu.threshold(&v, 0.5, 10.0).unwrap(),
            "{}",
            label("threshold")
        );
        assert_eq!(
            gpu.histogram(&v, 24, -0.3, 1.3).unwrap(),
            cpu.histogram(&v, 24, -0.3, 1.3).unwrap(),
            "{}",
            label("histogram")
        );
    }
}
