#!/usr/bin/env python3
"""scipy.ndimage oracle for medlake's compute runtime (udfs/src/runtime).

Usage: python3 tests/oracle/ndimage_scipy.py --in VOLUME.f32 --dims Z,Y,X --out DIR
           [--sigma S] [--threshold LO,HI] [--bins N --range LO,HI]

VOLUME.f32 is Z*Y*X float32 little-endian values in C order (slice, row, column).
Writes, as numpy .npy files in DIR:

  gaussian.npy     gaussian_filter(v, S, mode="nearest")                    float32
  d_z.npy, d_y.npy, d_x.npy
                   gaussian_filter(v, S, order=e_axis, mode="nearest"): the
                   first derivative along one axis                           float32
  dd_x.npy         gaussian_filter(v, S, order=(0, 0, 2), mode="nearest")  float32
  log.npy          gaussian_laplace(v, S, mode="nearest")                    float32
  mask.npy         LO <= v <= HI                                            uint8
  labels.npy       label(mask) (default structure: the 6 face neighbours),
                   numbers as scipy gives them                              int32
  eroded.npy, dilated.npy, filled.npy
                   binary_erosion / binary_dilation / binary_fill_holes of
                   mask with the default structure (border_value=0)         uint8
  histogram.npy    numpy.histogram(v, N, range=(LO, HI)) counts, except that
                   a value equal to HI is not counted (half-open last bin)  int64

scipy computes in float64 internally and rounds to float32 at the end, so a
float32 implementation agrees to rounding (the Rust test allows 1e-4 of the
value range), not bit for bit.  Only numpy and scipy are used.
"""

import argparse
import os

import numpy as np
from scipy import ndimage


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--in", dest="src", required=True)
    ap.add_argument("--dims", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--sigma", type=float, default=2.0)
    ap.add_argument("--threshold", default="0,1")
    ap.add_argument("--bins", type=int, default=16)
    ap.add_argument("--range", default="0,1")
    a = ap.parse_args()
    dims = tuple(int(x) for x in a.dims.split(","))
    v = np.fromfile(a.src, dtype="<f4").reshape(dims)
    s = a.sigma
    out = lambda name, arr: np.save(os.path.join(a.out, name), arr)
    out("gaussian.npy", ndimage.gaussian_filter(v, s, mode="nearest").astype(np.float32))
    for axis, name in enumerate(["d_z", "d_y", "d_x"]):
        order = [0, 0, 0]
        order[axis] = 1
        out(f"{name}.npy", ndimage.gaussian_filter(v, s, order=order, mode="nearest").astype(np.float32))
    out("dd_x.npy", ndimage.gaussian_filter(v, s, order=(0, 0, 2), mode="nearest").astype(np.float32))
    out("log.npy", ndimage.gaussian_laplace(v, s, mode="nearest").astype(np.float32))
    lo, hi = (float(x) for x in a.threshold.split(","))
    mask = (v >= lo) & (v <= hi)
    out("mask.npy", mask.astype(np.uint8))
    labels, _ = ndimage.label(mask)
    out("labels.npy", labels.astype(np.int32))
    out("eroded.npy", ndimage.binary_erosion(mask).astype(np.uint8))
    out("dilated.npy", ndimage.binary_dilation(mask).astype(np.uint8))
    out("filled.npy", ndimage.binary_fill_holes(mask).astype(np.uint8))
    hlo, hhi = (float(x) for x in a.range.split(","))
    inside = v[(v >= hlo) & (v < hhi)]
    counts, _ = np.histogram(inside, a.bins, range=(hlo, hhi))
    out("histogram.npy", counts.astype(np.int64))


if __name__ == "__main__":
    main()
