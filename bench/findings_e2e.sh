#!/usr/bin/env bash
# End-to-end CT findings: one 512 x 512 x 300 chest phantom series (0.7 mm pixels,
# 0.625 mm slices), from DICOM files to rows in the lake's `findings` table, on this
# machine's CPU (or --device gpu). Prints per-stage times from `medlake compute findings`
# and the peak RSS, for RUNS runs (a fresh lake each), and the median.
#
# Usage: bench/findings_e2e.sh [WORKDIR] [RUNS] [DEVICE]
#   WORKDIR  default /tmp/medlake-findings-e2e (the series is written once, ~150 MB)
#   RUNS     default 3
#   DEVICE   cpu (default), gpu or auto
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-/tmp/medlake-findings-e2e}"
RUNS="${2:-3}"
DEVICE="${3:-cpu}"
TARGET="${CARGO_TARGET_DIR:-$HOME/.cache/medlake/target}"
BIN="${MEDLAKE_BIN:-$TARGET/release/medlake}"
GEN="$TARGET/release/examples/phantom_series"
if [ ! -x "$BIN" ] || [ ! -x "$GEN" ]; then
    echo "building medlake and examples/phantom_series (release)" >&2
    cargo build --release --bin medlake --example phantom_series >&2
fi
if [ ! -d "$WORK/series/dicom" ]; then
    "$GEN" "$WORK/series" 1 300 0.625 0.7
fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "series: $(ls "$WORK"/series/dicom/*/*/*/*.dcm | wc -l) files, $(du -sh "$WORK/series/dicom" | cut -f1)"
# Warm the page cache, as a lake on a local disk that was just written would be.
cat "$WORK"/series/dicom/*/*/*/*.dcm > /dev/null
totals=()
for run in $(seq 1 "$RUNS"); do
    rm -rf "$WORK/lake"
    "$BIN" --lake "$WORK/lake" ingest dicom "$WORK/series/dicom" > "$WORK/ingest.json"
    /usr/bin/time -f "%e %M" -o "$WORK/time.txt" \
        "$BIN" --lake "$WORK/lake" compute findings --device "$DEVICE" > "$WORK/compute.txt" 2> "$WORK/compute.err" || {
        cat "$WORK/compute.err" >&2
        exit 1
    }
    read -r wall rss_kb < "$WORK/time.txt"
    ingest_s=$(python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['seconds'], 2))" "$WORK/ingest.json")
    echo "run $run: ingest (headers) ${ingest_s} s; compute findings ${wall} s wall, peak RSS $((rss_kb / 1024)) MiB"
    sed 's/^/    /' "$WORK/compute.txt"
    totals+=("$wall")
done
median=$(printf '%s\n' "${totals[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "median compute findings wall time: ${median} s (target: at most 10 s; a radiologist: 8-10 min; the 2016 reading robot: 60 s)"
