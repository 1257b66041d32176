//! The compute side of medlake: what is derived from images rather than read from headers.
//!
//! This crate starts with series geometry: how a stack of DICOM slices sits in patient
//! space. Ingest uses it to fill the `series` table; later the volume assembler, the
//! compute runtime (wgpu and CPU backends) and the SQL functions over them live here too.

pub mod geometry;

pub use geometry::{SeriesGeometry, SliceGeometry};
