"""ONNX test models for medlake's model runtime, and onnxruntime's outputs for them.

Builds each model with the `onnx` package from fixed seeds and random weights, saves
`<name>.onnx`, an input `<name>.input.npy` and onnxruntime's (CPU provider) output
`<name>.output.npy` into --out, and onnxruntime's median run time in `<name>.ort.json`.

    python3 tests/oracle/onnx_models.py --out DIR [--size 64] [--runs 5]

Models:
- `resnet3d`: a 3-D ResNet-18-style encoder (7^3 stride-2 stem, BatchNorm, ReLU, 3^3
  stride-2 max pool, four stages of two basic blocks, 1^3 strided projections, global
  average pooling, Flatten, Gemm), on a 1x1xS^3 input (S = --size).
- `convnet`: a small net over an input of unequal sides: dilated, grouped, strided and
  asymmetrically padded convolutions, LeakyReLU, Sigmoid, Concat, broadcast Mul and Add,
  MaxPool, AveragePool with and without count_include_pad, GlobalAveragePool, Reshape,
  MatMul and Softmax.
- `segblock`: a MONAI-SegResNet-style residual block with GroupNorm as exported before
  opset 18, PRelu and InstanceNormalization.
- `unet3d`: a small 3-D U-Net on a 1x1xS^3 input (S = --size, a multiple of 4): Conv+BatchNorm+ReLU blocks, two
  MaxPool levels down; up by a stride-2 ConvTranspose on the lower level and by a
  trilinear Resize (pytorch_half_pixel, as PyTorch exports align_corners=False) and a
  Conv on the upper one; skip Concats; a 1^3 Conv head.
- `convtranspose`: grouped, dilated ConvTranspose with unequal strides, asymmetric pads
  and output_padding over an input of unequal sides, then Resize: nearest (asymmetric,
  floor, as PyTorch exports nn.Upsample(mode='nearest')) by non-integer scales, linear
  with align_corners to given sizes, linear half_pixel; and a plain ConvTranspose.
- `resize`: a chain of Resize nodes through every supported nearest_mode and
  coordinate_transformation_mode, by scales and by sizes, up and down.
- `upsample`: Upsample (opset 9), nearest and linear.
- `bigpool`: pooling windows of thousands of taps (a whole-grid MaxPool, padded strided
  AveragePools with and without count_include_pad, a dilated MaxPool), which the GPU
  path runs axis by axis.
- `convdirect`: convolutions over rows 16 to 40 wide (medlake's im2col-free AVX-512
  path): row widths not multiples of 16, strides, dilation, asymmetric pads, groups,
  pointwise with and without stride, BatchNorm and activations fused.
- `groupnorm18`, `groupnorm21`: GroupNormalization between convolutions, opset 18 (scale
  and bias per group) and opset 21 (per channel, stash_type).
"""

import argparse
import json
import os
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class Builder:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes = []
        self.inits = []
        self.count = 0

    def name(self, prefix):
        self.count += 1
        return f"{prefix}_{self.count}"

    def init(self, prefix, array):
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op, inputs, **attrs):
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out + "_node", **attrs))
        return out

    def conv(self, x, cin, cout, k, stride=1, pad=None, dilation=1, group=1, bias=True, pads=None):
        fan_in = cin // group * k**3
        w = self.rng.normal(0, np.sqrt(2.0 / fan_in), (cout, cin // group, k, k, k)).astype(np.float32)
        inputs = [x, self.init("w", w)]
        if bias:
            inputs.append(self.init("b", self.rng.normal(0, 0.1, cout).astype(np.float32)))
        if pads is None:
            p = (k // 2) * dilation if pad is None else pad
            pads = [p] * 6
        strides = list(stride) if isinstance(stride, (list, tuple)) else [stride] * 3
        return self.node(
            "Conv", inputs, kernel_shape=[k] * 3, strides=strides, pads=pads,
            dilations=[dilation] * 3, group=group,
        )

    def bn(self, x, c):
        r = self.rng
        scale = self.init("gamma", r.uniform(0.5, 1.5, c).astype(np.float32))
        shift = self.init("beta", r.normal(0, 0.1, c).astype(np.float32))
        mean = self.init("mean", r.normal(0, 0.1, c).astype(np.float32))
        var = self.init("var", r.uniform(0.5, 1.5, c).astype(np.float32))
        return self.node("BatchNormalization", [x, scale, shift, mean, var], epsilon=1e-5)

    def model(self, name, input_shape, output, output_shape, opset=OPSET, ir_version=8):
        if output_shape is None:
            output_shape = [f"out{i}" for i in range(len(input_shape))]
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, input_shape)],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, output_shape)],
            self.inits,
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = ir_version
        if not (opset == 18 and any(n.op_type == "GroupNormalization" for n in self.nodes)):
            # onnx's checker refuses GroupNormalization-18 (deprecated by 21); onnxruntime
            # still runs it.
            onnx.checker.check_model(m)
        return m


def resnet3d(size):
    b = Builder(18)
    widths = [16, 32, 64, 128]
    x = b.conv("input", 1, widths[0], 7, stride=2, pad=3, bias=False)
    x = b.node("Relu", [b.bn(x, widths[0])])
    x = b.node("MaxPool", [x], kernel_shape=[3, 3, 3], strides=[2, 2, 2], pads=[1] * 6)
    cin = widths[0]
    for stage, cout in enumerate(widths):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            y = b.node("Relu", [b.bn(b.conv(x, cin, cout, 3, stride=stride, bias=False), cout)])
            y = b.bn(b.conv(y, cout, cout, 3, bias=False), cout)
            if stride != 1 or cin != cout:
                x = b.bn(b.conv(x, cin, cout, 1, stride=stride, pad=0, bias=False), cout)
            x = b.node("Relu", [b.node("Add", [y, x])])
            cin = cout
    x = b.node("GlobalAveragePool", [x])
    x = b.node("Flatten", [x], axis=1)
    w = b.init("fc_w", b.rng.normal(0, np.sqrt(1.0 / cin), (10, cin)).astype(np.float32))
    bias = b.init("fc_b", b.rng.normal(0, 0.1, 10).astype(np.float32))
    x = b.node("Gemm", [x, w, bias], transB=1, alpha=1.0, beta=1.0)
    return b.model("resnet3d", [1, 1, size, size, size], x, [1, 10]), (1, 1, size, size, size)


def convnet():
    b = Builder(7)
    shape = (2, 2, 12, 14, 10)
    a = b.node("LeakyRelu", [b.conv("input", 2, 6, 3)], alpha=0.1)
    d = b.node("Sigmoid", [b.conv("input", 2, 4, 3, dilation=2, pads=[1, 3, 3, 3, 1, 1])])
    d = b.node("Sigmoid", [b.conv(d, 4, 4, 1, pad=0)])
    g = b.node("Relu", [b.conv(a, 6, 6, 3, group=3, bias=False)])
    x = b.node("Concat", [a, d, g], axis=1)  # 16 channels
    scale = b.init("scale", b.rng.uniform(0.5, 2.0, (1, 16, 1, 1, 1)).astype(np.float32))
    x = b.node("Mul", [x, scale])
    x = b.node("Add", [x, b.init("shift", b.rng.normal(0, 0.2, (1, 16, 1, 1, 1)).astype(np.float32))])
    x = b.node("MaxPool", [x], kernel_shape=[2, 2, 2], strides=[2, 2, 2])  # 6x7x5
    p = b.node("AveragePool", [x], kernel_shape=[3, 3, 3], strides=[1, 1, 1], pads=[1] * 6, count_include_pad=1)
    q = b.node("AveragePool", [x], kernel_shape=[3, 2, 3], strides=[1, 2, 1], pads=[1, 0, 1, 1, 1, 1], count_include_pad=0)
    x = b.node("Concat", [b.node("Add", [p, x]), q], axis=3)  # rows: 6x7x5 and 6x4x5
    x = b.conv(x, 16, 8, 3, stride=(2, 1, 2))
    x = b.node("Relu", [x])
    x = b.node("GlobalAveragePool", [x])
    x = b.node("Reshape", [x, b.init("shape", np.array([0, -1], dtype=np.int64))])
    w = b.init("mm_w", b.rng.normal(0, 0.5, (8, 5)).astype(np.float32))
    x = b.node("Add", [b.node("MatMul", [x, w]), b.init("mm_b", b.rng.normal(0, 0.1, 5).astype(np.float32))])
    x = b.node("Softmax", [x], axis=-1)
    return b.model("convnet", list(shape), x, [2, 5]), shape


def segblock(shape=(1, 8, 12, 10, 14)):
    """A MONAI-SegResNet-style residual block: GroupNorm as PyTorch exports it before opset
    18 (Reshape, InstanceNormalization, Reshape, Mul, Add), PRelu, convolutions,
    InstanceNormalization with its own scale and bias, a skip Add. `shape`: the input (N, 8,
    D, H, W); the benchmark runs it at 64^3."""
    b = Builder(11)
    c, groups = shape[1], 4
    x = b.node("Reshape", ["input", b.init("groups", np.array([0, groups, -1], dtype=np.int64))])
    x = b.node("InstanceNormalization", [x, b.init("ones", np.ones(groups, np.float32)),
                                         b.init("zeros", np.zeros(groups, np.float32))], epsilon=1e-5)
    x = b.node("Reshape", [x, b.init("back", np.array(shape, dtype=np.int64))])
    x = b.node("Mul", [x, b.init("gn_gamma", b.rng.uniform(0.5, 1.5, (c, 1, 1, 1)).astype(np.float32))])
    x = b.node("Add", [x, b.init("gn_beta", b.rng.normal(0, 0.2, (c, 1, 1, 1)).astype(np.float32))])
    x = b.node("PRelu", [x, b.init("slope", b.rng.uniform(0.05, 0.3, (c, 1, 1, 1)).astype(np.float32))])
    x = b.conv(x, c, c, 3)
    x = b.node("InstanceNormalization", [x, b.init("in_scale", b.rng.uniform(0.5, 1.5, c).astype(np.float32)),
                                         b.init("in_bias", b.rng.normal(0, 0.2, c).astype(np.float32))], epsilon=1e-5)
    x = b.node("Relu", [x])
    x = b.conv(x, c, c, 3)
    x = b.node("Add", [x, "input"])
    return b.model("segblock", list(shape), x, list(shape)), shape


def unet3d(size=32):
    b = Builder(3)
    shape = (1, 1, size, size, size)

    def block(x, cin, cout):
        x = b.node("Relu", [b.bn(b.conv(x, cin, cout, 3, bias=False), cout)])
        return b.node("Relu", [b.bn(b.conv(x, cout, cout, 3, bias=False), cout)])

    e1 = block("input", 1, 8)  # size^3
    e2 = block(b.node("MaxPool", [e1], kernel_shape=[2] * 3, strides=[2] * 3), 8, 16)  # (size/2)^3
    bott = block(b.node("MaxPool", [e2], kernel_shape=[2] * 3, strides=[2] * 3), 16, 32)  # (size/4)^3
    w = b.rng.normal(0, np.sqrt(1.0 / 32), (32, 16, 2, 2, 2)).astype(np.float32)
    up = b.node("ConvTranspose", [bott, b.init("wt", w), b.init("bt", b.rng.normal(0, 0.1, 16).astype(np.float32))],
                kernel_shape=[2] * 3, strides=[2] * 3)
    d2 = block(b.node("Concat", [up, e2], axis=1), 32, 16)  # (size/2)^3
    scales = b.init("scales", np.array([1, 1, 2, 2, 2], dtype=np.float32))
    up = b.node("Resize", [d2, "", scales], mode="linear", coordinate_transformation_mode="pytorch_half_pixel")
    up = b.conv(up, 16, 8, 3)
    d1 = block(b.node("Concat", [up, e1], axis=1), 16, 8)  # size^3
    x = b.conv(d1, 8, 2, 1, pad=0)
    return b.model("unet3d", list(shape), x, [1, 2, size, size, size]), shape


def convdirect():
    """Convolutions over rows 16 to 40 wide, which medlake's AVX-512 path computes from
    padded input lines (no im2col): row widths that are not multiples of 16 (masked
    half-panels), strides along x (stride phases), dilation, asymmetric pads, groups,
    pointwise with and without stride, channel counts that are not multiples of 8, and
    BatchNormalization and LeakyRelu/Relu fused into the convolution."""
    b = Builder(13)
    shape = (2, 4, 9, 11, 37)
    x = b.node("LeakyRelu", [b.bn(b.conv("input", 4, 12, 3), 12)], alpha=0.2)  # 37 wide
    z = b.conv(x, 12, 5, 1, pad=0)  # pointwise, 37 wide, 5 channels
    y = b.conv(z, 5, 6, 3, stride=(1, 2, 2), dilation=2, pads=[2, 1, 3, 2, 3, 1])  # 19 wide
    y = b.node("Relu", [y])
    w = b.conv(x, 12, 6, 1, stride=(1, 2, 2), pad=0, group=3, bias=False)  # strided pointwise
    x = b.node("Concat", [y, b.node("Add", [w, b.conv(y, 6, 6, 3, pad=1)])], axis=1)
    return b.model("convdirect", list(shape), x, None), shape


def groupnorm(shape=(2, 12, 6, 7, 5), opset=21):
    """GroupNormalization, the opset-18 op: opset 21 (scale and bias per channel, with
    stash_type) or opset 18 (per group), between convolutions, LeakyReLU after."""
    b = Builder(21 + opset)
    c = shape[1]
    x = b.conv("input", c, c, 3)
    groups = 3 if opset >= 21 else 4
    n = c if opset >= 21 else groups
    attrs = {"stash_type": 1} if opset >= 21 else {}
    x = b.node("GroupNormalization", [x, b.init("gn_scale", b.rng.uniform(0.5, 1.5, n).astype(np.float32)),
                                      b.init("gn_bias", b.rng.normal(0, 0.2, n).astype(np.float32))],
               epsilon=1e-5, num_groups=groups, **attrs)
    x = b.node("LeakyRelu", [x], alpha=0.05)
    x = b.conv(x, c, 4, 1, pad=0)
    m = b.model(f"groupnorm{opset}", list(shape), x, None, opset=opset,
                ir_version=10 if opset >= 21 else 8)
    return m, shape


def convtranspose():
    b = Builder(5)
    shape = (2, 4, 5, 6, 7)
    w = b.rng.normal(0, 0.3, (4, 3, 3, 2, 3)).astype(np.float32)  # group 2: 6 outputs
    x = b.node("ConvTranspose", ["input", b.init("w", w), b.init("b", b.rng.normal(0, 0.1, 6).astype(np.float32))],
               kernel_shape=[3, 2, 3], strides=[2, 3, 1], pads=[1, 0, 2, 0, 1, 1],
               output_padding=[1, 2, 0], dilations=[1, 1, 2], group=2)
    x = b.node("Relu", [x])
    near = b.node("Resize", [x, "", b.init("s_near", np.array([1, 1, 1.5, 0.5, 1.7], dtype=np.float32))],
                  mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    corners = b.node("Resize", [near, "", "", b.init("sizes", np.array([2, 6, 9, 13, 11], dtype=np.int64))],
                     mode="linear", coordinate_transformation_mode="align_corners")
    half = b.node("Resize", [corners, "", b.init("s_half", np.array([1, 1, 0.8, 1.5, 1.25], dtype=np.float32))],
                  mode="linear", coordinate_transformation_mode="half_pixel")
    w2 = b.rng.normal(0, 0.3, (6, 2, 2, 2, 2)).astype(np.float32)
    x = b.node("ConvTranspose", [half, b.init("w2", w2)], kernel_shape=[2, 2, 2], strides=[2, 2, 2])
    return b.model("convtranspose", list(shape), x, [2, 2, 14, 38, 26]), shape


def resize():
    b = Builder(9)
    shape = (1, 2, 5, 6, 7)

    def resize(x, mode, coord, scales=None, sizes=None, **attrs):
        ins = [x, "", b.init("scales", np.array(scales, dtype=np.float32)) if scales else ""]
        if sizes:
            ins.append(b.init("sizes", np.array(sizes, dtype=np.int64)))
        return b.node("Resize", ins, mode=mode, coordinate_transformation_mode=coord, **attrs)

    x = resize("input", "nearest", "half_pixel", scales=[1, 1, 2, 1.5, 0.6])  # round_prefer_floor
    x = resize(x, "nearest", "asymmetric", sizes=[1, 2, 7, 11, 9], nearest_mode="round_prefer_ceil")
    x = resize(x, "nearest", "align_corners", scales=[1, 1, 1.5, 0.7, 2], nearest_mode="ceil")
    x = resize(x, "nearest", "pytorch_half_pixel", scales=[1, 1, 0.5, 1.3, 0.75], nearest_mode="floor")
    x = resize(x, "linear", "asymmetric", scales=[1, 1, 2.5, 1.5, 1.2])
    x = resize(x, "linear", "pytorch_half_pixel", sizes=[1, 2, 4, 9, 8])
    return b.model("resize", list(shape), x, None), shape


def upsample():
    b = Builder(10)
    shape = (1, 2, 4, 5, 6)
    x = b.node("Upsample", ["input", b.init("s1", np.array([1, 1, 2, 2, 3], dtype=np.float32))], mode="nearest")
    x = b.node("Upsample", [x, b.init("s2", np.array([1, 1, 1.5, 2, 1], dtype=np.float32))], mode="linear")
    return b.model("upsample", list(shape), x, None, opset=9), shape


def bigpool():
    """Pooling windows large enough that the GPU path runs them axis by axis: a whole-grid
    MaxPool (a global max, as the built-in embedding model uses), a padded, strided
    AveragePool with and without count_include_pad, and a dilated MaxPool; concatenated
    after flattening."""
    b = Builder(12)
    shape = (1, 3, 24, 28, 30)
    g = b.node("MaxPool", ["input"], kernel_shape=[24, 28, 30])
    a1 = b.node("AveragePool", ["input"], kernel_shape=[9, 11, 10], strides=[4, 5, 6],
                pads=[2, 3, 1, 4, 0, 2], count_include_pad=1)
    a0 = b.node("AveragePool", ["input"], kernel_shape=[9, 11, 10], strides=[4, 5, 6],
                pads=[2, 3, 1, 4, 0, 2], count_include_pad=0)
    m = b.node("MaxPool", ["input"], kernel_shape=[8, 9, 10], strides=[3, 3, 3],
               pads=[1, 2, 3, 1, 2, 3], dilations=[2, 2, 2])
    flat = [b.node("Flatten", [t], axis=1) for t in (g, a1, a0, m)]
    x = b.node("Concat", flat, axis=1)
    return b.model("bigpool", list(shape), x, [1, "n"]), shape


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=64, help="resnet3d and unet3d input side")
    ap.add_argument("--runs", type=int, default=5, help="onnxruntime timing runs")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = os.cpu_count() or 1
    models = {"resnet3d": resnet3d(args.size), "convnet": convnet(), "segblock": segblock(),
              "unet3d": unet3d(args.size), "convtranspose": convtranspose(), "resize": resize(),
              "upsample": upsample(), "groupnorm18": groupnorm(opset=18),
              "groupnorm21": groupnorm(opset=21), "convdirect": convdirect(),
              "bigpool": bigpool()}
    for name, (model, shape) in models.items():
        path = os.path.join(args.out, f"{name}.onnx")
        onnx.save(model, path)
        x = np.random.default_rng(1).normal(0, 1, shape).astype(np.float32)
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        y = sess.run(None, {"input": x})[0]
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            sess.run(None, {"input": x})
            times.append(time.perf_counter() - t)
        np.save(os.path.join(args.out, f"{name}.input.npy"), x)
        np.save(os.path.join(args.out, f"{name}.output.npy"), y.astype(np.float32))
        with open(os.path.join(args.out, f"{name}.ort.json"), "w") as f:
            json.dump({"median_s": float(np.median(times)), "threads": opts.intra_op_num_threads,
                       "onnxruntime": ort.__version__}, f)


if __name__ == "__main__":
    main()
