//! Time the compute runtime's kernels on a raw volume, as `bench/ndimage_kernels.py`
//! times scipy.ndimage on the same one.
//!
//! ```sh
//! cargo run --release --example runtime_kernels -- VOLUME.f32 Z,Y,X [cpu|gpu]
//! ```
//!
//! VOLUME.f32 holds Z·Y·X little-endian f32 values in (slice, row, column) order. Prints
//! one JSON object: seconds per kernel (the best of three runs) and the backend used.

use std::time::Instant;

use medlake_udfs::runtime::{self, Backend};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: runtime_kernels VOLUME.f32 Z,Y,X [cpu|gpu|auto]");
        std::process::exit(2);
    }
    let dims: Vec<usize> = args[2]
        .split(',')
        .map(|d| d.parse().expect("Z,Y,X"))
        .collect();
    let dims = [dims[0], dims[1], dims[2]];
    let bytes = std::fs::read(&args[1]).expect("volume file");
    let v: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(
        v.len(),
        dims.iter().product::<usize>(),
        "size does not match Z,Y,X"
    );
    let backend = Backend::choose(args.get(3).map(String::as_str)).expect("backend");
    let best = |f: &dyn Fn() -> usize| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    };
    let log = best(&|| {
        runtime::laplacian_of_gaussian(&backend, &v, dims, [2.0; 3])
            .unwrap()
            .len()
    });
    let gauss = best(&|| {
        runtime::gaussian(&backend, &v, dims, [1.0; 3], [0, 0, 0])
            .unwrap()
            .len()
    });
    // Threshold + label as one op (on the CPU the runs come straight from the values, no
    // mask), and as the two ops it replaces; the labels dropped inside the timing.
    let label = best(&|| {
        backend
            .label_threshold(&v, dims, -400.0, f32::INFINITY)
            .unwrap()
            .1 as usize
    });
    let label_of_mask = best(&|| {
        let mask = backend.threshold(&v, -400.0, f32::INFINITY).unwrap();
        backend.label(&mask, dims).unwrap().1 as usize
    });
    let (_, components) = backend
        .label_threshold(&v, dims, -400.0, f32::INFINITY)
        .unwrap();
    println!(
        "{{\"backend\": \"{}\", \"gaussian_laplace_sigma2\": {log:.4}, \"gaussian_filter_sigma1\": {gauss:.4}, \
         \"threshold_label\": {label:.4}, \"threshold_then_label\": {label_of_mask:.4}, \
         \"components\": {components}, \"threads\": {}}}",
        backend.name(),
        rayon::current_num_threads()
    );
}
