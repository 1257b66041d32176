//! `medlake-filterbank-1`: the built-in, training-free embedding of a CT series.
//!
//! # Design
//!
//! A fixed multi-scale filter bank in the spirit of wavelet scattering (Mallat; Bruna and
//! Mallat), written as an ordinary ONNX graph:
//!
//! 1. **Preprocessing** ([`preprocess`]): resample to 2.5 mm isotropic, window
//!    [−1000, 400] HU scaled to [0, 1] (so air is 0 and a convolution's zero padding is
//!    air), an 80 × 112 × 144 grid (200 × 280 × 360 mm) centred on the body.
//! 2. **A Gaussian pyramid** of four levels (2.5, 5, 10 and 20 mm voxels): each level is
//!    smoothed by a separable binomial kernel (1 4 6 4 1)/16 (a Gaussian of σ = 1 voxel)
//!    and 2 × 2 × 2 average-pooled into the next.
//! 3. **Filters** on every level: 3 × 3 × 3 stencils of the first derivatives along z, y
//!    and x, the three second derivatives and their sum (the Laplacian: at these scales
//!    a blob detector for blobs of about 4–35 mm), each beside its negation, then Relu:
//!    the positive and negative parts, whose sum is the modulus (edges and blobs, bright
//!    or dark, without cancelling).
//! 4. **Pooling**: the mean (GlobalAveragePool: how much of each structure) and the
//!    maximum (a MaxPool over the whole grid: the strongest one) of every channel.
//! 5. **Intensity soft histograms**: 1 × 1 × 1 convolutions with a bias and a Sigmoid give,
//!    per threshold, a soft "above t HU" indicator; their means are the fractions of
//!    voxels above each threshold, on the 2.5 mm image and on the 5 mm smoothed one.
//! 6. **A lung-density gate**: on the image smoothed to about 3.5 mm, soft "between −980
//!    and −700 HU" (sigmoids multiplied), averaged to 5 mm and opened (a 3 × 3 × 3 min
//!    pool, written as a MaxPool between two negations, then a max pool), so the thin
//!    shells of lung-like values at tissue–air borders drop out and the parenchyma,
//!    normal or emphysematous, stays; nothing within 15 mm of the grid's faces counts.
//!    Inside it: the means of the level 0 and 1 filter energies (parenchymal texture),
//!    the fractions of voxels below −950, −925 and −900 HU (low attenuation areas, what
//!    %LAA-950 measures), and, in the gate dilated by 10 mm (the lungs with the nodules
//!    and vessels they hold), the maxima of the level 0 and 1 filters (blobs in the lung,
//!    not outshone by the body's edges).
//! 7. **Projection**: the pooled features ([`FEATURES`]) are turned into histogram bins
//!    (differences of adjacent thresholds), standardized by a frozen phantom calibration
//!    (each feature's mean, 97% of it, and standard deviation over tuning phantoms),
//!    weighted per
//!    group ([`GROUPS`]) and mapped to [`DIM`] dimensions by a fixed matrix with
//!    orthonormal columns (an isometry: cosines between embeddings are those between the
//!    weighted features), all folded into one Gemm. [`embed`] then L2-normalizes.
//!
//! # Why
//!
//! - **Training-free and deterministic**: every weight is a closed-form stencil, a
//!   threshold, a frozen constant or an orthonormal matrix from a fixed SplitMix64
//!   stream, computed with +, −, ×, ÷ and √ only (IEEE-exact), so [`onnx_bytes`] and its
//!   sha256 are the same on every run and machine. Nothing is learned by gradient
//!   descent; the calibration and the group weights are a handful of numbers chosen on
//!   phantom seeds that the tests do not report on (`tests/embedding.rs`).
//! - **Runs wherever the model runtime runs**: it is an ordinary graph of Conv, Relu,
//!   Sigmoid, Mul, AveragePool, MaxPool, GlobalAveragePool, Concat, Flatten and Gemm, ops
//!   the CPU runtime (and a GPU path built on the same op set) implements.
//! - **Cheap**: the filters are 3 × 3 × 3 on a 1.3 M-voxel grid and the smoothing is
//!   separable; everything gated runs on the 160 k-voxel 5 mm level. A 512 × 512 × 250
//!   series takes about 1 s on two CPU cores, nearly all of it the model.
//! - **What it sees**: gradient and curvature energies describe texture and anatomy,
//!   the blob maxima in the lungs respond to nodules, the gated low-attenuation
//!   fractions and the histograms to emphysema and body composition.
//! - **Limits**: the calibration comes from synthetic phantoms (`crate::phantom`), not
//!   patients, so on real CT the features' balance differs; the embedding is for
//!   similarity search (nearest series), not a diagnosis.

use std::sync::OnceLock;

use prost::Message;

use super::{calibration, Crop, Normalize, Preprocess};
use crate::error::{Error, Result};
use crate::model::{onnx, Model};
use crate::runtime::Backend;
use crate::Volume;

pub const NAME: &str = "medlake-filterbank-1";
pub const DIM: usize = 256;

/// The input grid (D, H, W).
pub const SIZE: [usize; 3] = [80, 112, 144];
/// Voxel spacing of the input grid, mm.
pub const SPACING_MM: f64 = 2.5;
/// Pyramid levels.
const LEVELS: usize = 4;
/// Filter channels per level (7 filters, each signed both ways).
const FILTERS: usize = 14;
/// Soft-histogram thresholds, HU.
const THRESHOLDS_HU: [f32; 24] = [
    -990.0, -975.0, -950.0, -925.0, -900.0, -875.0, -850.0, -825.0, -800.0, -750.0, -700.0, -600.0,
    -500.0, -400.0, -300.0, -200.0, -100.0, -50.0, 0.0, 50.0, 100.0, 200.0, 300.0, 380.0,
];
/// Window of the input, HU.
const WINDOW: [f32; 2] = [-1000.0, 400.0];
/// Width of a soft threshold's transition, HU (the sigmoid's slope is 1 / this).
const SOFT_HU: f32 = 20.0;

/// The lung-density gate: HU between these (on the image smoothed to about 3.5 mm).
const GATE_HU: [f32; 2] = [-980.0, -700.0];
/// Width of the gate's transitions, HU: sharp, so that air outside the body (about
/// −995 HU once clipped at −1000 and smoothed) stays out.
const GATE_SOFT_HU: f32 = 3.0;
/// Low-attenuation thresholds inside the gate, HU: the fractions of the grid that are
/// lung parenchyma below each (LAA-950 and milder).
const LAA_HU: [f32; 3] = [-950.0, -925.0, -900.0];
/// Pyramid levels whose filter energies are also pooled inside the gate.
const GATED_LEVELS: usize = 2;

/// The pooled features before projection, in order: per level, the means of the 14
/// filter channels then their maxima (4 × 28); the soft-histogram fractions of the
/// 2.5 mm image and of the 5 mm one (2 × 24); the means of the filter channels of levels
/// 0 and 1 inside the lung-density gate (2 × 14); the gate's mean (1); the maxima of
/// the filter channels of levels 0 and 1 in the lungs (2 × 14); the gated
/// low-attenuation fractions (3).
pub const FEATURES: usize = LEVELS * 2 * FILTERS
    + 2 * THRESHOLDS_HU.len()
    + GATED_LEVELS * FILTERS
    + 1
    + GATED_LEVELS * FILTERS
    + LAA_HU.len();

/// The projection's group weights, in feature order: (how many features, weight). A
/// feature is first standardized by the phantom calibration ([`calibration`]), then
/// weighted: the groups that carry the diagnostic content (nodule-scale blob maxima,
/// lung-density bins, gated low attenuation) count more than the rest.
const GROUPS: [(usize, f32); 17] = [
    (FILTERS, 1.0),                 // level 0 means
    (FILTERS, UNSTABLE_WEIGHT),     // level 0 maxima
    (FILTERS, 1.0),                 // level 1 means
    (FILTERS, UNSTABLE_WEIGHT),     // level 1 maxima
    (FILTERS, 1.0),                 // level 2 means
    (FILTERS, 1.0),                 // level 2 maxima
    (FILTERS, 1.0),                 // level 3 means
    (FILTERS, 1.0),                 // level 3 maxima
    (THRESHOLDS_HU.len(), 0.5),     // 2.5 mm histogram (sampling-sensitive)
    (THRESHOLDS_HU.len(), 1.0),     // 5 mm histogram
    (GATED_LEVELS * FILTERS, 1.0),  // gated means
    (1, 1.0),                       // gate
    (FILTERS - 1, UNSTABLE_WEIGHT), // level 0 maxima in the lungs ...
    (1, BLOB_WEIGHT),               // ... of the bright-blob channel (−Laplacian)
    (FILTERS - 1, UNSTABLE_WEIGHT), // level 1 maxima in the lungs ...
    (1, BLOB_WEIGHT),               // ... of the bright-blob channel
    (LAA_HU.len(), LAA_WEIGHT),     // gated low attenuation
];
/// The weight of the fine-scale maxima, which follow single voxels and so move most
/// under a shift of a few millimetres (by the spread of a 4 mm shift on tuning phantoms).
const UNSTABLE_WEIGHT: f32 = 0.25;
/// The weight of the strongest bright blob in the lungs (nodules), level 0 and 1.
const BLOB_WEIGHT: f32 = 6.0;
/// The weight of the gated low-attenuation fractions (emphysema).
const LAA_WEIGHT: f32 = 4.0;
/// The fraction of the calibration mean subtracted before projection. Not all of it: a
/// small common component keeps cosines between series in a useful range (median about
/// 0.6 between tuning phantoms) and a shift of a few millimetres or fresh noise well
/// above 0.95; subtracting it all would spread cosines around 0 and make a series near
/// the mean phantom turn with every small perturbation.
const CENTRING: f64 = 0.97;

/// The preprocessing the model expects.
pub fn preprocess() -> Preprocess {
    Preprocess {
        spacing_mm: Some([SPACING_MM; 3]),
        window: Some(WINDOW),
        normalize: Normalize::Scale {
            lo: WINDOW[0],
            hi: WINDOW[1],
        },
        size: Some(SIZE),
        crop: Crop::Mask,
    }
}

/// The model, loaded once.
pub fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| Model::from_bytes(&onnx_bytes()).expect("the built-in model loads"))
}

/// The embedding of a series: [`super::run_model`] with [`preprocess`], L2-normalized;
/// [`DIM`] values.
pub fn embed(volume: &Volume, backend: &Backend) -> Result<Vec<f32>> {
    let mut v = super::run_model(volume, model(), &preprocess(), None, backend)?;
    if v.len() != DIM {
        return Err(Error::Model(format!(
            "{NAME}: {} values, {DIM} expected",
            v.len()
        )));
    }
    let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if !(norm > 0.0 && norm.is_finite()) {
        return Err(Error::Model(format!(
            "{NAME}: the embedding has norm {norm}"
        )));
    }
    for x in v.iter_mut() {
        *x = (f64::from(*x) / norm) as f32;
    }
    Ok(v)
}

/// The model as ONNX bytes (deterministic). Outputs: "embedding" [1, DIM] (first) and
/// "features" [1, FEATURES], the pooled features before projection.
pub fn onnx_bytes() -> Vec<u8> {
    build().encode_to_vec()
}

/// A graph under construction.
#[derive(Default)]
struct Graph {
    nodes: Vec<onnx::NodeProto>,
    weights: Vec<onnx::TensorProto>,
}

fn ints(name: &str, v: &[i64]) -> onnx::AttributeProto {
    onnx::AttributeProto {
        name: Some(name.into()),
        r#type: Some(onnx::attribute_proto::AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> onnx::AttributeProto {
    onnx::AttributeProto {
        name: Some(name.into()),
        r#type: Some(onnx::attribute_proto::AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[i64]) -> onnx::ValueInfoProto {
    use onnx::tensor_shape_proto::{dimension::Value, Dimension};
    onnx::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(onnx::TypeProto {
            value: Some(onnx::type_proto::Value::TensorType(
                onnx::type_proto::Tensor {
                    elem_type: Some(onnx::tensor_proto::DataType::Float as i32),
                    shape: Some(onnx::TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|&d| Dimension {
                                value: Some(Value::DimValue(d)),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Graph {
    fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        output: &str,
        attribute: Vec<onnx::AttributeProto>,
    ) -> String {
        self.nodes.push(onnx::NodeProto {
            name: Some(output.into()),
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute,
            ..Default::default()
        });
        output.to_string()
    }

    fn weight(&mut self, name: &str, dims: &[usize], data: Vec<f32>) -> String {
        assert_eq!(dims.iter().product::<usize>(), data.len(), "{name}");
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.weights.push(onnx::TensorProto {
            name: Some(name.into()),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(onnx::tensor_proto::DataType::Float as i32),
            raw_data: Some(raw),
            ..Default::default()
        });
        name.to_string()
    }

    /// A convolution with a kernel of `kernel` shape, `out` × `cin` filters in `w`, zero
    /// padded to keep the size (odd kernels), stride 1.
    fn conv(
        &mut self,
        x: &str,
        out: &str,
        w: Vec<f32>,
        shape: [usize; 5],
        bias: Option<Vec<f32>>,
    ) -> String {
        let k = [shape[2], shape[3], shape[4]].map(|k| (k / 2) as i64);
        let wname = self.weight(&format!("{out}.w"), &shape, w);
        let mut inputs = vec![x.to_string(), wname];
        if let Some(b) = bias {
            inputs.push(self.weight(&format!("{out}.b"), &[shape[0]], b));
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.node(
            "Conv",
            &inputs,
            out,
            vec![
                ints(
                    "kernel_shape",
                    &[shape[2], shape[3], shape[4]].map(|v| v as i64),
                ),
                ints("pads", &[k[0], k[1], k[2], k[0], k[1], k[2]]),
            ],
        )
    }
}

/// The binomial kernel (1 4 6 4 1) / 16.
const BINOMIAL: [f32; 5] = [0.0625, 0.25, 0.375, 0.25, 0.0625];

/// The 7 filters on a 3 × 3 × 3 stencil (index z, y, x), each followed by its negation:
/// ∂z, ∂y, ∂x (central differences), ∂zz, ∂yy, ∂xx, and the Laplacian.
fn filter_bank() -> Vec<f32> {
    let at = |z: usize, y: usize, x: usize| (z * 3 + y) * 3 + x;
    let mut bank = Vec::new();
    for f in 0..7 {
        let mut k = [0f32; 27];
        match f {
            0..=2 => {
                let mut hi = [1, 1, 1];
                let mut lo = [1, 1, 1];
                hi[f] = 2;
                lo[f] = 0;
                k[at(hi[0], hi[1], hi[2])] = 0.5;
                k[at(lo[0], lo[1], lo[2])] = -0.5;
            }
            3..=5 => {
                let a = f - 3;
                let mut hi = [1, 1, 1];
                let mut lo = [1, 1, 1];
                hi[a] = 2;
                lo[a] = 0;
                k[at(hi[0], hi[1], hi[2])] = 1.0;
                k[at(lo[0], lo[1], lo[2])] = 1.0;
                k[at(1, 1, 1)] = -2.0;
            }
            _ => {
                for a in 0..3 {
                    let mut hi = [1, 1, 1];
                    let mut lo = [1, 1, 1];
                    hi[a] = 2;
                    lo[a] = 0;
                    k[at(hi[0], hi[1], hi[2])] = 1.0;
                    k[at(lo[0], lo[1], lo[2])] = 1.0;
                }
                k[at(1, 1, 1)] = -6.0;
            }
        }
        bank.extend_from_slice(&k);
        bank.extend(k.iter().map(|v| -v));
    }
    bank
}

/// A soft "above threshold" bank: 1 × 1 × 1 convolution to one channel per threshold,
/// slope 1 / [`SOFT_HU`] in HU, for inputs scaled by the window.
fn soft_histogram(g: &mut Graph, x: &str, name: &str) -> String {
    let span = WINDOW[1] - WINDOW[0];
    let slope = span / SOFT_HU;
    let t = THRESHOLDS_HU.len();
    let bias: Vec<f32> = THRESHOLDS_HU
        .iter()
        .map(|h| -slope * (h - WINDOW[0]) / span)
        .collect();
    let c = g.conv(
        x,
        &format!("{name}.above"),
        vec![slope; t],
        [t, 1, 1, 1, 1],
        Some(bias),
    );
    let s = g.node("Sigmoid", &[&c], &format!("{name}.sigmoid"), vec![]);
    g.node(
        "GlobalAveragePool",
        &[&s],
        &format!("{name}.fraction"),
        vec![],
    )
}

/// The lung-density gate of the level-0 smoothed image `s`: smoothed once more (σ about
/// 1.4 voxels, 3.5 mm), then soft "above −985 HU" times soft "below −700 HU": 1 in lung
/// parenchyma (normal or emphysematous), 0 in air outside the body and in tissue.
fn lung_gate(g: &mut Graph, s: &str) -> String {
    let mut x = s.to_string();
    for (a, axis) in ["z", "y", "x"].iter().enumerate() {
        let mut shape = [1, 1, 1, 1, 1];
        shape[2 + a] = 5;
        x = g.conv(
            &x,
            &format!("gate.smooth_{axis}"),
            BINOMIAL.to_vec(),
            shape,
            None,
        );
    }
    let span = WINDOW[1] - WINDOW[0];
    let slope = span / GATE_SOFT_HU;
    let at = |h: f32| (h - WINDOW[0]) / span;
    let lo = g.conv(
        &x,
        "gate.above",
        vec![slope],
        [1; 5],
        Some(vec![-slope * at(GATE_HU[0])]),
    );
    let hi = g.conv(
        &x,
        "gate.below",
        vec![-slope],
        [1; 5],
        Some(vec![slope * at(GATE_HU[1])]),
    );
    let lo = g.node("Sigmoid", &[&lo], "gate.above_soft", vec![]);
    let hi = g.node("Sigmoid", &[&hi], "gate.below_soft", vec![]);
    g.node("Mul", &[&lo, &hi], "gate", vec![])
}

/// The fixed linear map from the pooled features to the features the projection
/// rotates, row-major (out, in), square: histograms become bins (each threshold's
/// fraction minus the next one's; the last stays); everything else is kept.
fn bins() -> Vec<f64> {
    let n = FEATURES;
    let mut a = vec![0f64; n * n];
    for i in 0..n {
        a[i * n + i] = 1.0;
    }
    let t = THRESHOLDS_HU.len();
    let first = LEVELS * 2 * FILTERS;
    for h in 0..2 {
        for b in 0..t - 1 {
            let i = first + h * t + b;
            a[i * n + i + 1] = -1.0;
        }
    }
    a
}

/// Each (binned) feature's group weight: see [`GROUPS`].
fn group_weights() -> Vec<f64> {
    let mut w = Vec::with_capacity(FEATURES);
    for (count, weight) in GROUPS {
        w.extend(std::iter::repeat_n(f64::from(weight), count));
    }
    assert_eq!(w.len(), FEATURES);
    w
}

/// A DIM × FEATURES matrix with orthonormal columns: Gram–Schmidt (twice, for accuracy)
/// on uniform entries from SplitMix64, in f64 with +, −, ×, ÷, √ only.
fn orthonormal_columns() -> Vec<f64> {
    let mut rng = crate::phantom::Rng::new(0x6d65_646c_616b_6531);
    let (rows, cols) = (DIM, FEATURES);
    // Column-major while orthogonalizing.
    let mut q: Vec<Vec<f64>> = (0..cols)
        .map(|_| (0..rows).map(|_| rng.unit() * 2.0 - 1.0).collect())
        .collect();
    for c in 0..cols {
        let (done, rest) = q.split_at_mut(c);
        let column = &mut rest[0];
        for _ in 0..2 {
            for p in done.iter() {
                let d: f64 = column.iter().zip(p).map(|(a, b)| a * b).sum();
                for (v, b) in column.iter_mut().zip(p) {
                    *v -= d * b;
                }
            }
        }
        let norm = column.iter().map(|v| v * v).sum::<f64>().sqrt();
        for v in column.iter_mut() {
            *v /= norm;
        }
    }
    // Row-major (rows, cols).
    let mut out = vec![0f64; rows * cols];
    for c in 0..cols {
        for r in 0..rows {
            out[r * cols + c] = q[c][r];
        }
    }
    out
}

/// The ModelProto.
fn build() -> onnx::ModelProto {
    let mut g = Graph::default();
    let dims = SIZE;
    let mut level_in = "image".to_string();
    let mut pooled: Vec<String> = Vec::new();
    let mut smoothed_1 = String::new();
    let mut rectified: Vec<String> = Vec::new();
    let mut gate = String::new();
    for l in 0..LEVELS {
        let d = dims.map(|n| n >> l);
        // Separable smoothing.
        let mut s = level_in.clone();
        for (a, axis) in ["z", "y", "x"].iter().enumerate() {
            let mut shape = [1, 1, 1, 1, 1];
            shape[2 + a] = 5;
            s = g.conv(
                &s,
                &format!("l{l}.smooth_{axis}"),
                BINOMIAL.to_vec(),
                shape,
                None,
            );
        }
        if l == 0 {
            gate = lung_gate(&mut g, &s);
        }
        if l == 1 {
            smoothed_1 = s.clone();
        }
        let f = g.conv(
            &s,
            &format!("l{l}.filters"),
            filter_bank(),
            [FILTERS, 1, 3, 3, 3],
            None,
        );
        let r = g.node("Relu", &[&f], &format!("l{l}.rectified"), vec![]);
        rectified.push(r.clone());
        pooled.push(g.node("GlobalAveragePool", &[&r], &format!("l{l}.mean"), vec![]));
        let whole: Vec<i64> = d.iter().map(|&v| v as i64).collect();
        pooled.push(g.node(
            "MaxPool",
            &[&r],
            &format!("l{l}.max"),
            vec![ints("kernel_shape", &whole)],
        ));
        if l + 1 < LEVELS {
            level_in = g.node(
                "AveragePool",
                &[&s],
                &format!("l{}.input", l + 1),
                vec![
                    ints("kernel_shape", &[2, 2, 2]),
                    ints("strides", &[2, 2, 2]),
                ],
            );
        }
    }
    pooled.push(soft_histogram(&mut g, "image", "hist0"));
    pooled.push(soft_histogram(&mut g, &smoothed_1, "hist1"));
    // Everything gated is pooled on level 1 (5 mm): the gate is averaged down and opened
    // (eroded, then dilated, by 3 × 3 × 3 min and max pools) so that thin shells of
    // lung-like values at tissue-air borders (the skin, the airway walls) drop out and the
    // parenchyma stays.
    let half = |g: &mut Graph, x: &str, out: &str| {
        g.node(
            "AveragePool",
            &[x],
            out,
            vec![
                ints("kernel_shape", &[2, 2, 2]),
                ints("strides", &[2, 2, 2]),
            ],
        )
    };
    let pool3 = vec![
        ints("kernel_shape", &[3, 3, 3]),
        ints("pads", &[1, 1, 1, 1, 1, 1]),
    ];
    let gate1 = half(&mut g, &gate, "gate1");
    let negated = g.conv(&gate1, "gate1.negated", vec![-1.0], [1; 5], None);
    let eroded = g.node(
        "MaxPool",
        &[&negated],
        "gate1.eroded_negated",
        pool3.clone(),
    );
    let eroded = g.conv(&eroded, "gate1.eroded", vec![-1.0], [1; 5], None);
    let opened = g.node("MaxPool", &[&eroded], "gate1.opened", pool3);
    // Nothing within 15 mm of the grid's faces counts: there the convolutions' zero
    // padding (air) meets the anatomy.
    let d1 = SIZE.map(|n| n / 2);
    let mut border = vec![0f32; d1.iter().product()];
    for z in 3..d1[0] - 3 {
        for y in 3..d1[1] - 3 {
            for x in 3..d1[2] - 3 {
                border[(z * d1[1] + y) * d1[2] + x] = 1.0;
            }
        }
    }
    let border = g.weight("gate1.interior", &[1, 1, d1[0], d1[1], d1[2]], border);
    let opened = g.node("Mul", &[&opened, &border], "gate1.inside", vec![]);
    let fine = half(&mut g, &rectified[0], "l0.rectified_half");
    for (l, r) in [fine, rectified[1].clone()].iter().enumerate() {
        let m = g.node("Mul", &[r, &opened], &format!("l{l}.gated"), vec![]);
        pooled.push(g.node(
            "GlobalAveragePool",
            &[&m],
            &format!("l{l}.gated_mean"),
            vec![],
        ));
    }
    pooled.push(g.node("GlobalAveragePool", &[&opened], "gate.mean", vec![]));
    // The lungs with what they hold: the opened gate dilated by 5 × 5 × 5 (10 mm), which
    // closes over nodules and vessels; the filters' maxima there (level 0 max-pooled to
    // level 1, and level 1), so a blob in the lung is not outshone by the body's edges.
    let lungs = g.node(
        "MaxPool",
        &[&opened],
        "lungs",
        vec![
            ints("kernel_shape", &[5, 5, 5]),
            ints("pads", &[2, 2, 2, 2, 2, 2]),
        ],
    );
    let lungs = g.node("Mul", &[&lungs, &border], "lungs.inside", vec![]);
    let fine_max = g.node(
        "MaxPool",
        &[&rectified[0]],
        "l0.rectified_half_max",
        vec![
            ints("kernel_shape", &[2, 2, 2]),
            ints("strides", &[2, 2, 2]),
        ],
    );
    let whole1: Vec<i64> = d1.iter().map(|&v| v as i64).collect();
    for (l, r) in [fine_max, rectified[1].clone()].iter().enumerate() {
        let m = g.node("Mul", &[r, &lungs], &format!("l{l}.in_lungs"), vec![]);
        pooled.push(g.node(
            "MaxPool",
            &[&m],
            &format!("l{l}.in_lungs_max"),
            vec![ints("kernel_shape", &whole1)],
        ));
    }
    {
        let span = WINDOW[1] - WINDOW[0];
        let slope = span / SOFT_HU;
        let bias: Vec<f32> = LAA_HU
            .iter()
            .map(|h| slope * (h - WINDOW[0]) / span)
            .collect();
        let n = LAA_HU.len();
        let c = g.conv(
            "image",
            "laa.below",
            vec![-slope; n],
            [n, 1, 1, 1, 1],
            Some(bias),
        );
        let b = g.node("Sigmoid", &[&c], "laa.below_soft", vec![]);
        let b = half(&mut g, &b, "laa.below_half");
        let m = g.node("Mul", &[&b, &opened], "laa.gated", vec![]);
        pooled.push(g.node("GlobalAveragePool", &[&m], "laa.fraction", vec![]));
    }
    let refs: Vec<&str> = pooled.iter().map(String::as_str).collect();
    let cat = g.node("Concat", &refs, "pooled", vec![int("axis", 1)]);
    let features = g.node("Flatten", &[&cat], "features", vec![int("axis", 1)]);
    // embedding = Q · W · (A · features − CENTRING · centre) / scale, as Gemm with
    // B = (Q · W · A / scale)ᵀ (FEATURES × DIM) and C = −Q · W · CENTRING · centre / scale.
    let (a, q, w) = (bins(), orthonormal_columns(), group_weights());
    let n = FEATURES;
    let row_scale: Vec<f64> = (0..n)
        .map(|i| w[i] / f64::from(calibration::SCALE[i]))
        .collect();
    let mut b = vec![0f32; n * DIM];
    let mut c = vec![0f32; DIM];
    for r in 0..DIM {
        for col in 0..n {
            let v: f64 = (0..n)
                .map(|k| q[r * n + k] * row_scale[k] * a[k * n + col])
                .sum();
            b[col * DIM + r] = v as f32;
        }
        let v: f64 = (0..n)
            .map(|k| -q[r * n + k] * row_scale[k] * CENTRING * f64::from(calibration::CENTER[k]))
            .sum();
        c[r] = v as f32;
    }
    let bw = g.weight("projection", &[n, DIM], b);
    let cw = g.weight("projection.bias", &[DIM], c);
    g.node("Gemm", &[&features, &bw, &cw], "embedding", vec![]);
    onnx::ModelProto {
        ir_version: Some(8),
        producer_name: Some("medlake".into()),
        model_version: Some(1),
        doc_string: Some(format!(
            "{NAME}: a fixed multi-scale Gaussian-derivative filter bank (training-free)"
        )),
        opset_import: vec![onnx::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(onnx::GraphProto {
            name: Some(NAME.into()),
            node: g.nodes,
            initializer: g.weights,
            input: vec![value_info(
                "image",
                &[1, 1, dims[0] as i64, dims[1] as i64, dims[2] as i64],
            )],
            output: vec![
                value_info("embedding", &[1, DIM as i64]),
                value_info("features", &[1, FEATURES as i64]),
            ],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_is_an_isometry() {
        let q = orthonormal_columns();
        let n = FEATURES;
        for a in [0, 7, n - 1] {
            for b in [0, 7, n - 1] {
                let d: f64 = (0..DIM).map(|r| q[r * n + a] * q[r * n + b]).sum();
                let want = if a == b { 1.0 } else { 0.0 };
                assert!((d - want).abs() < 1e-9, "{a} {b} {d}");
            }
        }
    }

    #[test]
    fn model_loads_with_the_documented_shapes() {
        let m = model();
        let shapes = m.shapes(&[vec![1, 1, SIZE[0], SIZE[1], SIZE[2]]]).unwrap();
        assert_eq!(shapes, vec![vec![1, DIM], vec![1, FEATURES]]);
    }
}
