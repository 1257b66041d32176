#!/usr/bin/env python3
"""VCF ingest throughput and region-query latency: medlake vs bcftools and cyvcf2.

Usage:
    python3 bench/vcf_ingest.py [--records 5000000] [--samples 100]
        [--workdir /tmp/medlake-vcf-bench] [--ingest-runs 1] [--runs 20] [--large-runs 10]
        [--medlake-bin PATH] [--only ingest|query] [--lake DIR --skip-ingest]

Corpus: bench/make_vcf_corpus.py tiles 1kg.vcf.gz (pyvcf3 1.0.4 wheel; 381 SNPs, 629
samples, FORMAT GT:AD:DP:GD:GL:GQ:OG) with shifted positions to --records records and the
first --samples samples, bgzipped and tabix-indexed, on chromosomes 1, 2, ... (it is
reused when it already exists). --vcf FILE uses another bgzipped, tabix-indexed VCF
instead; regions then come from --region, or from FILE.params if it exists.

1. Ingest throughput. Every tool reads the same .vcf.gz; the page cache is warmed first
   (one full read of the file), so the numbers measure parsing, not the disk. Each tool is
   one process, timed wall-clock from start to exit; its peak RSS comes from
   `/usr/bin/time -f %M` (Debian package time; without it, from os.wait4's ru_maxrss, which
   on Linux also counts this script's pages copied at fork).
   * bcftools (1.16) `view -Ob -o /dev/null FILE`: parse all records and write compressed
     BCF. Also `view -Ou -o /dev/null FILE` (uncompressed BCF: the same parsing without the
     output compression, a stricter peer). --bcftools-threads N adds `--threads N`.
   * cyvcf2: a Python process iterates `for v in VCF(FILE)` and reads `v.gt_types` (the
     genotypes decoded to a numpy array) of every record. Its rate uses the loop time only
     (interpreter start and import excluded, which favours cyvcf2); the wall time is in the
     notes. --cyvcf2-touch genotypes reads `v.genotypes` (Python lists) instead.
   * medlake `--lake <fresh empty dir> ingest vcf FILE`, stdout redirected so that it prints
     its JSON summary. The whole process: start-up, parsing, lake writes and the commit.
   records/s = records / seconds; genotypes/s = records x samples / seconds. With
   --ingest-runs N > 1 the tools run N rounds, interleaved, and the median is reported
   (peak RSS: the largest). Every tool's record count is checked against the corpus.
   Targets: medlake's rate >= cyvcf2's; medlake's time <= 1.5 x bcftools `-Ob`'s.

2. Region queries on the lake of the last medlake ingest (or --lake), against the
   bgzipped, tabix-indexed file. Per size (small --small bp, default 10 kb; large --large
   bp, default 10 Mb) --regions-per-size regions, placed at 20/50/80 % of the corpus's
   covered bases. Each engine runs each region --warmup untimed + --runs timed times
   (--large-runs for the large regions); p50/p95 in ms.
   * bcftools: `bcftools view -H -r R -o /dev/null FILE`, one process per run (wall time:
     start-up, index load, seek, decompress, parse and VCF formatting of the records).
   * tabix: `tabix FILE R > /dev/null`, one process per run: the raw lines of the region,
     nothing parsed. A lower bound for any index-based reader, shown for context.
   * cyvcf2 (in-process): the file and its index opened once; each timed call counts
     `sum(1 for _ in vcf(R))`.
   * medlake wall: `medlake --lake L sql -c "SELECT count(*) FROM variants WHERE
     in_region(chrom, pos, 'R')" --format csv`, one process per run (start-up, lake open,
     planning, execution). This is like-for-like with bcftools and tabix.
   * medlake self: one `MEDLAKE_TIMING=1 medlake --lake L sql -f FILE --format csv` process
     runs the statement warm-up + runs times; each statement's `elapsed_ms:` line on stderr
     is one sample (planning and execution, no process start-up). Like-for-like with cyvcf2.
   The record count of every engine must equal bcftools' (`bcftools view -H -r R FILE`,
   lines counted, untimed). Target: medlake faster than bcftools at p50, on the basis of
   --ratio-basis (default wall: process against process).

If the medlake binary is absent or has no `ingest vcf`, only the peers run and the report
says so. The script exits with status 1 if a record count disagrees or a tool fails.
"""

import argparse
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_vcf_corpus  # noqa: E402

DEFAULT_BIN = os.environ.get(
    "MEDLAKE_BIN", str(Path.home() / ".cache/medlake/target/release/medlake")
)
ELAPSED_RE = re.compile(r"elapsed_ms:\s*([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)")
MEDLAKE_SQL = "SELECT count(*) FROM variants WHERE in_region(chrom, pos, '{r}')"

CYVCF2_INGEST = r"""
import json, sys, time
t_import = time.perf_counter()
from cyvcf2 import VCF
path, touch, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
t0 = time.perf_counter()
vcf = VCF(path, threads=threads) if threads > 0 else VCF(path)
n = g = 0
if touch == "gt_types":
    for v in vcf:
        g += v.gt_types.shape[0]
        n += 1
elif touch == "genotypes":
    for v in vcf:
        g += len(v.genotypes)
        n += 1
else:
    raise SystemExit("unknown touch " + touch)
t1 = time.perf_counter()
print(json.dumps({"records": n, "genotypes": g, "loop_s": t1 - t0, "import_s": t0 - t_import}))
"""

CYVCF2_QUERY = r"""
import json, sys, time, gc
from cyvcf2 import VCF
path, warmup, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
vcf = VCF(path)
out = {}
for r in sys.argv[4:]:
    for _ in range(warmup):
        sum(1 for _ in vcf(r))
    xs = []
    gc.disable()
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        n = sum(1 for _ in vcf(r))
        xs.append((time.perf_counter_ns() - t0) / 1e6)
    gc.enable()
    out[r] = {"samples": xs, "count": n}
print(json.dumps(out))
"""

# --------------------------------------------------------------------------
# helpers


def percentile(xs, p):
    """Linear interpolation between closest ranks (numpy's default)."""
    s = sorted(xs)
    if not s:
        return None
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def fmt_ms(x):
    if x is None:
        return "n/a"
    if x < 1:
        return f"{x:.3f}"
    if x < 100:
        return f"{x:.2f}"
    return f"{x:,.0f}"


def fmt_ratio(a, b):
    if a is None or b is None or b <= 0:
        return "n/a"
    return f"{a / b:.2f}"


def machine_line():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.0f} GiB"
                break
    except OSError:
        pass
    return f"nproc {os.cpu_count()}, cpu {cpu}, RAM {mem}, load average {loadavg()}"


def loadavg():
    """1-minute load average: another busy process on the machine skews every number."""
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"


TIME_BIN = "/usr/bin/time"


def run_measured(cmd, timeout, env=None):
    """Run cmd; return (rc, wall_s, peak_rss_kib, stdout, stderr).

    Peak RSS comes from GNU time (`/usr/bin/time -f %M`), which runs the command. Without
    it, from the child's ru_maxrss (os.wait4); on Linux that also counts the parent's
    resident pages copied at fork, i.e. this script's RSS (~40 MiB), so it is an upper
    bound. stdout/stderr go to temp files, so no pipe can stall. rc is 124 when the timeout
    killed the process."""
    have_time = os.access(TIME_BIN, os.X_OK)
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe, \
            tempfile.NamedTemporaryFile("r", suffix=".time") as ft:
        full = ([TIME_BIN, "-f", "maxrss_kib=%M", "-o", ft.name] if have_time else []) + cmd
        killed = []

        def kill():
            killed.append(True)
            p.kill()

        t0 = time.perf_counter()
        p = subprocess.Popen(full, stdout=fo, stderr=fe, env=env)
        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        rss = ru.ru_maxrss
        if have_time:
            m = re.search(r"maxrss_kib=(\d+)", ft.read())
            rss = int(m.group(1)) if m else None
        fo.seek(0)
        fe.seek(0)
        rc = 124 if killed else p.returncode
        return rc, wall, rss, fo.read().decode(errors="replace"), \
            fe.read().decode(errors="replace")


def tool_version(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True)
        return (p.stdout or p.stderr).strip().splitlines()[0]
    except (OSError, IndexError):
        return "?"


def medlake_has_vcf(bin_path):
    if not (bin_path and os.path.isfile(bin_path) and os.access(bin_path, os.X_OK)):
        return False, f"medlake binary not found at {bin_path}"
    p = subprocess.run([bin_path, "ingest", "vcf", "--help"], capture_output=True, text=True)
    if p.returncode != 0:
        return False, f"{bin_path} has no `ingest vcf` subcommand"
    return True, None


def json_line(text):
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                pass
    return None


def csv_count(stdout):
    """The first integer-only row of medlake's CSV output (after the header)."""
    rows = [r for r in csv.reader(io.StringIO(stdout)) if r]
    for r in rows[1:]:
        if len(r) == 1 and re.fullmatch(r"\d+", r[0].strip()):
            return int(r[0])
    return None


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def warm(path):
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        while f.read(16 << 20):
            pass
    return time.perf_counter() - t0


# --------------------------------------------------------------------------
# regions


def pick_regions(layout, size, fractions):
    """Regions of `size` bp at the given fractions of the covered bases (chromosomes in
    layout order, each covering first_pos..last_pos)."""
    spans = [(c["chrom"], c["first_pos"], c["last_pos"]) for c in layout]
    total = sum(b - a + 1 for _, a, b in spans)
    out = []
    for fr in fractions:
        x = int(total * fr)
        for chrom, a, b in spans:
            n = b - a + 1
            if x < n:
                start = a + x
                start = max(a, min(start, b - size + 1))
                # round to a readable position
                start = max(1, (start // 1000) * 1000 + 1) if size >= 1000 else start
                out.append(f"{chrom}:{start}-{start + size - 1}")
                break
            x -= n
    return out


# --------------------------------------------------------------------------
# ingest


def ingest_once(tool, args, vcf, medlake, lake_parent):
    """One timed ingest by one tool: dict(wall, loop, rss_kib, records, genotypes, err, ...)."""
    if tool.startswith("bcftools"):
        mode = tool.split()[-1]  # -Ob / -Ou
        cmd = ["bcftools", "view", mode, "-o", "/dev/null"]
        if args.bcftools_threads > 0:
            cmd += ["--threads", str(args.bcftools_threads)]
        cmd.append(vcf)
        rc, wall, rss, out, err = run_measured(cmd, args.timeout)
        return {"wall": wall, "rss": rss, "cmd": cmd,
                "err": None if rc == 0 else f"exit {rc}: {err.strip()[-500:]}"}
    if tool == "cyvcf2":
        cmd = [args.python, "-c", CYVCF2_INGEST, vcf, args.cyvcf2_touch,
               str(args.cyvcf2_threads)]
        rc, wall, rss, out, err = run_measured(cmd, args.timeout)
        res = json_line(out) or {}
        return {"wall": wall, "rss": rss, "loop": res.get("loop_s"),
                "records": res.get("records"), "genotypes": res.get("genotypes"),
                "err": None if rc == 0 and res else f"exit {rc}: {err.strip()[-500:]}"}
    if tool == "medlake":
        lake = tempfile.mkdtemp(prefix="medlake-vcf-lake-", dir=lake_parent)
        cmd = [medlake, "--lake", lake, "ingest", "vcf", vcf]
        rc, wall, rss, out, err = run_measured(cmd, args.timeout)
        summary = json_line(out)
        return {"wall": wall, "rss": rss, "lake": lake, "summary": summary, "cmd": cmd,
                "err": None if rc == 0 else f"exit {rc}: {(err.strip() or out.strip())[-500:]}"}
    raise ValueError(tool)


def summary_count(summary, keys):
    if not isinstance(summary, dict):
        return None
    for k in keys:
        v = summary.get(k)
        if isinstance(v, int):
            return k, v
    return None


# --------------------------------------------------------------------------
# queries


def time_processes(cmd, runs, warmup, timeout):
    samples = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           timeout=timeout)
        dt = (time.perf_counter() - t0) * 1000
        if p.returncode != 0:
            return None, f"exit {p.returncode}: {p.stderr.decode(errors='replace')[-400:]}"
        if i >= warmup:
            samples.append(dt)
    return samples, None


def count_lines(cmd, timeout):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    if p.returncode != 0:
        return None, f"exit {p.returncode}: {p.stderr.decode(errors='replace')[-400:]}"
    return p.stdout.count(b"\n"), None


def medlake_wall(medlake, lake, region, runs, warmup, timeout):
    cmd = [medlake, "--lake", lake, "sql", "-c", MEDLAKE_SQL.format(r=region),
           "--format", "csv"]
    samples, counts = [], set()
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        dt = (time.perf_counter() - t0) * 1000
        if p.returncode != 0:
            return None, None, f"exit {p.returncode}: {(p.stderr or p.stdout).strip()[-400:]}"
        counts.add(csv_count(p.stdout))
        if i >= warmup:
            samples.append(dt)
    if len(counts) != 1:
        return samples, None, f"counts vary between runs: {sorted(counts, key=str)}"
    return samples, counts.pop(), None


def medlake_self(medlake, lake, region, runs, warmup, timeout, workdir, tag):
    stmt = MEDLAKE_SQL.format(r=region) + ";"
    path = os.path.join(workdir, f"medlake_region_{tag}.sql")
    with open(path, "w") as f:
        f.write("\n".join([stmt] * (warmup + runs)) + "\n")
    cmd = [medlake, "--lake", lake, "sql", "-f", path, "--format", "csv"]
    env = dict(os.environ, MEDLAKE_TIMING="1")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if p.returncode != 0:
        return None, None, f"exit {p.returncode}: {(p.stderr or p.stdout).strip()[-400:]}"
    el = [float(x) for x in ELAPSED_RE.findall(p.stderr)]
    if len(el) != warmup + runs:
        return None, None, (f"expected {warmup + runs} `elapsed_ms:` lines on stderr "
                            f"(MEDLAKE_TIMING=1), got {len(el)}")
    return el[warmup:], csv_count(p.stdout), None


# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=make_vcf_corpus.DEFAULT_SOURCE,
                    help="VCF to tile (default: 1kg.vcf.gz from the pyvcf3 1.0.4 wheel in the "
                         "test-data cache)")
    ap.add_argument("--records", type=int, default=5_000_000, help="corpus records")
    ap.add_argument("--samples", type=int, default=100, help="corpus samples (first N)")
    ap.add_argument("--workdir", default=make_vcf_corpus.DEFAULT_WORKDIR,
                    help="where the corpus is built or reused, and where lakes go unless "
                         "--lake-parent")
    ap.add_argument("--vcf", default=None,
                    help="use this bgzipped, tabix-indexed VCF instead of building a corpus")
    ap.add_argument("--region", action="append", default=None,
                    help="region CHROM:START-END to query (repeatable; replaces the automatic "
                         "small/large regions; sized by its length)")
    ap.add_argument("--only", choices=["ingest", "query"], default=None,
                    help="run only the ingest or only the region-query part")
    ap.add_argument("--ingest-runs", type=int, default=1,
                    help="ingest rounds per tool (median reported)")
    ap.add_argument("--bcftools-modes", default="-Ob,-Ou",
                    help="bcftools view output modes to time (default -Ob,-Ou)")
    ap.add_argument("--bcftools-threads", type=int, default=0,
                    help="add `--threads N` to bcftools view (default 0: not added)")
    ap.add_argument("--cyvcf2-touch", choices=["gt_types", "genotypes"], default="gt_types",
                    help="what cyvcf2 reads of every record (default gt_types)")
    ap.add_argument("--cyvcf2-threads", type=int, default=0,
                    help="VCF(..., threads=N) for cyvcf2's ingest (default 0: not passed)")
    ap.add_argument("--small", type=int, default=10_000, help="small region size, bp")
    ap.add_argument("--large", type=int, default=10_000_000, help="large region size, bp")
    ap.add_argument("--regions-per-size", type=int, default=3, choices=[1, 2, 3, 4, 5],
                    help="regions per size (default 3)")
    ap.add_argument("--runs", type=int, default=20,
                    help="timed runs per small region and engine (default 20)")
    ap.add_argument("--large-runs", type=int, default=10,
                    help="timed runs per large region and engine (default 10)")
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed runs per region and engine before the timed ones")
    ap.add_argument("--ratio-basis", choices=["wall", "self"], default="wall",
                    help="medlake number the region target compares with bcftools "
                         "(default wall: process vs process)")
    ap.add_argument("--medlake-bin", default=DEFAULT_BIN,
                    help="medlake binary (default $MEDLAKE_BIN or "
                         "~/.cache/medlake/target/release/medlake)")
    ap.add_argument("--lake", default=None,
                    help="with --skip-ingest: an existing lake holding the corpus")
    ap.add_argument("--skip-ingest", action="store_true",
                    help="do not run medlake's ingest; query --lake")
    ap.add_argument("--lake-parent", default=None,
                    help="where fresh lakes are made (default --workdir)")
    ap.add_argument("--keep-lake", action="store_true", help="keep the last lake")
    ap.add_argument("--python", default=sys.executable,
                    help="Python with cyvcf2 for the cyvcf2 processes (default: this one)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="per process, seconds")
    args = ap.parse_args()
    if args.runs < 1 or args.large_runs < 1 or args.warmup < 0 or args.ingest_runs < 1:
        sys.exit("--runs, --large-runs and --ingest-runs must be >= 1, --warmup >= 0")
    if args.skip_ingest and not args.lake:
        sys.exit("--skip-ingest needs --lake")

    for tool in ("bcftools", "tabix"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not on PATH (Debian packages bcftools, tabix)")
    p = subprocess.run([args.python, "-c", "import cyvcf2; print(cyvcf2.__version__)"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"cyvcf2 missing in {args.python}: pip install -r bench/requirements.txt")
    cyvcf2_ver = p.stdout.strip()

    medlake = args.medlake_bin
    have_medlake, why_not = medlake_has_vcf(medlake)

    # ---- corpus
    if args.vcf:
        vcf = str(Path(args.vcf).resolve())
        if not (os.path.isfile(vcf) and os.path.isfile(vcf + ".tbi")):
            sys.exit(f"{vcf}: needs a .tbi index next to it (tabix -p vcf)")
        params = None
        if os.path.isfile(vcf + ".params"):
            params = json.load(open(vcf + ".params"))
        hdr = subprocess.run(["bcftools", "query", "-l", vcf], capture_output=True, text=True)
        samples = len(hdr.stdout.split())
        stats = subprocess.run(["bcftools", "index", "-n", vcf], capture_output=True, text=True)
        records = int(stats.stdout.strip())
        layout = params["layout"] if params else None
        build_note = "given with --vcf"
    else:
        vcf, params = make_vcf_corpus.corpus(args.source, args.records, args.samples,
                                             args.workdir)
        records, samples, layout = params["records"], params["samples"], params["layout"]
        build_note = (f"built by make_vcf_corpus.py in {params.get('build_seconds', '?')} s "
                      "(or reused)")
    genotypes = records * samples
    size = os.path.getsize(vcf)

    lake_parent = args.lake_parent or (args.workdir if not args.vcf else None)
    if lake_parent:
        os.makedirs(lake_parent, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="medlake-vcf-bench-")

    print(f"# VCF ingest and region queries: {vcf}")
    print(f"# {records:,} records x {samples} samples = {genotypes:,} genotypes; "
          f"{size / 2**20:,.0f} MiB bgzipped; {build_note}")
    if layout:
        print("# layout: " + "; ".join(f"chrom {c['chrom']}: {c['records']:,} records, POS "
                                        f"{c['first_pos']:,}-{c['last_pos']:,}"
                                        for c in layout))
    print(f"# date {time.strftime('%Y-%m-%d %H:%M')}, {machine_line()}")
    print(f"# {tool_version(['bcftools', '--version'])}, "
          f"{tool_version(['tabix', '--version'])}, cyvcf2 {cyvcf2_ver}, "
          f"python {sys.version.split()[0]}")
    if have_medlake:
        print(f"# medlake: {medlake} ({tool_version([medlake, '--version'])})")
    else:
        print(f"# {why_not}: running the peers only")
    print(flush=True)

    errors = []
    lake = args.lake
    t = warm(vcf)
    print(f"  page cache warmed: {vcf} read in {t:.1f} s", file=sys.stderr, flush=True)

    # ---- 1. ingest
    if args.only in (None, "ingest"):
        tools = [f"bcftools {m.strip()}" for m in args.bcftools_modes.split(",") if m.strip()]
        tools.append("cyvcf2")
        if have_medlake and not args.skip_ingest:
            tools.append("medlake")
        res = {t: [] for t in tools}
        for rnd in range(args.ingest_runs):
            for tool in tools:
                r = ingest_once(tool, args, vcf, medlake, lake_parent)
                res[tool].append(r)
                print(f"  ingest round {rnd + 1} {tool}: "
                      + (f"{r['wall']:.1f} s, {(r['rss'] or 0) / 1024:,.0f} MiB"
                         if not r["err"] else f"ERROR {r['err']}"),
                      file=sys.stderr, flush=True)
                if tool == "medlake":
                    if r["err"]:
                        shutil.rmtree(r["lake"], ignore_errors=True)
                    else:
                        if lake and lake != args.lake:
                            shutil.rmtree(lake, ignore_errors=True)
                        lake = r["lake"]
        print("## 1. ingest throughput")
        print()
        print("| tool | seconds | records/s | genotypes/s | peak RSS MiB | medlake rate / "
              "tool rate | what is timed |")
        print("|---|---:|---:|---:|---:|---:|---|")
        rows, rates = [], {}
        for tool in tools:
            ok = [r for r in res[tool] if not r["err"]]
            for r in res[tool]:
                if r["err"]:
                    errors.append(f"ingest {tool}: {r['err']}")
            if not ok:
                rows.append((tool, None, None, "failed"))
                continue
            if tool == "cyvcf2":
                for r in ok:
                    if r["records"] != records or r["genotypes"] != genotypes:
                        errors.append(f"cyvcf2 read {r['records']} records / {r['genotypes']} "
                                      f"genotypes, the corpus has {records} / {genotypes}")
                secs = percentile([r["loop"] for r in ok], 50)
                what = (f"`for v in VCF(f): v.{args.cyvcf2_touch}` loop in one Python process "
                        "(start-up and import excluded)")
            elif tool == "medlake":
                secs = percentile([r["wall"] for r in ok], 50)
                what = "`medlake --lake <fresh> ingest vcf FILE`, whole process"
            else:
                secs = percentile([r["wall"] for r in ok], 50)
                what = "`bcftools view " + tool.split()[-1] + " -o /dev/null" + (
                    f" --threads {args.bcftools_threads}" if args.bcftools_threads else "") \
                    + " FILE`, whole process"
            rss = max((r["rss"] or 0) for r in ok) / 1024
            rates[tool] = records / secs
            rows.append((tool, secs, rss, what))
        m_rate = rates.get("medlake")
        for tool, secs, rss, what in rows:
            if secs is None:
                print(f"| {tool} | failed | | | | | |")
                continue
            ratio = fmt_ratio(m_rate, rates[tool]) if m_rate else "n/a"
            name = f"cyvcf2 {cyvcf2_ver}" if tool == "cyvcf2" else tool
            print(f"| {name} | {secs:.1f} | {records / secs:,.0f} | {genotypes / secs:,.0f} | "
                  f"{rss:,.0f} | {ratio} | {what} |")
        print()
        if m_rate:
            c = rates.get("cyvcf2")
            b = rates.get("bcftools -Ob")
            line = "Targets: medlake rate >= cyvcf2's: "
            line += (f"{'yes' if m_rate >= c else 'NO'} ({m_rate / c:.2f}x)" if c else "n/a")
            line += "; medlake time <= 1.5 x bcftools -Ob's: "
            line += (f"{'yes' if b / m_rate <= 1.5 else 'NO'} (medlake/bcftools time "
                     f"{b / m_rate:.2f})" if b else "n/a")
            print(line)
            print()
        print("Notes:")
        print(f"* {args.ingest_runs} round(s), tools interleaved; seconds = median, peak RSS = "
              "largest, " + ("from `/usr/bin/time -f %M`." if os.access(TIME_BIN, os.X_OK) else
                            "from os.wait4 (no /usr/bin/time: includes ~40 MiB of this "
                            "script's pages copied at fork)."))
        for r in res.get("cyvcf2", []):
            if not r["err"]:
                print(f"* cyvcf2 wall (process incl. interpreter start and import): "
                      f"{r['wall']:.1f} s = {records / r['wall']:,.0f} records/s; loop "
                      f"{r['loop']:.1f} s.")
        for r in res.get("medlake", []):
            if r["err"]:
                continue
            print(f"* medlake ingest summary: {json.dumps(r['summary'], sort_keys=True)}")
            if r["summary"] is None:
                print("* WARNING: medlake printed no JSON summary line on stdout")
            # ("ingested" is not used: in the other ingest summaries it counts files)
            got = summary_count(r["summary"], ("records_seen", "records", "variants",
                                               "variants_seen", "rows"))
            if got and got[1] != records:
                errors.append(f"medlake summary {got[0]}={got[1]}, the corpus has {records}")
            got = summary_count(r["summary"], ("genotypes_seen", "genotypes", "calls"))
            if got and got[1] != genotypes:
                errors.append(f"medlake summary {got[0]}={got[1]}, the corpus has {genotypes}")
        if lake and have_medlake and not args.skip_ingest:
            print(f"* medlake lake size: {du(lake) / 2**20:,.0f} MiB "
                  f"(the .vcf.gz is {size / 2**20:,.0f} MiB).")
        if "bcftools -Ob" in rates and "bcftools -Ou" in rates:
            print("* `-Ob` compresses its BCF output (single-threaded BGZF); `-Ou` does the same "
                  "parsing without that, so it is the stricter peer for a reader.")
        print("* The page cache was warmed, so the file is read from RAM. medlake may use every "
              "core; bcftools (without --threads) and cyvcf2 use one.")
        print()
        sys.stdout.flush()

    # ---- 2. region queries
    if args.only in (None, "query"):
        if args.region:
            regions = []
            for r in args.region:
                m = re.fullmatch(r"([^:]+):(\d+)-(\d+)", r.replace(",", ""))
                if not m:
                    sys.exit(f"--region {r}: want CHROM:START-END")
                n = int(m.group(3)) - int(m.group(2)) + 1
                regions.append((f"{n:,} bp", r.replace(",", ""),
                                args.runs if n < 1_000_000 else args.large_runs))
        elif layout:
            fr = [0.2, 0.5, 0.8, 0.35, 0.65][:args.regions_per_size]
            regions = [(f"small ({args.small:,} bp)", r, args.runs)
                       for r in pick_regions(layout, args.small, fr)]
            regions += [(f"large ({args.large:,} bp)", r, args.large_runs)
                        for r in pick_regions(layout, args.large, fr)]
        else:
            sys.exit(f"{vcf}: no .params layout; pass --region")

        q_medlake = have_medlake and lake is not None
        if have_medlake and lake is None:
            errors.append("no lake to query (medlake's ingest failed or did not run)")
        total_check = None
        if q_medlake:
            p = subprocess.run([medlake, "--lake", lake, "sql", "-c",
                                "SELECT count(*) FROM variants", "--format", "csv"],
                               capture_output=True, text=True, timeout=args.timeout)
            total_check = csv_count(p.stdout) if p.returncode == 0 else None
            if total_check != records:
                errors.append(f"medlake `SELECT count(*) FROM variants` = {total_check}, the "
                              f"corpus has {records}"
                              + ("" if p.returncode == 0 else f" ({p.stderr.strip()[-300:]})"))

        cy = {}
        by_runs = {}
        for _, r, runs in regions:
            by_runs.setdefault(runs, []).append(r)
        for runs, rs in by_runs.items():
            p = subprocess.run([args.python, "-c", CYVCF2_QUERY, vcf, str(args.warmup),
                                str(runs)] + rs, capture_output=True, text=True,
                               timeout=args.timeout)
            if p.returncode != 0:
                errors.append(f"cyvcf2 regions: {p.stderr.strip()[-400:]}")
            else:
                cy.update(json.loads(p.stdout))

        results = []
        for i, (label, r, runs) in enumerate(regions):
            row = {"label": label, "region": r, "runs": runs, "s": {}, "n": {}}
            row["n"]["bcftools"], err = count_lines(["bcftools", "view", "-H", "-r", r, vcf],
                                                    args.timeout)
            if err:
                errors.append(f"bcftools {r}: {err}")
            row["s"]["bcftools"], err = time_processes(
                ["bcftools", "view", "-H", "-r", r, "-o", "/dev/null", vcf], runs, args.warmup,
                args.timeout)
            if err:
                errors.append(f"bcftools {r}: {err}")
            row["n"]["tabix"], err = count_lines(["tabix", vcf, r], args.timeout)
            row["s"]["tabix"], err2 = time_processes(["tabix", vcf, r], runs, args.warmup,
                                                     args.timeout)
            if err or err2:
                errors.append(f"tabix {r}: {err or err2}")
            if r in cy:
                row["s"]["cyvcf2"], row["n"]["cyvcf2"] = cy[r]["samples"], cy[r]["count"]
            if q_medlake:
                s, n, err = medlake_wall(medlake, lake, r, runs, args.warmup, args.timeout)
                row["s"]["medlake wall"], row["n"]["medlake wall"] = s, n
                if err:
                    errors.append(f"medlake wall {r}: {err}")
                s, n, err = medlake_self(medlake, lake, r, runs, args.warmup, args.timeout,
                                         workdir, i)
                row["s"]["medlake self"], row["n"]["medlake self"] = s, n
                if err:
                    errors.append(f"medlake self {r}: {err}")
            want = row["n"]["bcftools"]
            for k, v in row["n"].items():
                if v is not None and v != want:
                    errors.append(f"{r}: {k} counts {v} records, bcftools {want}")
            results.append(row)
            print(f"  {label} {r}: {want} records; " + ", ".join(
                f"{k} p50 {fmt_ms(percentile(v, 50))} ms" for k, v in row["s"].items() if v),
                file=sys.stderr, flush=True)

        engines = ["bcftools", "tabix", "cyvcf2"] + (
            ["medlake wall", "medlake self"] if q_medlake else [])
        basis = "medlake " + args.ratio_basis
        print("## 2. region queries (count records in a region)")
        print()
        hdr = ["size", "region", "records"] + [f"{e} p50 / p95 ms" for e in engines]
        if q_medlake:
            hdr += [f"bcftools / {basis} p50", f"bcftools / {basis} p95",
                    "cyvcf2 / medlake self p50"]
        print("| " + " | ".join(hdr) + " |")
        print("|---|---|" + "|".join(["---:"] * (len(hdr) - 2)) + "|")
        pooled = {}
        for row in results:
            st = {}
            for e in engines:
                s = row["s"].get(e)
                st[e] = (percentile(s, 50), percentile(s, 95)) if s else (None, None)
                if s:
                    pooled.setdefault(row["label"], {}).setdefault(e, []).extend(s)
            n = row["n"].get("bcftools")
            cells = [row["label"], f"`{row['region']}`", f"{n:,}" if n is not None else "?"]
            cells += [f"{fmt_ms(st[e][0])} / {fmt_ms(st[e][1])}" for e in engines]
            if q_medlake:
                cells += [fmt_ratio(st["bcftools"][0], st[basis][0]),
                          fmt_ratio(st["bcftools"][1], st[basis][1]),
                          fmt_ratio(st["cyvcf2"][0], st["medlake self"][0])]
            print("| " + " | ".join(cells) + " |")
        for label, d in pooled.items():
            st = {e: (percentile(d.get(e, []), 50), percentile(d.get(e, []), 95))
                  for e in engines}
            cells = [f"**{label}, pooled**", "", ""]
            cells += [f"{fmt_ms(st[e][0])} / {fmt_ms(st[e][1])}" for e in engines]
            if q_medlake:
                cells += [fmt_ratio(st["bcftools"][0], st[basis][0]),
                          fmt_ratio(st["bcftools"][1], st[basis][1]),
                          fmt_ratio(st["cyvcf2"][0], st["medlake self"][0])]
            print("| " + " | ".join(cells) + " |")
        print()
        if q_medlake:
            parts = []
            for label, d in pooled.items():
                b, m = percentile(d.get("bcftools", []), 50), percentile(d.get(basis, []), 50)
                if b and m:
                    parts.append(f"{label}: {'yes' if m < b else 'NO'} ({b / m:.1f}x)")
            print(f"Target: medlake ({args.ratio_basis}) faster than bcftools at p50: "
                  + "; ".join(parts))
            print()
        print("Notes:")
        print(f"* Runs per region: {args.warmup} untimed + {args.runs} timed (small), "
              f"{args.warmup} + {args.large_runs} (large); ratios > 1 mean medlake is faster.")
        print("* bcftools, tabix and medlake wall: one process per run (start-up included). "
              "cyvcf2 and medlake self: in one process, without start-up.")
        print("* Record counts: bcftools = lines of `bcftools view -H -r R FILE` (untimed run); "
              "every engine's count is checked against it.")
        if total_check is not None:
            print(f"* medlake `SELECT count(*) FROM variants` = {total_check:,}.")
        if have_medlake and not q_medlake:
            print("* no medlake lake: region queries ran for the peers only.")
        print()

    print(f"* 1-minute load average at the end: {loadavg()} (at the start: see the header).")
    if not have_medlake:
        print(f"* {why_not}: no medlake numbers.")
    for e in errors:
        print(f"* ERROR {e}")

    shutil.rmtree(workdir, ignore_errors=True)
    if lake and lake != args.lake and not args.keep_lake:
        shutil.rmtree(lake, ignore_errors=True)
    elif lake and args.keep_lake:
        print(f"* lake kept: {lake}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
