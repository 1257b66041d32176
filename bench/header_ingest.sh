#!/usr/bin/env bash
# DICOM header ingest throughput: medlake vs pydicom on the same corpus.
#
# Usage: bench/header_ingest.sh <corpus_dir>
#
#   (a) pydicom, one process: dcmread(f, stop_before_pixels=True) for every file
#       plus reading a handful of tags (PYDICOM_TOUCH=all walks every element instead);
#   (b) `medlake --lake <fresh temp lake> ingest dicom <corpus_dir> --collection bench`;
#   (c) the ratio of rates medlake / pydicom.
# Peak RSS of both comes from /usr/bin/time -v. Prints a markdown table row.
#
# The page cache cannot be dropped without privileges, so instead one warm-up
# pass reads every file (cat > /dev/null) before either timed run: both runs
# read from RAM, and the numbers measure parsing + (for medlake) lake writes,
# not the disk.
#
# Environment:
#   MEDLAKE_BIN    medlake binary (default ~/.cache/medlake/target/release/medlake)
#   PYTHON         python with pydicom (default python3; see bench/requirements.txt)
#   PYDICOM_TOUCH  tags (default) | all
#   LAKE_PARENT    where the temporary lake is created (default ${TMPDIR:-/tmp})
#   KEEP_LAKE=1    keep the temporary lake afterwards (its path is printed)
#   NO_HEADER=1    print only the table row (for appending to a results file)
set -euo pipefail

if [ $# -ne 1 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
fi
CORPUS=$(cd "$1" && pwd)
MEDLAKE_BIN=${MEDLAKE_BIN:-$HOME/.cache/medlake/target/release/medlake}
PYTHON=${PYTHON:-python3}
PYDICOM_TOUCH=${PYDICOM_TOUCH:-tags}
case "$PYDICOM_TOUCH" in tags|all) ;; *) echo "PYDICOM_TOUCH must be tags or all" >&2; exit 2;; esac
LAKE_PARENT=${LAKE_PARENT:-${TMPDIR:-/tmp}}

# ---- guards --------------------------------------------------------------
if [ ! -x /usr/bin/time ]; then
    echo "/usr/bin/time missing: installing Debian package 'time'" >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get install -y -q time >/dev/null 2>&1 \
        || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q time >/dev/null; }
    [ -x /usr/bin/time ] || { echo "could not install GNU time" >&2; exit 1; }
fi
if ! "$PYTHON" -c 'import pydicom' 2>/dev/null; then
    echo "$PYTHON cannot import pydicom; e.g.:" >&2
    echo "  python3 -m venv /tmp/bench-venv && /tmp/bench-venv/bin/pip install -r bench/requirements.txt" >&2
    echo "  PYTHON=/tmp/bench-venv/bin/python $0 $1" >&2
    exit 1
fi
HAVE_MEDLAKE=1
if [ ! -x "$MEDLAKE_BIN" ]; then
    HAVE_MEDLAKE=0
    echo "medlake binary not found at $MEDLAKE_BIN: running the pydicom side only" >&2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/header-ingest.XXXXXX")
LAKE=""
cleanup() {
    rm -rf "$WORK"
    if [ -n "$LAKE" ] && [ "${KEEP_LAKE:-0}" != 1 ]; then rm -rf "$LAKE"; fi
}
trap cleanup EXIT

now() { date +%s.%N; }
peak_rss_mib() { awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$1"; }
calc() { "$PYTHON" -c "print($1)"; }

# ---- corpus ----------------------------------------------------------------
find "$CORPUS" -type f ! -name '.*' -print0 | sort -z > "$WORK/files"
N=$(tr -cd '\0' < "$WORK/files" | wc -c)
[ "$N" -gt 0 ] || { echo "no files under $CORPUS" >&2; exit 1; }
BYTES=$(xargs -0 cat < "$WORK/files" | wc -c)   # the warm-up pass: every file read once
MIB=$(calc "round($BYTES/1048576, 1)")
echo "corpus: $CORPUS, $N files, $MIB MiB; page cache warmed by reading all files (cat > /dev/null) before timing (dropping it needs root)" >&2

# ---- (a) pydicom -------------------------------------------------------------
echo "pydicom: dcmread(stop_before_pixels=True), touch=$PYDICOM_TOUCH, 1 process ..." >&2
T0=$(now)
/usr/bin/time -v -o "$WORK/py.time" "$PYTHON" - "$WORK/files" "$PYDICOM_TOUCH" > "$WORK/py.out" <<'PY'
import sys, time
from pydicom import dcmread

names = [n.decode() for n in open(sys.argv[1], "rb").read().split(b"\0") if n]
mode = sys.argv[2]
TAGS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
        "Modality", "InstanceNumber", "ImagePositionPatient", "Rows", "Columns")
ok = err = seen = 0
t0 = time.perf_counter()
for f in names:
    try:
        ds = dcmread(f, stop_before_pixels=True)
        if mode == "all":
            for el in ds.iterall():
                seen += el.value is not None
        else:
            for t in TAGS:
                seen += ds.get(t) is not None
        ok += 1
    except Exception:
        err += 1
dt = time.perf_counter() - t0
print(ok, err, f"{dt:.6f}", seen)
PY
T1=$(now)
read -r PY_OK PY_ERR PY_LOOP _ < "$WORK/py.out"
PY_WALL=$(calc "$T1 - $T0")
PY_RATE=$(calc "round($PY_OK / $PY_LOOP, 1)")
PY_RATE_WALL=$(calc "round($PY_OK / $PY_WALL, 1)")
PY_RSS=$(peak_rss_mib "$WORK/py.time")
echo "pydicom: $PY_OK ok, $PY_ERR errors, loop ${PY_LOOP}s, wall $(calc "round($PY_WALL, 3)")s" >&2

# ---- (b) medlake -------------------------------------------------------------
ML_RATE="n/a"; RATIO="n/a"; ML_RSS="n/a"; ML_NOTE=""
if [ "$HAVE_MEDLAKE" = 1 ]; then
    LAKE=$(mktemp -d "$LAKE_PARENT/medlake-ingest-bench.XXXXXX")
    echo "medlake: ingest dicom into fresh lake $LAKE ..." >&2
    T0=$(now)
    set +e
    /usr/bin/time -v -o "$WORK/ml.time" "$MEDLAKE_BIN" --lake "$LAKE" ingest dicom "$CORPUS" \
        --collection bench > "$WORK/ml.out" 2> "$WORK/ml.err" < /dev/null
    RC=$?
    set -e
    T1=$(now)
    if [ $RC -ne 0 ]; then
        echo "medlake ingest failed (exit $RC):" >&2
        tail -n 20 "$WORK/ml.err" >&2
        exit 1
    fi
    ML_WALL=$(calc "$T1 - $T0")
    ML_RATE=$(calc "round($N / $ML_WALL, 1)")
    RATIO=$(calc "round($ML_RATE / $PY_RATE, 2)")
    ML_RSS=$(peak_rss_mib "$WORK/ml.time")
    # the JSON summary line: {"files_seen":N,"ingested":N,"duplicates":N,"errors":N,"seconds":F}
    ML_NOTE=$("$PYTHON" - "$WORK/ml.out" "$N" <<'PY'
import json, sys
n = int(sys.argv[2])
summary = None
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        try:
            summary = json.loads(line)
        except ValueError:
            pass
if summary is None:
    print("WARNING: no JSON summary line on medlake's stdout")
    sys.exit()
msg = "summary " + json.dumps(summary, separators=(",", ":"))
if summary.get("files_seen") != n:
    msg += f"; WARNING: files_seen != {n} files in the corpus"
if summary.get("errors"):
    msg += f"; WARNING: {summary['errors']} files failed"
if summary.get("ingested", 0) + summary.get("duplicates", 0) + summary.get("errors", 0) != summary.get("files_seen"):
    msg += "; WARNING: ingested + duplicates + errors != files_seen"
print(msg)
PY
)
    echo "medlake: wall $(calc "round($ML_WALL, 3)")s; $ML_NOTE" >&2
    if [ "${KEEP_LAKE:-0}" = 1 ]; then echo "lake kept at $LAKE" >&2; fi
fi

# ---- report --------------------------------------------------------------------
CPU=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')
[ -n "$CPU" ] || CPU=$(lscpu 2>/dev/null | awk -F': +' '/Model name/ {print $2; exit}')
MACHINE="$(nproc) cores, ${CPU:-unknown CPU}"
if [ "${NO_HEADER:-0}" != 1 ]; then
    echo "| date | machine | files (MiB) | pydicom files/s (1 proc, $PYDICOM_TOUCH) | medlake ingest files/s | medlake/pydicom | pydicom peak RSS MiB | medlake peak RSS MiB |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
fi
echo "| $(date +%Y-%m-%d) | $MACHINE | $N ($MIB) | $PY_RATE | $ML_RATE | $RATIO | $PY_RSS | $ML_RSS |"
if [ "${NO_HEADER:-0}" != 1 ]; then
    echo
    echo "Notes: page cache warmed (all files read once with cat) before both timed runs, not dropped."
    echo "pydicom rate = files / time in its read loop (interpreter start and 'import pydicom' excluded; wall-clock rate: $PY_RATE_WALL files/s)."
    if [ "$HAVE_MEDLAKE" = 1 ]; then
        echo "medlake rate = files / wall time of the whole 'medlake ingest dicom' process (start-up, lake creation and commit included)."
        echo "medlake $ML_NOTE"
        echo "wall-vs-wall ratio (both including process start-up): $(calc "round($ML_RATE / $PY_RATE_WALL, 2)")."
    else
        echo "medlake binary absent ($MEDLAKE_BIN): medlake side not run."
    fi
fi
