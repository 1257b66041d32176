//! Time exact cosine search ([`medlake_udfs::similarity::VectorIndex`]) over N vectors.
//!
//! ```text
//! cargo run --release -p medlake-udfs --example similarity_search -- \
//!     [--data vectors.f32 --queries queries.f32] [--n 1000000] [--dim 256] [--k 10] [--runs 20]
//! ```
//!
//! With `--data`, vectors are read from a raw little-endian f32 file of N×dim values (and
//! queries from `--queries`, Q×dim), as `bench/similarity.py` writes them for numpy to
//! read the same bytes; otherwise N random vectors are generated. Prints one JSON line:
//! the median and minimum seconds per query over the runs, and each query's top-k indices
//! (for the bench to compare with numpy's).

use std::time::Instant;

use medlake_udfs::similarity::VectorIndex;

fn read_f32(path: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .map(|i| args[i + 1].clone())
    };
    let dim: usize = arg("--dim").map_or(256, |v| v.parse().unwrap());
    let k: usize = arg("--k").map_or(10, |v| v.parse().unwrap());
    let runs: usize = arg("--runs").map_or(20, |v| v.parse().unwrap());
    let (data, queries) = match arg("--data") {
        Some(path) => (
            read_f32(&path),
            read_f32(&arg("--queries").expect("--queries with --data")),
        ),
        None => {
            let n: usize = arg("--n").map_or(1_000_000, |v| v.parse().unwrap());
            let mut s = 1u64;
            let mut next = move || {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            };
            let data: Vec<f32> = (0..n * dim).map(|_| next()).collect();
            let queries: Vec<f32> = (0..runs * dim).map(|_| next()).collect();
            (data, queries)
        }
    };
    let t = Instant::now();
    let mut index = VectorIndex::with_capacity(dim, data.len() / dim);
    for row in data.chunks_exact(dim) {
        index.push(row).unwrap();
    }
    drop(data);
    let build_s = t.elapsed().as_secs_f64();
    let queries: Vec<&[f32]> = queries.chunks_exact(dim).collect();
    // One untimed query pages the index in.
    index.search(queries[0], k, None).unwrap();
    let mut times = Vec::new();
    let mut tops = Vec::new();
    for i in 0..runs {
        let q = queries[i % queries.len()];
        let t = Instant::now();
        let top = index.search(q, k, None).unwrap();
        times.push(t.elapsed().as_secs_f64());
        if i < queries.len() {
            tops.push(top.iter().map(|n| n.index).collect::<Vec<_>>());
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{{\"n\": {}, \"dim\": {dim}, \"k\": {k}, \"runs\": {runs}, \"threads\": {}, \
         \"build_s\": {build_s:.3}, \"median_s\": {:.6}, \"min_s\": {:.6}, \"top\": {:?}}}",
        index.len(),
        rayon::current_num_threads(),
        times[times.len() / 2],
        times[0],
        tops
    );
}
