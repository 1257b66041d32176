//! medlake-udfs' integration tests (backend parity, oracles, phantoms), one module per
//! file, built as one test binary so that wgpu is linked once. Run one file's tests with
//! its module path, e.g. `cargo test --release -p medlake-udfs --test integration gpu_labels::`.

mod common;

mod embedding;
mod findings_parity;
mod findings_phantoms;
mod gpu_labels;
mod onnx_parity;
mod resample_hessian;
