//! medlake's integration tests, one module per file, built as one test binary.
//!
//! One binary rather than one per file because each links the whole engine (DataFusion,
//! deltalake, tantivy, wgpu): thirteen links were most of CI's test build. Run one file's
//! tests with its module path, e.g. `cargo test --release --test integration vcf::`.
//! The sqllogictest files run in their own binary (`--test slt`, `tests/slt_runner.rs`).

mod common;

mod bogus_lengths;
mod deidentify;
mod embeddings;
mod findings;
mod ingest;
mod kill_ingest;
mod object_store;
mod pydicom_oracle;
mod reports;
mod runtime;
mod server;
mod vcf;
mod volume;
