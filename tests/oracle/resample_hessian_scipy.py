#!/usr/bin/env python3
"""scipy oracle for medlake's trilinear resampling and Hessian eigenvalues
(udfs/src/runtime/resample.rs and hessian.rs; udfs/tests/resample_hessian.rs runs it).

Usage: python3 tests/oracle/resample_hessian_scipy.py --in VOLUME.f32 --dims Z,Y,X
           --out DIR [--resample SZ,SY,SX:TZ,TY,TX ...] [--sigma SZ,SY,SX ...]

VOLUME.f32 is Z*Y*X float32 little-endian values in C order (slice, row, column).
Writes, as numpy .npy files in DIR, for the k-th --resample (k = 0, 1, ...):

  resample_k.npy   the volume of spacing S resampled to spacing T: along each
                   axis floor((n - 1) * S / T + 1e-9) + 1 voxels, voxel i at
                   input coordinate i * T / S, by
                   map_coordinates(v, coords, order=1, mode="nearest"); checked
                   here against affine_transform(v, diag(T / S), order=1,
                   mode="nearest") on the same output shape                 float32

and for the k-th --sigma:

  hessian_k.npy    shape (3, Z, Y, X): the eigenvalues, ascending, of each
                   voxel's Hessian [[zz, zy, zx], [zy, yy, yx], [zx, yx, xx]],
                   each second derivative gaussian_filter(v, sigma,
                   order=..., mode="nearest") (float32, as scipy returns for
                   float32 input), by numpy.linalg.eigvalsh in float64       float64

Only numpy and scipy are used.
"""

import argparse
import os

import numpy as np
from scipy import ndimage

# (order, (row, column)) of the six second derivatives.
DERIVATIVES = [
    ((2, 0, 0), (0, 0)),
    ((1, 1, 0), (0, 1)),
    ((1, 0, 1), (0, 2)),
    ((0, 2, 0), (1, 1)),
    ((0, 1, 1), (1, 2)),
    ((0, 0, 2), (2, 2)),
]


def triple(text):
    values = tuple(float(x) for x in text.split(","))
    assert len(values) == 3, text
    return values


def resample(v, spacing, target):
    step = np.array(target) / np.array(spacing)
    shape = tuple(int(np.floor((n - 1) * s / t + 1e-9)) + 1 for n, s, t in zip(v.shape, spacing, target))
    coords = np.meshgrid(*(np.arange(m) * f for m, f in zip(shape, step)), indexing="ij")
    out = ndimage.map_coordinates(v, np.stack(coords), order=1, mode="nearest")
    check = ndimage.affine_transform(v, np.diag(step), output_shape=shape, order=1, mode="nearest")
    span = float(v.max() - v.min())
    assert np.abs(out.astype(np.float64) - check).max() <= 1e-6 * span, "map_coordinates != affine_transform"
    return out.astype(np.float32)


def hessian_eigenvalues(v, sigma):
    h = np.empty(v.shape + (3, 3), dtype=np.float64)
    for order, (r, c) in DERIVATIVES:
        d = ndimage.gaussian_filter(v, sigma, order=order, mode="nearest")
        assert d.dtype == np.float32
        h[..., r, c] = d
        h[..., c, r] = d
    return np.moveaxis(np.linalg.eigvalsh(h), -1, 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--in", dest="src", required=True)
    ap.add_argument("--dims", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--resample", action="append", default=[])
    ap.add_argument("--sigma", action="append", default=[])
    a = ap.parse_args()
    dims = tuple(int(x) for x in a.dims.split(","))
    v = np.fromfile(a.src, dtype="<f4").reshape(dims)
    for k, case in enumerate(a.resample):
        spacing, target = (triple(x) for x in case.split(":"))
        np.save(os.path.join(a.out, f"resample_{k}.npy"), resample(v, spacing, target))
    for k, sigma in enumerate(a.sigma):
        np.save(os.path.join(a.out, f"hessian_{k}.npy"), hessian_eigenvalues(v, triple(sigma)))


if __name__ == "__main__":
    main()
