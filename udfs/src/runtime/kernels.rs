//! 1-D Gaussian kernels and their derivatives, exactly as scipy.ndimage builds them
//! (`_gaussian_kernel1d`, radius `int(truncate * sigma + 0.5)` with truncate 4), so the
//! filters here can be held to scipy's and both backends convolve with the same weights.

/// Radius of the kernel for `sigma` (voxels): scipy's default truncation at 4 sigma.
pub fn radius(sigma: f64) -> usize {
    (4.0 * sigma + 0.5) as usize
}

/// The weights of a Gaussian of `sigma` voxels, or of its `order`-th derivative (0, 1 or
/// 2), over `-radius..=radius`. As in scipy, the normalized Gaussian is multiplied by the
/// polynomial `q` with `q(x) φ(x) = dⁿ/dxⁿ φ(x)`.
pub fn gaussian(sigma: f64, order: usize) -> Vec<f32> {
    let r = radius(sigma) as i64;
    let s2 = sigma * sigma;
    let xs: Vec<f64> = (-r..=r).map(|x| x as f64).collect();
    let phi: Vec<f64> = xs.iter().map(|x| (-0.5 / s2 * x * x).exp()).collect();
    let total: f64 = phi.iter().sum();
    // q starts as 1; each derivative maps q to q' - q·x/σ² (coefficients by power of x).
    let mut q = vec![0.0f64; order + 1];
    q[0] = 1.0;
    for _ in 0..order {
        let mut next = vec![0.0; order + 1];
        for i in 0..=order {
            if i < order {
                next[i] += (i + 1) as f64 * q[i + 1];
            }
            if i >= 1 {
                next[i] -= q[i - 1] / s2;
            }
        }
        q = next;
    }
    xs.iter()
        .zip(&phi)
        .map(|(x, p)| {
            let poly: f64 = q
                .iter()
                .enumerate()
                .map(|(i, c)| c * x.powi(i as i32))
                .sum();
            (poly * p / total) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_have_the_moments_of_a_gaussian_and_its_derivatives() {
        let k0 = gaussian(2.0, 0);
        assert_eq!(k0.len(), 17);
        assert!((k0.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        // First derivative: odd, and Σ x·k(x) = -1 (the derivative of a unit ramp).
        let k1 = gaussian(2.0, 1);
        let m1: f64 = k1
            .iter()
            .enumerate()
            .map(|(i, k)| (i as f64 - 8.0) * *k as f64)
            .sum();
        assert!((m1 + 1.0).abs() < 1e-3, "{m1}"); // the tails beyond 4 sigma are cut
                                                  // Second derivative: Σ x²/2 · k(x) = 1 (the second derivative of x²/2).
        let k2 = gaussian(2.0, 2);
        let m2: f64 = k2
            .iter()
            .enumerate()
            .map(|(i, k)| (i as f64 - 8.0).powi(2) / 2.0 * *k as f64)
            .sum();
        assert!((m2 - 1.0).abs() < 5e-3, "{m2}"); // scipy's kernel gives 0.9964 too
    }
}
