#!/usr/bin/env python3
"""Header oracle: what pydicom makes of every file under a folder.

Usage: python3 tests/oracle/pydicom_headers.py [--summary] <root_dir>

Walks <root_dir> recursively (sorted by name, regular files only, symlinks are
neither followed nor reported) and prints one JSON object per file (JSONL):

  {"path": "<relative to root_dir, '/'-separated>", "ok": true,
   "SOPInstanceUID": str, "SOPClassUID": str|null, "Modality": str|null,
   "PatientID": str|null, "StudyDate": "YYYY-MM-DD"|null,
   "Rows": int|null, "Columns": int|null, "NumberOfFrames": int|null,
   "PixelSpacing": [float, ...]|null, "ImagePositionPatient": [float, ...]|null,
   "field_errors": ["<Field>: <ExceptionType>: <message>", ...],   # only if any
   "read_warnings": ["<pydicom warning>", ...]}                    # only if any
or
  {"path": ..., "ok": false, "error": "<ExceptionType>: <message>"}

A file is ok when
  * pydicom.dcmread(path, stop_before_pixels=True, force=True) succeeds,
  * the value of every top-level data element of the dataset can be parsed
    (sequences are parsed into items; elements inside items are not forced),
  * it has a non-empty SOPInstanceUID: the dataset's (0008,0018), or, when
    that is absent or empty, file_meta's MediaStorageSOPInstanceUID
    (0002,0003).  Otherwise error is "MissingSOPInstanceUID: ...".

Fields are read from the top level of the dataset only (no fallback into
functional-group sequences, no fallback to file_meta for SOPClassUID).
  * strings: str(value).strip() with trailing NULs/spaces removed; a
    multi-valued string is joined with a backslash (as stored in DICOM);
    empty -> null
  * StudyDate: 'YYYYMMDD' or ACR-NEMA 'YYYY.MM.DD' (a real calendar date, as
    pydicom.valuerep.DA parses it) -> 'YYYY-MM-DD'; else null
  * PatientName: str() of pydicom's PersonName, decoded with the file's
    SpecificCharacterSet (so CJK names are checked), all groups joined by '='
    as stored
  * Rows, Columns: int; NumberOfFrames (IS): int, null if absent, empty or not
    an integer
  * PixelSpacing, ImagePositionPatient (DS): list of floats, also when there
    is a single value; empty -> null
  * frame_positions_mm: for multi-frame objects with functional groups, each
    frame's ImagePositionPatient (see frame_positions); else null
An exception while converting one field makes that field null and is noted in
"field_errors"; it does not reject the file.

Caution: with force=True pydicom is lenient.  It stops silently at end of file
(a header cut short still reads "ok" with the elements before the cut), and it
accepts invalid values with a warning.  The warnings pydicom raised while
reading an ok file are listed, deduplicated, in an optional "read_warnings"
field (e.g. "End of file reached before delimiter ... in file <file>"), so a
caller can tell a clean file from a tolerated one.

--summary prints "<root>: <n> files, <ok> ok, <rejected> rejected" to stderr.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import warnings

import pydicom
from pydicom.multival import MultiValue
from pydicom.valuerep import DA

STRING_FIELDS = ("SOPClassUID", "Modality", "PatientID", "PatientName")
INT_FIELDS = ("Rows", "Columns", "NumberOfFrames")
FLOAT_LIST_FIELDS = ("PixelSpacing", "ImagePositionPatient")
# DICOM's YYYYMMDD, and the ACR-NEMA YYYY.MM.DD that PS3.5 §6.2 (DA) says readers may
# still meet; pydicom's DA parses both.
DATE_RE = re.compile(r"^[0-9]{8}$|^[0-9]{4}\.[0-9]{2}\.[0-9]{2}$")


def describe(exc: BaseException) -> str:
    msg = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {msg}" if msg else name


def walk(root: str):
    """Yield paths of regular files under root, sorted, without following symlinks."""
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        print(f"pydicom_headers: cannot list {root}: {describe(exc)}", file=sys.stderr)
        return
    for entry in entries:
        if entry.is_symlink():
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from walk(entry.path)
        elif entry.is_file(follow_symlinks=False):
            yield entry.path


def clean_str(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("ascii")
    if isinstance(value, (MultiValue, list, tuple)):
        parts = [clean_str(v) or "" for v in value]
        s = "\\".join(parts)
    else:
        s = str(value)
    s = s.strip().rstrip("\x00 ").strip()
    return s or None


def to_date(value) -> str | None:
    s = clean_str(value)
    if s is None or not DATE_RE.match(s):
        return None
    try:
        return DA(s).isoformat()
    except ValueError:
        return None


def to_int(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):  # e.g. an empty IS comes back as ""
        s = value.strip().rstrip("\x00 ").strip()
        if not s:
            return None
        value = float(s) if any(c in s for c in ".eE") else int(s)
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"not an integer: {value!r}")
        return int(value)
    return int(value)


def to_float(value) -> float:
    f = float(value)
    if not math.isfinite(f):
        raise ValueError(f"not a finite number: {value!r}")
    return f


def to_float_list(value) -> list[float] | None:
    if value is None:
        return None
    if isinstance(value, (MultiValue, list, tuple)):
        out = [to_float(v) for v in value]
        return out or None
    if isinstance(value, str) and not value.strip().rstrip("\x00 ").strip():
        return None
    return [to_float(value)]


def frame_positions(ds) -> list[list[float]] | None:
    """Each frame's ImagePositionPatient from the functional groups (PS3.3 C.7.6.16):
    PerFrameFunctionalGroupsSequence[n].PlanePositionSequence[0], else the shared
    group's; frames with neither are left out. None without per-frame groups."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None:
        return None
    shared = ds.get("SharedFunctionalGroupsSequence")
    shared = shared[0] if shared else None

    def position(item):
        if item is None or "PlanePositionSequence" not in item:
            return None
        seq = item.PlanePositionSequence
        if not seq or "ImagePositionPatient" not in seq[0]:
            return None
        v = to_float_list(seq[0].ImagePositionPatient)
        return v if v is not None and len(v) == 3 else None

    out = []
    for frame in per_frame:
        p = position(frame) or position(shared)
        if p is not None:
            out.append(p)
    return out

def warning_list(caught, root_path: str, limit: int = 20) -> list[str]:
    """Distinct warning messages pydicom raised while reading (in order)."""
    out: list[str] = []
    for w in caught:
        msg = " ".join(str(w.message).replace(root_path, "<file>").split())
        if msg and msg not in out:
            out.append(msg)
    if len(out) > limit:
        out = out[:limit] + [f"... {len(out) - limit} more"]
    return out


def examine(path: str, rel: str) -> dict:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            for elem in ds:  # converts every raw top-level element
                elem.value
            uid = clean_str(ds.get("SOPInstanceUID"))
            if uid is None:
                meta = getattr(ds, "file_meta", None)
                if meta is not None:
                    uid = clean_str(meta.get("MediaStorageSOPInstanceUID"))
        except Exception as exc:  # noqa: BLE001 - any failure rejects the file
            return {"path": rel, "ok": False, "error": describe(exc)}
    read_warnings = warning_list(caught, root_path=path)
    if uid is None:
        return {
            "path": rel,
            "ok": False,
            "error": "MissingSOPInstanceUID: no SOPInstanceUID in dataset or file_meta",
        }

    rec: dict = {"path": rel, "ok": True, "SOPInstanceUID": uid}
    errors: list[str] = []

    def field(name, convert):
        try:
            rec[name] = convert(ds.get(name))
        except Exception as exc:  # noqa: BLE001
            rec[name] = None
            errors.append(f"{name}: {describe(exc)}")

    for name in STRING_FIELDS:
        field(name, clean_str)
    field("StudyDate", to_date)
    for name in INT_FIELDS:
        field(name, to_int)
    for name in FLOAT_LIST_FIELDS:
        field(name, to_float_list)
    try:
        rec["frame_positions_mm"] = frame_positions(ds)
    except Exception as exc:  # noqa: BLE001
        rec["frame_positions_mm"] = None
        errors.append(f"frame_positions_mm: {describe(exc)}")
    if errors:
        rec["field_errors"] = errors
    if read_warnings:
        rec["read_warnings"] = read_warnings
    return rec


def main(argv: list[str]) -> int:
    args = argv[1:]
    summary = "--summary" in args
    args = [a for a in args if a != "--summary"]
    if len(args) != 1 or args[0].startswith("-"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    root = args[0]
    if not os.path.isdir(root):
        print(f"pydicom_headers: not a directory: {root}", file=sys.stderr)
        return 2

    # pydicom reports invalid values through warnings and its logger; the
    # oracle's verdict is in the JSON, so keep stderr for the summary.
    warnings.simplefilter("ignore")
    logging.getLogger("pydicom").setLevel(logging.CRITICAL + 1)

    n_ok = n_bad = 0
    out = sys.stdout
    for path in walk(root):
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        rec = examine(path, rel)
        if rec["ok"]:
            n_ok += 1
        else:
            n_bad += 1
        out.write(json.dumps(rec) + "\n")
    out.flush()
    if summary:
        print(
            f"{root}: {n_ok + n_bad} files, {n_ok} ok, {n_bad} rejected",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
