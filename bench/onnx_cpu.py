#!/usr/bin/env python3
"""ONNX models on the CPU: medlake's model runtime against ONNX Runtime, side by side.

Builds the test models of tests/oracle/onnx_models.py at the benchmark size (default 64^3:
the ResNet-18-style encoder `resnet3d`, the 3-D U-Net `unet3d`, and the SegResNet-style
block `segblock` at 8 channels; `groupnorm`, GroupNormalization-21 between convolutions at 12
channels, on request), saves them with one random input each, then times, for
each model and in alternation (ORT, medlake, ORT, medlake, ... --repeats rounds):

- ONNX Runtime's CPU provider: intra_op_num_threads = --threads (default 2), sequential
  execution, all graph optimizations; one warm-up, then --runs timed runs per round;
- medlake: `udfs/examples/model_cpu.rs` (a release build) on the same .onnx and .npy, one
  process per round (model loaded, one warm-up, --runs timed runs), RAYON_NUM_THREADS =
  --threads.

Each round gives each side the median of its runs; the table shows the median over the
rounds (seconds per volume, volumes/s, GFLOP/s from the Conv/ConvTranspose/Gemm/MatMul
multiply-adds that medlake's `Model::flops` counts) and medlake's throughput over ORT's.
The outputs are checked against each other (max abs difference / ORT's range).

    python3 bench/onnx_cpu.py [--size 64] [--models resnet3d,unet3d,segblock]
                              [--repeats 5] [--runs 5] [--threads 2] [--out DIR]
                              [--bin [LABEL=]PATH ...] [--json FILE]

Without --bin it runs `cargo build --release -p medlake-udfs --example model_cpu` first and
uses $CARGO_TARGET_DIR (or ./target)/release/examples/model_cpu. Several --bin (builds of
different commits, say) are all timed in the same alternation, one table row each.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_builders():
    spec = importlib.util.spec_from_file_location(
        "onnx_models", os.path.join(ROOT, "tests", "oracle", "onnx_models.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build_models(names, size):
    m = load_builders()
    table = {
        "resnet3d": lambda: m.resnet3d(size),
        "unet3d": lambda: m.unet3d(size),
        "segblock": lambda: m.segblock((1, 8, size, size, size)),
        "groupnorm": lambda: m.groupnorm((1, 12, size, size, size)),
    }
    return {n: table[n]() for n in names}


def medlake_binaries(args):
    """(label, path) of each medlake build to time."""
    if args.bin:
        return [tuple(b.split("=", 1)) if "=" in b else ("medlake", b) for b in args.bin]
    subprocess.run(["cargo", "build", "--release", "-p", "medlake-udfs", "--example", "model_cpu"],
                   cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return [("medlake", os.path.join(target, "release", "examples", "model_cpu"))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--models", default="resnet3d,unet3d,segblock")
    ap.add_argument("--repeats", type=int, default=5, help="alternating rounds")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per side per round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="directory for the models (default: a temporary one)")
    ap.add_argument("--bin", action="append", help="a model_cpu example binary, LABEL=PATH or PATH")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()

    out = args.out or tempfile.mkdtemp(prefix="medlake-onnx-bench-")
    os.makedirs(out, exist_ok=True)
    binaries = medlake_binaries(args)
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

    rows = []
    for name, (model, shape) in build_models(args.models.split(","), args.size).items():
        path = os.path.join(out, f"{name}.onnx")
        onnx.save(model, path)
        x = np.random.default_rng(1).normal(0, 1, shape).astype(np.float32)
        xpath = os.path.join(out, f"{name}.input.npy")
        np.save(xpath, x)
        ypath = os.path.join(out, f"{name}.medlake.npy")
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        want = sess.run(None, {"input": x})[0]  # warm-up
        ort_rounds, flops = [], None
        ml_rounds = {label: [] for label, _ in binaries}
        for r in range(args.repeats):
            times = []
            for _ in range(args.runs):
                t = time.perf_counter()
                sess.run(None, {"input": x})
                times.append(time.perf_counter() - t)
            ort_rounds.append(statistics.median(times))
            for label, binary in binaries:
                cmd = [binary, path, xpath, "--runs", str(args.runs)]
                if r == 0:
                    cmd += ["--out", f"{ypath}.{label}.npy"]
                res = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True,
                                                text=True).stdout)
                ml_rounds[label].append(res["median_s"])
                flops = res["flops"]
        o = statistics.median(ort_rounds)
        print(f"{name}: ORT {[round(t * 1e3, 1) for t in ort_rounds]} ms", file=sys.stderr)
        for label, _ in binaries:
            got = np.load(f"{ypath}.{label}.npy")
            rng = float(want.max() - want.min()) or 1.0
            err = float(np.abs(got.astype(np.float64) - want).max()) / rng
            m = statistics.median(ml_rounds[label])
            rows.append({
                "model": name, "medlake": label, "input": list(shape), "gflop": flops / 1e9,
                "ort_s": o, "medlake_s": m, "ort_rounds_s": ort_rounds,
                "medlake_rounds_s": ml_rounds[label], "ratio": o / m, "max_err_over_range": err,
            })
            print(f"  {label}: {[round(t * 1e3, 1) for t in ml_rounds[label]]} ms", file=sys.stderr)

    print(f"\nONNX models on the CPU, {args.threads} threads, medians of {args.repeats} alternating "
          f"rounds of {args.runs} runs (onnxruntime {ort.__version__})\n")
    several = len(binaries) > 1
    print(f"| model |{' medlake build |' if several else ''} input | GFLOP/volume | ORT vol/s | "
          "ORT GFLOP/s | medlake vol/s | medlake GFLOP/s | medlake / ORT | max err / range |")
    print(f"|---|{'---|' if several else ''}---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        build = f" {r['medlake']} |" if several else ""
        print(f"| {r['model']} |{build} {'x'.join(map(str, r['input']))} | {r['gflop']:.3f} | "
              f"{1 / r['ort_s']:.2f} | {r['gflop'] / r['ort_s']:.1f} | {1 / r['medlake_s']:.2f} | "
              f"{r['gflop'] / r['medlake_s']:.1f} | {r['ratio']:.2f} | {r['max_err_over_range']:.1e} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
