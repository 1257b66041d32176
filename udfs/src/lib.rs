//! The compute side of medlake: what is derived from images rather than read from headers.
//!
//! - `geometry`: how a stack of DICOM slices sits in patient space (ingest uses it to fill
//!   the `series` table).
//! - `volume`: DICOM images to a 3-D volume of modality values (HU for CT) with its LPS
//!   affine, pixel data decoded by dicom-pixeldata.
//!
//! - `runtime`: the volume ops (filters, thresholds, reductions, components, morphology)
//!   that findings are written against, on the CPU (and, where written, on wgpu).
//!
//! - `findings`: body, lungs, emphysema, nodule candidates and calcifications of a CT
//!   volume, by documented classical methods written against the runtime.
//! - `model`: ONNX models (3-D CNNs) loaded into a graph of checked ops and run on the
//!   CPU, parity-tested against onnxruntime.
//! - `phantom`: synthetic chest CT phantoms with known contents, the findings' ground
//!   truth.
//!
//! The SQL functions over findings come next.

pub mod embedding;
pub mod error;
pub mod findings;
pub mod geometry;
pub mod model;
pub mod phantom;
pub mod runtime;
pub mod volume;

pub use error::{Error, Result};
pub use geometry::{SeriesGeometry, SliceGeometry};
pub use volume::{assemble, read_image, Input, Volume};
