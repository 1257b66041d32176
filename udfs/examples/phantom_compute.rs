//! Time CT findings and the built-in embedding of one phantom on each backend.
//!
//! ```text
//! cargo run --release -p medlake-udfs --example phantom_compute -- [--seed 2] [--slices 300] \
//!     [--runs 3] [--any-adapter]
//! ```
//!
//! Generates the seeded 512 × 512 chest phantom (`--slices` overrides its slice count,
//! to time a 300-slice series), then for the CPU backend and, where there is one, the GPU
//! backend (a hardware adapter unless `--any-adapter`): after one warm-up, the median of
//! `--runs` timings of `findings::compute` (with its stages) and of `builtin::embed`,
//! and how the GPU's results compare with the CPU's (findings count, embedding cosine).
//! Prints one JSON object per backend.

use std::time::Instant;

use medlake_udfs::embedding::builtin;
use medlake_udfs::phantom::{generate_spec, PhantomSpec};
use medlake_udfs::runtime::gpu::{AdapterChoice, Gpu};
use medlake_udfs::runtime::Backend;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .map(|i| args[i + 1].clone())
    };
    let seed: u64 = arg("--seed").map_or(2, |v| v.parse().unwrap());
    let runs: usize = arg("--runs").map_or(3, |v| v.parse().unwrap());
    let mut spec = PhantomSpec::from_seed(seed);
    if let Some(n) = arg("--slices") {
        spec.slices = n.parse().unwrap();
    }
    let t = Instant::now();
    let volume = generate_spec(spec).to_volume();
    eprintln!(
        "phantom seed {seed}: {:?} voxels, spacing {:?} mm, generated in {:.1} s",
        volume.dims,
        volume.spacing_mm(),
        t.elapsed().as_secs_f64()
    );
    let choice = if args.iter().any(|a| a == "--any-adapter") {
        AdapterChoice::AnyIncludingSoftware
    } else {
        AdapterChoice::HardwareOnly
    };
    let mut backends = vec![Backend::Cpu];
    match Gpu::open(choice) {
        Ok(g) => backends.push(Backend::Gpu(std::sync::Arc::new(g))),
        Err(e) => eprintln!("no GPU backend: {e}"),
    }
    let mut reference: Option<(usize, Vec<f32>)> = None;
    for backend in &backends {
        let report = medlake_udfs::findings::compute(&volume, backend).unwrap();
        let embedding = builtin::embed(&volume, backend).unwrap();
        let (mut tf, mut te) = (Vec::new(), Vec::new());
        let mut stages = report.stages.clone();
        for _ in 0..runs {
            let t = Instant::now();
            let r = medlake_udfs::findings::compute(&volume, backend).unwrap();
            tf.push(t.elapsed().as_secs_f64());
            stages = r.stages;
            let t = Instant::now();
            builtin::embed(&volume, backend).unwrap();
            te.push(t.elapsed().as_secs_f64());
        }
        let (n, cos) = match &reference {
            None => {
                reference = Some((report.findings.len(), embedding.clone()));
                (report.findings.len(), 1.0)
            }
            Some((_, e)) => (
                report.findings.len(),
                medlake_udfs::similarity::cosine(e, &embedding).unwrap_or(f64::NAN),
            ),
        };
        let stages: Vec<String> = stages
            .iter()
            .map(|(s, d)| format!("\"{s}\": {:.3}", d.as_secs_f64()))
            .collect();
        println!(
            "{{\"backend\": \"{}\", \"dims\": {:?}, \"findings\": {n}, \"findings_s\": {:.3}, \
             \"embed_s\": {:.3}, \"cosine_to_cpu\": {cos:.7}, \"stages\": {{{}}}}}",
            backend.name(),
            volume.dims,
            median(tf),
            median(te),
            stages.join(", ")
        );
    }
}
