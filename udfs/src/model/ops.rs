//! The ops: parsed and checked at load ([`parse`]), their output shapes ([`Op::output_shape`])
//! and scratch memory.

use std::collections::HashMap;

use super::onnx::{self, attribute_proto::AttributeType, NodeProto};
use super::Constant;

/// A 3-D window (convolution or pooling): kernel, strides, pads (begin d, h, w, end d,
/// h, w, as ONNX orders them) and dilations, per spatial axis (d, h, w).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub kernel: [usize; 3],
    pub strides: [usize; 3],
    pub pads: [usize; 6],
    pub dilations: [usize; 3],
}

impl Window {
    /// The output extent along each spatial axis for an input of `spatial` voxels.
    pub fn output(&self, spatial: &[usize]) -> Result<[usize; 3], String> {
        let mut out = [0; 3];
        for a in 0..3 {
            let span = (self.kernel[a] - 1) * self.dilations[a] + 1;
            let padded = spatial[a] + self.pads[a] + self.pads[a + 3];
            if padded < span {
                return Err(format!(
                    "window {:?} (dilations {:?}) larger than the padded input {spatial:?}",
                    self.kernel, self.dilations
                ));
            }
            out[a] = (padded - span) / self.strides[a] + 1;
        }
        Ok(out)
    }
}

/// A checked op with its attributes.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Inputs: x (N, C, D, H, W), weight (M, C/group, kd, kh, kw), optional bias (M).
    Conv {
        window: Window,
        group: usize,
    },
    /// Inputs: x (N, C, D, H, W), weight (C, M/group, kd, kh, kw), optional bias (M). The
    /// window's pads crop the full transposed output; `output_padding` adds to its end.
    ConvTranspose {
        window: Window,
        group: usize,
        output_padding: [usize; 3],
    },
    /// Inference BatchNormalization folded into y = x * scale[c] + shift[c].
    BatchNorm {
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
    /// Inputs: x (N, C, ...), scale (C), bias (C); each (n, c) normalized over the rest.
    InstanceNorm {
        epsilon: f32,
    },
    /// GroupNormalization (opset 18 and 21). Inputs: x (N, C, ...), scale, bias; the
    /// channels are cut into `groups` consecutive groups, each (n, group) normalized over
    /// its channels and positions, then scaled and shifted: per group (`per_group`, opset
    /// 18–20: scale and bias of length `groups`) or per channel (opset 21: length C).
    GroupNorm {
        epsilon: f32,
        groups: usize,
        per_group: bool,
    },
    Relu,
    LeakyRelu {
        alpha: f32,
    },
    /// Inputs: x, slope (broadcast to x).
    PRelu,
    Sigmoid,
    Add,
    Mul,
    Concat {
        axis: i64,
    },
    MaxPool {
        window: Window,
    },
    AveragePool {
        window: Window,
        count_include_pad: bool,
    },
    GlobalAveragePool,
    Flatten {
        axis: i64,
    },
    /// The target shape as given (0 copies a dimension unless `allowzero`, -1 is inferred).
    Reshape {
        shape: Vec<i64>,
        allowzero: bool,
    },
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    MatMul,
    /// `legacy`: opset < 13, the input flattened to 2-D at `axis`.
    Softmax {
        axis: i64,
        legacy: bool,
    },
    Identity,
    /// Resize (opset 11+) by constant scales or sizes, each axis separately.
    Resize {
        mode: ResizeMode,
        coord: CoordMode,
        target: ResizeTarget,
    },
}

/// Resize's interpolation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeMode {
    /// Nearest, rounding the input coordinate by `nearest_mode`.
    Nearest(NearestMode),
    /// Linear along each resized axis (trilinear on a 3-D image).
    Linear,
}

/// Resize's `nearest_mode` (Upsample's nearest is floor: it only upsamples here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

/// Resize's `coordinate_transformation_mode`: how an output coordinate maps to the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoordMode {
    HalfPixel,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
}

/// Resize's constant target: a scale or an output length per axis.
#[derive(Debug, Clone, PartialEq)]
pub enum ResizeTarget {
    Scales(Vec<f32>),
    Sizes(Vec<usize>),
}

impl ResizeTarget {
    /// The output shape for input `x`.
    pub fn output(&self, x: &[usize]) -> Result<Vec<usize>, String> {
        let out: Vec<usize> = match self {
            ResizeTarget::Scales(s) if s.len() == x.len() => x
                .iter()
                .zip(s)
                // As onnxruntime: the f32 product, truncated.
                .map(|(&d, &s)| (d as f32 * s) as usize)
                .collect(),
            ResizeTarget::Sizes(s) if s.len() == x.len() => s.clone(),
            _ => return Err(format!("{self:?} for an input of rank {}", x.len())),
        };
        if out.contains(&0) {
            return Err(format!("{self:?} makes {x:?} empty ({out:?})"));
        }
        Ok(out)
    }

    /// The scale along axis `a` from `len_in` to `len_out`: as given, or their ratio.
    pub fn scale(&self, a: usize, len_in: usize, len_out: usize) -> f32 {
        match self {
            ResizeTarget::Scales(s) => s[a],
            ResizeTarget::Sizes(_) => len_out as f32 / len_in as f32,
        }
    }
}

impl Op {
    /// The ONNX op type.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv { .. } => "Conv",
            Op::ConvTranspose { .. } => "ConvTranspose",
            Op::Resize { .. } => "Resize",
            Op::BatchNorm { .. } => "BatchNormalization",
            Op::InstanceNorm { .. } => "InstanceNormalization",
            Op::GroupNorm { .. } => "GroupNormalization",
            Op::PRelu => "PRelu",
            Op::Relu => "Relu",
            Op::LeakyRelu { .. } => "LeakyRelu",
            Op::Sigmoid => "Sigmoid",
            Op::Add => "Add",
            Op::Mul => "Mul",
            Op::Concat { .. } => "Concat",
            Op::MaxPool { .. } => "MaxPool",
            Op::AveragePool { .. } => "AveragePool",
            Op::GlobalAveragePool => "GlobalAveragePool",
            Op::Flatten { .. } => "Flatten",
            Op::Reshape { .. } => "Reshape",
            Op::Gemm { .. } => "Gemm",
            Op::MatMul => "MatMul",
            Op::Softmax { .. } => "Softmax",
            Op::Identity => "Identity",
        }
    }

    /// Weights the op holds itself (folded at load), in bytes.
    pub(super) fn weight_bytes(&self) -> usize {
        match self {
            Op::BatchNorm { scale, shift } => (scale.len() + shift.len()) * 4,
            _ => 0,
        }
    }

    /// Scratch the CPU kernel allocates while it runs, in bytes.
    pub(super) fn scratch_bytes(&self, ins: &[&[usize]], out: &[usize]) -> usize {
        match self {
            Op::Conv { window, group } => {
                super::cpu::conv_scratch_floats(ins[0], ins[1], out, window, *group) * 4
            }
            Op::ConvTranspose { group, .. } => {
                super::cpu::conv_transpose_scratch_floats(ins[0], ins[1], *group) * 4
            }
            _ => 0,
        }
    }

    /// The output shape for these input shapes, or why they do not fit.
    pub fn output_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>, String> {
        let x = ins[0];
        match self {
            Op::Conv { window, group } => {
                let w = ins[1];
                if x.len() != 5 {
                    return Err(format!("input {x:?} is not 5-D (N, C, D, H, W)"));
                }
                if x[1] != w[1] * group || !w[0].is_multiple_of(*group) {
                    return Err(format!(
                        "input {x:?}, weight {w:?} and group {group} do not agree"
                    ));
                }
                if let Some(b) = ins.get(2) {
                    if b.iter().product::<usize>() != w[0] {
                        return Err(format!("bias {b:?} for {} output channels", w[0]));
                    }
                }
                let s = window.output(&x[2..])?;
                Ok(vec![x[0], w[0], s[0], s[1], s[2]])
            }
            Op::ConvTranspose {
                window,
                group,
                output_padding,
            } => {
                let w = ins[1];
                if x.len() != 5 {
                    return Err(format!("input {x:?} is not 5-D (N, C, D, H, W)"));
                }
                if x[1] != w[0] || !w[0].is_multiple_of(*group) {
                    return Err(format!(
                        "input {x:?}, weight {w:?} and group {group} do not agree"
                    ));
                }
                let m = w[1] * group;
                if let Some(b) = ins.get(2) {
                    if b.iter().product::<usize>() != m {
                        return Err(format!("bias {b:?} for {m} output channels"));
                    }
                }
                let mut out = vec![x[0], m, 0, 0, 0];
                for a in 0..3 {
                    if x[2 + a] == 0 {
                        return Err(format!("input {x:?} is empty"));
                    }
                    let full = window.strides[a] * (x[2 + a] - 1)
                        + output_padding[a]
                        + (window.kernel[a] - 1) * window.dilations[a]
                        + 1;
                    let crop = window.pads[a] + window.pads[a + 3];
                    if full <= crop {
                        return Err(format!(
                            "pads {:?} crop the whole output of input {x:?}",
                            window.pads
                        ));
                    }
                    out[2 + a] = full - crop;
                }
                Ok(out)
            }
            Op::Resize { target, .. } => target.output(x),
            Op::MaxPool { window } | Op::AveragePool { window, .. } => {
                if x.len() != 5 {
                    return Err(format!("input {x:?} is not 5-D (N, C, D, H, W)"));
                }
                let s = window.output(&x[2..])?;
                Ok(vec![x[0], x[1], s[0], s[1], s[2]])
            }
            Op::BatchNorm { scale, .. } => {
                if x.len() < 2 || x[1] != scale.len() {
                    return Err(format!("input {x:?} for {} channels", scale.len()));
                }
                Ok(x.to_vec())
            }
            Op::InstanceNorm { .. } => {
                let c = x.get(1).copied().unwrap_or(0);
                if x.len() < 3 || ins[1..].iter().any(|p| p.iter().product::<usize>() != c) {
                    return Err(format!(
                        "input {x:?}, scale {:?}, bias {:?}",
                        ins[1], ins[2]
                    ));
                }
                Ok(x.to_vec())
            }
            Op::GroupNorm {
                groups, per_group, ..
            } => {
                let c = x.get(1).copied().unwrap_or(0);
                if x.len() < 3 || !c.is_multiple_of(*groups) {
                    return Err(format!("input {x:?} for {groups} groups"));
                }
                let len = if *per_group { *groups } else { c };
                if ins[1..].iter().any(|p| p.iter().product::<usize>() != len) {
                    return Err(format!(
                        "input {x:?}, {groups} groups: scale {:?} and bias {:?} must have {len} values ({})",
                        ins[1],
                        ins[2],
                        if *per_group { "one per group, opset 18" } else { "one per channel, opset 21" }
                    ));
                }
                Ok(x.to_vec())
            }
            Op::PRelu => match broadcast(x, ins[1]) {
                Ok(out) if out == x => Ok(out),
                _ => Err(format!("slope {:?} does not broadcast to {x:?}", ins[1])),
            },
            Op::Relu | Op::LeakyRelu { .. } | Op::Sigmoid | Op::Identity => Ok(x.to_vec()),
            Op::Softmax { axis, .. } => {
                axis_index(*axis, x.len())?;
                Ok(x.to_vec())
            }
            Op::Add | Op::Mul => broadcast(x, ins[1]),
            Op::Concat { axis } => {
                let a = axis_index(*axis, x.len())?;
                let mut out = x.to_vec();
                for other in &ins[1..] {
                    let fits =
                        other.len() == x.len() && (0..x.len()).all(|d| d == a || other[d] == x[d]);
                    if !fits {
                        return Err(format!("inputs {x:?} and {other:?} along axis {axis}"));
                    }
                    out[a] += other[a];
                }
                Ok(out)
            }
            Op::GlobalAveragePool => {
                if x.len() < 3 {
                    return Err(format!("input {x:?} has no spatial axes"));
                }
                let mut out = x.to_vec();
                out[2..].iter_mut().for_each(|d| *d = 1);
                Ok(out)
            }
            Op::Flatten { axis } => {
                let a = if *axis < 0 {
                    axis_index(*axis, x.len())?
                } else if *axis as usize <= x.len() {
                    *axis as usize
                } else {
                    return Err(format!("axis {axis} for rank {}", x.len()));
                };
                Ok(vec![x[..a].iter().product(), x[a..].iter().product()])
            }
            Op::Reshape { shape, allowzero } => reshape(x, shape, *allowzero),
            Op::Gemm {
                trans_a, trans_b, ..
            } => {
                let b = ins[1];
                if x.len() != 2 || b.len() != 2 {
                    return Err(format!("inputs {x:?} and {b:?} are not matrices"));
                }
                let (m, k) = if *trans_a { (x[1], x[0]) } else { (x[0], x[1]) };
                let (k2, n) = if *trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
                if k != k2 {
                    return Err(format!("inner dimensions of {x:?} and {b:?} differ"));
                }
                if let Some(c) = ins.get(2) {
                    if broadcast(c, &[m, n]).ok().as_deref() != Some(&[m, n][..]) {
                        return Err(format!("C {c:?} does not broadcast to [{m}, {n}]"));
                    }
                }
                Ok(vec![m, n])
            }
            Op::MatMul => matmul_shape(x, ins[1]).map(|s| s.out),
        }
    }
}

/// A possibly negative axis as an index into `rank` dimensions.
pub fn axis_index(axis: i64, rank: usize) -> Result<usize, String> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a >= rank as i64 {
        return Err(format!("axis {axis} for rank {rank}"));
    }
    Ok(a as usize)
}

/// Numpy (multidirectional) broadcasting of two shapes.
pub fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], d: usize| {
        if d + s.len() < rank {
            1
        } else {
            s[d + s.len() - rank]
        }
    };
    (0..rank)
        .map(|d| match (dim(a, d), dim(b, d)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        })
        .collect()
}

/// A MatMul's shapes, numpy's `matmul` rules.
pub struct MatMulShape {
    pub out: Vec<usize>,
    /// The broadcast batch axes.
    pub batch: Vec<usize>,
    /// Each product is (m x k) by (k x n).
    pub mkn: [usize; 3],
}

pub fn matmul_shape(a: &[usize], b: &[usize]) -> Result<MatMulShape, String> {
    if a.is_empty() || b.is_empty() {
        return Err("MatMul of a scalar".into());
    }
    let a2: Vec<usize> = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b2: Vec<usize> = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return Err(format!("inner dimensions of {a:?} and {b:?} differ"));
    }
    let batch = broadcast(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    let mut out = batch.clone();
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Ok(MatMulShape {
        out,
        batch,
        mkn: [m, k, n],
    })
}

fn reshape(x: &[usize], shape: &[i64], allowzero: bool) -> Result<Vec<usize>, String> {
    let count: usize = x.iter().product();
    let mut out = Vec::with_capacity(shape.len());
    let mut infer = None;
    for (i, &s) in shape.iter().enumerate() {
        match s {
            0 if !allowzero => out.push(
                *x.get(i)
                    .ok_or_else(|| format!("shape {shape:?}: 0 at {i} beyond input {x:?}"))?,
            ),
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            s if s >= 0 => out.push(s as usize),
            _ => return Err(format!("shape {shape:?} is not a valid target")),
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer {
        if known == 0 || !count.is_multiple_of(known) {
            return Err(format!("cannot reshape {x:?} to {shape:?}"));
        }
        out[i] = count / known;
    }
    if out.iter().product::<usize>() != count {
        return Err(format!("cannot reshape {x:?} to {shape:?}"));
    }
    Ok(out)
}

/// A node's attributes, taken one by one; what is left at the end is unsupported.
struct Attributes<'a>(HashMap<&'a str, &'a onnx::AttributeProto>);

impl<'a> Attributes<'a> {
    fn new(n: &'a NodeProto) -> Self {
        Attributes(n.attribute.iter().map(|a| (a.name(), a)).collect())
    }

    fn take(
        &mut self,
        name: &str,
        kind: AttributeType,
    ) -> Result<Option<&'a onnx::AttributeProto>, String> {
        match self.0.remove(name) {
            Some(a) if a.r#type() != kind && a.r#type() != AttributeType::Undefined => Err(
                format!("attribute {name} is {:?}, expected {kind:?}", a.r#type()),
            ),
            a => Ok(a),
        }
    }

    fn int(&mut self, name: &str, default: i64) -> Result<i64, String> {
        Ok(self
            .take(name, AttributeType::Int)?
            .map_or(default, |a| a.i()))
    }

    fn float(&mut self, name: &str, default: f32) -> Result<f32, String> {
        Ok(self
            .take(name, AttributeType::Float)?
            .map_or(default, |a| a.f()))
    }

    fn ints(&mut self, name: &str) -> Result<Option<Vec<i64>>, String> {
        Ok(self
            .take(name, AttributeType::Ints)?
            .map(|a| a.ints.clone()))
    }

    fn string(&mut self, name: &str, default: &str) -> Result<String, String> {
        Ok(self
            .take(name, AttributeType::String)?
            .map_or(default.to_string(), |a| {
                String::from_utf8_lossy(a.s()).into_owned()
            }))
    }

    /// A boolean attribute (0 or 1).
    fn flag(&mut self, name: &str, default: bool) -> Result<bool, String> {
        match self.int(name, default as i64)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(format!("attribute {name}={v}: expected 0 or 1")),
        }
    }

    /// Require an attribute to have one value (or be absent).
    fn only(&mut self, name: &str, allowed: i64) -> Result<(), String> {
        match self.int(name, allowed)? {
            v if v == allowed => Ok(()),
            v => Err(format!(
                "attribute {name}={v} is not supported (only {allowed})"
            )),
        }
    }

    fn finish(self) -> Result<(), String> {
        let mut left: Vec<&str> = self.0.into_keys().collect();
        left.sort_unstable();
        match left.first() {
            None => Ok(()),
            Some(name) => Err(format!("attribute {name} is not supported")),
        }
    }
}

/// Positive values, three of them (one per spatial axis), or the default.
fn triple(a: Option<Vec<i64>>, default: usize, name: &str) -> Result<[usize; 3], String> {
    match a {
        None => Ok([default; 3]),
        Some(v) if v.len() == 3 && v.iter().all(|&x| x > 0) => {
            Ok([v[0], v[1], v[2]].map(|x| x as usize))
        }
        Some(v) => Err(format!(
            "attribute {name}={v:?}: three positive values expected (3-D only)"
        )),
    }
}

fn window(at: &mut Attributes, kernel: Option<[usize; 3]>) -> Result<Window, String> {
    let kernel = match (at.ints("kernel_shape")?, kernel) {
        (None, Some(k)) => k,
        (given, weight) => {
            let k = triple(
                Some(given.ok_or("attribute kernel_shape is required")?),
                1,
                "kernel_shape",
            )?;
            if weight.is_some_and(|w| w != k) {
                return Err(format!(
                    "kernel_shape {k:?} does not match the weight {weight:?}"
                ));
            }
            k
        }
    };
    let auto_pad = at.string("auto_pad", "NOTSET")?;
    let pads = match (auto_pad.as_str(), at.ints("pads")?) {
        ("NOTSET", None) | ("VALID", None) => [0; 6],
        ("NOTSET", Some(p)) if p.len() == 6 && p.iter().all(|&x| x >= 0) => {
            std::array::from_fn(|i| p[i] as usize)
        }
        ("NOTSET", Some(p)) => {
            return Err(format!("attribute pads={p:?}: six values >= 0 expected"))
        }
        (other, _) => {
            return Err(format!(
                "attribute auto_pad={other} is not supported (NOTSET, VALID)"
            ))
        }
    };
    Ok(Window {
        kernel,
        strides: triple(at.ints("strides")?, 1, "strides")?,
        pads,
        dilations: triple(at.ints("dilations")?, 1, "dilations")?,
    })
}

/// The f32 constant at input `i`, or why it must be one.
fn weight<'a>(
    consts: &[Option<&'a Constant>],
    i: usize,
    what: &str,
) -> Result<&'a super::Tensor, String> {
    match consts.get(i).copied().flatten() {
        Some(Constant::F32(t)) => Ok(t),
        _ => Err(format!("{what} (input {i}) must be a float initializer")),
    }
}

/// Check a node and parse its attributes: the op and how many of its inputs it reads at
/// run time (the rest, such as Reshape's shape or BatchNormalization's statistics, are
/// consumed here).
pub(super) fn parse(
    n: &NodeProto,
    opset: i64,
    consts: &[Option<&Constant>],
) -> Result<(Op, usize), String> {
    let mut at = Attributes::new(n);
    let inputs = n.input.len();
    let need = |k: usize| {
        if inputs < k || n.input[..k].iter().any(|x| x.is_empty()) {
            Err(format!("{k} inputs expected, {inputs} given"))
        } else {
            Ok(())
        }
    };
    let (op, used) = match n.op_type() {
        "Conv" => {
            need(2)?;
            let (window, group, used) = conv_node(&mut at, n, consts, "convolution")?;
            (Op::Conv { window, group }, used)
        }
        "ConvTranspose" => {
            need(2)?;
            if at.ints("output_shape")?.is_some() {
                return Err(
                    "attribute output_shape is not supported (give pads and output_padding)".into(),
                );
            }
            let auto_pad = at.string("auto_pad", "NOTSET")?;
            if auto_pad != "NOTSET" {
                return Err(format!(
                    "attribute auto_pad={auto_pad} is not supported (only NOTSET)"
                ));
            }
            let (window, group, used) = conv_node(&mut at, n, consts, "transposed convolution")?;
            let output_padding = match at.ints("output_padding")? {
                None => [0; 3],
                Some(v) if v.len() == 3 && v.iter().all(|&p| p >= 0) => {
                    [v[0], v[1], v[2]].map(|p| p as usize)
                }
                Some(v) => {
                    return Err(format!(
                        "attribute output_padding={v:?}: three values >= 0 expected"
                    ))
                }
            };
            for a in 0..3 {
                if output_padding[a] >= window.strides[a].max(window.dilations[a]) {
                    return Err(format!(
                        "attribute output_padding={output_padding:?}: each must be below its \
                         stride or dilation"
                    ));
                }
            }
            (
                Op::ConvTranspose {
                    window,
                    group,
                    output_padding,
                },
                used,
            )
        }
        "Resize" => (resize(&mut at, n, opset, consts)?, 1),
        "Upsample" => (upsample(&mut at, opset, consts)?, 1),
        "BatchNormalization" => {
            need(5)?;
            let epsilon = at.float("epsilon", 1e-5)?;
            at.float("momentum", 0.9)?; // training only
            at.only("spatial", 1)?;
            at.only("training_mode", 0)?;
            at.take("is_test", AttributeType::Int)?; // opset < 7, inference either way
            let [gamma, beta, mean, var] =
                [1, 2, 3, 4].map(|i| weight(consts, i, ["scale", "B", "mean", "var"][i - 1]));
            let (gamma, beta, mean, var) = (gamma?, beta?, mean?, var?);
            let c = gamma.data.len();
            if [beta, mean, var].iter().any(|t| t.data.len() != c) {
                return Err("scale, B, mean and var differ in length".into());
            }
            let scale: Vec<f32> = (0..c)
                .map(|i| {
                    (f64::from(gamma.data[i])
                        / (f64::from(var.data[i]) + f64::from(epsilon)).sqrt())
                        as f32
                })
                .collect();
            let shift = (0..c)
                .map(|i| {
                    (f64::from(beta.data[i]) - f64::from(mean.data[i]) * f64::from(scale[i])) as f32
                })
                .collect();
            (Op::BatchNorm { scale, shift }, 1)
        }
        "InstanceNormalization" => (
            Op::InstanceNorm {
                epsilon: at.float("epsilon", 1e-5)?,
            },
            3,
        ),
        "GroupNormalization" => {
            need(3)?;
            let epsilon = at.float("epsilon", 1e-5)?;
            let groups = at
                .take("num_groups", AttributeType::Int)?
                .ok_or("attribute num_groups is required")?
                .i();
            if groups < 1 {
                return Err(format!("attribute num_groups={groups}"));
            }
            // stash_type (opset 21): the precision of the statistics; they are computed in
            // f64 here, at least as precise as either float32 (1) or double (11).
            at.int("stash_type", 1)?;
            (
                Op::GroupNorm {
                    epsilon,
                    groups: groups as usize,
                    per_group: opset < 21,
                },
                3,
            )
        }
        "PRelu" => (Op::PRelu, 2),
        "Relu" => (Op::Relu, 1),
        "Sigmoid" => (Op::Sigmoid, 1),
        "Identity" => (Op::Identity, 1),
        "LeakyRelu" => (
            Op::LeakyRelu {
                alpha: at.float("alpha", 0.01)?,
            },
            1,
        ),
        "Add" => (Op::Add, 2),
        "Mul" => (Op::Mul, 2),
        "Concat" => {
            let axis = at
                .take("axis", AttributeType::Int)?
                .ok_or("attribute axis is required")?
                .i();
            (Op::Concat { axis }, inputs)
        }
        "MaxPool" => {
            let window = window(&mut at, None)?;
            at.only("ceil_mode", 0)?;
            at.int("storage_order", 0)?; // only matters for the Indices output
            (Op::MaxPool { window }, 1)
        }
        "AveragePool" => {
            let window = window(&mut at, None)?;
            at.only("ceil_mode", 0)?;
            let count_include_pad = at.flag("count_include_pad", false)?;
            (
                Op::AveragePool {
                    window,
                    count_include_pad,
                },
                1,
            )
        }
        "GlobalAveragePool" => (Op::GlobalAveragePool, 1),
        "Flatten" => (
            Op::Flatten {
                axis: at.int("axis", 1)?,
            },
            1,
        ),
        "Reshape" => {
            need(2)?;
            let shape = match consts.get(1).copied().flatten() {
                Some(Constant::I64(v)) => v.clone(),
                _ => {
                    return Err(
                        "the shape (input 1) must be an int64 initializer or Constant".into(),
                    )
                }
            };
            let allowzero = at.flag("allowzero", false)?;
            (Op::Reshape { shape, allowzero }, 1)
        }
        "Gemm" => {
            need(2)?;
            let op = Op::Gemm {
                alpha: at.float("alpha", 1.0)?,
                beta: at.float("beta", 1.0)?,
                trans_a: at.flag("transA", false)?,
                trans_b: at.flag("transB", false)?,
            };
            let used = if inputs > 2 && !n.input[2].is_empty() {
                3
            } else {
                2
            };
            (op, used)
        }
        "MatMul" => (Op::MatMul, 2),
        "Softmax" => {
            let legacy = opset < 13;
            let axis = at.int("axis", if legacy { 1 } else { -1 })?;
            (Op::Softmax { axis, legacy }, 1)
        }
        other => return Err(format!("op {other} is not supported")),
    };
    need(used.max(1))?;
    at.finish()?;
    Ok((op, used))
}

/// A Conv or ConvTranspose node's window (its kernel from the 5-D weight), group, and
/// the number of inputs it reads (3 with a bias).
fn conv_node(
    at: &mut Attributes,
    n: &NodeProto,
    consts: &[Option<&Constant>],
    what: &str,
) -> Result<(Window, usize, usize), String> {
    let w = weight(consts, 1, "the weight")?;
    if w.shape.len() != 5 {
        return Err(format!(
            "weight {:?}: only 3-D {what} (5-D weight) is supported",
            w.shape
        ));
    }
    let window = window(at, Some([w.shape[2], w.shape[3], w.shape[4]]))?;
    let group = at.int("group", 1)?;
    if group < 1 {
        return Err(format!("attribute group={group}"));
    }
    let used = if n.input.len() > 2 && !n.input[2].is_empty() {
        3
    } else {
        2
    };
    Ok((window, group as usize, used))
}

/// Resize's attributes and its constant scales or sizes.
fn resize(
    at: &mut Attributes,
    n: &NodeProto,
    opset: i64,
    consts: &[Option<&Constant>],
) -> Result<Op, String> {
    if opset < 11 {
        return Err(format!(
            "Resize of opset {opset} is not supported (11 and later)"
        ));
    }
    let mode = match at.string("mode", "nearest")?.as_str() {
        "nearest" => ResizeMode::Nearest(
            match at.string("nearest_mode", "round_prefer_floor")?.as_str() {
                "round_prefer_floor" => NearestMode::RoundPreferFloor,
                "round_prefer_ceil" => NearestMode::RoundPreferCeil,
                "floor" => NearestMode::Floor,
                "ceil" => NearestMode::Ceil,
                other => {
                    return Err(format!(
                        "attribute nearest_mode={other} is not supported (round_prefer_floor, \
                         round_prefer_ceil, floor, ceil)"
                    ))
                }
            },
        ),
        "linear" => ResizeMode::Linear,
        other => {
            return Err(format!(
                "attribute mode={other} is not supported (nearest, linear)"
            ))
        }
    };
    let coord = match at
        .string("coordinate_transformation_mode", "half_pixel")?
        .as_str()
    {
        "half_pixel" => CoordMode::HalfPixel,
        "pytorch_half_pixel" => CoordMode::PytorchHalfPixel,
        "align_corners" => CoordMode::AlignCorners,
        "asymmetric" => CoordMode::Asymmetric,
        other => {
            return Err(format!(
                "attribute coordinate_transformation_mode={other} is not supported \
                 (half_pixel, pytorch_half_pixel, align_corners, asymmetric)"
            ))
        }
    };
    at.float("cubic_coeff_a", -0.75)?; // cubic only
    at.float("extrapolation_value", 0.0)?; // tf_crop_and_resize only
    at.only("exclude_outside", 0)?;
    at.only("antialias", 0)?;
    match at.string("keep_aspect_ratio_policy", "stretch")?.as_str() {
        "stretch" => {}
        other => {
            return Err(format!(
                "attribute keep_aspect_ratio_policy={other} is not supported (only stretch)"
            ))
        }
    }
    let given = |i: usize| n.input.get(i).is_some_and(|x| !x.is_empty());
    let scales = match (given(2), consts.get(2).copied().flatten()) {
        (false, _) => None,
        (true, Some(Constant::F32(t))) if t.data.is_empty() => None,
        (true, Some(Constant::F32(t))) if t.data.iter().all(|&s| s > 0.0) => Some(t.data.clone()),
        _ => return Err("scales (input 2) must be a float initializer of positive values".into()),
    };
    let sizes = match (given(3), consts.get(3).copied().flatten()) {
        (false, _) => None,
        (true, Some(Constant::I64(v))) if v.iter().all(|&s| s > 0) => {
            Some(v.iter().map(|&s| s as usize).collect())
        }
        _ => return Err("sizes (input 3) must be an int64 initializer of positive values".into()),
    };
    let target = match (scales, sizes) {
        (Some(s), None) => ResizeTarget::Scales(s),
        (None, Some(s)) => ResizeTarget::Sizes(s),
        _ => return Err("exactly one of scales (input 2) and sizes (input 3) expected".into()),
    };
    Ok(Op::Resize {
        mode,
        coord,
        target,
    })
}

/// Upsample (opsets 7 to 9): asymmetric coordinates, nearest (floor) or linear, by
/// constant scales of at least 1 (an attribute before opset 9, input 1 from it).
fn upsample(at: &mut Attributes, opset: i64, consts: &[Option<&Constant>]) -> Result<Op, String> {
    let scales = if opset < 9 {
        at.take("scales", AttributeType::Floats)?
            .map(|a| a.floats.clone())
            .ok_or("attribute scales is required")?
    } else {
        match consts.get(1).copied().flatten() {
            Some(Constant::F32(t)) => t.data.clone(),
            _ => return Err("scales (input 1) must be a float initializer".into()),
        }
    };
    if scales.iter().any(|&s| s < 1.0) {
        return Err(format!(
            "scales {scales:?}: downsampling by Upsample is not supported"
        ));
    }
    let mode = match at.string("mode", "nearest")?.as_str() {
        "nearest" => ResizeMode::Nearest(NearestMode::Floor),
        "linear" | "bilinear" => ResizeMode::Linear,
        other => {
            return Err(format!(
                "attribute mode={other} is not supported (nearest, linear)"
            ))
        }
    };
    Ok(Op::Resize {
        mode,
        coord: CoordMode::Asymmetric,
        target: ResizeTarget::Scales(scales),
    })
}

/// A Constant node's tensor (its `value` attribute).
pub(super) fn constant_value(n: &NodeProto) -> Result<onnx::TensorProto, String> {
    let mut at = Attributes::new(n);
    let value = at
        .take("value", AttributeType::Tensor)?
        .and_then(|a| a.t.clone())
        .ok_or("only the value attribute (a tensor) is supported")?;
    at.finish()?;
    Ok(value)
}
