//! medlake's integration tests, one module per file, built as one test binary.
//!
//! One binary rather than one per file because each links the whole engine (DataFusion,
//! deltalake, tantivy, wgpu): thirteen links were most of CI's test build. Run one file's
//! tests with its module path, e.g. `cargo test --release --test integration vcf::`.
//! Two files are binaries of their own: the sqllogictest runner (`--test slt`,
//! `tests/slt_runner.rs`, no libtest harness) and `--test bogus_lengths`, which reads the
//! process's peak memory and so must be alone in its process.

mod common;

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
