//! Time an ONNX model on the GPU (or CPU) backend of medlake's model runtime.
//!
//! ```text
//! cargo run --release -p medlake-udfs --example model_gpu -- <model.onnx> \
//!     [--size 64] [--runs 10] [--device gpu|cpu] [--any-adapter] [--check]
//! cargo run --release -p medlake-udfs --example model_gpu -- --resnet18 [--widths 64,128,256,512] ...
//! ```
//!
//! The input is 1 x 1 x size³ where the model leaves those dimensions free (declared ones
//! are kept). `--resnet18` builds a 3-D ResNet-18 (7³ stride-2 stem, BatchNorm, ReLU, max
//! pool, four stages of two basic blocks, global average pool, Gemm; random weights)
//! instead of loading a file. After one warm-up run (which also puts the weights on the
//! device), `--runs` runs are timed; printed: the device, the median seconds per volume,
//! volumes per second and the achieved GFLOP/s (2 per multiply-add of the convolutions
//! and matrix products, [`Model::flops`]). The GPU is a hardware adapter unless
//! `--any-adapter` allows a software one (lavapipe). `--check` compares the first run's
//! output with the CPU backend's.

use std::sync::Arc;
use std::time::Instant;

use medlake_udfs::model::{onnx, Model, Tensor};
use medlake_udfs::runtime::gpu::{AdapterChoice, Gpu};
use medlake_udfs::runtime::Backend;
use prost::Message;

fn usage() -> ! {
    eprintln!(
        "usage: model_gpu (<model.onnx> | --resnet18 [--widths 64,128,256,512]) [--size 64] \
         [--runs 10] [--device gpu|cpu] [--any-adapter] [--check]"
    );
    std::process::exit(2)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut path, mut resnet, mut widths) = (None, false, vec![64usize, 128, 256, 512]);
    let (mut size, mut runs, mut device, mut any) = (64usize, 10usize, "gpu".to_string(), false);
    let mut check = false;
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--size" => size = value().parse().unwrap_or_else(|_| usage()),
            "--runs" => runs = value().parse().unwrap_or_else(|_| usage()),
            "--device" => device = value(),
            "--any-adapter" => any = true,
            "--check" => check = true,
            "--resnet18" => resnet = true,
            "--widths" => {
                widths = value()
                    .split(',')
                    .map(|w| w.parse().unwrap_or_else(|_| usage()))
                    .collect();
                if widths.len() != 4 {
                    usage()
                }
            }
            "-h" | "--help" => usage(),
            p if !p.starts_with("--") && path.is_none() => path = Some(p.to_string()),
            _ => usage(),
        }
    }
    let model = match (&path, resnet) {
        (Some(p), false) => Model::load(std::path::Path::new(p)),
        (None, true) => Model::from_bytes(&resnet18(size, &widths)),
        _ => usage(),
    }
    .unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let backend = match device.as_str() {
        "cpu" => Backend::Cpu,
        "gpu" => {
            let choice = if any {
                AdapterChoice::AnyIncludingSoftware
            } else {
                AdapterChoice::HardwareOnly
            };
            match Gpu::open(choice) {
                Ok(g) => Backend::Gpu(Arc::new(g)),
                Err(e) => {
                    eprintln!("{e} (--any-adapter allows a software adapter)");
                    std::process::exit(1)
                }
            }
        }
        _ => usage(),
    };
    let input = &model.inputs()[0];
    let shape: Vec<usize> = input
        .dims
        .iter()
        .enumerate()
        .map(|(i, d)| d.unwrap_or(if i < 2 { 1 } else { size }))
        .collect();
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|i| ((i as f32) * 0.618_034).fract() - 0.5)
        .collect();
    let x = Tensor::new(shape.clone(), data).unwrap();
    let flops = model.flops(std::slice::from_ref(&shape)).unwrap();
    let memory = model.memory(std::slice::from_ref(&shape)).unwrap();
    println!("device: {}", backend.name());
    println!(
        "model: {} (input {shape:?}), {:.1} MB of weights, {:.3} GFLOP per volume",
        path.as_deref().unwrap_or("3-D ResNet-18 (random weights)"),
        memory.weight_bytes as f64 / 1e6,
        flops as f64 / 1e9
    );
    let t = Instant::now();
    let out = model.run_on(&backend, vec![x.clone()]).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    println!(
        "warm-up (first run, weights uploaded, pipelines compiled): {:.3} s; output {:?}",
        t.elapsed().as_secs_f64(),
        out[0].shape
    );
    if check {
        let t = Instant::now();
        let cpu = model.run(vec![x.clone()]).unwrap();
        let (lo, hi) = cpu[0]
            .data
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let worst = cpu[0]
            .data
            .iter()
            .zip(&out[0].data)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!(
            "check: worst difference from the CPU backend {worst:.3e}, {:.2e} of its output \
             range (CPU run {:.3} s)",
            worst / (hi - lo).max(1e-12),
            t.elapsed().as_secs_f64()
        );
    }
    let mut times: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let t = Instant::now();
            model.run_on(&backend, vec![x.clone()]).unwrap();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "median {median:.4} s per volume over {} runs (min {:.4}, max {:.4}); {:.2} volumes/s; \
         {:.1} GFLOP/s",
        times.len(),
        times[0],
        times[times.len() - 1],
        1.0 / median,
        flops as f64 / median / 1e9
    );
}

/// A 3-D ResNet-18 on a 1 x 1 x size³ input, serialized: as `tests/oracle/onnx_models.py`
/// builds `resnet3d`, at the given stage widths, random weights.
fn resnet18(size: usize, widths: &[usize]) -> Vec<u8> {
    struct B {
        nodes: Vec<onnx::NodeProto>,
        inits: Vec<onnx::TensorProto>,
        count: usize,
        seed: u64,
    }
    impl B {
        fn name(&mut self, p: &str) -> String {
            self.count += 1;
            format!("{p}_{}", self.count)
        }
        fn random(&mut self) -> f32 {
            // xorshift64*, uniform in [-1, 1).
            self.seed ^= self.seed >> 12;
            self.seed ^= self.seed << 25;
            self.seed ^= self.seed >> 27;
            let v = self.seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
            v as f32 / (1u64 << 23) as f32 - 1.0
        }
        fn init(&mut self, p: &str, dims: &[usize], f: impl Fn(f32) -> f32) -> String {
            let name = self.name(p);
            let n: usize = dims.iter().product();
            let data = (0..n).map(|_| f(self.random())).collect();
            self.inits.push(onnx::TensorProto {
                name: Some(name.clone()),
                dims: dims.iter().map(|&d| d as i64).collect(),
                data_type: Some(onnx::tensor_proto::DataType::Float as i32),
                float_data: data,
                ..Default::default()
            });
            name
        }
        fn node(
            &mut self,
            op: &str,
            inputs: Vec<String>,
            attrs: Vec<onnx::AttributeProto>,
        ) -> String {
            let out = self.name(&op.to_lowercase());
            self.nodes.push(onnx::NodeProto {
                name: Some(format!("{out}_node")),
                op_type: Some(op.into()),
                input: inputs,
                output: vec![out.clone()],
                attribute: attrs,
                ..Default::default()
            });
            out
        }
        fn conv(
            &mut self,
            x: String,
            cin: usize,
            cout: usize,
            k: usize,
            stride: usize,
            pad: usize,
        ) -> String {
            let scale = (6.0 / (cin * k * k * k) as f32).sqrt();
            let w = self.init("w", &[cout, cin, k, k, k], |r| r * scale);
            self.node(
                "Conv",
                vec![x, w],
                vec![
                    ints("kernel_shape", &[k; 3]),
                    ints("strides", &[stride; 3]),
                    ints("pads", &[pad; 6]),
                ],
            )
        }
        fn bn(&mut self, x: String, c: usize) -> String {
            let g = self.init("gamma", &[c], |r| 1.0 + 0.2 * r);
            let b = self.init("beta", &[c], |r| 0.1 * r);
            let m = self.init("mean", &[c], |r| 0.1 * r);
            let v = self.init("var", &[c], |r| 1.0 + 0.5 * r.abs());
            self.node("BatchNormalization", vec![x, g, b, m, v], vec![])
        }
    }
    fn ints(name: &str, v: &[usize]) -> onnx::AttributeProto {
        onnx::AttributeProto {
            name: Some(name.into()),
            r#type: Some(onnx::attribute_proto::AttributeType::Ints as i32),
            ints: v.iter().map(|&x| x as i64).collect(),
            ..Default::default()
        }
    }
    let mut b = B {
        nodes: Vec::new(),
        inits: Vec::new(),
        count: 0,
        seed: 0x9e37_79b9_7f4a_7c15,
    };
    let x = b.conv("input".into(), 1, widths[0], 7, 2, 3);
    let x = b.bn(x, widths[0]);
    let x = b.node("Relu", vec![x], vec![]);
    let mut x = b.node(
        "MaxPool",
        vec![x],
        vec![
            ints("kernel_shape", &[3; 3]),
            ints("strides", &[2; 3]),
            ints("pads", &[1; 6]),
        ],
    );
    let mut cin = widths[0];
    for (stage, &cout) in widths.iter().enumerate() {
        for block in 0..2 {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let y = b.conv(x.clone(), cin, cout, 3, stride, 1);
            let y = b.bn(y, cout);
            let y = b.node("Relu", vec![y], vec![]);
            let y = b.conv(y, cout, cout, 3, 1, 1);
            let y = b.bn(y, cout);
            if stride != 1 || cin != cout {
                let s = b.conv(x, cin, cout, 1, stride, 0);
                x = b.bn(s, cout);
            }
            let s = b.node("Add", vec![y, x], vec![]);
            x = b.node("Relu", vec![s], vec![]);
            cin = cout;
        }
    }
    let x = b.node("GlobalAveragePool", vec![x], vec![]);
    let x = b.node("Flatten", vec![x], vec![]);
    let scale = (1.0 / cin as f32).sqrt();
    let w = b.init("fc_w", &[10, cin], |r| r * scale);
    let bias = b.init("fc_b", &[10], |r| 0.1 * r);
    let t_b = onnx::AttributeProto {
        name: Some("transB".into()),
        r#type: Some(onnx::attribute_proto::AttributeType::Int as i32),
        i: Some(1),
        ..Default::default()
    };
    let out = b.node("Gemm", vec![x, w, bias], vec![t_b]);
    let value = |name: &str, dims: &[usize]| {
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
                                    value: Some(Value::DimValue(d as i64)),
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
    };
    onnx::ModelProto {
        ir_version: Some(8),
        opset_import: vec![onnx::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(onnx::GraphProto {
            name: Some("resnet18_3d".into()),
            node: b.nodes,
            initializer: b.inits,
            input: vec![value("input", &[1, 1, size, size, size])],
            output: vec![value(&out, &[1, 10])],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}
