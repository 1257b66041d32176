#!/usr/bin/env python3
"""The GPU peer for medlake's wgpu model runtime: the same 3-D ResNet-18 in PyTorch.

    python3 bench/torch_resnet3d.py [--size 64] [--batch 1] [--runs 20] [--widths 64,128,256,512]

The network is the one `udfs/examples/model_gpu.rs --resnet18` builds (7^3 stride-2 stem,
BatchNorm, ReLU, 3^3 stride-2 max pool, four stages of two basic blocks with 1^3 strided
projections, global average pooling, a 10-way linear layer), in eval mode, float32 with
TF32 off (so cuDNN does the same arithmetic class as the WGSL kernels), on CUDA. After
three warm-ups, `--runs` timed forward passes (synchronized); prints one JSON line: the
device, median seconds per batch, volumes/s and GFLOP/s counted as medlake counts them
(2 per multiply-add of the convolutions and the linear layer).
"""

import argparse
import json
import time

import torch
import torch.nn as nn


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv3d(cin, cout, 3, stride, 1)
        self.b1 = nn.BatchNorm3d(cout)
        self.c2 = nn.Conv3d(cout, cout, 3, 1, 1)
        self.b2 = nn.BatchNorm3d(cout)
        self.proj = None
        if stride != 1 or cin != cout:
            self.proj = nn.Sequential(nn.Conv3d(cin, cout, 1, stride, 0), nn.BatchNorm3d(cout))

    def forward(self, x):
        y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
        return torch.relu(y + (self.proj(x) if self.proj is not None else x))


def resnet18(widths):
    layers = [nn.Conv3d(1, widths[0], 7, 2, 3), nn.BatchNorm3d(widths[0]), nn.ReLU(), nn.MaxPool3d(3, 2, 1)]
    cin = widths[0]
    for stage, cout in enumerate(widths):
        for block in range(2):
            layers.append(Block(cin, cout, 2 if stage > 0 and block == 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(cin, 10)]
    return nn.Sequential(*layers)


def flops(model, x):
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.Conv3d):
            total += 2 * out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1] * m.kernel_size[2]
        elif isinstance(m, nn.Linear):
            total += 2 * out.numel() * m.in_features

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv3d, nn.Linear))]
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--widths", default="64,128,256,512")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    model = resnet18([int(w) for w in args.widths.split(",")]).to(dev).eval()
    x = torch.randn(args.batch, 1, args.size, args.size, args.size, device=dev)
    f = flops(model, x)
    times = []
    with torch.no_grad():
        for _ in range(3):
            model(x)
        torch.cuda.synchronize()
        for _ in range(args.runs):
            t = time.perf_counter()
            model(x)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    times.sort()
    med = times[len(times) // 2]
    print(json.dumps({
        "peer": f"pytorch {torch.__version__} cudnn {torch.backends.cudnn.version()} fp32 (no TF32)",
        "device": torch.cuda.get_device_name(0), "size": args.size, "batch": args.batch,
        "gflop_per_batch": f / 1e9, "median_s": med, "volumes_per_s": args.batch / med,
        "gflop_per_s": f / med / 1e9,
    }))


if __name__ == "__main__":
    main()
