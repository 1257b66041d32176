#!/usr/bin/env python3
"""Compute-runtime kernels: medlake (CPU, or wgpu) against scipy.ndimage, same volume.

Usage:
    python3 bench/ndimage_kernels.py [--dims 300,512,512] [--workdir /tmp/medlake-kernels]
        [--medlake-bin PATH] [--backend cpu|gpu|auto] [--scipy-runs 1]

The volume is a CT-like phantom in HU (float32, fixed seed): air (-1000), an elliptic
body (0) with two lungs (-850), 40 spherical nodules (+40, radius 2-8 voxels) and
Gaussian noise (sigma 15 HU). It is written once to WORKDIR/volume_Z_Y_X.f32 and read by
both sides.

Kernels (both sides use mode="nearest" borders; scipy's default "reflect" costs the same):
  * gaussian_laplace, sigma 2 voxels;
  * gaussian_filter, sigma 1 voxel;
  * threshold (>= -400 HU) then 6-connected labelling (scipy: `label(v >= -400)`).
scipy: each kernel --scipy-runs times, the best kept, in one Python process.
medlake: `target/release/examples/runtime_kernels VOLUME Z,Y,X BACKEND`, which reports
the best of 3 runs per kernel (volume already in memory on both sides). The component
counts of both sides must agree. Prints a Markdown table with the ratio scipy / medlake.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
from scipy import ndimage

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_BIN = os.path.join(
    os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/medlake/target")),
    "release", "examples", "runtime_kernels")


def phantom(dims, seed=7):
    nz, ny, nx = dims
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[:nz, :ny, :nx]
    v = np.full(dims, -1000.0, dtype=np.float32)
    body = ((y - ny / 2) / (0.4 * ny)) ** 2 + ((x - nx / 2) / (0.45 * nx)) ** 2 <= 1
    v[np.broadcast_to(body, dims)] = 0.0
    for cx in (0.3 * nx, 0.7 * nx):
        lung = ((y - 0.48 * ny) / (0.28 * ny)) ** 2 + ((x - cx) / (0.15 * nx)) ** 2 <= 1
        v[np.broadcast_to(lung, dims)] = -850.0
    for _ in range(40):
        c = rng.uniform([0, 0.3 * ny, 0.2 * nx], [nz, 0.7 * ny, 0.8 * nx])
        r = rng.uniform(2, 8)
        zs = slice(max(0, int(c[0] - r)), min(nz, int(c[0] + r) + 1))
        sub = v[zs]
        zz, yy, xx = np.ogrid[zs, :ny, :nx]
        sub[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r] = 40.0
    v += rng.normal(0, 15, dims).astype(np.float32)
    return v


def best(f, runs):
    times = []
    out = None
    for _ in range(runs):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return min(times), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dims", default="300,512,512")
    ap.add_argument("--workdir", default="/tmp/medlake-kernels")
    ap.add_argument("--medlake-bin", default=DEFAULT_BIN)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--scipy-runs", type=int, default=1)
    a = ap.parse_args()
    dims = tuple(int(d) for d in a.dims.split(","))
    os.makedirs(a.workdir, exist_ok=True)
    path = os.path.join(a.workdir, "volume_%d_%d_%d.f32" % dims)
    if os.path.exists(path):
        v = np.fromfile(path, dtype="<f4").reshape(dims)
    else:
        v = phantom(dims)
        v.astype("<f4").tofile(path)

    ours = json.loads(subprocess.run(
        [a.medlake_bin, path, a.dims, a.backend], check=True, capture_output=True, text=True
    ).stdout)

    t_log, _ = best(lambda: ndimage.gaussian_laplace(v, 2.0, mode="nearest"), a.scipy_runs)
    t_gauss, _ = best(lambda: ndimage.gaussian_filter(v, 1.0, mode="nearest"), a.scipy_runs)
    t_label, (_, n) = best(lambda: ndimage.label(v >= -400.0), a.scipy_runs)
    if n != ours["components"]:
        print(f"component counts differ: scipy {n}, medlake {ours['components']}", file=sys.stderr)
        sys.exit(1)

    print(f"# compute kernels on a {dims[0]}x{dims[1]}x{dims[2]} float32 volume "
          f"({v.nbytes / 2**20:.0f} MiB); {time.strftime('%Y-%m-%d %H:%M')}, nproc {os.cpu_count()}")
    print(f"# scipy {__import__('scipy').__version__}, numpy {np.__version__}; "
          f"medlake backend: {ours['backend']} ({ours['threads']} threads)\n")
    print("| kernel | scipy.ndimage s | medlake s | scipy / medlake |")
    print("|---|---:|---:|---:|")
    for name, theirs, key in [
        ("gaussian_laplace, sigma 2", t_log, "gaussian_laplace_sigma2"),
        ("gaussian_filter, sigma 1", t_gauss, "gaussian_filter_sigma1"),
        (f"threshold + label ({n} components)", t_label, "threshold_label"),
    ]:
        print(f"| {name} | {theirs:.3f} | {ours[key]:.3f} | {theirs / ours[key]:.2f}x |")


if __name__ == "__main__":
    main()
