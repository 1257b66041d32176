//! Time an ONNX model on medlake's CPU executor: one input volume, several runs.
//!
//! ```sh
//! cargo run --release -p medlake-udfs --example model_cpu -- model.onnx input.npy --runs 10
//! ```
//!
//! `input.npy` is a little-endian float32 array (numpy's `np.save`), its shape the model's
//! input shape. One warm-up run, then `--runs` timed runs (default 5). Prints one JSON
//! line: the median seconds per volume, volumes per second, and GFLOP/s from
//! [`Model::flops`] (2 × the multiply-adds of Conv, ConvTranspose, Gemm and MatMul).
//! `--out out.npy` saves the output of the last run (float32) for checking.

use std::path::Path;
use std::time::Instant;

use medlake_udfs::model::{Model, Tensor};

fn read_npy(path: &Path) -> Tensor {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..6],
        b"\x93NUMPY",
        "{}: not a .npy file",
        path.display()
    );
    let (header_len, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(
        header.contains("'descr': '<f4'") && header.contains("'fortran_order': False"),
        "{}: only C-order float32 arrays ({header})",
        path.display()
    );
    let at = header.find("'shape':").unwrap() + 8;
    let open = at + header[at..].find('(').unwrap() + 1;
    let close = open + header[open..].find(')').unwrap();
    let shape: Vec<usize> = header[open..close]
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let data = bytes[start + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    Tensor::new(shape, data).unwrap()
}

fn write_npy(path: &Path, t: &Tensor) {
    let shape: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
    let shape = if shape.len() == 1 {
        format!("({},)", shape[0])
    } else {
        format!("({})", shape.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in &t.data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut positional = Vec::new();
    let (mut runs, mut out) = (5usize, None);
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--runs" => {
                runs = args[i + 1].parse().expect("--runs N");
                i += 1;
            }
            "--out" => {
                out = Some(args[i + 1].clone());
                i += 1;
            }
            a => positional.push(a.to_string()),
        }
        i += 1;
    }
    let [model_path, input_path] = positional.as_slice() else {
        eprintln!("usage: model_cpu MODEL.onnx INPUT.npy [--runs N] [--out OUT.npy]");
        std::process::exit(2);
    };
    let model = Model::load(Path::new(model_path)).unwrap();
    let input = read_npy(Path::new(input_path));
    let shape = input.shape.clone();
    let flops = model.flops(std::slice::from_ref(&shape)).unwrap();
    let mut y = model.run(vec![input.clone()]).unwrap(); // warm-up
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let x = input.clone();
        let t = Instant::now();
        y = model.run(vec![x]).unwrap();
        times.push(t.elapsed().as_secs_f64());
    }
    if let Some(out) = out {
        write_npy(Path::new(&out), &y[0]);
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let times: Vec<String> = times.iter().map(|t| format!("{t:.6}")).collect();
    println!(
        "{{\"model\": {model_path:?}, \"input\": {shape:?}, \"threads\": {}, \"flops\": {flops}, \
         \"median_s\": {median:.6}, \"volumes_per_s\": {:.3}, \"gflops_per_s\": {:.3}, \
         \"times_s\": [{}]}}",
        rayon::current_num_threads(),
        1.0 / median,
        flops as f64 / median / 1e9,
        times.join(", ")
    );
}
