//! Where the time of "threshold + connected components" goes, on the benchmark CT volume.
//!
//! ```sh
//! RAYON_NUM_THREADS=2 cargo run --release -p medlake-udfs --example label_phases -- \
//!     [/tmp/medlake-kernels/volume_300_512_512.f32] [300,512,512]
//! ```
//!
//! Prints, each the best of 5 runs: the memory-bandwidth floor (reading the f32 volume,
//! writing a u32 label volume into fresh and into already mapped memory), the phases of the
//! previous labelling (threshold to a mask, then runs in a Vec per row, union-find,
//! numbering, write-back; kept here as it was), the phases of
//! `labels::label_threshold`, and the whole calls (result dropped inside the timing, as
//! `examples/runtime_kernels.rs` does). Checks that all give the same labels.

use std::hint::black_box;
use std::time::Instant;

use medlake_udfs::runtime::{cpu, labels, Dims};
use rayon::prelude::*;

const RUNS: usize = 5;
const LO: f32 = -400.0;
const HI: f32 = f32::INFINITY;

fn secs<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed().as_secs_f64())
}

fn best(mut f: impl FnMut() -> f64) -> f64 {
    (0..RUNS).map(|_| f()).fold(f64::INFINITY, f64::min)
}

fn find(parent: &mut [u32], mut a: u32) -> u32 {
    while parent[a as usize] != a {
        let up = parent[parent[a as usize] as usize];
        parent[a as usize] = up;
        a = up;
    }
    a
}

fn union(parent: &mut [u32], a: u32, b: u32) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
    parent[hi as usize] = lo;
}

/// Threshold and labelling before this example was written (commit ab82d93), phase by phase:
/// returns the labels, the count and the seconds of [threshold, runs, union-find,
/// numbering, write-back].
fn previous(v: &[f32], dims: Dims) -> ((Vec<u32>, u32), [f64; 5]) {
    let [nz, ny, nx] = dims;
    let rows = nz * ny;
    // cpu::threshold as it was then (it now asks for huge pages).
    let (mask, t_threshold) = secs(|| {
        v.par_iter()
            .map(|v| u8::from(*v >= LO && *v <= HI))
            .collect::<Vec<u8>>()
    });
    let (row_runs, t_runs) = secs(|| {
        (0..rows)
            .into_par_iter()
            .map(|row| {
                let m = &mask[row * nx..(row + 1) * nx];
                let mut runs = Vec::new();
                let mut x = 0;
                while x < nx {
                    if m[x] == 0 {
                        x += 1;
                        continue;
                    }
                    let start = x;
                    while x < nx && m[x] != 0 {
                        x += 1;
                    }
                    runs.push((start as u32, x as u32));
                }
                runs
            })
            .collect::<Vec<Vec<(u32, u32)>>>()
    });
    let ((first, mut parent), t_union) = secs(|| {
        let mut first = Vec::with_capacity(rows + 1);
        let mut total = 0usize;
        for r in &row_runs {
            first.push(total);
            total += r.len();
        }
        first.push(total);
        let mut parent: Vec<u32> = (0..total as u32).collect();
        let join = |parent: &mut [u32], row: usize, other: usize| {
            let (a, b) = (&row_runs[row], &row_runs[other]);
            let (mut i, mut j) = (0, 0);
            while i < a.len() && j < b.len() {
                if a[i].0 < b[j].1 && b[j].0 < a[i].1 {
                    union(parent, (first[row] + i) as u32, (first[other] + j) as u32);
                }
                if a[i].1 < b[j].1 {
                    i += 1;
                } else {
                    j += 1;
                }
            }
        };
        for row in 0..rows {
            let (z, y) = (row / ny, row % ny);
            if y > 0 {
                join(&mut parent, row, row - 1);
            }
            if z > 0 {
                join(&mut parent, row, row - ny);
            }
        }
        (first, parent)
    });
    let total = parent.len();
    let ((number, next), t_number) = secs(|| {
        let mut number = vec![0u32; total];
        let mut next = 0u32;
        for run in 0..total {
            let root = find(&mut parent, run as u32) as usize;
            if number[root] == 0 {
                next += 1;
                number[root] = next;
            }
            number[run] = number[root];
        }
        (number, next)
    });
    let (labels, t_write) = secs(|| {
        let mut labels = vec![0u32; mask.len()];
        labels
            .par_chunks_mut(nx)
            .enumerate()
            .for_each(|(row, out)| {
                for (k, &(s, e)) in row_runs[row].iter().enumerate() {
                    out[s as usize..e as usize].fill(number[first[row] + k]);
                }
            });
        labels
    });
    (
        (labels, next),
        [t_threshold, t_runs, t_union, t_number, t_write],
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).map_or(
        "/tmp/medlake-kernels/volume_300_512_512.f32",
        String::as_str,
    );
    let dims: Vec<usize> = args
        .get(2)
        .map_or("300,512,512", String::as_str)
        .split(',')
        .map(|d| d.parse().expect("Z,Y,X"))
        .collect();
    let dims = [dims[0], dims[1], dims[2]];
    let bytes = std::fs::read(path).expect("volume file");
    let v: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    drop(bytes);
    let n = dims.iter().product::<usize>();
    assert_eq!(v.len(), n, "size does not match Z,Y,X");
    println!(
        "{path} {dims:?}, {} rayon threads, best of {RUNS}",
        rayon::current_num_threads()
    );

    // The floor: read the values once, write a label volume once.
    let read = best(|| {
        secs(|| {
            black_box(
                v.par_chunks(1 << 16)
                    .map(|c| c.iter().filter(|x| **x >= LO).count())
                    .sum::<usize>(),
            )
        })
        .1
    });
    let write_fresh = best(|| {
        secs(|| {
            let mut out = vec![0u32; n];
            out.par_chunks_mut(1 << 16).for_each(|c| c.fill(7));
            black_box(out);
        })
        .1
    });
    let write_huge = best(|| {
        secs(|| {
            let mut out = labels::zeroed_labels(n);
            out.par_chunks_mut(1 << 16).for_each(|c| c.fill(7));
            black_box(out);
        })
        .1
    });
    let mut mapped = vec![1u32; n];
    let write_mapped = best(|| {
        secs(|| {
            mapped.par_chunks_mut(1 << 16).for_each(|c| c.fill(7));
            black_box(&mapped);
        })
        .1
    });
    drop(mapped);
    println!(
        "floor: read {n} f32 {read:.4} s ({:.1} GB/s)",
        n as f64 * 4e-9 / read
    );
    println!(
        "floor: write {n} u32 into fresh memory (page faults, and the unmapping) {write_fresh:.4} s, \
         fresh with MADV_HUGEPAGE {write_huge:.4} s, into mapped memory {write_mapped:.4} s ({:.1} GB/s)",
        n as f64 * 4e-9 / write_mapped
    );
    println!(
        "floor: read + write fresh {:.4} s, fresh huge pages {:.4} s, mapped {:.4} s",
        read + write_fresh,
        read + write_huge,
        read + write_mapped
    );

    // Before: threshold, then the previous labelling.
    let (expected, _) = previous(&v, dims);
    let mut before = [f64::INFINITY; 5];
    let before_total = best(|| {
        secs(|| {
            let (out, t) = previous(&v, dims);
            for (b, t) in before.iter_mut().zip(t) {
                *b = b.min(t);
            }
            out.1
        })
        .1
    });
    println!(
        "before (threshold, then label): threshold {:.4}, runs {:.4}, union-find {:.4}, numbering {:.4}, \
         write-back {:.4}; whole {before_total:.4} s",
        before[0], before[1], before[2], before[3], before[4]
    );

    // After: the fused op, and the labelling of a mask.
    let fused = labels::label_threshold(&v, dims, LO, HI);
    assert!(
        fused == expected,
        "label_threshold differs from label(threshold)"
    );
    let of_mask = labels::label(&cpu::threshold(&v, LO, HI), dims);
    assert!(of_mask == expected, "label differs from the previous label");
    println!("same labels, {} components", expected.1);
    drop((fused, of_mask, expected));
    let mut after = [f64::INFINITY; 3];
    let after_total = best(|| {
        secs(|| {
            let mut p = labels::LabelPhases::default();
            let out = labels::label_threshold_phases(&v, dims, LO, HI, Some(&mut p));
            for (b, t) in
                after
                    .iter_mut()
                    .zip([p.runs_and_slab_unions, p.stitch_and_number, p.write])
            {
                *b = b.min(t);
            }
            out.1
        })
        .1
    });
    println!(
        "after (label_threshold): runs + slab unions {:.4}, stitch + numbering {:.4}, write-back {:.4}; \
         whole {after_total:.4} s",
        after[0], after[1], after[2]
    );
    let mask_total = best(|| secs(|| labels::label(&cpu::threshold(&v, LO, HI), dims).1).1);
    println!("after (threshold, then label): whole {mask_total:.4} s");
}
