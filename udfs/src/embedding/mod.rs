//! Series embeddings: a volume, preprocessed as a model expects ([`Preprocess`]), run
//! through an ONNX model ([`run_model`]) and flattened to a vector.
//!
//! [`builtin`] is medlake's own model, `medlake-filterbank-1`: a fixed, training-free
//! graph of Gaussian-derivative filters, rectifiers, pooling and intensity soft histograms
//! (see its documentation for the design), so every lake has a meaningful embedding
//! without downloading weights. Any other ONNX model the runtime loads can be used with a
//! [`Preprocess`] of its own.

pub mod builtin;
mod calibration;
mod preprocess;

pub use preprocess::preprocess;

use crate::error::{Error, Result};
use crate::model::{Model, Tensor};
use crate::runtime::Backend;
use crate::Volume;

/// How a series becomes a model input; stored as JSON in the lake's `models` table.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Preprocess {
    /// Resample to this voxel spacing (z, y, x) in mm first; None keeps the series' own.
    pub spacing_mm: Option<[f64; 3]>,
    /// Clip intensities to [lo, hi] (HU for CT).
    pub window: Option<[f32; 2]>,
    pub normalize: Normalize,
    /// Output grid (D, H, W) after crop/pad; None keeps the resampled size.
    pub size: Option<[usize; 3]>,
    pub crop: Crop,
}

/// Intensity normalization, after the window.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    None,
    /// Subtract the volume's mean and divide by its standard deviation (over the whole
    /// resampled, windowed volume, before crop and pad).
    ZScore,
    /// Map `[lo, hi]` to `[0, 1]` linearly (values outside map outside).
    Scale {
        lo: f32,
        hi: f32,
    },
    /// `(v - mean) / std` with fixed constants.
    MeanStd {
        mean: f32,
        std: f32,
    },
}

/// Where the output grid of [`Preprocess::size`] sits on the resampled volume.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Crop {
    /// Centred on the volume.
    Center,
    /// Centred on the body: the bounding box of the largest 6-connected component above
    /// −500 HU (the centre of the volume where there is none).
    Mask,
}

/// The fewest slices (and rows and columns) a series must have to be embedded.
pub const MIN_SLICES: usize = 8;

impl Preprocess {
    /// One line, for people: "resample 2.5×2.5×2.5 mm (z×y×x), window [-1000, 400],
    /// scale [-1000, 400] → [0, 1], 80×112×144 centred on the body".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        match self.spacing_mm {
            Some([z, y, x]) => parts.push(format!("resample {z}×{y}×{x} mm (z×y×x)")),
            None => parts.push("native spacing".to_string()),
        }
        if let Some([lo, hi]) = self.window {
            parts.push(format!("window [{lo}, {hi}]"));
        }
        parts.push(match self.normalize {
            Normalize::None => "no normalization".to_string(),
            Normalize::ZScore => "z-score".to_string(),
            Normalize::Scale { lo, hi } => format!("scale [{lo}, {hi}] → [0, 1]"),
            Normalize::MeanStd { mean, std } => format!("(v − {mean}) / {std}"),
        });
        let place = match self.crop {
            Crop::Center => "centred",
            Crop::Mask => "centred on the body",
        };
        parts.push(match self.size {
            Some([d, h, w]) => format!("{d}×{h}×{w} {place}"),
            None => "resampled size".to_string(),
        });
        parts.join(", ")
    }
}

/// Preprocess `volume` by `spec`, run `model` on it (its first graph output, or the graph
/// output named `output`), and flatten that output to a vector.
pub fn run_model(
    volume: &Volume,
    model: &Model,
    spec: &Preprocess,
    output: Option<&str>,
    backend: &Backend,
) -> Result<Vec<f32>> {
    let names = model.output_names();
    let index = match output {
        None => {
            if names.is_empty() {
                return Err(Error::Model("the model has no graph outputs".into()));
            }
            0
        }
        Some(name) => names.iter().position(|n| *n == name).ok_or_else(|| {
            Error::Model(format!(
                "output {name:?} is not a graph output of the model (outputs: {names:?})"
            ))
        })?,
    };
    if model.inputs().len() != 1 {
        return Err(Error::Model(format!(
            "an embedding model takes one input (the image), this one takes {}",
            model.inputs().len()
        )));
    }
    let input: Tensor = preprocess(volume, spec, backend)?;
    let mut outputs = model.run_on(backend, vec![input])?;
    Ok(std::mem::take(&mut outputs[index].data))
}
