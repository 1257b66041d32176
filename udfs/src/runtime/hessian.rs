//! Eigenvalues of the Hessian at a scale: the six Gaussian second derivatives
//! ([`super::gaussian`] with orders (2,0,0), (1,1,0), (1,0,1), (0,2,0), (0,1,1), (0,0,2)),
//! then the three eigenvalues of each voxel's symmetric 3×3 matrix, ascending. Vesselness
//! and blob filters (Frangi, Sato) are built on these.
//!
//! On the CPU the eigenvalues come from the closed-form trigonometric solution of the
//! characteristic cubic, in f64 ([`symmetric_eigenvalues_3x3`]). The GPU shader
//! (`shaders/eigen3.wgsl`) has only f32, in which the closed form loses up to
//! √ε ≈ 3·10⁻⁴ of the matrix's scale where two eigenvalues nearly coincide (on a tube's
//! axis, at a blob's centre); it diagonalizes by cyclic Jacobi rotations instead, accurate
//! to a few ε of the matrix's norm.

use rayon::prelude::*;

/// The orders of the six second derivatives, in the order [`symmetric_eigenvalues_3x3`]
/// takes them: zz, zy, zx, yy, yx, xx (z = slices, y = rows, x = columns).
pub const DERIVATIVES: [[usize; 3]; 6] = [
    [2, 0, 0],
    [1, 1, 0],
    [1, 0, 1],
    [0, 2, 0],
    [0, 1, 1],
    [0, 0, 2],
];

/// The eigenvalues of the symmetric 3×3 matrix whose upper triangle is `h` = [hzz, hzy,
/// hzx, hyy, hyx, hxx] (row by row: the matrix is [[hzz, hzy, hzx], [hzy, hyy, hyx],
/// [hzx, hyx, hxx]]), ascending.
///
/// The closed-form trigonometric solution (Smith 1961): with q = trace / 3 and
/// p = √(‖A − qI‖²_F / 6), the eigenvalues are q + 2p·cos(φ + 2πk/3) where
/// φ = acos(det((A − qI) / p) / 2) / 3. In f64 it is accurate to about 10⁻⁸ of the
/// matrix's scale (√ε where two eigenvalues coincide), far below f32 input's rounding.
pub fn symmetric_eigenvalues_3x3(h: [f64; 6]) -> [f64; 3] {
    let [a, b, c, d, e, f] = h; // [[a, b, c], [b, d, e], [c, e, f]]
    let off = b * b + c * c + e * e;
    let mut out = if off == 0.0 {
        [a, d, f]
    } else {
        let q = (a + d + f) / 3.0;
        let (a, d, f) = (a - q, d - q, f - q);
        let p = ((a * a + d * d + f * f + 2.0 * off) / 6.0).sqrt();
        // det(B) / 2 with B = (A - qI) / p.
        let det = a * (d * f - e * e) - b * (b * f - e * c) + c * (b * e - d * c);
        let r = (det / (2.0 * p * p * p)).clamp(-1.0, 1.0);
        let phi = r.acos() / 3.0;
        let largest = q + 2.0 * p * phi.cos();
        let smallest = q + 2.0 * p * (phi + 2.0 * std::f64::consts::FRAC_PI_3).cos();
        [smallest, 3.0 * q - largest - smallest, largest]
    };
    // Rounding can put the middle one a hair outside the others.
    out.sort_by(f64::total_cmp);
    out
}

/// The eigenvalues of each voxel's Hessian from its six second derivatives (each a volume,
/// in [`DERIVATIVES`]' order), ascending: three volumes, on the CPU.
pub fn cpu_eigenvalues(h: [&[f32]; 6], plane: usize) -> [Vec<f32>; 3] {
    let n = h[0].len();
    assert!(h.iter().all(|v| v.len() == n));
    let mut out: [Vec<f32>; 3] = std::array::from_fn(|_| vec![0f32; n]);
    if n == 0 {
        return out;
    }
    let plane = plane.max(1);
    let [l1, l2, l3] = &mut out;
    l1.par_chunks_mut(plane)
        .zip(l2.par_chunks_mut(plane))
        .zip(l3.par_chunks_mut(plane))
        .enumerate()
        .for_each(|(z, ((o1, o2), o3))| {
            let base = z * plane;
            for (i, ((v1, v2), v3)) in o1.iter_mut().zip(o2).zip(o3).enumerate() {
                let m = std::array::from_fn(|k| f64::from(h[k][base + i]));
                let [a, b, c] = symmetric_eigenvalues_3x3(m);
                (*v1, *v2, *v3) = (a as f32, b as f32, c as f32);
            }
        });
    out
}
