//! PLACEHOLDER (replaced by the `embedding` branch at merge): the agreed API only.
#![allow(missing_docs, unused)]
use crate::error::{Error, Result};
use crate::model::{Model, Tensor};
use crate::runtime::Backend;
use crate::volume::Volume;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Preprocess {
    pub spacing_mm: Option<[f64; 3]>,
    pub window: Option<[f32; 2]>,
    pub normalize: Normalize,
    pub size: Option<[usize; 3]>,
    pub crop: Crop,
}
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    None,
    ZScore,
    Scale { lo: f32, hi: f32 },
    MeanStd { mean: f32, std: f32 },
}
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Crop {
    Center,
    Mask,
}
impl Preprocess {
    pub fn describe(&self) -> String {
        format!("{self:?}")
    }
}
pub fn preprocess(volume: &Volume, spec: &Preprocess, backend: &Backend) -> Result<Tensor> {
    let [d, h, w] = spec.size.unwrap_or(volume.dims);
    let mut out = vec![0f32; d * h * w];
    let [vd, vh, vw] = volume.dims;
    for z in 0..d.min(vd) {
        for y in 0..h.min(vh) {
            for x in 0..w.min(vw) {
                out[(z * h + y) * w + x] = volume.values[(z * vh + y) * vw + x] / 1000.0;
            }
        }
    }
    Tensor::new(vec![1, 1, d, h, w], out)
}
pub fn run_model(
    volume: &Volume,
    model: &Model,
    spec: &Preprocess,
    output: Option<&str>,
    backend: &Backend,
) -> Result<Vec<f32>> {
    if volume.dims[0] < 8 {
        return Err(Error::Model("too few slices".into()));
    }
    let t = preprocess(volume, spec, backend)?;
    let out = model.run(vec![t])?;
    let at = output
        .map(|o| model.output_names().iter().position(|n| *n == o).unwrap())
        .unwrap_or(0);
    Ok(out.into_iter().nth(at).unwrap().data)
}
pub mod builtin {
    use super::*;
    pub const NAME: &str = "medlake-filterbank-1";
    pub const DIM: usize = 256;
    pub fn onnx_bytes() -> Vec<u8> {
        Vec::new()
    }
    pub fn preprocess() -> Preprocess {
        Preprocess {
            spacing_mm: None,
            window: None,
            normalize: Normalize::None,
            size: Some([8, 8, 4]),
            crop: Crop::Center,
        }
    }
    pub fn model() -> &'static Model {
        unimplemented!()
    }
    pub fn embed(volume: &Volume, backend: &Backend) -> Result<Vec<f32>> {
        if volume.dims[0] < 8 {
            return Err(Error::Model("too few slices".into()));
        }
        let t = super::preprocess(volume, &preprocess(), backend)?;
        Ok(t.data)
    }
}
