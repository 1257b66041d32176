//! The model runtime on wgpu: every op of [`super::cpu`] as a WGSL compute shader
//! (`shaders/` beside this file), with the same semantics.
//!
//! - **Residency.** A [`GpuModel`] is built once per model and device
//!   ([`super::Model::on_gpu`]): the shaders are compiled and every weight is uploaded
//!   then (convolution weights transposed for the implicit GEMM, BatchNormalization
//!   folded into the convolution before it where that convolution feeds it alone, and a
//!   following Relu, LeakyRelu or Sigmoid fused into the convolution's or the Add's
//!   epilogue). A run uploads the inputs, records every node into one command stream
//!   (activations stay on the device; no readback between nodes), frees each activation
//!   after its last reader into a pool of buffers that later nodes reuse, and reads back
//!   only the graph outputs. The first run at a set of input shapes records a plan that
//!   later runs at those shapes replay (see the performance notes).
//! - **Chunks.** An activation is a list of buffers, each a whole number of channel
//!   planes ((n, c) pairs in order; a plane is the product of the axes after the second)
//!   and at most [`Gpu::max_binding`] bytes. Convolutions loop over the input chunks of
//!   each output chunk, accumulating (the first pass writes with the bias, the last
//!   applies the activation); per-plane ops (pools, Resize, the normalizations,
//!   activations) run chunk by chunk; Concat, Reshape and Flatten copy between layouts;
//!   Gemm, MatMul and Softmax gather their operands into one binding, as does a
//!   broadcast operand of Add, Mul or PRelu that is not of the output's shape. A channel
//!   plane larger than one binding, or an operand that must be whole and is not, is an
//!   [`Error::Model`] naming the node.
//! - **Kernels.** Conv is an implicit GEMM (`shaders/conv.wgsl`, a template: 64 x 64,
//!   128 x 128, 16 x 256, 256 x 16 or 64 x 256 output tiles per workgroup of 256 threads
//!   by shape, 4 x 4 or 8 x 8 per thread, K in steps of 16 through workgroup memory with the next
//!   step's loads in flight, the im2col rows gathered from the input through a per-node
//!   table of kernel offsets, K split over workgroups when there are few output tiles).
//!   ConvTranspose is the same GEMM once per output phase (the residues of the output
//!   coordinates modulo the strides): the taps that land on a phase make an ordinary
//!   convolution over the input, so no product is wasted on the zeros a transposed
//!   convolution would scatter. Gemm and MatMul are a 16 x 16 tiled GEMM;
//!   InstanceNormalization computes statistics per group of channel planes (one plane
//!   here: a GroupNormalization is the same kernel with more).
//! - **Limits.** Resize only resizes the axes after the second on the GPU (batch and
//!   channel scales must be 1); tensors of more than 8 dimensions are not broadcast;
//!   weights must each fit the device's own largest binding; a kernel tap lies at most
//!   511 voxels from its window's start (dilation); index arithmetic is 32-bit (a chunk
//!   is at most 4 GiB anyway).
//!
//! **GPU performance notes.** A 3-D ResNet-18 at 64³ is about 60 dispatches of well
//! under a millisecond of device work in all, so the host's cost per dispatch counts:
//! recording each run afresh made a bind group and wrote parameters per dispatch and
//! submitted every [`SUBMIT_EVERY`] dispatches. Now the first run at a set of input
//! shapes (and forced tiles) records a [`Plan`]: the dispatches with their bind groups
//! made and parameters uploaded, the copies, and every buffer they touch, owned by the
//! plan (buffers are handed out deterministically for given shapes, so the recording is
//! valid for every later run at those shapes). A later run writes its inputs, encodes
//! the plan into one command buffer, submits once and reads back; the plan's mutex
//! serializes its replays, and a run that finds it busy records afresh with pooled
//! buffers of its own, as before (so concurrent runs stay concurrent). The latest
//! [`MAX_PLANS`] plans are kept per model. In the convolution, the 16 rows of a K step
//! are unrolled with constant offsets from per-thread bases into the workgroup tiles
//! (vec4 loads), the padding test is one unsigned compare per axis, and the kernel is
//! compiled without wgpu's injected checks (index clamps on the tiles, loop bounds that
//! keep a driver from unrolling; see the SAFETY argument in `Kernels::new`; drivers with
//! robust buffer access still check storage accesses). The 8 x 8-per-thread tiles (128 x
//! 128 for many channels, counting the workgroups a split of K makes; 64 x 256 for 33
//! to 64 channels over many voxels) do twice the products per workgroup-memory load of
//! the 4 x 4 ones and a quarter the input gathers per product; a dispatch of fewer than
//! about [`CONV_WORKGROUPS`] workgroups (sized for an H100's 132 multiprocessors) splits
//! K.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use super::ops::{axis_index, matmul_shape, CoordMode, NearestMode, Op, ResizeMode, Window};
use super::{Model, Source, Tensor};
use crate::error::{Error, Result};
use crate::runtime::gpu::Gpu;

/// Workgroups per dispatch dimension allowed by WebGPU's default limits.
const MAX_GROUPS: u32 = 65_535;

/// How many dispatches are recorded before the command stream is submitted (so the
/// device starts while the rest is recorded).
const SUBMIT_EVERY: usize = 24;

/// Input shapes (per model) whose recorded plans are kept: a plan holds every buffer of
/// its run, so a model run at many shapes keeps only the latest few.
const MAX_PLANS: usize = 4;

/// Bytes of one uniform arena: the parameters of this many dispatches at 256 bytes each.
const ARENA_BYTES: u64 = 1024 * 256;

/// The implicit-GEMM convolution's variants: output tile (channels x voxels) per
/// workgroup of 256 threads and block per thread, (TM, TN, RM, RN).
const CONV_TILES: [(usize, usize, usize, usize); 5] = [
    (64, 64, 4, 4),
    (128, 128, 8, 8),
    (16, 256, 4, 4),
    (256, 16, 4, 4),
    (64, 256, 8, 8),
];

/// The variant of [`CONV_TILES`] for `mcount` output channels of `np` voxels: narrow
/// tiles where one side is small, large ones (8 x 8 per thread: half the workgroup-memory
/// loads and far fewer gathers per product than 4 x 4) where there are enough of them to
/// fill a large GPU: 128 x 128 for many channels (counting the workgroups a split of its
/// `k` rows of K makes, at least 256 rows a slice), 64 x 256 for 33 to 64 channels (the
/// stem and first stage of a ResNet, most of its work at large volumes).
fn conv_variant(mcount: usize, np: usize, k: usize) -> usize {
    if mcount <= 16 {
        2
    } else if np <= 16 {
        3
    } else if mcount >= 128 && mcount.div_ceil(128) * np.div_ceil(128) * (k / 256).max(1) >= 256 {
        1
    } else if mcount > 32 && mcount <= 64 && np.div_ceil(256) >= 128 {
        4
    } else {
        0
    }
}

/// `shaders/conv.wgsl` for one tile variant: the sizes, and the per-thread accumulators,
/// products and stores unrolled (so they stay in registers).
fn conv_source(tm: usize, tn: usize, rm: usize, rn: usize) -> String {
    let rn4 = rn / 4;
    let lane = ["x", "y", "z", "w"];
    let (mut decl, mut inner, mut store) = (String::new(), String::new(), String::new());
    for i in 0..rm {
        for j in 0..rn4 {
            decl += &format!("    var acc{i}_{j} = vec4<f32>(0.0);\n");
            inner += &format!(
                "            acc{i}_{j} += a{}.{} * b{j};\n",
                i / 4,
                lane[i % 4]
            );
            store += &format!(
                "    store(m_tile + ty * RM + {i}u, n_tile + tx * RN + {}u, nq, acc{i}_{j}, slice);\n",
                j * 4
            );
        }
    }
    let (na, nb) = (16 * tm / 256, 16 * tn / 256);
    let (mut load0, mut shared, mut loadn) = (String::new(), String::new(), String::new());
    for r in 0..na {
        load0 += &format!("    var ra{r} = load_a(k_begin, {r}u, ak, m_ok, wcol, kpass);\n");
        shared += &format!(
            "        As[(ak + 256u / TM * {r}u) * (TM / 4u) + am / 4u][am % 4u] = ra{r};\n"
        );
        loadn += &format!("            ra{r} = load_a(kb + TK, {r}u, ak, m_ok, wcol, kpass);\n");
    }
    for r in 0..nb {
        load0 += &format!("    var rb{r} = load_b(k_begin, {r}u, bk, n_ok, z0, y0, x0, kpass);\n");
        shared += &format!(
            "        Bs[(bk + 256u / TN * {r}u) * (TN / 4u) + bn / 4u][bn % 4u] = rb{r};\n"
        );
        loadn +=
            &format!("            rb{r} = load_b(kb + TK, {r}u, bk, n_ok, z0, y0, x0, kpass);\n");
    }
    // The K step unrolled (TK = 16 rows): each row's vec4 loads at a constant offset
    // from the thread's bases `ab`, `bb`, then its products.
    let mut steps = String::new();
    for kk in 0..16 {
        steps += "        {\n";
        for i in 0..rm / 4 {
            steps += &format!("            let a{i} = As[ab + {}u];\n", kk * tm / 4 + i);
        }
        for j in 0..rn4 {
            steps += &format!("            let b{j} = Bs[bb + {}u];\n", kk * tn / 4 + j);
        }
        steps += &inner;
        steps += "        }\n";
    }
    include_str!("shaders/conv.wgsl")
        .replace("@TMu", &format!("{tm}u"))
        .replace("@TNu", &format!("{tn}u"))
        .replace("@RMu", &format!("{rm}u"))
        .replace("@RNu", &format!("{rn}u"))
        .replace("@AS", &(16 * tm / 4).to_string())
        .replace("@BS", &(16 * tn / 4).to_string())
        .replace("//@DECL\n", &decl)
        .replace("//@LOAD0\n", &load0)
        .replace("//@SHARED\n", &shared)
        .replace("//@LOADN\n", &loadn)
        .replace("//@INNER\n", &steps)
        .replace("//@STORE\n", &store)
}

/// A compiled pipeline and its bind group layout.
struct Kernel {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

/// The compiled pipelines.
struct Kernels {
    /// By [`CONV_TILES`] variant; `None` where its tiles do not fit the device's
    /// workgroup memory.
    conv: Vec<Option<Kernel>>,
    splitk_reduce: Kernel,
    gemm: Kernel,
    pointwise: Kernel,
    binary: Kernel,
    norm_stats: Kernel,
    global_pool: Kernel,
    pool: Kernel,
    resize: Kernel,
    softmax: Kernel,
}

impl Kernels {
    fn new(device: &wgpu::Device) -> Kernels {
        let compile = |name: &str, source: &str, trusted: bool| {
            let desc = wgpu::ShaderModuleDescriptor {
                label: Some(name),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            };
            let module = if trusted {
                // SAFETY: only the convolution's variants come here (`conv_source`), and
                // what the unchecked module drops is safe for them:
                // - Workgroup memory: every `As`/`Bs` index is in bounds by construction.
                //   A thread stores rows `ak + 256 / TM * r` (`ak < 256 / TM`, `r < 16 *
                //   TM / 256`, so below TK = 16) at column `am < TM` (likewise for B),
                //   and reads `ab + kk * TM / 4 + i` with `ab + i < TM / 4` (`ty < TM /
                //   RM`, `i < RM / 4`) and `kk < 16`: all below `16 * TM / 4`, the
                //   array's length (likewise `Bs`).
                // - Storage buffers: every load and store is guarded in the shader (K
                //   rows below the pass's `kpass`, output channels below `mcount`, GEMM
                //   columns below `nq`, input voxels inside the volume) and the host
                //   (`GpuModel::conv`) sets the offsets so that the guarded ranges lie in
                //   the bound buffers: weight rows `w_k0 .. w_k0 + kpass` of `wt`, table
                //   rows `k0 .. k0 + kpass` of `ktab`, input planes `in_off + channel`
                //   within the chunk bound as `x`, output planes `out_off .. out_off +
                //   mcount` of the output chunk (or `slices * mcount * nq` values of the
                //   split-K scratch). Drivers with robust buffer access still check them.
                // - Loops: every loop of the shader is bounded (the K loop steps `kb` by
                //   TK up to `kpass`; the store loops run 4 times), so dropping the
                //   injected loop bounds lets the driver unroll without changing what
                //   runs.
                unsafe {
                    device
                        .create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
                }
            } else {
                device.create_shader_module(desc)
            };
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(name),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
            let layout = pipeline.get_bind_group_layout(0);
            Kernel { pipeline, layout }
        };
        let pipeline = |name: &str, source: &str| compile(name, source, false);
        Kernels {
            conv: CONV_TILES
                .iter()
                .map(|&(tm, tn, rm, rn)| {
                    let shared = (16 * (tm + tn) * 4) as u32;
                    (shared <= device.limits().max_compute_workgroup_storage_size).then(|| {
                        compile(
                            &format!("model conv {tm}x{tn}"),
                            &conv_source(tm, tn, rm, rn),
                            true,
                        )
                    })
                })
                .collect(),
            splitk_reduce: pipeline(
                "model splitk_reduce",
                include_str!("shaders/splitk_reduce.wgsl"),
            ),
            gemm: pipeline("model gemm", include_str!("shaders/gemm.wgsl")),
            pointwise: pipeline("model pointwise", include_str!("shaders/pointwise.wgsl")),
            binary: pipeline("model binary", include_str!("shaders/binary.wgsl")),
            norm_stats: pipeline("model norm_stats", include_str!("shaders/norm_stats.wgsl")),
            global_pool: pipeline(
                "model global_pool",
                include_str!("shaders/global_pool.wgsl"),
            ),
            pool: pipeline("model pool", include_str!("shaders/pool.wgsl")),
            resize: pipeline("model resize", include_str!("shaders/resize.wgsl")),
            softmax: pipeline("model softmax", include_str!("shaders/softmax.wgsl")),
        }
    }
}

/// An activation function fused into an epilogue: the shaders' codes.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Act {
    code: u32,
    alpha: f32,
}

impl Act {
    const NONE: Act = Act {
        code: 0,
        alpha: 0.0,
    };

    /// The activation `op` is, if it is one.
    fn of(op: &Op) -> Option<Act> {
        match op {
            Op::Relu => Some(Act {
                code: 1,
                alpha: 0.0,
            }),
            Op::LeakyRelu { alpha } => Some(Act {
                code: 2,
                alpha: *alpha,
            }),
            Op::Sigmoid => Some(Act {
                code: 3,
                alpha: 0.0,
            }),
            _ => None,
        }
    }
}

/// How a tensor is cut into chunks: `planes` channel planes of `plane` elements, `per`
/// planes per chunk (the last one may hold fewer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    planes: usize,
    plane: usize,
    per: usize,
}

impl Layout {
    /// The layout of `shape` under a binding of `max_binding` bytes, or why none fits.
    fn of(shape: &[usize], max_binding: u64) -> std::result::Result<Layout, String> {
        let (planes, plane) = match shape.len() {
            0 => (1, 1),
            1 => (shape[0], 1),
            _ => (shape[0] * shape[1], shape[2..].iter().product()),
        };
        let plane_bytes = (plane.max(1) * 4) as u64;
        if plane_bytes > max_binding {
            return Err(format!(
                "one channel plane of {shape:?} is {plane_bytes} bytes, more than the largest \
                 storage binding ({max_binding} bytes)"
            ));
        }
        let per = ((max_binding / plane_bytes) as usize).min(planes).max(1);
        Ok(Layout { planes, plane, per })
    }

    fn chunks(&self) -> usize {
        self.planes.div_ceil(self.per).max(1)
    }

    /// The planes of chunk `i`.
    fn range(&self, i: usize) -> Range<usize> {
        i * self.per..((i + 1) * self.per).min(self.planes)
    }

    fn chunk_elems(&self) -> usize {
        self.per * self.plane
    }
}

/// A tensor on the device: its chunks' buffers (shared where a Reshape or Identity keeps
/// the layout).
#[derive(Clone)]
struct DevTensor {
    shape: Vec<usize>,
    layout: Layout,
    bufs: Vec<Arc<wgpu::Buffer>>,
}

impl DevTensor {
    fn len(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Per node, what was prepared at load.
enum Prepared {
    None,
    /// A convolution (one phase) or a transposed one (a phase per residue of the output
    /// coordinates modulo the strides), and the bias (BatchNorm folded in).
    Conv {
        bias: wgpu::Buffer,
        phases: Vec<ConvPhase>,
    },
    /// Per-channel (scale, shift) pairs.
    Affine(wgpu::Buffer),
}

/// One GEMM of a (transposed) convolution: its transposed weights `wt[(g * cg * taps +
/// c * taps + t) * mg + j]` and K-row table (channel, biased offsets) over the taps of
/// the kernel that land on the output voxels of residue `phase` (a transposed
/// convolution's; all taps and residue 0 for a convolution).
struct ConvPhase {
    wt: wgpu::Buffer,
    ktab: wgpu::Buffer,
    taps: usize,
    phase: [usize; 3],
}

/// Pooling windows of more taps than this (over more than one axis) run axis by axis.
const SEPARABLE_POOL_TAPS: usize = 512;

/// The bias of the K-row table's offsets (10 bits each): offsets of -512..=511.
const OFFSET_BIAS: i64 = 512;

/// One step of the run: node `node`, with the nodes up to `last` fused into it (a folded
/// BatchNormalization, an activation), its output written to `out`.
struct Step {
    node: usize,
    last: usize,
    act: Act,
    out: usize,
}

/// A model's resident state on one device: pipelines, weights, the fused schedule and a
/// pool of activation buffers. Built by [`super::Model::on_gpu`] and kept in the model.
pub struct GpuModel {
    gpu: Arc<Gpu>,
    k: Kernels,
    steps: Vec<Step>,
    prepared: Vec<Prepared>,
    /// Weights read as plain tensors, by their `Arc`'s address.
    weights: HashMap<usize, DevTensor>,
    /// A placeholder binding.
    dummy: wgpu::Buffer,
    pool: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
    /// Uniform arenas that runs fill with their dispatches' parameters.
    arenas: Mutex<Vec<wgpu::Buffer>>,
    uploads: AtomicUsize,
    uploaded_bytes: AtomicUsize,
    runs: AtomicUsize,
    /// Recorded runs by (input shapes, forced tiles), least recently used first.
    plans: Mutex<Vec<(PlanKey, PlanSlot)>>,
    /// A [`CONV_TILES`] variant every convolution uses, plus one (0: chosen by shape).
    forced_tiles: AtomicUsize,
}

impl std::fmt::Debug for GpuModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuModel")
            .field("device", &self.gpu.describe())
            .field("steps", &self.steps.len())
            .field("weight_uploads", &self.weight_uploads())
            .field("runs", &self.runs())
            .finish()
    }
}

fn words(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn model_error(node: &str, reason: impl std::fmt::Display) -> Error {
    Error::Model(format!("{node}: {reason}"))
}

impl GpuModel {
    /// Compile the pipelines, fuse, and upload the weights of `model`.
    pub(super) fn new(model: &Model, gpu: &Arc<Gpu>) -> Result<GpuModel> {
        let device = gpu.device();
        let k = Kernels::new(device);
        let dummy = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("placeholder"),
            contents: &[0; 16],
            usage: wgpu::BufferUsages::STORAGE,
        });
        let mut gm = GpuModel {
            gpu: gpu.clone(),
            k,
            steps: Vec::new(),
            prepared: Vec::new(),
            weights: HashMap::new(),
            dummy,
            pool: Mutex::new(HashMap::new()),
            arenas: Mutex::new(Vec::new()),
            uploads: AtomicUsize::new(0),
            uploaded_bytes: AtomicUsize::new(0),
            runs: AtomicUsize::new(0),
            plans: Mutex::new(Vec::new()),
            forced_tiles: AtomicUsize::new(0),
        };
        // How many nodes read each value (a value read twice by one node counts twice).
        let mut readers = vec![0usize; model.value_names.len()];
        for node in &model.nodes {
            for s in &node.inputs {
                if let Source::Value(v) = s {
                    readers[*v] += 1;
                }
            }
        }
        for (_, slot) in &model.outputs {
            readers[*slot] += 1;
        }
        // Node `j` reads the output of node `i` as its first input and alone.
        let feeds = |i: usize, j: usize| {
            let out = model.nodes[i].outputs[0];
            j < model.nodes.len()
                && readers[out] == 1
                && matches!(model.nodes[j].inputs.first(), Some(Source::Value(v)) if *v == out)
        };
        let mut i = 0;
        gm.prepared = (0..model.nodes.len()).map(|_| Prepared::None).collect();
        while i < model.nodes.len() {
            let node = &model.nodes[i];
            let mut last = i;
            let mut act = Act::NONE;
            let mut folded: Option<(&[f32], &[f32])> = None;
            if matches!(node.op, Op::Conv { .. }) && feeds(i, i + 1) {
                if let Op::BatchNorm { scale, shift } = &model.nodes[i + 1].op {
                    folded = Some((scale, shift));
                    last = i + 1;
                }
            }
            if matches!(
                node.op,
                Op::Conv { .. } | Op::ConvTranspose { .. } | Op::Add | Op::BatchNorm { .. }
            ) && feeds(last, last + 1)
            {
                if let Some(a) = Act::of(&model.nodes[last + 1].op) {
                    act = a;
                    last += 1;
                }
            }
            let prepared = gm.prepare(node, folded)?;
            gm.prepared[i] = prepared;
            for (k, s) in node.inputs.iter().enumerate() {
                if let Source::Weight(t) = s {
                    let key = Arc::as_ptr(t) as usize;
                    let skip =
                        k >= 1 && matches!(node.op, Op::Conv { .. } | Op::ConvTranspose { .. });
                    if !skip && !gm.weights.contains_key(&key) {
                        let d = gm.upload_weight(t, &node.describe())?;
                        gm.weights.insert(key, d);
                    }
                }
            }
            gm.steps.push(Step {
                node: i,
                last,
                act,
                out: model.nodes[last].outputs[0],
            });
            i = last + 1;
        }
        Ok(gm)
    }

    /// The device this model is resident on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// How many weight buffers were uploaded (all when the model was put on the device;
    /// runs upload none).
    pub fn weight_uploads(&self) -> usize {
        self.uploads.load(Ordering::Relaxed)
    }

    /// The bytes of the resident weights.
    pub fn weight_bytes(&self) -> usize {
        self.uploaded_bytes.load(Ordering::Relaxed)
    }

    /// For tests: make every convolution use tile variant `variant` (0: 64 x 64, 1:
    /// 128 x 128, 2: 16 x 256, 3: 256 x 16, 4: 64 x 256), or choose by shape again
    /// (`None`).
    #[doc(hidden)]
    pub fn force_conv_tiles(&self, variant: Option<usize>) {
        let v = variant.map_or(0, |v| v.min(CONV_TILES.len() - 1) + 1);
        self.forced_tiles.store(v, Ordering::Relaxed);
    }

    /// How many runs this resident model has made.
    pub fn runs(&self) -> usize {
        self.runs.load(Ordering::Relaxed)
    }

    fn weight_buffer(&self, data: &[u8], what: &str) -> Result<wgpu::Buffer> {
        let limit = self.gpu.device_binding_limit();
        if data.len() as u64 > limit {
            return Err(Error::Model(format!(
                "{what}: a weight of {} bytes is larger than the device's largest binding ({limit} bytes)",
                data.len()
            )));
        }
        self.uploads.fetch_add(1, Ordering::Relaxed);
        self.uploaded_bytes.fetch_add(data.len(), Ordering::Relaxed);
        let padded;
        let data = if data.is_empty() {
            padded = [0u8; 4];
            &padded[..]
        } else {
            data
        };
        Ok(self
            .gpu
            .device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(what),
                contents: data,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            }))
    }

    /// A weight as a one-chunk device tensor (weights are not cut to the binding limit).
    fn upload_weight(&self, t: &Tensor, what: &str) -> Result<DevTensor> {
        let buf = self.weight_buffer(&words(&t.data), what)?;
        let planes = match t.shape.len() {
            0 => 1,
            1 => t.shape[0],
            _ => t.shape[0] * t.shape[1],
        };
        let plane = t.data.len() / planes.max(1);
        Ok(DevTensor {
            shape: t.shape.clone(),
            layout: Layout {
                planes,
                plane,
                per: planes.max(1),
            },
            bufs: vec![Arc::new(buf)],
        })
    }

    /// A node's resident extras: transposed (and BatchNorm-folded) convolution weights,
    /// biases, kernel-offset tables, folded BatchNorm pairs.
    fn prepare(&self, node: &super::Node, folded: Option<(&[f32], &[f32])>) -> Result<Prepared> {
        let what = node.describe();
        let weight = |i: usize| match node.inputs.get(i) {
            Some(Source::Weight(t)) => Ok(Some(t.clone())),
            None => Ok(None),
            Some(Source::Value(_)) => Err(model_error(
                &what,
                format!("input {i} must be an initializer on the GPU"),
            )),
        };
        Ok(match &node.op {
            Op::Conv { window, group } | Op::ConvTranspose { window, group, .. } => {
                let transposed = matches!(node.op, Op::ConvTranspose { .. });
                let w = weight(1)?.expect("a convolution has a weight");
                // Weight (M, C/g, k) or, transposed, (C, M/g, k).
                let (m, cg, mg) = if transposed {
                    (w.shape[1] * group, w.shape[0] / group, w.shape[1])
                } else {
                    (w.shape[0], w.shape[1], w.shape[0] / group)
                };
                let k = window.kernel;
                let mut bias = match weight(2)? {
                    Some(b) => b.data.clone(),
                    None => vec![0.0; m],
                };
                let mut scale = vec![1.0f32; m];
                if let Some((s, t)) = folded {
                    for o in 0..m {
                        bias[o] = bias[o] * s[o] + t[o];
                        scale[o] = s[o];
                    }
                }
                // Per axis, per phase: the taps and their input offsets.
                let axis_taps = |a: usize, r: usize| -> Vec<(usize, i64)> {
                    let (s, d, pad) = (
                        window.strides[a] as i64,
                        window.dilations[a] as i64,
                        window.pads[a] as i64,
                    );
                    (0..k[a])
                        .filter_map(|t| {
                            if !transposed {
                                return Some((t, t as i64 * d));
                            }
                            // Output q * s + r reads input q + (r + pad - t d) / s.
                            let v = r as i64 + pad - t as i64 * d;
                            (v.rem_euclid(s) == 0).then_some((t, v.div_euclid(s)))
                        })
                        .collect()
                };
                let residues = |a: usize| if transposed { window.strides[a] } else { 1 };
                let mut phases = Vec::new();
                for rz in 0..residues(0) {
                    for ry in 0..residues(1) {
                        for rx in 0..residues(2) {
                            let (tz, ty, tx) =
                                (axis_taps(0, rz), axis_taps(1, ry), axis_taps(2, rx));
                            let mut taps = Vec::new();
                            for &(kz, dz) in &tz {
                                for &(ky, dy) in &ty {
                                    for &(kx, dx) in &tx {
                                        taps.push(((kz * k[1] + ky) * k[2] + kx, [dz, dy, dx]));
                                    }
                                }
                            }
                            // Offsets are stored biased, in 10 bits.
                            let fits = |o: &i64| (-OFFSET_BIAS..OFFSET_BIAS).contains(o);
                            if taps.iter().any(|(_, o)| !o.iter().all(fits)) {
                                return Err(model_error(
                                    &what,
                                    "a kernel tap is more than 511 voxels from its window's \
                                     start (not supported on the GPU)",
                                ));
                            }
                            let nt = taps.len();
                            let kvol = k.iter().product::<usize>();
                            let mut wt = vec![0f32; (group * cg * nt * mg).max(1)];
                            for g in 0..*group {
                                for c in 0..cg {
                                    for (t, (kidx, _)) in taps.iter().enumerate() {
                                        for j in 0..mg {
                                            let src = if transposed {
                                                ((g * cg + c) * mg + j) * kvol + kidx
                                            } else {
                                                ((g * mg + j) * cg + c) * kvol + kidx
                                            };
                                            wt[(g * cg * nt + c * nt + t) * mg + j] =
                                                w.data[src] * scale[g * mg + j];
                                        }
                                    }
                                }
                            }
                            let mut ktab: Vec<u8> = Vec::with_capacity(cg * nt * 8);
                            for c in 0..cg {
                                for (_, o) in &taps {
                                    let [dz, dy, dx] = o.map(|o| (o + OFFSET_BIAS) as u32);
                                    ktab.extend((c as u32).to_le_bytes());
                                    ktab.extend((dz | dy << 10 | dx << 20).to_le_bytes());
                                }
                            }
                            if ktab.is_empty() {
                                ktab = vec![0; 8];
                            }
                            phases.push(ConvPhase {
                                wt: self.weight_buffer(&words(&wt), &what)?,
                                ktab: self.weight_buffer(&ktab, &what)?,
                                taps: nt,
                                phase: [rz, ry, rx],
                            });
                        }
                    }
                }
                Prepared::Conv {
                    bias: self.weight_buffer(&words(&bias), &what)?,
                    phases,
                }
            }
            Op::BatchNorm { scale, shift } => {
                let pairs: Vec<f32> = scale
                    .iter()
                    .zip(shift)
                    .flat_map(|(&s, &t)| [s, t])
                    .collect();
                Prepared::Affine(self.weight_buffer(&words(&pairs), &what)?)
            }
            _ => Prepared::None,
        })
    }

    /// Run `model` (the one this was built from) on the device: through the cached plan
    /// of the input shapes (built on the first run at those shapes), or, while another
    /// run holds that plan, recorded afresh with buffers of its own.
    pub(super) fn run(&self, model: &Model, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        let in_shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
        let shapes = model.plan(&in_shapes)?;
        for (input, t) in model.inputs.iter().zip(&inputs) {
            if t.data.len() != t.shape.iter().product::<usize>() {
                return Err(Error::Model(format!(
                    "input {:?}: shape {:?} but {} values",
                    input.name,
                    t.shape,
                    t.data.len()
                )));
            }
        }
        self.runs.fetch_add(1, Ordering::Relaxed);
        let key = (in_shapes, self.forced_tiles.load(Ordering::Relaxed));
        let slot = {
            let mut plans = self.plans.lock().expect("plans");
            match plans.iter().position(|(k, _)| *k == key) {
                Some(i) => {
                    // The most recently used last: the oldest go first.
                    let entry = plans.remove(i);
                    let slot = entry.1.clone();
                    plans.push(entry);
                    slot
                }
                None => {
                    if plans.len() >= MAX_PLANS {
                        plans.remove(0);
                    }
                    let slot = Arc::new(Mutex::new(None));
                    plans.push((key, slot.clone()));
                    slot
                }
            }
        };
        let mut guard = match slot.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(e)) => {
                let mut g = e.into_inner();
                *g = None;
                g
            }
            Err(std::sync::TryLockError::WouldBlock) => {
                let mut rec = Rec::new(self, false);
                let (ins, outs) = self.record(&mut rec, model, &shapes, &inputs)?;
                for d in ins {
                    rec.release(d);
                }
                return rec.read(&outs);
            }
        };
        if guard.is_none() {
            let mut rec = Rec::new(self, true);
            let (ins, outs) = self.record(&mut rec, model, &shapes, &inputs)?;
            *guard = Some(rec.into_plan(ins, outs));
        }
        guard.as_ref().expect("a plan").replay(self, &inputs)
    }

    /// Record every step of `model` at `shapes` into `rec` (writing the inputs to their
    /// buffers first): the input and output tensors.
    fn record(
        &self,
        rec: &mut Rec,
        model: &Model,
        shapes: &[Vec<usize>],
        inputs: &[Tensor],
    ) -> Result<(Vec<DevTensor>, Vec<DevTensor>)> {
        let mut values: Vec<Option<DevTensor>> = vec![None; model.value_names.len()];
        let mut ins = Vec::new();
        for (input, t) in model.inputs.iter().zip(inputs) {
            let d = rec.alloc(&t.shape, &format!("input {:?}", input.name))?;
            write_input(self.gpu.queue(), &d, t);
            ins.push(d.clone());
            values[input.slot] = Some(d);
        }
        for step in &self.steps {
            let node = &model.nodes[step.node];
            let out = self
                .exec(rec, model, step, &values, shapes)
                .map_err(|e| match e {
                    Error::Model(m) if !m.starts_with("node ") => model_error(&node.describe(), m),
                    e => e,
                })?;
            values[step.out] = Some(out);
            for i in step.node..=step.last {
                for v in model.freed_after(i) {
                    if let Some(t) = values[v].take() {
                        rec.release(t);
                    }
                }
            }
        }
        let outs: Vec<DevTensor> = model
            .outputs
            .iter()
            .map(|(_, s)| values[*s].clone().expect("graph outputs are computed"))
            .collect();
        for v in values.into_iter().flatten() {
            rec.release(v);
        }
        Ok((ins, outs))
    }

    fn exec(
        &self,
        rec: &mut Rec,
        model: &Model,
        step: &Step,
        values: &[Option<DevTensor>],
        shapes: &[Vec<usize>],
    ) -> Result<DevTensor> {
        let node = &model.nodes[step.node];
        let what = node.describe();
        // A convolution's weight and bias are prepared (not plain tensors).
        let take = if matches!(node.op, Op::Conv { .. } | Op::ConvTranspose { .. }) {
            1
        } else {
            node.inputs.len()
        };
        let ins: Vec<&DevTensor> = node.inputs[..take]
            .iter()
            .map(|s| match s {
                Source::Value(v) => values[*v].as_ref().expect("computed before use"),
                Source::Weight(t) => self
                    .weights
                    .get(&(Arc::as_ptr(t) as usize))
                    .expect("weights are uploaded"),
            })
            .collect();
        let out_shape = &shapes[step.out];
        let x = ins.first().copied();
        match &node.op {
            Op::Conv { window, group } | Op::ConvTranspose { window, group, .. } => {
                let Prepared::Conv { bias, phases } = &self.prepared[step.node] else {
                    unreachable!("prepared at load")
                };
                let out = rec.alloc(out_shape, &what)?;
                let transposed = matches!(node.op, Op::ConvTranspose { .. });
                self.conv(
                    rec,
                    x.unwrap(),
                    &out,
                    window,
                    *group,
                    transposed,
                    bias,
                    phases,
                    step.act,
                );
                Ok(out)
            }
            Op::BatchNorm { .. } => {
                let Prepared::Affine(st) = &self.prepared[step.node] else {
                    unreachable!("prepared at load")
                };
                let x = x.unwrap();
                let out = rec.alloc(out_shape, &what)?;
                let channels = if x.shape.len() >= 2 { x.shape[1] } else { 1 };
                for i in 0..out.bufs.len() {
                    let r = x.layout.range(i);
                    self.pointwise(
                        rec,
                        &x.bufs[i],
                        &out.bufs[i],
                        Some((st, r.start, channels)),
                        (r.len() * x.layout.plane, x.layout.plane),
                        step.act,
                    );
                }
                Ok(out)
            }
            Op::Relu | Op::LeakyRelu { .. } | Op::Sigmoid => {
                let x = x.unwrap();
                let out = rec.alloc(out_shape, &what)?;
                let act = Act::of(&node.op).expect("an activation");
                for i in 0..out.bufs.len() {
                    let r = x.layout.range(i);
                    self.pointwise(
                        rec,
                        &x.bufs[i],
                        &out.bufs[i],
                        None,
                        (r.len() * x.layout.plane, x.layout.plane),
                        act,
                    );
                }
                Ok(out)
            }
            Op::InstanceNorm { epsilon } => {
                let x = x.unwrap();
                let scale = rec.whole(ins[1], &what)?;
                let bias = rec.whole(ins[2], &what)?;
                let out = rec.alloc(out_shape, &what)?;
                self.normalize(rec, x, &out, &scale, &bias, 1, *epsilon);
                Ok(out)
            }
            Op::GroupNorm {
                epsilon,
                groups,
                per_group,
            } => {
                // Each group's channels as one plane of a (N, groups, rest) view: binding
                // chunks hold whole planes, so a chunk never cuts a group, and the
                // instance-norm kernel normalizes each group.
                let x = x.unwrap();
                let (n, c) = (x.shape[0], x.shape[1]);
                let plane: usize = x.shape[2..].iter().product();
                let gshape = [n, *groups, c / groups * plane];
                let xg = rec.relayout(x, &gshape, &what)?;
                let normed = rec.alloc(&gshape, &what)?;
                if *per_group {
                    let scale = rec.whole(ins[1], &what)?;
                    let bias = rec.whole(ins[2], &what)?;
                    self.normalize(rec, &xg, &normed, &scale, &bias, 1, *epsilon);
                    return rec.relayout(&normed, out_shape, &what);
                }
                // Per-channel scale and bias (opset 21): normalize, then a broadcast
                // multiply and add over (C, 1, ...).
                let bytes = |v: f32| -> Vec<u8> {
                    std::iter::repeat_n(v.to_le_bytes(), *groups)
                        .flatten()
                        .collect()
                };
                let (ones, zeros) = (rec.upload(&bytes(1.0)), rec.upload(&bytes(0.0)));
                self.normalize(rec, &xg, &normed, &ones, &zeros, 1, *epsilon);
                let normed = rec.relayout(&normed, out_shape, &what)?;
                let mut cshape = vec![c];
                cshape.resize(out_shape.len() - 1, 1);
                let scale = rec.relayout(ins[1], &cshape, &what)?;
                let bias = rec.relayout(ins[2], &cshape, &what)?;
                let scaled = rec.alloc(out_shape, &what)?;
                self.binary(rec, &normed, &scale, &scaled, 1, Act::NONE, &what)?;
                let out = rec.alloc(out_shape, &what)?;
                self.binary(rec, &scaled, &bias, &out, 0, step.act, &what)?;
                Ok(out)
            }
            Op::Add | Op::Mul | Op::PRelu => {
                let op = match node.op {
                    Op::Add => 0,
                    Op::Mul => 1,
                    _ => 2,
                };
                let out = rec.alloc(out_shape, &what)?;
                self.binary(rec, ins[0], ins[1], &out, op, step.act, &what)?;
                Ok(out)
            }
            Op::Identity | Op::Flatten { .. } | Op::Reshape { .. } => {
                rec.relayout(x.unwrap(), out_shape, &what)
            }
            Op::Concat { axis } => {
                let a = axis_index(*axis, out_shape.len()).expect("planned");
                let out = rec.alloc(out_shape, &what)?;
                let outer: usize = out_shape[..a].iter().product();
                let mut at = 0;
                for o in 0..outer {
                    for t in &ins {
                        let block = t.len() / outer.max(1);
                        rec.copy(t, o * block, &out, at, block);
                        at += block;
                    }
                }
                Ok(out)
            }
            Op::MaxPool { window } => self.pool(rec, x.unwrap(), out_shape, window, 0, &what),
            Op::AveragePool {
                window,
                count_include_pad,
            } => {
                let mode = if *count_include_pad { 1 } else { 2 };
                self.pool(rec, x.unwrap(), out_shape, window, mode, &what)
            }
            Op::GlobalAveragePool => {
                let x = x.unwrap();
                let out = rec.alloc(out_shape, &what)?;
                for (ci, li, co, lo, n) in pieces(&x.layout, &out.layout) {
                    let (gx, gy) = split_groups(n as u64);
                    rec.dispatch(
                        &self.k.global_pool,
                        &[&x.bufs[ci], &out.bufs[co]],
                        &[x.layout.plane as u32, n as u32, li as u32, lo as u32],
                        [gx, gy, 1],
                    );
                }
                Ok(out)
            }
            Op::Resize {
                mode,
                coord,
                target,
            } => self.resize(rec, x.unwrap(), out_shape, *mode, *coord, target, &what),
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => {
                let a = x.unwrap();
                let (m, n) = (out_shape[0], out_shape[1]);
                let kk = if *trans_a { a.shape[0] } else { a.shape[1] };
                let ab = rec.whole(a, &what)?;
                let bb = rec.whole(ins[1], &what)?;
                let cb = match ins.get(2) {
                    Some(c) if *beta != 0.0 => Some((rec.whole(c, &what)?, c.shape.clone())),
                    _ => None,
                };
                let out = rec.alloc(out_shape, &what)?;
                if out.bufs.len() != 1 {
                    return Err(model_error(&what, "the output does not fit one binding"));
                }
                let (rsa, csa) = if *trans_a { (1, m) } else { (kk, 1) };
                let (rsb, csb) = if *trans_b { (1, kk) } else { (n, 1) };
                let (csm, csn) = match &cb {
                    Some((_, cs)) => {
                        let s = broadcast_strides(cs, out_shape);
                        (s[0], s[1])
                    }
                    None => (0, 0),
                };
                let params = [
                    m as u32,
                    n as u32,
                    kk as u32,
                    0,
                    rsa as u32,
                    csa as u32,
                    0,
                    rsb as u32,
                    csb as u32,
                    0,
                    csm as u32,
                    csn as u32,
                    u32::from(cb.is_some()),
                    alpha.to_bits(),
                    beta.to_bits(),
                    0,
                ];
                let c = cb.as_ref().map(|(b, _)| b.as_ref()).unwrap_or(&self.dummy);
                rec.dispatch(
                    &self.k.gemm,
                    &[&ab, &bb, c, &out.bufs[0]],
                    &params,
                    [n.div_ceil(16) as u32, m.div_ceil(16) as u32, 1],
                );
                Ok(out)
            }
            Op::MatMul => {
                let (a, b) = (ins[0], ins[1]);
                let ms = matmul_shape(&a.shape, &b.shape).expect("planned");
                let [m, kk, n] = ms.mkn;
                let ab = rec.whole(a, &what)?;
                let bb = rec.whole(b, &what)?;
                let out = rec.alloc(out_shape, &what)?;
                if out.bufs.len() != 1 {
                    return Err(model_error(&what, "the output does not fit one binding"));
                }
                let a_batch = &a.shape[..a.shape.len().saturating_sub(2)];
                let b_batch = &b.shape[..b.shape.len().saturating_sub(2)];
                let sa = broadcast_strides(a_batch, &ms.batch);
                let sb = broadcast_strides(b_batch, &ms.batch);
                let batches: usize = ms.batch.iter().product();
                for i in 0..batches {
                    let (mut oa, mut ob, mut r) = (0, 0, i);
                    for d in (0..ms.batch.len()).rev() {
                        let j = r % ms.batch[d];
                        r /= ms.batch[d];
                        oa += j * sa[d];
                        ob += j * sb[d];
                    }
                    let params = [
                        m as u32,
                        n as u32,
                        kk as u32,
                        (oa * m * kk) as u32,
                        kk as u32,
                        1,
                        (ob * kk * n) as u32,
                        n as u32,
                        1,
                        (i * m * n) as u32,
                        0,
                        0,
                        0,
                        1f32.to_bits(),
                        0,
                        0,
                    ];
                    rec.dispatch(
                        &self.k.gemm,
                        &[&ab, &bb, &self.dummy, &out.bufs[0]],
                        &params,
                        [n.div_ceil(16) as u32, m.div_ceil(16) as u32, 1],
                    );
                }
                Ok(out)
            }
            Op::Softmax { axis, legacy } => {
                let x = x.unwrap();
                let a = axis_index(*axis, x.shape.len()).expect("planned");
                let (len, inner) = if *legacy {
                    (x.shape[a..].iter().product::<usize>(), 1)
                } else {
                    (x.shape[a], x.shape[a + 1..].iter().product::<usize>())
                };
                let lines = x.len() / len.max(1);
                let xb = rec.whole(x, &what)?;
                let out = rec.alloc(out_shape, &what)?;
                if out.bufs.len() != 1 {
                    return Err(model_error(&what, "the output does not fit one binding"));
                }
                let (gx, gy, row) = grid(lines as u64);
                rec.dispatch(
                    &self.k.softmax,
                    &[&xb, &out.bufs[0]],
                    &[lines as u32, len as u32, inner as u32, row],
                    [gx, gy, 1],
                );
                Ok(out)
            }
        }
    }

    /// y = act(x * s + t) over `count` elements of planes of `plane` (`affine`: the pairs,
    /// the first plane's global index and the channel count), or y = act(x).
    #[allow(clippy::too_many_arguments)]
    fn pointwise(
        &self,
        rec: &mut Rec,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        affine: Option<(&wgpu::Buffer, usize, usize)>,
        (count, plane): (usize, usize),
        act: Act,
    ) {
        let (gx, gy, row) = grid(count as u64);
        let (st, pbase, modulus, flags) = match affine {
            Some((st, pbase, modulus)) => (st, pbase, modulus, 1),
            None => (&self.dummy, 0, 1, 0),
        };
        rec.dispatch(
            &self.k.pointwise,
            &[x, st, y],
            &[
                count as u32,
                row,
                plane.max(1) as u32,
                pbase as u32,
                modulus.max(1) as u32,
                flags,
                act.code,
                act.alpha.to_bits(),
            ],
            [gx, gy, 1],
        );
    }

    /// A normalization over groups of `gsize` consecutive channel planes (1:
    /// InstanceNormalization), with per-channel `scale` and `bias`, chunk by chunk.
    #[allow(clippy::too_many_arguments)]
    fn normalize(
        &self,
        rec: &mut Rec,
        x: &DevTensor,
        out: &DevTensor,
        scale: &wgpu::Buffer,
        bias: &wgpu::Buffer,
        gsize: usize,
        epsilon: f32,
    ) {
        let channels = x.shape[1];
        for i in 0..x.bufs.len() {
            let r = x.layout.range(i);
            let st = rec.scratch((r.len() * 2 * 4) as u64);
            let groups = r.len() / gsize;
            let (gx, gy) = split_groups(groups as u64);
            rec.dispatch(
                &self.k.norm_stats,
                &[&x.bufs[i], scale, bias, &st],
                &[
                    x.layout.plane as u32,
                    gsize as u32,
                    r.start as u32,
                    channels as u32,
                    epsilon.to_bits(),
                    groups as u32,
                    0,
                    0,
                ],
                [gx, gy, 1],
            );
            self.pointwise(
                rec,
                &x.bufs[i],
                &out.bufs[i],
                Some((&st, 0, r.len())),
                (r.len() * x.layout.plane, x.layout.plane),
                Act::NONE,
            );
            rec.recycle(st);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn binary(
        &self,
        rec: &mut Rec,
        a: &DevTensor,
        b: &DevTensor,
        out: &DevTensor,
        op: u32,
        act: Act,
        what: &str,
    ) -> Result<()> {
        let rank = out.shape.len();
        if rank > 8 {
            return Err(model_error(what, "more than 8 dimensions"));
        }
        let direct = |t: &DevTensor| t.shape == out.shape;
        let (aw, bw) = (
            if direct(a) {
                None
            } else {
                Some(rec.whole(a, what)?)
            },
            if direct(b) {
                None
            } else {
                Some(rec.whole(b, what)?)
            },
        );
        let sa = broadcast_strides(&a.shape, &out.shape);
        let sb = broadcast_strides(&b.shape, &out.shape);
        let pack = |v: &[usize]| -> [u32; 8] {
            let mut w = [1u32; 8];
            for (i, x) in v.iter().enumerate() {
                w[i] = *x as u32;
            }
            w
        };
        let (dims, sa, sb) = (pack(&out.shape), pack(&sa), pack(&sb));
        let flags = u32::from(aw.is_none()) | u32::from(bw.is_none()) << 1;
        for i in 0..out.bufs.len() {
            let r = out.layout.range(i);
            let count = r.len() * out.layout.plane;
            let (gx, gy, row) = grid(count as u64);
            let mut params = vec![
                count as u32,
                row,
                (r.start * out.layout.plane) as u32,
                rank as u32,
                op,
                act.code,
                act.alpha.to_bits(),
                flags,
            ];
            params.extend(dims);
            params.extend(sa);
            params.extend(sb);
            let ab = aw.as_deref().unwrap_or_else(|| &a.bufs[i]);
            let bb = bw.as_deref().unwrap_or_else(|| &b.bufs[i]);
            rec.dispatch(
                &self.k.binary,
                &[ab, bb, &out.bufs[i]],
                &params,
                [gx, gy, 1],
            );
        }
        Ok(())
    }

    fn pool(
        &self,
        rec: &mut Rec,
        x: &DevTensor,
        out_shape: &[usize],
        w: &Window,
        mode: u32,
        what: &str,
    ) -> Result<DevTensor> {
        // A large window runs one axis at a time (x, then y, then z): every pooling mode
        // is separable (the window's voxels inside the input are a box, so their max,
        // sum and count factor by axis), and one thread looping over a whole grid is
        // slow on any GPU and stops short on some (lavapipe past about 64 Ki taps).
        if w.kernel.iter().product::<usize>() > SEPARABLE_POOL_TAPS
            && w.kernel.iter().filter(|&&k| k > 1).count() > 1
        {
            let mut cur: Option<DevTensor> = None;
            let mut shape = x.shape.clone();
            for a in (0..3).rev() {
                if w.kernel[a] == 1 && w.strides[a] == 1 && w.pads[a] + w.pads[a + 3] == 0 {
                    continue;
                }
                let mut one = Window {
                    kernel: [1; 3],
                    strides: [1; 3],
                    pads: [0; 6],
                    dilations: [1; 3],
                };
                one.kernel[a] = w.kernel[a];
                one.strides[a] = w.strides[a];
                one.pads[a] = w.pads[a];
                one.pads[a + 3] = w.pads[a + 3];
                one.dilations[a] = w.dilations[a];
                shape[2 + a] = out_shape[2 + a];
                let input = cur.as_ref().unwrap_or(x);
                let next = self.pool(rec, input, &shape, &one, mode, what)?;
                if let Some(done) = cur.replace(next) {
                    rec.release(done);
                }
            }
            return Ok(cur.expect("a large window has axes"));
        }
        let out = rec.alloc(out_shape, what)?;
        let (i3, o3) = (&x.shape[2..], &out_shape[2..]);
        for (ci, li, co, lo, n) in pieces(&x.layout, &out.layout) {
            let count = n * out.layout.plane;
            let (gx, gy, row) = grid(count as u64);
            let params = [
                i3[0] as u32,
                i3[1] as u32,
                i3[2] as u32,
                li as u32,
                o3[0] as u32,
                o3[1] as u32,
                o3[2] as u32,
                lo as u32,
                w.kernel[0] as u32,
                w.kernel[1] as u32,
                w.kernel[2] as u32,
                count as u32,
                w.strides[0] as u32,
                w.strides[1] as u32,
                w.strides[2] as u32,
                row,
                w.pads[0] as u32,
                w.pads[1] as u32,
                w.pads[2] as u32,
                mode,
                w.dilations[0] as u32,
                w.dilations[1] as u32,
                w.dilations[2] as u32,
                0,
            ];
            rec.dispatch(
                &self.k.pool,
                &[&x.bufs[ci], &out.bufs[co]],
                &params,
                [gx, gy, 1],
            );
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn resize(
        &self,
        rec: &mut Rec,
        x: &DevTensor,
        out_shape: &[usize],
        mode: ResizeMode,
        coord: CoordMode,
        target: &super::ops::ResizeTarget,
        what: &str,
    ) -> Result<DevTensor> {
        let rank = x.shape.len();
        if rank < 2
            || (0..2).any(|a| {
                x.shape[a] != out_shape[a] || target.scale(a, x.shape[a], out_shape[a]) != 1.0
            })
        {
            return Err(model_error(
                what,
                "on the GPU, Resize only resizes the axes after the second (batch and \
                 channel scales must be 1)",
            ));
        }
        if rank > 5 {
            return Err(model_error(
                what,
                "on the GPU, Resize takes at most 5 dimensions",
            ));
        }
        // The trailing axes as three, padded in front with axes of 1.
        let pad3 = |s: &[usize]| -> [usize; 3] {
            let mut v = [1; 3];
            let t = &s[2..];
            v[3 - t.len()..].copy_from_slice(t);
            v
        };
        let (i3, o3) = (pad3(&x.shape), pad3(out_shape));
        let mut taps: Vec<u32> = Vec::new();
        for a in 0..3 {
            // Padded axis a is the tensor's axis a + rank - 3 where a + rank >= 5.
            let (len_in, len_out) = (i3[a], o3[a]);
            let scale = if a + rank >= 5 {
                target.scale(a + rank - 3, len_in, len_out)
            } else {
                1.0
            };
            for o in 0..len_out {
                let (i0, i1, w0, w1) = if len_in == len_out && scale == 1.0 {
                    (o, o, 1.0, 0.0)
                } else {
                    resize_tap(mode, coord, o, scale, len_in, len_out)
                };
                taps.extend([i0 as u32, i1 as u32, f32::to_bits(w0), f32::to_bits(w1)]);
            }
        }
        let tb: Vec<u8> = taps.iter().flat_map(|w| w.to_le_bytes()).collect();
        let taps = rec.upload(&tb);
        let out = rec.alloc(out_shape, what)?;
        for (ci, li, co, lo, n) in pieces(&x.layout, &out.layout) {
            let count = n * out.layout.plane;
            let (gx, gy, row) = grid(count as u64);
            let params = [
                i3[0] as u32,
                i3[1] as u32,
                i3[2] as u32,
                li as u32,
                o3[0] as u32,
                o3[1] as u32,
                o3[2] as u32,
                lo as u32,
                count as u32,
                row,
                0,
                0,
            ];
            rec.dispatch(
                &self.k.resize,
                &[&x.bufs[ci], &taps, &out.bufs[co]],
                &params,
                [gx, gy, 1],
            );
        }
        Ok(out)
    }

    /// A (transposed) convolution: for each output chunk, each image and group in it, each
    /// phase, the passes over the input chunks holding the group's channels.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &self,
        rec: &mut Rec,
        x: &DevTensor,
        out: &DevTensor,
        w: &Window,
        group: usize,
        transposed: bool,
        bias: &wgpu::Buffer,
        phases: &[ConvPhase],
        act: Act,
    ) {
        let (c, m) = (x.shape[1], out.shape[1]);
        let (cg, mg) = (c / group, m / group);
        let (i3, o3) = (&x.shape[2..], &out.shape[2..]);
        let np: usize = o3.iter().product();
        // How the GEMM's columns map to output voxels and input windows.
        let (ostep, gstride, gpad) = if transposed {
            (
                [w.strides[0], w.strides[1], w.strides[2]],
                [1; 3],
                [OFFSET_BIAS as usize; 3],
            )
        } else {
            (
                [1; 3],
                w.strides,
                [0, 1, 2].map(|a| w.pads[a] + OFFSET_BIAS as usize),
            )
        };
        for (oc, range) in (0..out.bufs.len()).map(|i| (i, out.layout.range(i))) {
            // Runs of output planes within one image and one group.
            let mut p = range.start;
            while p < range.end {
                let (img, ch) = (p / m, p % m);
                let g = ch / mg;
                let end = range.end.min(img * m + (g + 1) * mg);
                let (ma, mcount) = (ch, end - p);
                // The group's input planes, and the chunks that hold them.
                let first_in = img * c + g * cg;
                let passes = pieces_of(&x.layout, first_in..first_in + cg);
                let n_pass = passes.len();
                for phase in phases {
                    // The output voxels of this phase: q * ostep + phase along each axis.
                    let q =
                        [0, 1, 2].map(|a| o3[a].saturating_sub(phase.phase[a]).div_ceil(ostep[a]));
                    let nq: usize = q.iter().product();
                    if nq == 0 {
                        continue;
                    }
                    let kg = cg * phase.taps;
                    let variant = match self.forced_tiles.load(Ordering::Relaxed) {
                        0 => conv_variant(mcount, nq, kg),
                        v => v - 1,
                    };
                    // The 64 x 64 tiles (8 KiB) fit every device.
                    let variant = if self.k.conv[variant].is_some() {
                        variant
                    } else {
                        0
                    };
                    let kernel = self.k.conv[variant].as_ref().expect("a fitting variant");
                    let (tm, tn, _, _) = CONV_TILES[variant];
                    let tiles_n = nq.div_ceil(tn) as u32;
                    let (gx, gz) = if tiles_n <= MAX_GROUPS {
                        (tiles_n, 1)
                    } else {
                        (MAX_GROUPS, tiles_n.div_ceil(MAX_GROUPS))
                    };
                    for (pi, &(ci, local, cstart, ccount)) in passes.iter().enumerate() {
                        // cstart: the group-relative channel of the pass's first plane.
                        let mut flags = 0u32;
                        if pi == 0 {
                            flags |= 1;
                        }
                        if pi + 1 == n_pass {
                            flags |= 2 | act.code << 8;
                        }
                        let in_off = local as i64 - cstart as i64;
                        let kpass = ccount * phase.taps;
                        let mtiles = mcount.div_ceil(tm);
                        let slices = split_k(
                            tiles_n as usize * mtiles,
                            kpass,
                            mcount * nq * 4,
                            self.gpu.max_binding(),
                        );
                        let kslice = if slices > 1 {
                            kpass.div_ceil(slices).next_multiple_of(16)
                        } else {
                            kpass
                        };
                        let slices = if kslice == 0 {
                            1
                        } else {
                            kpass.div_ceil(kslice)
                        };
                        let out_off = (p - range.start) as u32;
                        let mut params = [
                            i3[0] as u32,
                            i3[1] as u32,
                            i3[2] as u32,
                            in_off as i32 as u32,
                            o3[0] as u32,
                            o3[1] as u32,
                            o3[2] as u32,
                            out_off,
                            gstride[0] as u32,
                            gstride[1] as u32,
                            gstride[2] as u32,
                            kpass as u32,
                            gpad[0] as u32,
                            gpad[1] as u32,
                            gpad[2] as u32,
                            mcount as u32,
                            (g * kg + cstart * phase.taps) as u32,
                            (ma - g * mg) as u32,
                            mg as u32,
                            ma as u32,
                            (cstart * phase.taps) as u32,
                            flags,
                            act.alpha.to_bits(),
                            kslice as u32,
                            q[0] as u32,
                            q[1] as u32,
                            q[2] as u32,
                            0,
                            ostep[0] as u32,
                            ostep[1] as u32,
                            ostep[2] as u32,
                            0,
                            phase.phase[0] as u32,
                            phase.phase[1] as u32,
                            phase.phase[2] as u32,
                            0,
                        ];
                        if slices == 1 {
                            rec.dispatch(
                                kernel,
                                &[&x.bufs[ci], &phase.wt, bias, &phase.ktab, &out.bufs[oc]],
                                &params,
                                [gx, mtiles as u32, gz],
                            );
                            continue;
                        }
                        // Split K: partial sums per slice, then their sum and the epilogue.
                        let part = rec.scratch((slices * mcount * nq * 4) as u64);
                        params[7] = 0;
                        params[21] = 4;
                        rec.dispatch(
                            kernel,
                            &[&x.bufs[ci], &phase.wt, bias, &phase.ktab, &part],
                            &params,
                            [tiles_n, mtiles as u32, slices as u32],
                        );
                        let (rx, ry, row) = grid((mcount * nq) as u64);
                        rec.dispatch(
                            &self.k.splitk_reduce,
                            &[&part, bias, &out.bufs[oc]],
                            &[
                                nq as u32,
                                mcount as u32,
                                slices as u32,
                                out_off,
                                ma as u32,
                                flags,
                                act.alpha.to_bits(),
                                row,
                                q[1] as u32,
                                q[2] as u32,
                                o3[1] as u32,
                                o3[2] as u32,
                                ostep[0] as u32,
                                ostep[1] as u32,
                                ostep[2] as u32,
                                np as u32,
                                phase.phase[0] as u32,
                                phase.phase[1] as u32,
                                phase.phase[2] as u32,
                                0,
                            ],
                            [rx, ry, 1],
                        );
                        rec.recycle(part);
                    }
                }
                p = end;
            }
        }
    }
}

/// The two taps and weights of output coordinate `o`, as [`super::cpu`] computes them.
fn resize_tap(
    mode: ResizeMode,
    coord: CoordMode,
    o: usize,
    scale: f32,
    len_in: usize,
    len_out: usize,
) -> (usize, usize, f32, f32) {
    let last = len_in - 1;
    let at = super::cpu::resize_coordinate(coord, o, scale, len_in, len_out);
    match mode {
        ResizeMode::Nearest(round) => {
            let at = match round {
                NearestMode::RoundPreferFloor if at == at.floor() + 0.5 => at.floor(),
                NearestMode::RoundPreferCeil if at == at.floor() + 0.5 => at.ceil(),
                NearestMode::RoundPreferFloor | NearestMode::RoundPreferCeil => at.round(),
                NearestMode::Floor => at.floor(),
                NearestMode::Ceil => at.ceil(),
            };
            let i = (at.max(0.0) as usize).min(last);
            (i, i, 1.0, 0.0)
        }
        ResizeMode::Linear => {
            let at = at.clamp(0.0, last as f32);
            let i0 = (at as usize).min(last);
            let i1 = (i0 + 1).min(last);
            if i0 == i1 {
                (i0, i1, 0.5, 0.5)
            } else {
                let f = at - i0 as f32;
                (i0, i1, 1.0 - f, f)
            }
        }
    }
}

/// Workgroups a convolution dispatch should have to fill a large GPU (an H100 has 132
/// multiprocessors, each holding about four 64 x 64 workgroups at once): one with fewer
/// output tiles splits K.
const CONV_WORKGROUPS: usize = 512;

/// The K slices for a convolution pass of `tiles` output tiles over `kpass` rows of K
/// whose output is `out_bytes`: 1 (no split) where there are tiles enough, else enough
/// slices to make about [`CONV_WORKGROUPS`] workgroups, each of at least 128 rows of K,
/// their partial sums within one binding.
fn split_k(tiles: usize, kpass: usize, out_bytes: usize, max_binding: u64) -> usize {
    if tiles * 4 >= CONV_WORKGROUPS * 3 {
        return 1;
    }
    let by_memory = (max_binding / out_bytes.max(1) as u64) as usize;
    CONV_WORKGROUPS
        .div_ceil(tiles)
        .min(kpass / 128)
        .min(by_memory)
        .min(MAX_GROUPS as usize)
        .max(1)
}

/// Workgroups for `groups` in (x, y) within the per-dimension limit.
fn split_groups(groups: u64) -> (u32, u32) {
    let groups = groups.max(1);
    let gx = groups.min(u64::from(MAX_GROUPS)) as u32;
    (gx, groups.div_ceil(u64::from(gx)) as u32)
}

/// Workgroups of 64 for `count` threads, and the threads per row of the grid.
fn grid(count: u64) -> (u32, u32, u32) {
    let (gx, gy) = split_groups(count.div_ceil(64));
    (gx, gy, gx * 64)
}

/// The common planes of two layouts over the same planes: (chunk of a, its local plane,
/// chunk of b, its local plane, planes).
fn pieces(a: &Layout, b: &Layout) -> Vec<(usize, usize, usize, usize, usize)> {
    let mut out = Vec::new();
    let mut p = 0;
    while p < a.planes {
        let (ia, ib) = (p / a.per, p / b.per);
        let end = ((ia + 1) * a.per).min((ib + 1) * b.per).min(a.planes);
        out.push((ia, p - ia * a.per, ib, p - ib * b.per, end - p));
        p = end;
    }
    out
}

/// The chunks holding `planes`: (chunk, local plane, offset into `planes`, count).
fn pieces_of(l: &Layout, planes: Range<usize>) -> Vec<(usize, usize, usize, usize)> {
    let mut out = Vec::new();
    let mut p = planes.start;
    while p < planes.end {
        let i = p / l.per;
        let end = ((i + 1) * l.per).min(planes.end);
        out.push((i, p - i * l.per, p - planes.start, end - p));
        p = end;
    }
    out
}

/// Write `t`'s values to the chunks of `d`.
fn write_input(queue: &wgpu::Queue, d: &DevTensor, t: &Tensor) {
    let chunk = d.layout.chunk_elems();
    for (i, b) in d.bufs.iter().enumerate() {
        let part = &t.data[(i * chunk).min(t.data.len())..((i + 1) * chunk).min(t.data.len())];
        if !part.is_empty() {
            queue.write_buffer(b, 0, &words(part));
        }
    }
}

type PlanKey = (Vec<Vec<usize>>, usize);

/// A plan's place: empty until its first run records it.
type PlanSlot = Arc<Mutex<Option<Plan>>>;

/// A recorded command: a dispatch with its bind group (parameters already in a uniform
/// arena), or a copy between buffers.
enum Cmd {
    Dispatch {
        pipeline: wgpu::ComputePipeline,
        bind: wgpu::BindGroup,
        groups: [u32; 3],
    },
    Copy {
        src: wgpu::Buffer,
        src_at: u64,
        dst: wgpu::Buffer,
        dst_at: u64,
        bytes: u64,
    },
}

/// A whole run at one set of input shapes, recorded once: its commands (bind groups
/// made and parameters uploaded), its input and output tensors, and every buffer the
/// commands touch (owned by the plan alone, so a replay races with nothing but itself,
/// and the plan's mutex serializes those).
struct Plan {
    cmds: Vec<Cmd>,
    inputs: Vec<DevTensor>,
    outputs: Vec<DevTensor>,
    staging: wgpu::Buffer,
    _keep: Vec<wgpu::Buffer>,
}

impl Plan {
    /// Write `inputs`, record the commands into one encoder, submit once and read the
    /// outputs back.
    fn replay(&self, gm: &GpuModel, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        let (device, queue) = (gm.gpu.device(), gm.gpu.queue());
        for (d, t) in self.inputs.iter().zip(inputs) {
            write_input(queue, d, t);
        }
        let mut encoder =
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        let mut pass: Option<wgpu::ComputePass<'static>> = None;
        for cmd in &self.cmds {
            match cmd {
                Cmd::Dispatch {
                    pipeline,
                    bind,
                    groups,
                } => {
                    let pass = pass.get_or_insert_with(|| {
                        encoder
                            .begin_compute_pass(&wgpu::ComputePassDescriptor::default())
                            .forget_lifetime()
                    });
                    pass.set_pipeline(pipeline);
                    pass.set_bind_group(0, bind, &[]);
                    pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
                }
                Cmd::Copy {
                    src,
                    src_at,
                    dst,
                    dst_at,
                    bytes,
                } => {
                    pass = None;
                    encoder.copy_buffer_to_buffer(src, *src_at, dst, *dst_at, *bytes);
                }
            }
        }
        drop(pass);
        copy_out(&mut encoder, &self.outputs, &self.staging);
        queue.submit([encoder.finish()]);
        map_back(device, &self.staging, &self.outputs)
    }
}

/// Encode the copies of `ts` (in order) into `staging`.
fn copy_out(encoder: &mut wgpu::CommandEncoder, ts: &[DevTensor], staging: &wgpu::Buffer) {
    let mut at = 0u64;
    for t in ts {
        for (i, b) in t.bufs.iter().enumerate() {
            let bytes = (t.layout.range(i).len() * t.layout.plane * 4) as u64;
            if bytes > 0 {
                encoder.copy_buffer_to_buffer(b, 0, staging, at, bytes);
            }
            at += bytes;
        }
    }
}

/// A readback buffer for `ts`.
fn staging_for(device: &wgpu::Device, ts: &[DevTensor]) -> wgpu::Buffer {
    let total: usize = ts.iter().map(DevTensor::len).sum();
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: (total * 4).max(4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// Map `staging` (its copies submitted), read `ts`' values from it and unmap it.
fn map_back(
    device: &wgpu::Device,
    staging: &wgpu::Buffer,
    ts: &[DevTensor],
) -> Result<Vec<Tensor>> {
    let total: usize = ts.iter().map(DevTensor::len).sum();
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    let device_error = |e: &dyn std::fmt::Display| Error::Device(e.to_string());
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| device_error(&e))?;
    rx.recv()
        .map_err(|e| device_error(&e))?
        .map_err(|e| device_error(&e))?;
    let out = {
        let view = staging.get_mapped_range(..).map_err(|e| device_error(&e))?;
        let mut values = view[..total * 4]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        ts.iter()
            .map(|t| Tensor {
                shape: t.shape.clone(),
                data: values.by_ref().take(t.len()).collect(),
            })
            .collect()
    };
    staging.unmap();
    Ok(out)
}

/// One run's command recording: dispatches and copies into a command encoder, submitted
/// every [`SUBMIT_EVERY`] dispatches and before the readback.
struct Rec<'a> {
    gm: &'a GpuModel,
    encoder: Option<wgpu::CommandEncoder>,
    /// The open compute pass (dispatches share one until a copy or a submit).
    pass: Option<wgpu::ComputePass<'static>>,
    recorded: usize,
    /// The uniform arena the dispatches' parameters go to (at `align`ed offsets), the
    /// bytes written so far, and where the bytes not yet uploaded start; arenas filled
    /// and uploaded earlier in the run.
    arena: Option<wgpu::Buffer>,
    params: Vec<u8>,
    uploaded: usize,
    full: Vec<wgpu::Buffer>,
    align: usize,
    /// The run's own pool (taken from the model's, given back at the end): a buffer a
    /// run frees may still be read by its commands not yet submitted, so concurrent runs
    /// must not share one.
    pool: HashMap<u64, Vec<wgpu::Buffer>>,
    /// The buffer sizes this run asked for: the pool keeps only those (a model run at
    /// many input shapes does not hoard buffers of each).
    sizes: std::collections::HashSet<u64>,
    /// Recording a [`Plan`]: the commands (nothing is encoded or submitted, and no buffer
    /// comes from or goes back to the model's pool or arenas).
    plan: Option<Vec<Cmd>>,
}

impl Drop for Rec<'_> {
    fn drop(&mut self) {
        self.pass = None;
        if self.plan.is_some() {
            return;
        }
        self.gm
            .arenas
            .lock()
            .expect("arenas")
            .extend(self.full.drain(..).chain(self.arena.take()));
        let mut pool = self.gm.pool.lock().expect("pool");
        for (size, mut bufs) in self.pool.drain() {
            if self.sizes.contains(&size) {
                pool.entry(size).or_default().append(&mut bufs);
            }
        }
    }
}

const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl<'a> Rec<'a> {
    fn new(gm: &'a GpuModel, plan: bool) -> Rec<'a> {
        let pool = if plan {
            HashMap::new()
        } else {
            std::mem::take(&mut *gm.pool.lock().expect("pool"))
        };
        let align = gm
            .gpu
            .device()
            .limits()
            .min_uniform_buffer_offset_alignment
            .max(16) as usize;
        Rec {
            gm,
            encoder: None,
            pass: None,
            recorded: 0,
            arena: None,
            params: Vec::new(),
            uploaded: 0,
            full: Vec::new(),
            align,
            pool,
            sizes: Default::default(),
            plan: plan.then(Vec::new),
        }
    }

    /// The recorded plan (a [`Rec`] made for one) of a run with these inputs and
    /// outputs: its parameters uploaded, its buffers its own.
    fn into_plan(mut self, inputs: Vec<DevTensor>, outputs: Vec<DevTensor>) -> Plan {
        self.upload_params();
        let mut keep: Vec<wgpu::Buffer> = self.full.drain(..).chain(self.arena.take()).collect();
        for (_, bufs) in self.pool.drain() {
            keep.extend(bufs);
        }
        Plan {
            cmds: self.plan.take().expect("recording a plan"),
            staging: staging_for(self.device(), &outputs),
            inputs,
            outputs,
            _keep: keep,
        }
    }

    fn device(&self) -> &'a wgpu::Device {
        self.gm.gpu.device()
    }

    /// The encoder, the open compute pass ended.
    fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        self.pass = None;
        let device = self.device();
        self.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        })
    }

    /// The open compute pass, or a new one.
    fn pass(&mut self) -> &mut wgpu::ComputePass<'static> {
        if self.pass.is_none() {
            let pass = self
                .encoder()
                .begin_compute_pass(&wgpu::ComputePassDescriptor::default())
                .forget_lifetime();
            self.pass = Some(pass);
        }
        self.pass.as_mut().expect("a pass")
    }

    /// Upload the parameters written since the last upload (they must land before the
    /// commands that read them are submitted).
    fn upload_params(&mut self) {
        if let Some(arena) = &self.arena {
            if self.params.len() > self.uploaded {
                self.gm.gpu.queue().write_buffer(
                    arena,
                    self.uploaded as u64,
                    &self.params[self.uploaded..],
                );
                self.uploaded = self.params.len();
            }
        }
    }

    /// Room for one dispatch's parameters (`bytes`, at most 256) in the arena: its offset.
    fn param_slot(&mut self, words: &[u32]) -> (wgpu::Buffer, u64) {
        let at = self.params.len().next_multiple_of(self.align);
        let size = (words.len() * 4).next_multiple_of(16).max(16);
        if self.arena.is_none() || (at + size) as u64 > ARENA_BYTES {
            self.upload_params();
            if let Some(full) = self.arena.take() {
                self.full.push(full);
            }
            let reused = if self.plan.is_some() {
                None
            } else {
                self.gm.arenas.lock().expect("arenas").pop()
            };
            self.arena = Some(reused.unwrap_or_else(|| {
                self.device().create_buffer(&wgpu::BufferDescriptor {
                    label: Some("params"),
                    size: ARENA_BYTES,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            }));
            self.params.clear();
            self.uploaded = 0;
            return self.param_slot(words);
        }
        self.params.resize(at, 0);
        self.params
            .extend(words.iter().flat_map(|w| w.to_le_bytes()));
        self.params.resize(at + size, 0);
        (self.arena.clone().expect("an arena"), at as u64)
    }

    fn submit(&mut self) {
        self.pass = None;
        self.upload_params();
        if self.plan.is_some() {
            return;
        }
        if let Some(e) = self.encoder.take() {
            self.gm.gpu.queue().submit([e.finish()]);
        }
        self.recorded = 0;
    }

    /// A buffer of `bytes` from the pool, or a new one.
    fn scratch(&mut self, bytes: u64) -> wgpu::Buffer {
        let bytes = bytes.max(4).next_multiple_of(4);
        self.sizes.insert(bytes);
        if let Some(b) = self.pool.get_mut(&bytes).and_then(Vec::pop) {
            return b;
        }
        self.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("activation"),
            size: bytes,
            usage: USAGE,
            mapped_at_creation: false,
        })
    }

    fn recycle(&mut self, b: wgpu::Buffer) {
        self.pool.entry(b.size()).or_default().push(b);
    }

    /// Return a freed activation's buffers to the pool (those no other value shares).
    fn release(&mut self, t: DevTensor) {
        for b in t.bufs {
            if let Ok(b) = Arc::try_unwrap(b) {
                self.recycle(b);
            }
        }
    }

    fn upload(&mut self, bytes: &[u8]) -> wgpu::Buffer {
        self.device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("table"),
                contents: bytes,
                usage: wgpu::BufferUsages::STORAGE,
            })
    }

    /// A device tensor of `shape` in chunks (contents undefined).
    fn alloc(&mut self, shape: &[usize], what: &str) -> Result<DevTensor> {
        let layout =
            Layout::of(shape, self.gm.gpu.max_binding()).map_err(|r| model_error(what, r))?;
        let bufs = (0..layout.chunks())
            .map(|i| Arc::new(self.scratch((layout.range(i).len() * layout.plane * 4) as u64)))
            .collect();
        Ok(DevTensor {
            shape: shape.to_vec(),
            layout,
            bufs,
        })
    }

    fn dispatch(
        &mut self,
        kernel: &Kernel,
        buffers: &[&wgpu::Buffer],
        params: &[u32],
        groups: [u32; 3],
    ) {
        let (arena, offset) = self.param_slot(params);
        let device = self.device();
        let mut entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        entries.push(wgpu::BindGroupEntry {
            binding: buffers.len() as u32,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &arena,
                offset,
                size: wgpu::BufferSize::new((params.len() * 4).next_multiple_of(16).max(16) as u64),
            }),
        });
        let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &kernel.layout,
            entries: &entries,
        });
        if let Some(cmds) = &mut self.plan {
            cmds.push(Cmd::Dispatch {
                pipeline: kernel.pipeline.clone(),
                bind,
                groups,
            });
            return;
        }
        let pass = self.pass();
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        self.recorded += 1;
        if self.recorded >= SUBMIT_EVERY {
            self.submit();
        }
    }

    /// Copy `len` elements from element `s0` of `src` to element `d0` of `dst`.
    fn copy(&mut self, src: &DevTensor, s0: usize, dst: &DevTensor, d0: usize, len: usize) {
        let (sc, dc) = (src.layout.chunk_elems(), dst.layout.chunk_elems());
        let (mut s, mut d, mut left) = (s0, d0, len);
        while left > 0 {
            let (si, so) = (s / sc, s % sc);
            let (di, dof) = (d / dc, d % dc);
            let n = left.min(sc - so).min(dc - dof);
            let (sb, db) = (src.bufs[si].clone(), dst.bufs[di].clone());
            if let Some(cmds) = &mut self.plan {
                cmds.push(Cmd::Copy {
                    src: (*sb).clone(),
                    src_at: (so * 4) as u64,
                    dst: (*db).clone(),
                    dst_at: (dof * 4) as u64,
                    bytes: (n * 4) as u64,
                });
                s += n;
                d += n;
                left -= n;
                continue;
            }
            self.encoder().copy_buffer_to_buffer(
                &sb,
                (so * 4) as u64,
                &db,
                (dof * 4) as u64,
                (n * 4) as u64,
            );
            s += n;
            d += n;
            left -= n;
        }
    }

    /// `t` as one buffer: its own where it has one chunk, else a gathered copy (which
    /// must fit one binding).
    fn whole(&mut self, t: &DevTensor, what: &str) -> Result<Arc<wgpu::Buffer>> {
        if t.bufs.len() == 1 {
            return Ok(t.bufs[0].clone());
        }
        let bytes = (t.len() * 4) as u64;
        if bytes > self.gm.gpu.max_binding() {
            return Err(model_error(
                what,
                format!(
                    "an operand of {:?} ({bytes} bytes) must be read whole and is larger than \
                     the largest storage binding ({} bytes)",
                    t.shape,
                    self.gm.gpu.max_binding()
                ),
            ));
        }
        let b = self.scratch(bytes);
        let one = DevTensor {
            shape: t.shape.clone(),
            layout: Layout {
                planes: 1,
                plane: t.len(),
                per: 1,
            },
            bufs: vec![Arc::new(b)],
        };
        self.copy(t, 0, &one, 0, t.len());
        Ok(one.bufs[0].clone())
    }

    /// `t` under `shape` (same elements): its buffers shared where the chunking is the
    /// same, else copied.
    fn relayout(&mut self, t: &DevTensor, shape: &[usize], what: &str) -> Result<DevTensor> {
        let layout =
            Layout::of(shape, self.gm.gpu.max_binding()).map_err(|r| model_error(what, r))?;
        let same = t.bufs.len() == layout.chunks()
            && (0..t.bufs.len()).all(|i| {
                t.layout.range(i).len() * t.layout.plane == layout.range(i).len() * layout.plane
            });
        if same {
            return Ok(DevTensor {
                shape: shape.to_vec(),
                layout,
                bufs: t.bufs.clone(),
            });
        }
        let out = self.alloc(shape, what)?;
        self.copy(t, 0, &out, 0, t.len());
        Ok(out)
    }

    /// Read the tensors back (submitting what is recorded).
    fn read(&mut self, ts: &[DevTensor]) -> Result<Vec<Tensor>> {
        let staging = staging_for(self.device(), ts);
        copy_out(self.encoder(), ts, &staging);
        self.submit();
        map_back(self.device(), &staging, ts)
    }
}

/// The strides of `shape` (row-major) as seen from a broadcast output of shape `out`: 0
/// along broadcast axes (as [`super::cpu`]).
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let rank = out.len();
    let mut strides = vec![0; rank];
    let mut s = 1;
    for d in (0..shape.len()).rev() {
        let o = d + rank - shape.len();
        strides[o] = if shape[d] == 1 && out[o] != 1 { 0 } else { s };
        s *= shape[d];
    }
    strides
}
