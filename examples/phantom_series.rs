//! Write one chest CT phantom as a DICOM series (and its ground truth as JSON): the input
//! of the end-to-end findings benchmark (bench/findings_e2e.sh).
//!
//! ```text
//! cargo run --release --example phantom_series -- OUT_DIR [SEED] [SLICES] [SLICE_MM] [PIXEL_MM]
//! ```
//! Without SLICES, the seed chooses the acquisition as the demo's and tests' phantoms do.

use std::path::PathBuf;

use medlake::phantoms::{write_phantom, PhantomSeries, PHANTOM_PATIENTS};
use medlake_udfs::phantom::{self, PhantomSpec};

fn main() -> medlake::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(out) = args.first().map(PathBuf::from) else {
        eprintln!("usage: phantom_series OUT_DIR [SEED] [SLICES] [SLICE_MM] [PIXEL_MM]");
        std::process::exit(2);
    };
    let arg = |i: usize| args.get(i).map(|v| v.parse::<f64>().expect("a number"));
    let seed = arg(1).unwrap_or(1.0) as u64;
    let mut spec = PhantomSpec::from_seed(seed);
    if let Some(slices) = arg(2) {
        spec.slices = slices as usize;
        spec.slice_spacing_mm = arg(3).unwrap_or(0.625);
        spec.pixel_spacing_mm = arg(4).unwrap_or(0.7);
    }
    let started = std::time::Instant::now();
    let ph = phantom::generate_spec(spec);
    let series = PhantomSeries {
        patient: 0,
        seed,
        study: 1,
        study_date: "20260101",
        series_number: 100 + seed as i32,
    };
    let (files, truth) = write_phantom(
        &out.join("dicom"),
        &out.join("truth"),
        &PHANTOM_PATIENTS[0],
        &series,
        &ph,
    )?;
    println!(
        "{} slices of {}x{} ({} mm, {} mm slices) in {:.1} s; truth {}",
        files.len(),
        ph.dims[1],
        ph.dims[2],
        spec.pixel_spacing_mm,
        spec.slice_spacing_mm,
        started.elapsed().as_secs_f64(),
        truth.display()
    );
    Ok(())
}
