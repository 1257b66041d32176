//! The wgpu backend: the same ops as [`super::cpu`], as WGSL compute shaders (beside this
//! file in `shaders/`), on Vulkan, Metal or DX12.
//!
//! - **Adapters.** [`Gpu::open`] takes a real GPU by default. Software adapters (Mesa's
//!   lavapipe, device type `Cpu`) are slower than the CPU backend, so they are used only
//!   when asked for ([`AdapterChoice::AnyIncludingSoftware`]): the parity tests run on them.
//! - **Large volumes.** A volume larger than one storage binding (128 MiB by default) is
//!   processed in slabs of whole planes; a filter along z reads a halo of `radius` planes
//!   on each side of its slab, so slab borders are invisible in the result.
//! - **Parity.** Each op is checked against the CPU backend by `tests/resample_hessian.rs`
//!   and (reductions, labelling, morphology) `tests/gpu_labels.rs`.

use std::sync::mpsc;

use wgpu::util::DeviceExt;

use super::gpu_labels::mask_words;
use super::Dims;
use crate::error::{Error, Result};

/// Which adapters [`Gpu::open`] may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterChoice {
    /// A hardware GPU (integrated, discrete or virtual); never a software rasterizer.
    HardwareOnly,
    /// Any adapter, software ones (lavapipe) included: for tests.
    AnyIncludingSoftware,
}

const WORKGROUP: u32 = 64;
/// Workgroups per dispatch dimension allowed by WebGPU's default limits.
const MAX_GROUPS: u32 = 65_535;

/// An opened device with the compiled pipelines.
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    /// The largest storage binding, in bytes (tiling is sized to it).
    pub(super) max_binding: u64,
    convolve: wgpu::ComputePipeline,
    threshold: wgpu::ComputePipeline,
    histogram: wgpu::ComputePipeline,
    resample: wgpu::ComputePipeline,
    eigen3: wgpu::ComputePipeline,
    /// Reductions, morphology and labelling: [`super::gpu_labels`].
    pub(super) labels: super::gpu_labels::Pipelines,
}

pub(super) fn gpu_error(what: impl std::fmt::Display) -> Error {
    Error::Device(what.to_string())
}

impl Gpu {
    /// Open the first adapter that `choice` allows, or an error saying why there is none.
    pub fn open(choice: AdapterChoice) -> Result<Gpu> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        let adapter = adapters
            .into_iter()
            .filter(|a| {
                choice == AdapterChoice::AnyIncludingSoftware
                    || a.get_info().device_type != wgpu::DeviceType::Cpu
            })
            .min_by_key(|a| match a.get_info().device_type {
                wgpu::DeviceType::DiscreteGpu => 0,
                wgpu::DeviceType::IntegratedGpu => 1,
                wgpu::DeviceType::VirtualGpu => 2,
                wgpu::DeviceType::Other => 3,
                wgpu::DeviceType::Cpu => 4,
            })
            .ok_or_else(|| {
                gpu_error(match choice {
                    AdapterChoice::HardwareOnly => {
                        "no hardware GPU adapter (Vulkan, Metal or DX12)"
                    }
                    AdapterChoice::AnyIncludingSoftware => {
                        "no GPU adapter at all, not even a software one (install Mesa's \
                         lavapipe: Debian mesa-vulkan-drivers)"
                    }
                })
            })?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("medlake"),
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| gpu_error(format!("{}: {e}", info.name)))?;
        let pipeline = |name: &str, source: &str| {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(name),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(name),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let convolve = pipeline("convolve_axis", include_str!("shaders/convolve_axis.wgsl"));
        let threshold = pipeline("threshold", include_str!("shaders/threshold.wgsl"));
        let histogram = pipeline("histogram", include_str!("shaders/histogram.wgsl"));
        let resample = pipeline("resample", include_str!("shaders/resample.wgsl"));
        let eigen3 = pipeline("eigen3", include_str!("shaders/eigen3.wgsl"));
        let labels = super::gpu_labels::Pipelines::new(&pipeline);
        let max_binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        Ok(Gpu {
            device,
            queue,
            info,
            max_binding,
            convolve,
            threshold,
            histogram,
            resample,
            eigen3,
            labels,
        })
    }

    /// The adapter's name and type, e.g. "llvmpipe (LLVM 15.0.6, 256 bits) (Cpu)".
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?})",
            self.info.name, self.info.device_type, self.info.backend
        )
    }

    /// Whether this is a software adapter (lavapipe and the like).
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// The largest storage binding the ops use, in bytes (the device's, or less after
    /// [`Gpu::limit_binding`]): volumes and model activations are split to fit it.
    pub fn max_binding(&self) -> u64 {
        self.max_binding
    }

    /// The device's own largest storage binding (and buffer), whatever
    /// [`Gpu::limit_binding`] set: resident model weights must fit it.
    pub(crate) fn device_binding_limit(&self) -> u64 {
        let limits = self.device.limits();
        limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size)
    }

    /// The device, for the model runtime's kernels ([`crate::model`]).
    pub(crate) fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The device's queue, for the model runtime's kernels.
    pub(crate) fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// Use bindings of at most `bytes` (tests force slabs on small volumes with this).
    pub fn limit_binding(&mut self, bytes: u64) {
        self.max_binding = self.max_binding.min(bytes.max(1024));
    }

    pub(super) fn storage(&self, data: &[u8], label: &str) -> wgpu::Buffer {
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: data,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            })
    }

    pub(super) fn output(&self, bytes: u64, label: &str) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        })
    }

    pub(super) fn uniform(&self, words: &[u32]) -> wgpu::Buffer {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: &bytes,
                usage: wgpu::BufferUsages::UNIFORM,
            })
    }

    /// Dispatch `pipeline` over `invocations` threads with `buffers` bound in order; the
    /// row stride the shaders need is returned by `params` given the dispatch width.
    pub(super) fn run(
        &self,
        pipeline: &wgpu::ComputePipeline,
        invocations: u64,
        buffers: &[&wgpu::Buffer],
        params: impl FnOnce(u32) -> wgpu::Buffer,
    ) {
        let groups = invocations.div_ceil(u64::from(WORKGROUP)).max(1);
        let gx = groups.min(u64::from(MAX_GROUPS)) as u32;
        let gy = groups.div_ceil(u64::from(gx)) as u32;
        let params = params(gx * WORKGROUP);
        let layout = pipeline.get_bind_group_layout(0);
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
            resource: params.as_entire_binding(),
        });
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &layout,
            entries: &entries,
        });
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(gx, gy, 1);
        }
        self.queue.submit([encoder.finish()]);
    }

    /// Copy `bytes` bytes of `buffer` back to the host.
    pub(super) fn read(&self, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes.max(4));
        self.queue.submit([encoder.finish()]);
        let (tx, rx) = mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(gpu_error)?;
        rx.recv().map_err(gpu_error)?.map_err(gpu_error)?;
        let view = staging.get_mapped_range(..).map_err(gpu_error)?;
        let out = view[..bytes as usize].to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }

    /// As [`super::cpu::convolve_axis`].
    pub fn convolve_axis(
        &self,
        src: &[f32],
        dims: Dims,
        axis: usize,
        kernel: &[f32],
    ) -> Result<Vec<f32>> {
        let [nz, ny, nx] = dims;
        let plane = ny * nx;
        if src.is_empty() {
            return Ok(Vec::new());
        }
        let r = kernel.len() / 2;
        let halo = if axis == 0 { r } else { 0 };
        // Planes per slab: the input slab (with its halo) must fit one binding.
        let plane_bytes = (plane * 4) as u64;
        let fit = (self.max_binding / plane_bytes) as usize;
        if fit <= 2 * halo {
            return Err(gpu_error(format!(
                "a {ny}x{nx} plane with a {halo}-plane halo does not fit a {}-byte binding",
                self.max_binding
            )));
        }
        let slab = (fit - 2 * halo).min(nz);
        let reversed: Vec<f32> = kernel.iter().rev().copied().collect();
        let weights = self.storage(&f32_bytes(&reversed), "weights");
        let mut out = Vec::with_capacity(src.len());
        let mut z0 = 0;
        while z0 < nz {
            let z1 = (z0 + slab).min(nz);
            let (in0, in1) = (z0.saturating_sub(halo), (z1 + halo).min(nz));
            let input = self.storage(&f32_bytes(&src[in0 * plane..in1 * plane]), "slab");
            let bytes = ((z1 - z0) * plane * 4) as u64;
            let output = self.output(bytes, "filtered");
            self.run(
                &self.convolve,
                ((z1 - z0) * plane) as u64,
                &[&input, &output, &weights],
                |stride| {
                    self.uniform(&[
                        nx as u32,
                        ny as u32,
                        nz as u32,
                        axis as u32,
                        r as u32,
                        in0 as u32,
                        (in1 - in0) as u32,
                        z0 as u32,
                        (z1 - z0) as u32,
                        stride,
                        0,
                        0,
                    ])
                },
            );
            out.extend(bytes_f32(&self.read(&output, bytes)?));
            z0 = z1;
        }
        Ok(out)
    }

    /// Voxels per elementwise chunk: input and a 4-byte output each fit one binding.
    pub(super) fn chunk(&self) -> usize {
        (self.max_binding / 4) as usize
    }

    /// As [`super::cpu::threshold`].
    pub fn threshold(&self, src: &[f32], lo: f32, hi: f32) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(src.len());
        for part in src.chunks(self.chunk()) {
            let input = self.storage(&f32_bytes(part), "values");
            let bytes = (part.len() * 4) as u64;
            let output = self.output(bytes, "mask");
            self.run(
                &self.threshold,
                part.len() as u64,
                &[&input, &output],
                |stride| self.uniform(&[part.len() as u32, stride, lo.to_bits(), hi.to_bits()]),
            );
            let words = self.read(&output, bytes)?;
            out.extend(words.chunks_exact(4).map(|w| w[0]));
        }
        Ok(out)
    }

    /// As [`super::cpu::histogram`] without a mask.
    pub fn histogram(&self, src: &[f32], bins: usize, lo: f32, hi: f32) -> Result<Vec<u64>> {
        self.histogram_masked(src, None, bins, lo, hi)
    }

    /// As [`super::cpu::histogram`]: counts of the values where `mask` is set (all of them
    /// without one) in `bins` equal bins over `[lo, hi)`. The mask goes up as one word per
    /// voxel beside the values, so a chunk is as many voxels as without it.
    pub fn histogram_masked(
        &self,
        src: &[f32],
        mask: Option<&[u8]>,
        bins: usize,
        lo: f32,
        hi: f32,
    ) -> Result<Vec<u64>> {
        if let Some(m) = mask {
            assert_eq!(m.len(), src.len());
        }
        let scale = super::cpu::histogram_scale(bins, lo, hi);
        let placeholder = self.storage(&[0; 4], "no mask");
        let mut total = vec![0u64; bins];
        for start in (0..src.len()).step_by(self.chunk()) {
            let range = start..(start + self.chunk()).min(src.len());
            let input = self.storage(&f32_bytes(&src[range.clone()]), "values");
            let mask = mask.map(|m| self.storage(&mask_words(&m[range.clone()]), "mask"));
            let counts = self.storage(&vec![0u8; bins * 4], "counts");
            self.run(
                &self.histogram,
                range.len() as u64,
                &[&input, mask.as_ref().unwrap_or(&placeholder), &counts],
                |stride| {
                    self.uniform(&[
                        range.len() as u32,
                        stride,
                        bins as u32,
                        u32::from(mask.is_some()),
                        lo.to_bits(),
                        hi.to_bits(),
                        scale.to_bits(),
                        0,
                    ])
                },
            );
            let words = self.read(&counts, (bins * 4) as u64)?;
            for (t, w) in total.iter_mut().zip(bytes_u32(&words)) {
                *t += u64::from(w);
            }
        }
        Ok(total)
    }

    /// As [`super::resample::cpu`]: trilinear resampling as `plan` says. A volume past one
    /// binding goes in slabs of output planes, each with the input planes it reads; the
    /// sample tables (three words per output plane, row and column) are one small binding
    /// beside them.
    pub fn resample(
        &self,
        src: &[f32],
        dims: Dims,
        plan: &super::resample::Plan,
    ) -> Result<Vec<f32>> {
        let [nz, ny, nx] = dims;
        assert_eq!(src.len(), nz * ny * nx);
        let [mz, my, mx] = plan.dims;
        let (plane, mplane) = (ny * nx, my * mx);
        if mz * mplane == 0 {
            return Ok(Vec::new());
        }
        let words: Vec<u32> = plan
            .axes
            .iter()
            .flatten()
            .flat_map(|s| [s.i0 as u32, s.i1 as u32, s.w.to_bits()])
            .collect();
        let samples = self.storage(&u32_bytes(&words), "samples");
        let fits = |planes: usize, len: usize| (planes * len * 4) as u64 <= self.max_binding;
        let zs = &plan.axes[0];
        let mut out = Vec::with_capacity(mz * mplane);
        let mut z0 = 0;
        while z0 < mz {
            let in0 = zs[z0].i0;
            if !fits(zs[z0].i1 - in0 + 1, plane) || !fits(1, mplane) {
                return Err(gpu_error(format!(
                    "resampling {ny}x{nx} planes to {my}x{mx}: an output plane and the two \
                     input planes it reads do not fit a {}-byte binding",
                    self.max_binding
                )));
            }
            // Grow the slab while its output and the input planes it reads fit.
            let mut z1 = z0 + 1;
            while z1 < mz && fits(z1 + 1 - z0, mplane) && fits(zs[z1].i1 - in0 + 1, plane) {
                z1 += 1;
            }
            let in1 = zs[z1 - 1].i1 + 1;
            let input = self.storage(&f32_bytes(&src[in0 * plane..in1 * plane]), "slab");
            let bytes = ((z1 - z0) * mplane * 4) as u64;
            let output = self.output(bytes, "resampled");
            self.run(
                &self.resample,
                ((z1 - z0) * mplane) as u64,
                &[&input, &output, &samples],
                |stride| {
                    self.uniform(&[
                        nx as u32,
                        ny as u32,
                        mx as u32,
                        my as u32,
                        mz as u32,
                        z0 as u32,
                        (z1 - z0) as u32,
                        in0 as u32,
                        stride,
                        0,
                        0,
                        0,
                    ])
                },
            );
            out.extend(bytes_f32(&self.read(&output, bytes)?));
            z0 = z1;
        }
        Ok(out)
    }

    /// The eigenvalues, ascending, of each voxel's symmetric 3×3 matrix given as six
    /// volumes (hzz, hzy, hzx, hyy, hyx, hxx): as [`super::hessian::cpu_eigenvalues`],
    /// by Jacobi rotations in f32 (`shaders/eigen3.wgsl`). Elementwise, so chunks of
    /// voxels need no halo; a chunk's six inputs share one binding.
    pub fn symmetric_eigenvalues(&self, h: [&[f32]; 6]) -> Result<[Vec<f32>; 3]> {
        let n = h[0].len();
        assert!(h.iter().all(|v| v.len() == n));
        let chunk = (self.chunk() / 6).max(1);
        let mut out: [Vec<f32>; 3] = std::array::from_fn(|_| Vec::with_capacity(n));
        for start in (0..n).step_by(chunk) {
            let len = chunk.min(n - start);
            let bytes: Vec<u8> = h
                .iter()
                .flat_map(|v| f32_bytes(&v[start..start + len]))
                .collect();
            let input = self.storage(&bytes, "hessian");
            let out_bytes = (3 * len * 4) as u64;
            let output = self.output(out_bytes, "eigenvalues");
            self.run(&self.eigen3, len as u64, &[&input, &output], |stride| {
                self.uniform(&[len as u32, stride, 0, 0])
            });
            let values: Vec<f32> = bytes_f32(&self.read(&output, out_bytes)?).collect();
            for (o, part) in out.iter_mut().zip(values.chunks_exact(len)) {
                o.extend_from_slice(part);
            }
        }
        Ok(out)
    }
}

pub(super) fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(super) fn bytes_f32(b: &[u8]) -> impl Iterator<Item = f32> + '_ {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

pub(super) fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(super) fn bytes_u32(b: &[u8]) -> impl Iterator<Item = u32> + '_ {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}
