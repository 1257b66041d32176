//! ONNX models on the CPU and the GPU: loading, a graph IR and executors.
//!
//! - **Loading.** [`Model::load`] decodes an ONNX `ModelProto` with prost (the messages in
//!   [`onnx`] are prost-build's output for ONNX's `onnx.proto`), checks every node against
//!   the ops and attributes this runtime implements and sorts the nodes topologically. An
//!   unsupported op, attribute or attribute value, or a missing input, is a load-time
//!   [`Error::Model`] naming the node and the op (and the attribute), never a failure
//!   halfway through a cohort.
//! - **Weights.** Initializers (and `Constant` nodes) become resident f32 tensors owned by
//!   the [`Model`]; BatchNormalization is folded into a per-channel scale and shift at load.
//! - **Tensors** are dense f32, row-major; 3-D images are NCDHW.
//! - **Execution.** [`Model::run`] plans every value's shape first ([`Model::shapes`]), then
//!   runs the nodes in order, freeing each activation after its last use. A fusion pass at
//!   load lets a Conv compute the BatchNormalization and Relu/LeakyRelu after it in its
//!   epilogue (and an activation after BatchNorm, a norm, Add or Mul be applied by that
//!   node), where each intermediate value has no other reader; the fused nodes stay in the
//!   graph and pass their input through. An elementwise node that reads an activation for
//!   the last time computes in its buffer.
//!   [`Model::memory`] reports the peak activation memory of that schedule for an input
//!   shape, from shapes alone.
//! - **Ops** (ONNX opsets 7–22 semantics, default domain): Conv (3-D: stride, pads,
//!   dilations, group, bias), ConvTranspose (3-D: strides, pads, dilations,
//!   output_padding, group, bias; not output_shape, auto_pad only NOTSET), Resize (opset
//!   11+: nearest with any nearest_mode, linear (trilinear on 3-D images); half_pixel,
//!   pytorch_half_pixel, align_corners or asymmetric coordinates; constant scales or
//!   sizes), Upsample (opsets 7–9: nearest or linear, scales of at least 1),
//!   BatchNormalization (inference), InstanceNormalization (and so
//!   GroupNorm as PyTorch exports it before opset 18: Reshape, InstanceNormalization,
//!   Reshape, Mul, Add), GroupNormalization (opset 18: scale and bias per group; opset
//!   21: per channel; statistics in f64 whatever stash_type), Relu, LeakyRelu, PRelu, Sigmoid, Add, Mul (numpy broadcasting),
//!   Concat, MaxPool and AveragePool (3-D, with count_include_pad; not ceil_mode),
//!   GlobalAveragePool, Flatten, Reshape (constant shape), Gemm, MatMul, Softmax, and
//!   Constant and Identity. Convolution runs on an own AVX-512 kernel reading padded input
//!   lines (no im2col) where the CPU has AVX-512F, else im2col over matrixmultiply's
//!   SGEMM, split over output tiles with rayon ([`cpu`]); [`Model::flops`] counts a run's
//!   multiply-adds; transposed convolution is
//!   SGEMM (weights transposed by input) then a col2im scatter, split over output-channel
//!   blocks; Resize runs axis by axis ([`cpu`]).
//! - **Load-time errors** name the node, the op and the attribute: an op not listed above;
//!   Conv and pooling auto_pad other than
//!   NOTSET or VALID, pooling ceil_mode; ConvTranspose output_shape, auto_pad other than
//!   NOTSET, output_padding not below its stride or dilation; Resize before opset 11, modes
//!   other than nearest and linear (cubic), coordinate_transformation_mode
//!   tf_crop_and_resize, tf_half_pixel_for_nn or half_pixel_symmetric, antialias,
//!   exclude_outside, axes, keep_aspect_ratio_policy other than stretch, scales or sizes
//!   that are not initializers; Upsample downsampling; non-3-D convolution weights;
//!   initializers of types other than float32 and int64, or stored externally.
//!
//!
//! **On the GPU** ([`gpu`], WGSL compute shaders on wgpu): [`Model::run_on`] with
//! [`Backend::Gpu`] runs every op above with the CPU's semantics (parity with onnxruntime
//! is tested on lavapipe, `tests/onnx_parity.rs`); with [`Backend::Cpu`] it is
//! [`Model::run`].
//! - **What is resident.** The first GPU run (or [`Model::on_gpu`]) compiles the shaders
//!   and uploads every weight once, into a [`GpuModel`] kept in the model for that device
//!   (a run on another device moves it there): convolution weights transposed for the
//!   implicit GEMM, with a BatchNormalization that only the convolution feeds folded into
//!   them; a Relu, LeakyRelu or Sigmoid after a Conv, ConvTranspose, BatchNormalization or
//!   Add is fused into its epilogue. A run uploads its inputs, records all nodes into
//!   one command stream (no readback between nodes; activations stay on the device), frees
//!   each activation after its last reader into a pool of buffers that later nodes and
//!   runs reuse, and reads back the graph outputs only.
//! - **Chunks.** An activation on the device is a list of buffers, each a whole number of
//!   channel planes ((n, c) pairs in order; a plane is the product of the axes after the
//!   second) and at most one storage binding ([`Gpu::max_binding`]: the device's,
//!   128 MiB by default, or lower with [`Gpu::limit_binding`]). A convolution runs, for
//!   each output chunk, one pass per input chunk holding its group's channels (the first
//!   writes with the bias, later ones add, the last applies the fused activation); pools,
//!   Resize, normalizations and activations run chunk by chunk; Concat, Reshape and
//!   Flatten copy between layouts (Reshape, Flatten and Identity share the buffers when
//!   the chunking is the same).
//! - **Kernels.** Conv is an implicit GEMM (M output channels, N output voxels, K =
//!   channels per group × kernel volume): tiles of 64×64 (or 128×128, 16×256, 256×16 by
//!   shape) per workgroup of 256 threads, 4×4 (8×8) outputs per thread, K in steps of 16
//!   through workgroup memory, and K split over workgroups when there are few output
//!   tiles (deep layers). ConvTranspose is the same GEMM once per output phase (the
//!   residues of the output coordinates modulo the strides: the taps landing on a phase
//!   make an ordinary convolution); Gemm and MatMul a 16×16 tiled GEMM; InstanceNormalization statistics per group of channel
//!   planes (one here; GroupNormalization is the same kernel with more).
//! - **Limits.** A channel plane larger than one binding ([`Model::largest_plane_bytes`]
//!   says the smallest binding a model runs with), and an operand that must be read whole
//!   (Gemm's, MatMul's and Softmax's, and a broadcast operand of Add, Mul or PRelu not of
//!   the output's shape) but does not fit one binding, is an [`Error::Model`] naming the
//!   node; each weight must fit the device's own largest binding. On the GPU, Resize
//!   resizes only the axes after the second (the batch and channel scales must be 1),
//!   broadcasting takes up to 8 dimensions, and a (dilated) kernel spans at most 511
//!   voxels. The GPU computes in f32 throughout (the normalizations' statistics too, in
//!   two passes), where the CPU sums those in f64.
//!
//! `examples/model_gpu.rs` times a model (or a synthetic 3-D ResNet-18) on either backend
//! and reports GFLOP/s ([`Model::flops`]).

pub mod cpu;
pub mod gpu;
#[allow(clippy::all, missing_docs, rustdoc::all)]
#[rustfmt::skip]
pub mod onnx;
mod ops;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use prost::Message;

use crate::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::Backend;
pub use gpu::GpuModel;
pub use ops::Op;

/// A dense f32 tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor> {
        if shape.iter().product::<usize>() != data.len() {
            return Err(Error::Model(format!(
                "tensor of shape {shape:?} given {} values",
                data.len()
            )));
        }
        Ok(Tensor { shape, data })
    }
}

/// Where a node reads an input from.
#[derive(Debug, Clone)]
enum Source {
    /// An activation: a graph input or a node's output, by value slot.
    Value(usize),
    /// A resident weight.
    Weight(Arc<Tensor>),
}

/// One node of the graph, its op checked and its attributes parsed at load.
#[derive(Debug)]
struct Node {
    /// The node's name (or `#index` where it has none), for errors.
    name: String,
    op: Op,
    inputs: Vec<Source>,
    outputs: Vec<usize>,
    /// On the CPU: the BatchNormalization and activation nodes after this one that it
    /// computes itself (see [`fuse`]).
    epilogue: Option<cpu::Epilogue>,
    /// On the CPU: this node's work was done by the node before it (its `epilogue`); its
    /// input passes through as its output.
    fused: bool,
}

impl Node {
    /// The shapes of the node's inputs, activations' from the planned `shapes`.
    fn input_shapes<'a>(&'a self, shapes: &'a [Vec<usize>]) -> Vec<&'a [usize]> {
        self.inputs
            .iter()
            .map(|s| match s {
                Source::Value(v) => shapes[*v].as_slice(),
                Source::Weight(t) => t.shape.as_slice(),
            })
            .collect()
    }

    fn describe(&self) -> String {
        format!("node {:?} ({})", self.name, self.op.name())
    }
}

/// A graph input: its name, value slot and declared dimensions (`None` where symbolic).
#[derive(Debug, Clone)]
pub struct Input {
    pub name: String,
    pub dims: Vec<Option<usize>>,
    slot: usize,
}

/// A loaded ONNX model: nodes in execution order, resident weights.
#[derive(Debug)]
pub struct Model {
    nodes: Vec<Node>,
    inputs: Vec<Input>,
    /// Graph outputs: name and value slot.
    outputs: Vec<(String, usize)>,
    /// Value slot names, for errors.
    value_names: Vec<String>,
    /// For each value slot, the index of the last node that reads it (`usize::MAX` for
    /// graph outputs, which live to the end).
    last_use: Vec<usize>,
    weight_bytes: usize,
    /// The model resident on a device ([`Model::on_gpu`]): the last device asked for.
    resident: Mutex<Option<Arc<GpuModel>>>,
}

/// Peak memory of one run for an input shape, from shapes alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    /// The resident weights.
    pub weight_bytes: usize,
    /// The largest sum of live activations (inputs included) plus the running node's
    /// scratch (im2col tiles), over the run.
    pub peak_activation_bytes: usize,
    /// The node at which the peak is reached.
    pub peak_node: usize,
}

/// An initializer or Constant: f32 tensors become weights; int64 ones are kept for the
/// ops that read them at load (Reshape's shape).
#[derive(Debug, Clone)]
enum Constant {
    F32(Arc<Tensor>),
    I64(Vec<i64>),
}

/// A tensor's values: from little-endian `raw_data` where it is set, else the typed field.
fn values<T: Clone, const N: usize>(
    raw: Option<&[u8]>,
    typed: &[T],
    from_le: fn([u8; N]) -> T,
) -> Vec<T> {
    match raw {
        Some(r) if !r.is_empty() => r
            .chunks_exact(N)
            .map(|c| from_le(c.try_into().expect("N bytes")))
            .collect(),
        _ => typed.to_vec(),
    }
}

fn tensor_from_proto(t: &onnx::TensorProto) -> Result<Constant> {
    use onnx::tensor_proto::{DataLocation, DataType};
    let name = t.name();
    if t.data_location() == DataLocation::External {
        return Err(Error::Model(format!(
            "initializer {name:?}: external data is not supported"
        )));
    }
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| Error::Model(format!("initializer {name:?}: negative dimension")))?;
    let count: usize = shape.iter().product();
    let raw = t.raw_data.as_deref();
    let check = |n: usize| {
        if n == count {
            Ok(())
        } else {
            Err(Error::Model(format!(
                "initializer {name:?}: shape {shape:?} but {n} values"
            )))
        }
    };
    match DataType::try_from(t.data_type.unwrap_or(0)) {
        Ok(DataType::Float) => {
            let data = values(raw, &t.float_data, f32::from_le_bytes);
            check(data.len())?;
            Ok(Constant::F32(Arc::new(Tensor { shape, data })))
        }
        Ok(DataType::Int64) => {
            let data = values(raw, &t.int64_data, i64::from_le_bytes);
            check(data.len())?;
            Ok(Constant::I64(data))
        }
        other => Err(Error::Model(format!(
            "initializer {name:?}: data type {other:?} is not supported (float32 weights, int64 shapes)"
        ))),
    }
}

impl Model {
    /// Load an ONNX model file.
    pub fn load(path: &Path) -> Result<Model> {
        let bytes =
            std::fs::read(path).map_err(|e| Error::Model(format!("{}: {e}", path.display())))?;
        Self::from_bytes(&bytes).map_err(|e| match e {
            Error::Model(m) => Error::Model(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    /// Load an ONNX model from its serialized `ModelProto`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        let proto = onnx::ModelProto::decode(bytes)
            .map_err(|e| Error::Model(format!("not an ONNX model: {e}")))?;
        Self::from_proto(&proto)
    }

    /// Build the graph from a decoded `ModelProto`.
    pub fn from_proto(proto: &onnx::ModelProto) -> Result<Model> {
        let opset = proto
            .opset_import
            .iter()
            .find(|o| matches!(o.domain(), "" | "ai.onnx"))
            .map(|o| o.version())
            .ok_or_else(|| Error::Model("no opset for the default ONNX domain".into()))?;
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| Error::Model("model has no graph".into()))?;

        let mut constants: HashMap<String, Constant> = HashMap::new();
        for t in &graph.initializer {
            constants.insert(t.name().to_string(), tensor_from_proto(t)?);
        }

        let mut value_names: Vec<String> = Vec::new();
        let mut slots: HashMap<String, usize> = HashMap::new();
        let mut inputs = Vec::new();
        for vi in &graph.input {
            if constants.contains_key(vi.name()) {
                continue; // an initializer listed as an input (IR < 4): a weight
            }
            let dims = input_dims(vi)?;
            let slot = value_names.len();
            value_names.push(vi.name().to_string());
            slots.insert(vi.name().to_string(), slot);
            inputs.push(Input {
                name: vi.name().to_string(),
                dims,
                slot,
            });
        }

        // Topological order (Kahn), stable in file order; Constant nodes are evaluated
        // here and do not run.
        let produced: HashMap<&str, usize> = graph
            .node
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i)))
            .collect();
        let order = topological(graph, &produced, &constants, &slots)?;

        let mut nodes = Vec::new();
        for i in order {
            let n = &graph.node[i];
            let name = if n.name().is_empty() {
                format!("#{i}")
            } else {
                n.name().to_string()
            };
            let op_type = n.op_type();
            let at = |reason: String| Error::Model(format!("node {name:?} ({op_type}): {reason}"));
            if !matches!(n.domain(), "" | "ai.onnx") {
                return Err(at(format!("op domain {:?} is not supported", n.domain())));
            }
            if op_type == "Constant" {
                let value = ops::constant_value(n).map_err(at)?;
                let out = n.output.first().ok_or_else(|| at("no output".into()))?;
                constants.insert(out.clone(), tensor_from_proto(&value)?);
                continue;
            }
            // Inputs: constants are offered to the op parser (Reshape's shape, Conv's
            // weight shape), and become weight sources.
            let input_consts: Vec<Option<&Constant>> =
                n.input.iter().map(|x| constants.get(x.as_str())).collect();
            let (op, used_inputs) = ops::parse(n, opset, &input_consts).map_err(at)?;
            let mut sources = Vec::new();
            for (k, x) in n.input.iter().enumerate().take(used_inputs) {
                if x.is_empty() {
                    return Err(at(format!(
                        "optional input {k} left empty is not supported"
                    )));
                }
                let source = match constants.get(x.as_str()) {
                    Some(Constant::F32(t)) => Source::Weight(t.clone()),
                    Some(Constant::I64(..)) => {
                        return Err(at(format!(
                            "input {x:?}: int64 tensors are only read as constant shapes"
                        )))
                    }
                    None => Source::Value(*slots.get(x.as_str()).ok_or_else(|| {
                        at(format!("input {x:?} is neither a graph input, an initializer nor a node output"))
                    })?),
                };
                sources.push(source);
            }
            if n.output.len() != 1 {
                return Err(at(format!(
                    "{} outputs; only the first (single-output form) is supported",
                    n.output.len()
                )));
            }
            let mut outputs = Vec::new();
            for o in &n.output {
                let slot = value_names.len();
                value_names.push(o.clone());
                slots.insert(o.clone(), slot);
                outputs.push(slot);
            }
            nodes.push(Node {
                name,
                op,
                inputs: sources,
                outputs,
                epilogue: None,
                fused: false,
            });
        }

        let mut outputs = Vec::new();
        for o in &graph.output {
            let slot = *slots.get(o.name()).ok_or_else(|| {
                Error::Model(format!(
                    "graph output {:?} is not computed (a constant output is not supported)",
                    o.name()
                ))
            })?;
            outputs.push((o.name().to_string(), slot));
        }
        fuse(&mut nodes, &outputs, value_names.len());
        let mut last_use = vec![0usize; value_names.len()];
        for (i, node) in nodes.iter().enumerate() {
            for s in &node.inputs {
                if let Source::Value(v) = s {
                    last_use[*v] = i;
                }
            }
        }
        for (_, slot) in &outputs {
            last_use[*slot] = usize::MAX;
        }
        let mut seen = std::collections::HashSet::new();
        let weight_bytes = nodes
            .iter()
            .flat_map(|n| n.inputs.iter())
            .filter_map(|s| match s {
                Source::Weight(t) if seen.insert(Arc::as_ptr(t)) => Some(t.data.len() * 4),
                _ => None,
            })
            .sum::<usize>()
            + nodes.iter().map(|n| n.op.weight_bytes()).sum::<usize>();
        Ok(Model {
            nodes,
            inputs,
            outputs,
            value_names,
            last_use,
            weight_bytes,
            resident: Mutex::new(None),
        })
    }

    /// The graph inputs (initializers excluded).
    pub fn inputs(&self) -> &[Input] {
        &self.inputs
    }

    /// The graph outputs' names.
    pub fn output_names(&self) -> Vec<&str> {
        self.outputs.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The ops, in execution order.
    pub fn ops(&self) -> impl Iterator<Item = &Op> {
        self.nodes.iter().map(|n| &n.op)
    }

    /// Every value's shape for the given input shapes (one per graph input), by value
    /// slot; an input that does not fit its declared dimensions or an op is an error.
    fn plan(&self, input_shapes: &[Vec<usize>]) -> Result<Vec<Vec<usize>>> {
        if input_shapes.len() != self.inputs.len() {
            return Err(Error::Model(format!(
                "the model takes {} inputs, {} given",
                self.inputs.len(),
                input_shapes.len()
            )));
        }
        let mut shapes: Vec<Vec<usize>> = vec![Vec::new(); self.value_names.len()];
        for (input, shape) in self.inputs.iter().zip(input_shapes) {
            let fits = input.dims.len() == shape.len()
                && input
                    .dims
                    .iter()
                    .zip(shape)
                    .all(|(d, s)| d.is_none_or(|d| d == *s));
            if !fits {
                return Err(Error::Model(format!(
                    "input {:?}: shape {shape:?} does not fit {:?}",
                    input.name, input.dims
                )));
            }
            check_size(shape).map_err(|r| Error::Model(format!("input {:?}: {r}", input.name)))?;
            shapes[input.slot] = shape.clone();
        }
        for node in &self.nodes {
            let ins = node.input_shapes(&shapes);
            let out = node
                .op
                .output_shape(&ins)
                .map_err(|r| Error::Model(format!("{}: {r}", node.describe())))?;
            check_size(&out).map_err(|r| Error::Model(format!("{}: {r}", node.describe())))?;
            shapes[node.outputs[0]] = out;
        }
        Ok(shapes)
    }

    /// The memory plan for these input shapes, refused when the weights and peak
    /// activations would pass the memory limit ([`memory_limit_bytes`]): a model whose
    /// shapes explode (a Resize by huge scales, say) fails here, naming the need, instead
    /// of allocating.
    pub fn check_memory(&self, input_shapes: &[Vec<usize>]) -> Result<MemoryPlan> {
        let plan = self.memory(input_shapes)?;
        let need = plan.weight_bytes + plan.peak_activation_bytes;
        let limit = memory_limit_bytes();
        if need > limit {
            return Err(Error::Model(format!(
                "a run for input {input_shapes:?} needs {:.1} GiB (peak at {}), more than the \
                 limit of {:.1} GiB (MEDLAKE_MODEL_MEMORY_GIB)",
                need as f64 / GIB,
                self.nodes
                    .get(plan.peak_node)
                    .map_or("the inputs".to_string(), |n| n.describe()),
                limit as f64 / GIB
            )));
        }
        Ok(plan)
    }

    /// The output shapes for the given input shapes.
    pub fn shapes(&self, input_shapes: &[Vec<usize>]) -> Result<Vec<Vec<usize>>> {
        let shapes = self.plan(input_shapes)?;
        Ok(self
            .outputs
            .iter()
            .map(|(_, s)| shapes[*s].clone())
            .collect())
    }

    /// Resident weight bytes and the peak activation memory of [`Model::run`] for the
    /// given input shapes: the largest sum, over the nodes, of the activations alive while
    /// a node runs (its inputs, its output, every value still to be read later, the graph
    /// inputs until their last use) and the node's scratch.
    pub fn memory(&self, input_shapes: &[Vec<usize>]) -> Result<MemoryPlan> {
        let shapes = self.plan(input_shapes)?;
        let bytes = |slot: usize| shapes[slot].iter().product::<usize>() * 4;
        let mut live: usize = self.inputs.iter().map(|i| bytes(i.slot)).sum();
        let (mut peak, mut peak_node) = (live, 0);
        for (i, node) in self.nodes.iter().enumerate() {
            let ins = node.input_shapes(&shapes);
            live += bytes(node.outputs[0]);
            if node.fused {
                // The input's buffer becomes the output: nothing new is allocated.
                for v in self.freed_after(i) {
                    live -= bytes(v);
                }
                continue;
            }
            let at = live + node.op.scratch_bytes(&ins, &shapes[node.outputs[0]]);
            if at > peak {
                (peak, peak_node) = (at, i);
            }
            for v in self.freed_after(i) {
                live -= bytes(v);
            }
        }
        Ok(MemoryPlan {
            weight_bytes: self.weight_bytes,
            peak_activation_bytes: peak,
            peak_node,
        })
    }

    /// The floating-point operations of one run for these input shapes: 2 per
    /// multiply-add of Conv, ConvTranspose, Gemm and MatMul (the rest is not counted).
    pub fn flops(&self, input_shapes: &[Vec<usize>]) -> Result<u64> {
        let shapes = self.plan(input_shapes)?;
        let mut total = 0u64;
        for node in &self.nodes {
            let ins = node.input_shapes(&shapes);
            let out = &shapes[node.outputs[0]];
            let macs: usize = match &node.op {
                // Each output element: C/group x kernel products.
                Op::Conv { .. } => {
                    out.iter().product::<usize>() * ins[1][1..].iter().product::<usize>()
                }
                // Each input element: M/group x kernel products.
                Op::ConvTranspose { .. } => {
                    ins[0].iter().product::<usize>() * ins[1][1..].iter().product::<usize>()
                }
                Op::Gemm { trans_a, .. } => {
                    let k = if *trans_a { ins[0][0] } else { ins[0][1] };
                    out[0] * out[1] * k
                }
                Op::MatMul => {
                    let s = ops::matmul_shape(ins[0], ins[1]).map_err(Error::Model)?;
                    s.batch.iter().product::<usize>() * s.mkn.iter().product::<usize>()
                }
                _ => 0,
            };
            total += 2 * macs as u64;
        }
        Ok(total)
    }

    /// The largest channel plane (the product of the axes after the second, in bytes)
    /// among the inputs and every value of a run for these input shapes: the smallest
    /// storage binding the GPU path runs this model with.
    pub fn largest_plane_bytes(&self, input_shapes: &[Vec<usize>]) -> Result<usize> {
        let shapes = self.plan(input_shapes)?;
        let planes = shapes
            .iter()
            .map(|s| s.iter().skip(2).product::<usize>() * 4);
        // GroupNormalization reads each group's channels as one plane.
        let groups = self.nodes.iter().filter_map(|n| match n.op {
            Op::GroupNorm { groups, .. } => {
                let x = n.input_shapes(&shapes)[0];
                Some(x.iter().skip(2).product::<usize>() * x[1] / groups * 4)
            }
            _ => None,
        });
        Ok(planes.chain(groups).max().unwrap_or(4))
    }

    /// This model resident on `gpu`: pipelines compiled and weights uploaded the first
    /// time, then the same object (kept in the model) for every later call with the same
    /// device. Asked for another device, the model moves there.
    pub fn on_gpu(&self, gpu: &Arc<Gpu>) -> Result<Arc<GpuModel>> {
        let mut resident = self.resident.lock().expect("resident model");
        if let Some(r) = resident.as_ref() {
            if Arc::ptr_eq(r.gpu(), gpu) {
                return Ok(r.clone());
            }
        }
        let r = Arc::new(GpuModel::new(self, gpu)?);
        *resident = Some(r.clone());
        Ok(r)
    }

    /// Run the model on `backend`: [`Model::run`] on the CPU; on a GPU, the model
    /// resident there ([`Model::on_gpu`]).
    pub fn run_on(&self, backend: &Backend, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        self.check_memory(&inputs.iter().map(|t| t.shape.clone()).collect::<Vec<_>>())?;
        match backend {
            Backend::Cpu => self.run(inputs),
            Backend::Gpu(g) => self.on_gpu(g)?.run(self, inputs),
        }
    }

    /// The value slots whose last reader is node `i` (each once).
    fn freed_after(&self, i: usize) -> Vec<usize> {
        let mut freed: Vec<usize> = self.nodes[i]
            .inputs
            .iter()
            .filter_map(|s| match s {
                Source::Value(v) if self.last_use[*v] == i => Some(*v),
                _ => None,
            })
            .collect();
        freed.sort_unstable();
        freed.dedup();
        freed
    }

    /// Run the model on the CPU: one tensor per graph input, in order; the graph outputs
    /// in order.
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        self.check_memory(&inputs.iter().map(|t| t.shape.clone()).collect::<Vec<_>>())?;
        let shapes = self.plan(&inputs.iter().map(|t| t.shape.clone()).collect::<Vec<_>>())?;
        let mut values: Vec<Option<Tensor>> = vec![None; self.value_names.len()];
        for (input, t) in self.inputs.iter().zip(inputs) {
            if t.data.len() != t.shape.iter().product::<usize>() {
                return Err(Error::Model(format!(
                    "input {:?}: shape {:?} but {} values",
                    input.name,
                    t.shape,
                    t.data.len()
                )));
            }
            values[input.slot] = Some(t);
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let out_shape = &shapes[node.outputs[0]];
            // Computed by an earlier node's epilogue, or computed in the buffer of an input
            // read last here.
            let owned = match node.inputs.first() {
                Some(Source::Value(v))
                    if (node.fused || cpu::in_place(&node.op, &shapes[*v], out_shape))
                        && self.last_use[*v] == i
                        && node.inputs[1..]
                            .iter()
                            .all(|s| !matches!(s, Source::Value(w) if w == v)) =>
                {
                    values[*v].take()
                }
                _ => None,
            };
            if let Some(x) = owned {
                let data = if node.fused {
                    x.data
                } else {
                    let rest: Vec<&Tensor> = node.inputs[1..]
                        .iter()
                        .map(|s| match s {
                            Source::Value(v) => values[*v].as_ref().expect("computed before use"),
                            Source::Weight(t) => t.as_ref(),
                        })
                        .collect();
                    cpu::run_owned(&node.op, x.data, &x.shape, &rest, node.epilogue.as_ref())
                };
                values[node.outputs[0]] = Some(Tensor {
                    shape: out_shape.clone(),
                    data,
                });
                for v in self.freed_after(i) {
                    values[v] = None;
                }
                continue;
            }
            debug_assert!(!node.fused, "a fused node's input is read by it alone");
            let out = {
                let ins: Vec<&Tensor> = node
                    .inputs
                    .iter()
                    .map(|s| match s {
                        Source::Value(v) => values[*v].as_ref().expect("computed before use"),
                        Source::Weight(t) => t.as_ref(),
                    })
                    .collect();
                cpu::run_fused(&node.op, &ins, out_shape, node.epilogue.as_ref())
            };
            debug_assert_eq!(out.len(), out_shape.iter().product::<usize>());
            values[node.outputs[0]] = Some(Tensor {
                shape: out_shape.clone(),
                data: out,
            });
            for v in self.freed_after(i) {
                values[v] = None;
            }
        }
        Ok(self
            .outputs
            .iter()
            .map(|(_, s)| values[*s].clone().expect("graph outputs are computed"))
            .collect())
    }
}

/// The CPU's fusion pass: a Conv followed by BatchNormalization and an activation (Relu,
/// LeakyRelu), or a BatchNormalization, InstanceNormalization, GroupNormalization, Add or
/// Mul followed by an activation, where each intermediate value is read by the next node
/// alone (and is no graph output), computes the chain in its own epilogue; the nodes after
/// it are marked `fused` and pass their input through. The nodes stay in the graph with
/// their ops: a backend that ignores `epilogue` and `fused` runs the same graph unfused.
fn fuse(nodes: &mut [Node], outputs: &[(String, usize)], values: usize) {
    let mut readers = vec![0usize; values];
    let mut reader = vec![usize::MAX; values];
    for (i, node) in nodes.iter().enumerate() {
        for s in &node.inputs {
            if let Source::Value(v) = s {
                readers[*v] += 1;
                reader[*v] = i;
            }
        }
    }
    for (_, slot) in outputs {
        readers[*slot] += 1;
    }
    for i in 0..nodes.len() {
        let conv = matches!(nodes[i].op, Op::Conv { .. });
        let head = conv
            || matches!(
                nodes[i].op,
                Op::BatchNorm { .. }
                    | Op::InstanceNorm { .. }
                    | Op::GroupNorm { .. }
                    | Op::Add
                    | Op::Mul
            );
        if nodes[i].fused || !head {
            continue;
        }
        let mut epilogue = cpu::Epilogue {
            scale: None,
            shift: None,
            act: cpu::Act::Identity,
        };
        let mut tail = nodes[i].outputs[0];
        while readers[tail] == 1 && reader[tail] != usize::MAX {
            let j = reader[tail];
            let next = &nodes[j];
            if !matches!(next.inputs.first(), Some(Source::Value(v)) if *v == tail) {
                break;
            }
            match &next.op {
                Op::BatchNorm { scale, shift } if conv && epilogue.act == cpu::Act::Identity => {
                    // (x * s0 + t0) * s + t
                    let s0 = epilogue
                        .scale
                        .take()
                        .unwrap_or_else(|| vec![1.0; scale.len()]);
                    let t0 = epilogue
                        .shift
                        .take()
                        .unwrap_or_else(|| vec![0.0; scale.len()]);
                    epilogue.scale = Some(s0.iter().zip(scale).map(|(a, b)| a * b).collect());
                    epilogue.shift = Some(
                        t0.iter()
                            .zip(scale)
                            .zip(shift)
                            .map(|((t0, s), t)| t0 * s + t)
                            .collect(),
                    );
                }
                Op::Relu if epilogue.act == cpu::Act::Identity => epilogue.act = cpu::Act::Relu,
                Op::LeakyRelu { alpha } if epilogue.act == cpu::Act::Identity => {
                    epilogue.act = cpu::Act::LeakyRelu(*alpha)
                }
                _ => break,
            }
            nodes[j].fused = true;
            tail = nodes[j].outputs[0];
        }
        if epilogue.scale.is_some() || epilogue.act != cpu::Act::Identity {
            nodes[i].epilogue = Some(epilogue);
        }
    }
}

/// A graph input's declared dimensions.
fn input_dims(vi: &onnx::ValueInfoProto) -> Result<Vec<Option<usize>>> {
    use onnx::tensor_shape_proto::dimension::Value;
    use onnx::type_proto::Value as Type;
    let Some(Type::TensorType(t)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err(Error::Model(format!("input {:?}: not a tensor", vi.name())));
    };
    if t.elem_type() != onnx::tensor_proto::DataType::Float as i32 {
        return Err(Error::Model(format!(
            "input {:?}: element type {} is not supported (float32 only)",
            vi.name(),
            t.elem_type()
        )));
    }
    let Some(shape) = &t.shape else {
        return Err(Error::Model(format!(
            "input {:?}: no shape (rank needed)",
            vi.name()
        )));
    };
    Ok(shape
        .dim
        .iter()
        .map(|d| match d.value {
            Some(Value::DimValue(v)) if v > 0 => Some(v as usize),
            _ => None,
        })
        .collect())
}

/// The nodes' indices in an order where every input is computed before it is read.
fn topological(
    graph: &onnx::GraphProto,
    produced: &HashMap<&str, usize>,
    constants: &HashMap<String, Constant>,
    inputs: &HashMap<String, usize>,
) -> Result<Vec<usize>> {
    let n = graph.node.len();
    let mut waiting = vec![0usize; n];
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, node) in graph.node.iter().enumerate() {
        for x in node.input.iter().filter(|x| !x.is_empty()) {
            if let Some(&p) = produced.get(x.as_str()) {
                if !constants.contains_key(x) && !inputs.contains_key(x) {
                    waiting[i] += 1;
                    readers[p].push(i);
                }
            }
        }
    }
    let mut ready: std::collections::BTreeSet<usize> =
        (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &r in &readers[i] {
            waiting[r] -= 1;
            if waiting[r] == 0 {
                ready.insert(r);
            }
        }
    }
    if order.len() != n {
        return Err(Error::Model("the graph has a cycle".into()));
    }
    Ok(order)
}

/// The most values one tensor may hold (2^36, 256 GiB of f32): past it a shape is refused
/// while planning, so no size computed from shapes can overflow.
const MAX_TENSOR_VALUES: usize = 1 << 36;

const GIB: f64 = (1u64 << 30) as f64;

/// Refuse a shape of more than [`MAX_TENSOR_VALUES`] values (or one whose product
/// overflows).
fn check_size(shape: &[usize]) -> std::result::Result<(), String> {
    match shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) {
        Some(n) if n <= MAX_TENSOR_VALUES => Ok(()),
        _ => Err(format!(
            "shape {shape:?} holds more than 2^36 values; refused before allocating"
        )),
    }
}

/// The memory a model run may plan for: `MEDLAKE_MODEL_MEMORY_GIB` (GiB), else 16 GiB.
pub fn memory_limit_bytes() -> usize {
    let gib = std::env::var("MEDLAKE_MODEL_MEMORY_GIB")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|g| *g > 0.0)
        .unwrap_or(16.0);
    (gib * GIB).min(usize::MAX as f64) as usize
}
