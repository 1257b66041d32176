//! Embed class phantoms with the built-in model and report leave-one-out 1-nearest-
//! neighbour accuracy; optionally write the pooled features for analysis.
//!
//! `cargo run --release -p medlake-udfs --example embed_phantoms -- FIRST_SEED PER_CLASS [features.tsv]`
//! (with `SHIFTED=1`, each phantom's features are followed by those of the phantom
//! shifted by a few millimetres, its class + 10); `... -- time` times one 512 × 512 × 250
//! series.
//!
//! Seeds 1000–1059 were used to calibrate the model and choose its group weights;
//! `tests/embedding.rs` reports on others.

use std::io::Write;
use std::time::Instant;

use medlake_udfs::embedding::{builtin, run_model};
use medlake_udfs::phantom::{generate_class, PhantomClass, PhantomSpec};
use medlake_udfs::runtime::Backend;

/// The volume shifted by `by` voxels (slices, rows, columns), edges replicated.
fn shifted(v: &medlake_udfs::Volume, by: [i64; 3]) -> medlake_udfs::Volume {
    let [d, h, w] = v.dims;
    let at = |i: usize, s: i64, n: usize| (i as i64 - s).clamp(0, n as i64 - 1) as usize;
    let mut values = Vec::with_capacity(v.values.len());
    for z in 0..d {
        for y in 0..h {
            let row = (at(z, by[0], d) * h + at(y, by[1], h)) * w;
            values.extend((0..w).map(|x| v.values[row + at(x, by[2], w)]));
        }
    }
    medlake_udfs::Volume {
        values,
        ..v.clone()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("time") {
        // One 512 × 512 × 250 series (0.7 mm pixels, 1 mm slices), embedded three times.
        let spec = PhantomSpec {
            seed: 1,
            pixel_spacing_mm: 0.7,
            slice_spacing_mm: 1.0,
            slices: 250,
        };
        let v = generate_class(spec, PhantomClass::NoduleBearing).to_volume();
        for _ in 0..3 {
            let t = Instant::now();
            let input =
                medlake_udfs::embedding::preprocess(&v, &builtin::preprocess(), &Backend::Cpu)
                    .expect("preprocess");
            let pre = t.elapsed().as_secs_f64();
            builtin::model().run(vec![input]).expect("run");
            let total = t.elapsed().as_secs_f64();
            println!(
                "512 × 512 × 250: preprocess {pre:.2} s, model {:.2} s, total {total:.2} s",
                total - pre
            );
        }
        return;
    }
    let first: u64 = args.get(1).map_or(1000, |s| s.parse().expect("first seed"));
    let per_class: u64 = args.get(2).map_or(10, |s| s.parse().expect("per class"));
    let mut out = args
        .get(3)
        .map(|p| std::fs::File::create(p).expect("features file"));
    let backend = Backend::Cpu;
    let mut rows: Vec<(usize, Vec<f32>)> = Vec::new();
    for i in 0..per_class {
        for (c, class) in PhantomClass::ALL.iter().enumerate() {
            let seed = first + i * 3 + c as u64;
            let t = Instant::now();
            let p = generate_class(PhantomSpec::thick(seed), *class);
            let gen = t.elapsed().as_secs_f64();
            let v = p.to_volume();
            let t = Instant::now();
            let e = builtin::embed(&v, &backend).expect("embed");
            let secs = t.elapsed().as_secs_f64();
            if let Some(f) = out.as_mut() {
                let feats = run_model(
                    &v,
                    builtin::model(),
                    &builtin::preprocess(),
                    Some("features"),
                    &backend,
                )
                .expect("features");
                let line: Vec<String> = feats.iter().map(|x| x.to_string()).collect();
                writeln!(f, "{c}\t{seed}\t{}", line.join("\t")).unwrap();
                if std::env::var("SHIFTED").is_ok() {
                    // The same phantom shifted by about 4 mm per axis (edges replicated):
                    // class + 10 marks it.
                    let s = shifted(&v, [2, -5, 5]);
                    let feats = run_model(
                        &s,
                        builtin::model(),
                        &builtin::preprocess(),
                        Some("features"),
                        &backend,
                    )
                    .expect("features");
                    let line: Vec<String> = feats.iter().map(|x| x.to_string()).collect();
                    writeln!(f, "{}\t{seed}\t{}", c + 10, line.join("\t")).unwrap();
                }
            }
            eprintln!(
                "seed {seed} {:>14} dims {:?} laa {:5.1}% nodules {} (max {:4.1} mm) gen {gen:.2}s embed {secs:.2}s",
                class.name(),
                p.dims,
                p.truth.emphysema_pct,
                p.truth.nodules.len(),
                p.truth.nodules.iter().map(|n| n.diameter_mm).fold(0.0, f64::max),
            );
            rows.push((c, e));
        }
    }
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let mut confusion = [[0usize; 3]; 3];
    for (i, (c, e)) in rows.iter().enumerate() {
        let nn = rows
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .max_by(|a, b| cos(e, &a.1 .1).total_cmp(&cos(e, &b.1 .1)))
            .unwrap();
        confusion[*c][nn.1 .0] += 1;
    }
    let right: usize = (0..3).map(|c| confusion[c][c]).sum();
    println!("confusion (rows true, columns nearest): {confusion:?}");
    println!(
        "LOO 1-NN accuracy {:.1}% of {}",
        100.0 * right as f64 / rows.len() as f64,
        rows.len()
    );
}
