#!/usr/bin/env python3
"""Generate a corpus of real-sized CT slices from one real CT slice.

Usage:
    python3 bench/make_ct_corpus.py --source <dicom file> --out <dir> --count N
        [--series-size 200] [--series-per-study 2] [--studies-per-patient 2]
        [--seed 0]

Every generated file is the source slice (same transfer syntax, same pixel
data, so the same ~0.5 MB payload for a 512x512 16-bit slice) with a new
identity:

* slice i belongs to series i // series-size, slice k = i % series-size in it;
  series are grouped into studies of --series-per-study series, studies into
  patients of --studies-per-patient studies;
* new StudyInstanceUID / SeriesInstanceUID / SOPInstanceUID /
  FrameOfReferenceUID, made by pydicom.uid.generate_uid() with a fixed
  entropy source (seed, kind, index), so reruns produce identical UIDs;
* InstanceNumber = k + 1; ImagePositionPatient z (and SliceLocation) =
  source z + k * SliceThickness;
* patient (PatientID, PatientName, PatientSex, PatientBirthDate, PatientAge),
  study (StudyDate/Time, StudyID, AccessionNumber, StudyDescription) and
  series (SeriesNumber, SeriesDescription, SeriesDate/Time) attributes vary.

Layout: <out>/p<patient>/st<study>/se<series>/ct<k>.dcm, all indices zero
padded and global, so the path only depends on (i, series sizes). Existing
files are skipped, making reruns and growing a corpus (larger --count) cheap.
A rerun with a different --seed / --series-size / grouping into the same --out
is detected (UIDs of existing files are checked) and refused.
"""

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

try:
    import pydicom
    from pydicom.uid import generate_uid
except ImportError:
    sys.exit("pydicom missing: pip install -r bench/requirements.txt")

SERIES_DESCRIPTIONS = [
    "CHEST W/O CONTRAST 5mm",
    "ABD/PELVIS W CONTRAST",
    "LUNG 1.25mm",
    "HEAD STD",
    "CHEST ABD PELVIS PORTAL VENOUS",
    "LIVER ARTERIAL PHASE",
]
STUDY_DESCRIPTIONS = ["CT CHEST", "CT ABDOMEN PELVIS", "CT HEAD", "CT CHEST ABDOMEN PELVIS"]
GIVEN = ["ALEX", "SAM", "ROBIN", "KIM", "JO", "LEE", "PAT", "CHRIS"]


def uid(seed, kind, *idx):
    return generate_uid(entropy_srcs=[f"medlake-bench-ct-corpus/seed={seed}", kind, *map(str, idx)])


class Layout:
    def __init__(self, series_size, series_per_study, studies_per_patient):
        self.series_size = series_size
        self.series_per_study = series_per_study
        self.studies_per_patient = studies_per_patient

    def of(self, i):
        series = i // self.series_size
        k = i % self.series_size
        study = series // self.series_per_study
        patient = study // self.studies_per_patient
        return patient, study, series, k

    def path(self, out, i):
        p, st, se, k = self.of(i)
        return out / f"p{p:05d}" / f"st{st:06d}" / f"se{se:06d}" / f"ct{k:05d}.dcm"


def check_existing(out, layout, seed, count):
    """Refuse to mix corpora: every existing file must sit where this layout
    puts it, and probed files must carry the UIDs this run would write.
    Returns the number of existing slices with index >= count."""
    beyond = 0
    found = []
    for root, _dirs, files in os.walk(out):
        for f in files:
            if f.startswith("."):
                continue
            path = Path(root) / f
            try:
                rel = path.relative_to(out).parts
                ok = (len(rel) == 4 and rel[0][:1] == "p" and rel[1][:2] == "st"
                      and rel[2][:2] == "se" and rel[3][:2] == "ct" and rel[3].endswith(".dcm"))
                se, k = int(rel[2][2:]), int(rel[3][2:-4])
                i = se * layout.series_size + k
                ok = ok and k < layout.series_size and layout.path(out, i) == path
            except (ValueError, IndexError):
                ok = False
            if not ok:
                sys.exit(f"{path} does not belong to a corpus with these --series-size/"
                         f"--series-per-study/--studies-per-patient; use a fresh --out directory")
            found.append(i)
            beyond += i >= count
    if found:
        found.sort()
        for i in sorted({found[0], found[len(found) // 2], found[-1]}):
            path = layout.path(out, i)
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            _, _, se, _ = layout.of(i)
            if ds.SOPInstanceUID != uid(seed, "sop", i) or ds.SeriesInstanceUID != uid(seed, "series", se):
                sys.exit(f"{path} was generated with another --seed; use a fresh --out directory")
    return beyond


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, help="a real single-frame CT slice (DICOM Part 10 file)")
    ap.add_argument("--out", required=True, help="output directory (created if missing)")
    ap.add_argument("--count", type=int, required=True, help="number of slices to generate")
    ap.add_argument("--series-size", type=int, default=200, help="slices per series (default 200)")
    ap.add_argument("--series-per-study", type=int, default=2, help="series per study (default 2)")
    ap.add_argument("--studies-per-patient", type=int, default=2, help="studies per patient (default 2)")
    ap.add_argument("--seed", default="0", help="UID entropy seed (default 0)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    for k in ("count", "series_size", "series_per_study", "studies_per_patient"):
        if getattr(args, k) < 1:
            sys.exit(f"--{k.replace('_', '-')} must be >= 1")

    src = pydicom.dcmread(args.source)
    if "PixelData" not in src:
        sys.exit(f"{args.source} has no PixelData")
    if int(src.get("NumberOfFrames", 1) or 1) != 1:
        sys.exit(f"{args.source} is multi-frame; pass a single-frame CT slice")
    if src.get("Modality") != "CT":
        print(f"warning: source Modality is {src.get('Modality')!r}, not CT", file=sys.stderr)

    thickness = float(src.get("SliceThickness") or 1.0) or 1.0
    ipp = [float(v) for v in src.get("ImagePositionPatient", [0.0, 0.0, 0.0])]
    base_date = dt.date(2015, 1, 5)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    layout = Layout(args.series_size, args.series_per_study, args.studies_per_patient)
    beyond = check_existing(out, layout, args.seed, args.count)
    if beyond:
        print(f"warning: {out} already holds {beyond} slices beyond --count {args.count} "
              f"(from an earlier, larger run); they stay", file=sys.stderr)

    # leftovers of an interrupted run
    for stale in out.rglob(".*.partial"):
        stale.unlink()

    ds = src  # mutated in place for every file; the pixel payload is shared
    fm = ds.file_meta
    written = skipped = 0
    nbytes = 0
    cur = (None, None, None)
    for i in range(args.count):
        path = layout.path(out, i)
        if path.exists() and path.stat().st_size > 0:
            skipped += 1
            continue
        p, st, se, k = layout.of(i)
        if cur != (p, st, se):
            cur = (p, st, se)
            sdate = base_date + dt.timedelta(days=(st * 37) % 3650)
            birth = dt.date(1930 + (p * 7) % 60, 1 + p % 12, 1 + p % 28)
            age = sdate.year - birth.year - ((sdate.month, sdate.day) < (birth.month, birth.day))
            stime = f"{8 + st % 10:02d}{(st * 7) % 60:02d}00"
            # patient
            ds.PatientID = f"MLBENCH{p:06d}"
            ds.PatientName = f"BENCH^{GIVEN[p % len(GIVEN)]}{p}"
            ds.PatientSex = "F" if p % 2 else "M"
            ds.PatientBirthDate = birth.strftime("%Y%m%d")
            ds.PatientAge = f"{age:03d}Y"
            # study
            ds.StudyInstanceUID = uid(args.seed, "study", st)
            ds.StudyDate = sdate.strftime("%Y%m%d")
            ds.StudyTime = stime
            ds.StudyID = f"{st % 100000}"
            ds.AccessionNumber = f"ACC{st:08d}"
            ds.StudyDescription = STUDY_DESCRIPTIONS[st % len(STUDY_DESCRIPTIONS)]
            # series
            ds.SeriesInstanceUID = uid(args.seed, "series", se)
            ds.FrameOfReferenceUID = uid(args.seed, "for", se)
            ds.SeriesNumber = se % args.series_per_study + 1
            ds.SeriesDescription = SERIES_DESCRIPTIONS[se % len(SERIES_DESCRIPTIONS)]
            ds.SeriesDate = ds.StudyDate
            ds.SeriesTime = stime
            for tag in ("AcquisitionDate", "ContentDate"):
                if tag in ds:
                    setattr(ds, tag, ds.StudyDate)
            path.parent.mkdir(parents=True, exist_ok=True)
        z = ipp[2] + k * thickness
        sop = uid(args.seed, "sop", i)
        ds.SOPInstanceUID = sop
        fm.MediaStorageSOPInstanceUID = sop
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [ipp[0], ipp[1], round(z, 4)]
        ds.SliceLocation = round(z, 4)
        tmp = path.parent / f".{path.name}.partial"
        ds.save_as(tmp)
        os.replace(tmp, path)
        nbytes += path.stat().st_size
        written += 1
        if not args.quiet and written % 1000 == 0:
            print(f"  {i + 1}/{args.count} ...", file=sys.stderr, flush=True)

    n_series = (args.count + args.series_size - 1) // args.series_size
    n_studies = (n_series + args.series_per_study - 1) // args.series_per_study
    n_patients = (n_studies + args.studies_per_patient - 1) // args.studies_per_patient
    if not args.quiet:
        print(
            f"{out}: {args.count} slices ({written} written, {skipped} already present), "
            f"{n_series} series, {n_studies} studies, {n_patients} patients; "
            + (f"{nbytes / written / 1024:.0f} KiB per written file; " if written else "")
            + f"source {args.source}"
        )


if __name__ == "__main__":
    main()
