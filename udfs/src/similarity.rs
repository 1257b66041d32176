//! Exact nearest-neighbour search by cosine similarity over a set of embeddings.
//!
//! - **Exact.** Every stored vector is scored against the query; nothing is approximated.
//!   Vectors are L2-normalized once, when they are added, so a search is one dot product
//!   per stored vector. A zero vector (or one with a non-finite value) has no direction:
//!   it is stored as zeros and scores 0 against everything.
//! - **Fast.** The scan is memory-bound (1,000,000 256-d vectors are 1 GiB of f32), so
//!   rows are streamed once, in parallel chunks (rayon), each chunk keeping its own top k;
//!   the dot product uses AVX2/FMA where the CPU has them (checked at run time), with a
//!   portable 8-lane fallback the compiler vectorizes.
//! - **Room for an ANN index later.** [`VectorIndex`] is the exact baseline behind one
//!   `search` call; an approximate index can sit beside it with the same signature.
//! - **Deterministic.** Ties are broken by insertion order (lower index first), so the
//!   same index and query always give the same neighbours in the same order.

use std::cmp::Ordering;

use rayon::prelude::*;

use crate::error::{Error, Result};

/// Rows scored per parallel task: large enough to amortize scheduling, small enough that
/// both cores stay busy to the end.
const CHUNK_ROWS: usize = 8192;

/// L2-normalized vectors of one dimension, in insertion order.
#[derive(Debug, Clone)]
pub struct VectorIndex {
    dim: usize,
    data: Vec<f32>,
}

/// One neighbour: its insertion index and cosine similarity to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    pub index: usize,
    pub score: f32,
}

impl VectorIndex {
    pub fn new(dim: usize) -> VectorIndex {
        VectorIndex {
            dim,
            data: Vec::new(),
        }
    }

    /// An index with room for `n` vectors.
    pub fn with_capacity(dim: usize, n: usize) -> VectorIndex {
        VectorIndex {
            dim,
            data: Vec::with_capacity(dim * n),
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.data.len() / self.dim.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Add a vector (normalized here); its index is the number added before it.
    pub fn push(&mut self, v: &[f32]) -> Result<usize> {
        if v.len() != self.dim {
            return Err(Error::Model(format!(
                "vector of {} values added to an index of dimension {}",
                v.len(),
                self.dim
            )));
        }
        let at = self.len();
        self.data.extend_from_slice(v);
        normalize(&mut self.data[at * self.dim..]);
        Ok(at)
    }

    /// The stored (normalized) vector at `index`.
    pub fn vector(&self, index: usize) -> &[f32] {
        &self.data[index * self.dim..(index + 1) * self.dim]
    }

    /// The `k` stored vectors most similar to `query` (cosine), best first, ties by lower
    /// index; `exclude` leaves one index out (the query's own row).
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        exclude: Option<usize>,
    ) -> Result<Vec<Neighbour>> {
        self.search_where(query, k, |index| Some(index) != exclude)
    }

    /// The `k` most similar among the stored vectors `keep` accepts: a search restricted
    /// to the rows a caller may see gives k of those, not fewer.
    pub fn search_where(
        &self,
        query: &[f32],
        k: usize,
        keep: impl Fn(usize) -> bool + Sync,
    ) -> Result<Vec<Neighbour>> {
        if query.len() != self.dim {
            return Err(Error::Model(format!(
                "query of {} values against an index of dimension {}",
                query.len(),
                self.dim
            )));
        }
        if k == 0 || self.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = query.to_vec();
        normalize(&mut q);
        let dot = dot_fn();
        let dim = self.dim;
        let best = self
            .data
            .par_chunks(CHUNK_ROWS * dim)
            .enumerate()
            .map(|(c, rows)| {
                let mut top = TopK::new(k);
                for (r, row) in rows.chunks_exact(dim).enumerate() {
                    let index = c * CHUNK_ROWS + r;
                    if keep(index) {
                        top.offer(Neighbour {
                            index,
                            score: dot(row, &q),
                        });
                    }
                }
                top
            })
            .reduce(
                || TopK::new(k),
                |mut a, b| {
                    for n in b.items {
                        a.offer(n);
                    }
                    a
                },
            );
        Ok(best.into_sorted())
    }
}

/// Cosine similarity of two vectors of equal length, accumulated in f64; `None` when
/// either has no direction (zero or non-finite norm).
pub fn cosine(a: &[f32], b: &[f32]) -> Option<f64> {
    if a.len() != b.len() {
        return None;
    }
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    let norm = (aa * bb).sqrt();
    (norm > 0.0 && norm.is_finite()).then(|| ab / norm)
}

/// Scale `v` to unit length in place, or zero it when it has no direction.
fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        let inv = (1.0 / norm) as f32;
        v.iter_mut().for_each(|x| *x *= inv);
    } else {
        v.iter_mut().for_each(|x| *x = 0.0);
    }
}

/// Better first: higher score, then lower index.
fn better(a: &Neighbour, b: &Neighbour) -> Ordering {
    b.score
        .partial_cmp(&a.score)
        .unwrap_or(Ordering::Equal)
        .then(a.index.cmp(&b.index))
}

/// The best `k` offered so far. For the small k of a similarity query, a sorted vector
/// with a bound check beats a heap: most offers fail the check against the worst kept.
struct TopK {
    k: usize,
    items: Vec<Neighbour>,
}

impl TopK {
    fn new(k: usize) -> TopK {
        TopK {
            k,
            items: Vec::with_capacity(k + 1),
        }
    }

    #[inline]
    fn offer(&mut self, n: Neighbour) {
        if self.items.len() == self.k {
            let worst = self.items.last().expect("k > 0");
            if better(&n, worst) != Ordering::Less {
                return;
            }
            self.items.pop();
        }
        let at = self
            .items
            .partition_point(|m| better(m, &n) == Ordering::Less);
        self.items.insert(at, n);
    }

    fn into_sorted(self) -> Vec<Neighbour> {
        self.items
    }
}

type DotFn = fn(&[f32], &[f32]) -> f32;

/// The fastest dot product this CPU runs.
fn dot_fn() -> DotFn {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return |a, b| unsafe { dot_avx2(a, b) };
        }
    }
    dot_portable
}

/// Eight independent lanes, which the compiler turns into SIMD on any target.
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

/// # Safety
/// The CPU must have AVX2 and FMA (checked by [`dot_fn`]); `a` and `b` have equal length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    // Four accumulators hide the FMA latency.
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (j, s) in acc.iter_mut().enumerate() {
            let x = _mm256_loadu_ps(pa.add(i + 8 * j));
            let y = _mm256_loadu_ps(pb.add(i + 8 * j));
            *s = _mm256_fmadd_ps(x, y, *s);
        }
        i += 32;
    }
    while i + 8 <= n {
        let x = _mm256_loadu_ps(pa.add(i));
        let y = _mm256_loadu_ps(pb.add(i));
        acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
        i += 8;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let hi = _mm256_extractf128_ps(s, 1);
    let lo = _mm256_castps256_ps128(s);
    let s4 = _mm_add_ps(hi, lo);
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    let s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
    let mut sum = _mm_cvtss_f32(s1);
    while i < n {
        sum += *pa.add(i) * *pb.add(i);
        i += 1;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (splitmix64), so the test needs no crate.
    fn rng(seed: u64) -> impl FnMut() -> f32 {
        let mut s = seed;
        move || {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        }
    }

    #[test]
    fn search_equals_brute_force_in_f64() {
        let mut r = rng(7);
        let (dim, n) = (37, 20_000); // a dimension that exercises every remainder path
        let mut index = VectorIndex::new(dim);
        let rows: Vec<Vec<f32>> = (0..n).map(|_| (0..dim).map(|_| r()).collect()).collect();
        for row in &rows {
            index.push(row).unwrap();
        }
        let q: Vec<f32> = (0..dim).map(|_| r()).collect();
        let mut want: Vec<(usize, f64)> = rows
            .iter()
            .enumerate()
            .map(|(i, row)| (i, cosine(row, &q).unwrap()))
            .collect();
        want.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(a.0.cmp(&b.0)));
        let got = index.search(&q, 10, None).unwrap();
        assert_eq!(got.len(), 10);
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.index, w.0);
            assert!(
                (g.score as f64 - w.1).abs() < 1e-5,
                "{} vs {}",
                g.score,
                w.1
            );
        }
        // Excluding the best leaves the next ten.
        let got = index.search(&q, 10, Some(want[0].0)).unwrap();
        let idx: Vec<usize> = got.iter().map(|g| g.index).collect();
        let want_idx: Vec<usize> = want[1..11].iter().map(|w| w.0).collect();
        assert_eq!(idx, want_idx);
    }

    #[test]
    fn ties_zero_vectors_and_edges() {
        let mut index = VectorIndex::new(3);
        index.push(&[1.0, 0.0, 0.0]).unwrap();
        index.push(&[0.0, 0.0, 0.0]).unwrap();
        index.push(&[2.0, 0.0, 0.0]).unwrap(); // same direction as 0: a tie
        index.push(&[f32::NAN, 1.0, 0.0]).unwrap();
        let got = index.search(&[3.0, 0.0, 0.0], 10, None).unwrap();
        let idx: Vec<usize> = got.iter().map(|g| g.index).collect();
        assert_eq!(idx, vec![0, 2, 1, 3]);
        assert_eq!(got[0].score, 1.0);
        assert_eq!(got[2].score, 0.0);
        assert!(index.search(&[1.0, 0.0], 1, None).is_err());
        assert!(index.push(&[1.0]).is_err());
        assert!(index.search(&[1.0, 0.0, 0.0], 0, None).unwrap().is_empty());
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), None);
        assert_eq!(cosine(&[1.0, 0.0], &[1.0]), None);
    }

    #[test]
    fn simd_and_portable_agree() {
        let mut r = rng(3);
        for n in [0, 1, 7, 8, 9, 31, 32, 33, 256, 1000] {
            let a: Vec<f32> = (0..n).map(|_| r()).collect();
            let b: Vec<f32> = (0..n).map(|_| r()).collect();
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot_fn()(&a, &b) as f64 - exact).abs() < 1e-4);
            assert!((dot_portable(&a, &b) as f64 - exact).abs() < 1e-4);
        }
    }
}
