//! The wgpu reductions, histograms, labelling, erosion, dilation and hole filling (3-D and
//! per slice) against the CPU backend (on lavapipe in CI): labels and masks to the voxel,
//! minimum, maximum, count and histogram counts exactly, sums within 1e-5 relative. Each
//! runs on the whole volume in one binding and with bindings of a few planes, so labelling
//! goes in slabs joined on the host and morphology in slabs with halos, over several
//! rounds.
//!
//! The mask has unequal dimensions (19×27×33) and holds balls, a U in one slice whose arms
//! meet only in its last row, a U along z whose arms meet only in the last slice (so slabs
//! join it at the last cut), a serpentine (many passes of propagation), a hollow shell (a
//! hole to fill), a shell with a pinhole (none), walls touching the border (background
//! enclosed by them and the border is not a hole) and noise: sparse (small components)
//! and dense (small holes in the background).

use crate::common::gpu;
use medlake_udfs::runtime::{Backend, Dims, Reduction};

const DIMS: Dims = [19, 27, 33];

fn index(z: usize, y: usize, x: usize) -> usize {
    (z * DIMS[1] + y) * DIMS[2] + x
}

/// A xorshift step, for deterministic noise.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn phantom() -> Vec<u8> {
    let [nz, ny, nx] = DIMS;
    let mut m = vec![0u8; nz * ny * nx];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    // Percent of noise voxels set: sparse (small components), and dense (small holes).
    let noise = |y: usize| if y < 13 { 12 } else { 70 };
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let p = [z as f64, y as f64, x as f64];
                let d = |c: [f64; 3]| (0..3).map(|a| (p[a] - c[a]).powi(2)).sum::<f64>().sqrt();
                let set = d([5.0, 7.0, 6.0]) <= 3.5 // a ball
                    || d([15.0, 20.0, 25.0]) <= 3.0 // another
                    || (d([10.0, 8.0, 25.0]) <= 4.5 && d([10.0, 8.0, 25.0]) > 2.0) // shell
                    || (d([4.0, 20.0, 26.0]) <= 3.5 && d([4.0, 20.0, 26.0]) > 1.5) // pinholed
                    || (x == 0 && z < 10) // a wall on the border
                    || (y == 26 && x >= 22) // a wall on the border, all slices
                    || (z == 0 && y >= 14 && x >= 22) // a wall on the first slice
                    || x == 2 // with the border, encloses x < 2
                    || (10..=20).contains(&x) && next(&mut seed) % 100 < noise(y);
                m[index(z, y, x)] = u8::from(set);
            }
        }
    }
    // The pinhole: the shell's inside reaches the outside through one voxel.
    m[index(4, 20, 28)] = 0;
    m[index(4, 20, 29)] = 0;
    // A U in slice 9: arms along y at x = 4 and x = 7, joined only on the last row.
    for y in 14..27 {
        m[index(9, y, 4)] = 1;
        m[index(9, y, 7)] = 1;
    }
    for x in 4..=7 {
        m[index(9, 26, x)] = 1;
    }
    // A U along z: arms at (y 1, x 31) and (y 4, x 31), joined only in the last slice.
    for z in 0..nz {
        m[index(z, 1, 31)] = 1;
        m[index(z, 4, 31)] = 1;
    }
    for y in 1..=4 {
        m[index(nz - 1, y, 31)] = 1;
    }
    // A serpentine in slice 14: rows 0, 2, .. 12 from x 4 to 8, joined at alternate ends.
    for y in (0..=12).step_by(2) {
        for x in 4..=8 {
            m[index(14, y, x)] = 1;
        }
        if y < 12 {
            m[index(14, y + 1, if y % 4 == 0 { 8 } else { 4 })] = 1;
        }
    }
    m
}

/// Values for the reductions: 100 + 50 on the mask + noise in [-10, 10).
fn values(mask: &[u8]) -> Vec<f32> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    mask.iter()
        .map(|&m| {
            let noise = (next(&mut seed) >> 40) as f32 / (1u64 << 24) as f32 * 20.0 - 10.0;
            100.0 + 50.0 * f32::from(m) + noise
        })
        .collect()
}

/// The binding limits: none (one binding), 9 planes (labelling in slabs of 9, morphology
/// in slabs of 5 with halos of 2), 3 planes (slabs of 3; morphology one plane and one
/// step a round).
fn limits() -> [Option<u64>; 3] {
    let plane = (DIMS[1] * DIMS[2] * 4) as u64;
    [None, Some(9 * plane), Some(3 * plane)]
}

fn differing(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}

#[test]
fn the_phantom_has_what_it_says() {
    let m = phantom();
    let (labels, count) = Backend::Cpu.label(&m, DIMS).unwrap();
    let l = |z, y, x| labels[index(z, y, x)];
    // The U arms join; the U along z joins; the serpentine is one.
    assert_eq!(l(9, 14, 4), l(9, 14, 7));
    assert_eq!(l(0, 1, 31), l(0, 4, 31));
    assert_eq!(l(14, 0, 4), l(14, 12, 8));
    assert!(count > 50, "{count} components");
    let background: Vec<u8> = m.iter().map(|v| 1 - v).collect();
    let (_, holes) = Backend::Cpu.label(&background, DIMS).unwrap();
    assert!(holes > 10, "{holes} components of the background");
    // The hollow shell's inside is filled, the pinholed one's and x < 2 are not.
    let filled = Backend::Cpu.fill_holes(&m, DIMS).unwrap();
    assert_eq!((m[index(10, 8, 25)], filled[index(10, 8, 25)]), (0, 1));
    assert_eq!(filled[index(4, 20, 26)], 0);
    assert_eq!(filled[index(15, 10, 1)], 0);
}

#[test]
fn gpu_labels_match_the_cpu_backend() {
    let m = phantom();
    let background: Vec<u8> = m.iter().map(|v| 1 - v).collect();
    let cpu = Backend::Cpu;
    for limit in limits() {
        let Some(gpu) = gpu(limit) else { return };
        for (what, mask) in [("mask", &m), ("background", &background)] {
            let (g, gn) = gpu.label(mask, DIMS).unwrap();
            let (c, cn) = cpu.label(mask, DIMS).unwrap();
            let wrong = g.iter().zip(&c).filter(|(a, b)| a != b).count();
            eprintln!(
                "label {what} (binding limit {limit:?}): {gn} components on the GPU, {cn} on \
                 the CPU, {wrong} voxels differ"
            );
            assert_eq!(gn, cn, "{what}, limit {limit:?}: component counts");
            assert!(wrong == 0, "{what}, limit {limit:?}: {wrong} labels differ");
        }
        // Threshold + label as one op (the CPU without a mask): the mask is v >= 125.
        let v = values(&m);
        let (g, gn) = gpu.label_threshold(&v, DIMS, 125.0, f32::INFINITY).unwrap();
        let (c, cn) = cpu.label_threshold(&v, DIMS, 125.0, f32::INFINITY).unwrap();
        assert_eq!((gn, &g), (cn, &c), "label_threshold, limit {limit:?}");
        assert_eq!((c, cn), cpu.label(&m, DIMS).unwrap());
    }
}

#[test]
fn gpu_morphology_and_hole_filling_match_the_cpu_backend() {
    let m = phantom();
    let cpu = Backend::Cpu;
    for limit in limits() {
        let Some(gpu) = gpu(limit) else { return };
        for iterations in [0, 1, 2, 3] {
            let g = gpu.dilate(&m, DIMS, iterations).unwrap();
            let c = cpu.dilate(&m, DIMS, iterations).unwrap();
            let wrong = differing(&g, &c);
            eprintln!("dilate x{iterations} (limit {limit:?}): {wrong} voxels differ");
            assert_eq!(wrong, 0, "dilate x{iterations}, limit {limit:?}");
            let g = gpu.erode(&c, DIMS, iterations).unwrap();
            let c = cpu.erode(&c, DIMS, iterations).unwrap();
            let wrong = differing(&g, &c);
            eprintln!("erode x{iterations} (limit {limit:?}): {wrong} voxels differ");
            assert_eq!(wrong, 0, "erode x{iterations}, limit {limit:?}");
        }
        let g = gpu.fill_holes(&m, DIMS).unwrap();
        let c = cpu.fill_holes(&m, DIMS).unwrap();
        let wrong = differing(&g, &c);
        eprintln!(
            "fill holes (limit {limit:?}): {} voxels filled, {wrong} differ",
            differing(&c, &m)
        );
        assert_eq!(wrong, 0, "fill holes, limit {limit:?}");
        let g = gpu.fill_holes_per_slice(&m, DIMS).unwrap();
        let c = cpu.fill_holes_per_slice(&m, DIMS).unwrap();
        let wrong = differing(&g, &c);
        let (filled, filled_3d) = (
            differing(&c, &m),
            differing(&cpu.fill_holes(&m, DIMS).unwrap(), &m),
        );
        eprintln!(
            "fill holes per slice (limit {limit:?}): {filled} voxels filled ({filled_3d} in \
             3-D), {wrong} differ"
        );
        // The pinholed shell is open in 3-D, but its slices away from the pinhole are rings.
        assert!(filled > filled_3d, "per slice {filled}, in 3-D {filled_3d}");
        assert_eq!(wrong, 0, "fill holes per slice, limit {limit:?}");
    }
}

#[test]
fn gpu_reductions_match_the_cpu_backend() {
    let m = phantom();
    let v = values(&m);
    let none = vec![0u8; m.len()];
    let cpu = Backend::Cpu;
    for limit in limits() {
        let Some(gpu) = gpu(limit) else { return };
        for (what, mask) in [
            ("all", None),
            ("masked", Some(&m[..])),
            ("empty", Some(&none[..])),
        ] {
            let g = gpu.reduce(&v, mask).unwrap();
            let c = cpu.reduce(&v, mask).unwrap();
            let relative = if c.sum == 0.0 {
                g.sum.abs()
            } else {
                ((g.sum - c.sum) / c.sum).abs()
            };
            eprintln!(
                "reduce {what} (limit {limit:?}): sum {} vs {} (relative {relative:.2e}), \
                 min {} max {} count {}",
                g.sum, c.sum, g.min, g.max, g.count
            );
            assert!(
                relative <= 1e-5,
                "{what}, limit {limit:?}: sums {g:?} vs {c:?}"
            );
            let exact = |r: Reduction| (r.min, r.max, r.count);
            assert_eq!(exact(g), exact(c), "{what}, limit {limit:?}");
            let histogram = |b: &Backend| match mask {
                Some(mask) => b.histogram_masked(&v, mask, 30, 95.0, 155.0).unwrap(),
                None => b.histogram(&v, 30, 95.0, 155.0).unwrap(),
            };
            assert_eq!(
                histogram(&gpu),
                histogram(&cpu),
                "histogram {what}, limit {limit:?}"
            );
        }
    }
}
