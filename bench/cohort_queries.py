#!/usr/bin/env python3
"""Cohort-query benchmark: medlake vs DuckDB on IDC's series index.

Usage:
    python3 bench/cohort_queries.py --parquet <idc_index.parquet> [--runs 5]
        [--medlake-bin PATH] [--queries bench/cohort_queries.sql]
        [--only NAME[,NAME...]] [--duckdb-cli PATH] [--layout DIR]

For every query in bench/cohort_queries.sql (blocks introduced by `-- name: X`):

* DuckDB (python package, in-process): a view `idc` over the parquet file, each
  query executed and fully fetched `--runs` times after one untimed warm-up run;
  the median is reported.
* medlake (CLI): `medlake sql -c "CREATE EXTERNAL TABLE idc STORED AS PARQUET
  LOCATION '<parquet>'; <query>" --format csv`, one process per run, with
  MEDLAKE_TIMING=1 in the environment. Two numbers are reported:
    - wall: the whole process (start-up + table registration + query + CSV out);
    - self: medlake's own query time, the LAST `elapsed_ms: <float>` line it
      prints on stderr (one per statement), if it prints any.
  The medlake/DuckDB ratio uses `self` when every run reported it (the same
  thing the DuckDB number measures: one query in a warm engine), otherwise wall.
  Override with --ratio-basis.
* optional DuckDB CLI (`--duckdb-cli`, or `duckdb` on PATH / next to this
  python): the same one-process-per-run shape as the medlake CLI, so its wall
  time is the fair peer of medlake's wall time.

With --layout DIR, medlake reads a copy of the parquet that medlake itself writes
(COPY ... PARTITIONED BY (Modality), sorted, 65,536-row row groups; see bench/README.md),
made on first use. The ratio's peer stays DuckDB over the raw parquet; DuckDB over the
same layout is timed too and shown in its own column.

Results are compared between the engines: rows are turned into tuples of
strings (NULL -> '', integers as integers, other numbers rounded to
--float-digits significant digits), sorted, and compared; row counts are shown.

If the medlake binary is absent, only DuckDB runs, and the report says so.
"""

import argparse
import csv
import io
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_BIN = os.environ.get(
    "MEDLAKE_BIN", str(Path.home() / ".cache/medlake/target/release/medlake")
)
# The layout medlake makes with --layout: Hive partitions by Modality (so a filter on it
# lists only the matching files, and their statistics are exact), rows sorted by patient
# and study inside, row groups of 65,536 rows with DataFusion's default page statistics.
LAYOUT_PARTITION = "Modality"
LAYOUT_COPY = (
    "COPY (SELECT * FROM raw ORDER BY Modality, PatientID, StudyInstanceUID, SeriesInstanceUID) "
    "TO {dest} STORED AS PARQUET PARTITIONED BY (Modality) "
    "OPTIONS ('format.max_row_group_size' '65536', 'format.compression' 'zstd(1)')"
)
ELAPSED_RE = re.compile(r"elapsed_ms:\s*([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)")


# --------------------------------------------------------------------------
# query file


def load_queries(path):
    """Return [(name, sql)] from a file of `-- name: X` blocks."""
    queries = []
    name, lines = None, []

    def flush():
        if name is None:
            return
        body = "\n".join(l for l in lines if not l.lstrip().startswith("--")).strip()
        body = body.rstrip().rstrip(";").rstrip()
        if not body:
            raise SystemExit(f"{path}: query {name!r} is empty")
        if ";" in body:
            raise SystemExit(f"{path}: query {name!r} holds more than one statement")
        queries.append((name, body))

    for line in Path(path).read_text().splitlines():
        m = re.match(r"^\s*--\s*name:\s*(\S+)\s*$", line)
        if m:
            flush()
            name, lines = m.group(1), []
        elif name is not None:
            lines.append(line)
    flush()
    names = [n for n, _ in queries]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise SystemExit(f"{path}: duplicate query names {sorted(dup)}")
    return queries


# --------------------------------------------------------------------------
# result normalisation


def norm_value(v, digits):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    s = v if isinstance(v, str) else str(v)
    t = s.strip()
    if t == "":
        return ""
    if re.fullmatch(r"[-+]?\d+", t):
        return str(int(t))
    if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|[-+]?(inf|infinity|nan)", t, re.I):
        f = float(t)
        if math.isnan(f) or math.isinf(f):
            return str(f)
        if f.is_integer() and abs(f) < 1e15:
            return str(int(f))
        return f"{f:.{digits}g}"
    if t.lower() in ("true", "false"):
        return t.lower()
    return s


def norm_rows(rows, digits):
    return sorted(tuple(norm_value(v, digits) for v in r) for r in rows)


# --------------------------------------------------------------------------
# engines


def run_duckdb(con, sql, runs):
    con.execute(sql).fetchall()  # warm-up (untimed)
    times, rows, cols = [], None, None
    for _ in range(runs):
        t0 = time.perf_counter()
        cur = con.execute(sql)
        rows = cur.fetchall()
        times.append((time.perf_counter() - t0) * 1000.0)
        cols = [d[0] for d in cur.description]
    return times, cols, rows


def sql_str(s):
    return "'" + s.replace("'", "''") + "'"


def split_csv_result(stdout, header):
    """Pick the query's CSV out of stdout, which may also hold output for the
    CREATE EXTERNAL TABLE statement: the result starts at the last line equal
    to the expected header (case-insensitive). Returns (rows, found_header)."""
    lines = stdout.splitlines()
    want = [h.lower() for h in header]
    start = None
    for i, line in enumerate(lines):
        try:
            cells = next(csv.reader([line]))
        except StopIteration:
            continue
        if [c.strip().lower() for c in cells] == want:
            start = i
    if start is None:
        # no header found: either headerless output or renamed columns
        body = [l for l in lines if l.strip()]
        return [r for r in csv.reader(io.StringIO("\n".join(body)))], False
    body = "\n".join(lines[start + 1:])
    rows = [r for r in csv.reader(io.StringIO(body)) if r]
    return rows, True


def medlake_table_sql(parquet, layout, columns):
    """The statement that registers `idc` in medlake: the raw file, or the layout.

    For the layout the columns are declared (name and type, as in the raw file): without
    a declaration DataFusion types the partition column as Dictionary(UInt16, Utf8),
    which takes a slower GROUP BY path than the Utf8View of every other string column."""
    if layout:
        cols = ", ".join(f"{n} {t}" for n, t in columns)
        return (f"CREATE EXTERNAL TABLE idc ({cols}) STORED AS PARQUET "
                f"PARTITIONED BY ({LAYOUT_PARTITION}) "
                f"LOCATION {sql_str(str(layout).rstrip('/') + '/')}")
    return f"CREATE EXTERNAL TABLE idc STORED AS PARQUET LOCATION {sql_str(str(parquet))}"


def make_layout(bin_path, lake, parquet, layout, timeout):
    """Re-lay the parquet with medlake itself (COPY ... PARTITIONED BY), once."""
    marker = Path(layout) / "_MEDLAKE_LAYOUT"
    if marker.is_file():
        return None
    if Path(layout).exists() and any(Path(layout).iterdir()):
        sys.exit(f"--layout {layout}: exists, is not empty and holds no _MEDLAKE_LAYOUT marker")
    Path(layout).mkdir(parents=True, exist_ok=True)
    script = (f"CREATE EXTERNAL TABLE raw STORED AS PARQUET LOCATION {sql_str(str(parquet))}; "
              + LAYOUT_COPY.format(dest=sql_str(str(layout).rstrip("/") + "/")))
    cmd = [bin_path] + (["--lake", lake] if lake else []) + ["sql", "-c", script]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"making the layout failed: {(p.stderr or p.stdout)[-800:]}")
    marker.write_text(script + "\n")
    return dt


def run_medlake_cli(bin_path, lake, table_sql, sql, runs, header, timeout):
    script = f"{table_sql}; {sql}"
    cmd = [bin_path]
    if lake:
        cmd += ["--lake", lake]
    cmd += ["sql", "-c", script, "--format", "csv"]
    env = dict(os.environ, MEDLAKE_TIMING="1")
    wall, selft, rows, found, err = [], [], None, True, None
    for i in range(runs + 1):  # first run is an untimed warm-up
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        dt = (time.perf_counter() - t0) * 1000.0
        if p.returncode != 0:
            err = (p.stderr.strip() or p.stdout.strip())[-800:]
            return None, None, None, True, f"exit {p.returncode}: {err}"
        if i == 0:
            rows, found = split_csv_result(p.stdout, header)
            continue
        wall.append(dt)
        el = ELAPSED_RE.findall(p.stderr)
        if el:
            selft.append(float(el[-1]))
    if len(selft) != runs:
        selft = None
    return wall, selft, rows, found, err


def run_duckdb_cli(cli, parquet, sql, runs, timeout):
    script = (
        f"CREATE VIEW idc AS SELECT * FROM read_parquet({sql_str(str(parquet))}); {sql};"
    )
    cmd = [cli, "-csv", "-c", script]
    subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)  # warm-up
    wall = []
    for _ in range(runs):
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        wall.append((time.perf_counter() - t0) * 1000.0)
        if p.returncode != 0:
            return None
    return wall


# --------------------------------------------------------------------------


def fmt_ms(x):
    if x is None:
        return "n/a"
    return f"{x:.1f}" if x < 1000 else f"{x:.0f}"


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    if not xs:
        return None
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parquet", required=True, help="path to idc_index.parquet")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per query and engine (median reported)")
    ap.add_argument("--medlake-bin", default=DEFAULT_BIN,
                    help="medlake binary (default $MEDLAKE_BIN or ~/.cache/medlake/target/release/medlake)")
    ap.add_argument("--lake", default=None,
                    help="lake directory passed as --lake (default: a fresh, empty temp directory)")
    ap.add_argument("--queries", default=str(HERE / "cohort_queries.sql"))
    ap.add_argument("--only", default=None, help="comma-separated query names to run")
    ap.add_argument("--ratio-basis", choices=["auto", "self", "wall"], default="auto",
                    help="medlake number used in the ratio (default: self if reported, else wall)")
    ap.add_argument("--float-digits", type=int, default=6,
                    help="significant digits floats are rounded to before comparing (default 6)")
    ap.add_argument("--duckdb-cli", default=None,
                    help="DuckDB CLI binary for a one-process-per-run peer ('none' to skip; "
                         "default: `duckdb` next to this python or on PATH)")
    ap.add_argument("--layout", default=None,
                    help="medlake reads this directory: the parquet re-laid by medlake itself "
                         "(made on first use with COPY ... PARTITIONED BY (Modality), sorted, "
                         "65,536-row row groups). DuckDB keeps reading the raw parquet for the "
                         "ratio, and is also timed on the same layout (reported, not in the ratio)")
    ap.add_argument("--threads", type=int, default=None,
                    help="DuckDB threads (default: DuckDB's default, all cores)")
    ap.add_argument("--timeout", type=float, default=600.0, help="per medlake process, seconds")
    ap.add_argument("--show-diff", action="store_true", help="print the first differing rows on mismatch")
    args = ap.parse_args()

    try:
        import duckdb
    except ImportError:
        sys.exit("python package duckdb missing: pip install -r bench/requirements.txt")

    parquet = Path(args.parquet).resolve()
    if not parquet.is_file():
        sys.exit(f"parquet file not found: {parquet}")
    queries = load_queries(args.queries)
    if args.only:
        keep = set(args.only.split(","))
        unknown = keep - {n for n, _ in queries}
        if unknown:
            sys.exit(f"unknown query names: {sorted(unknown)}")
        queries = [(n, q) for n, q in queries if n in keep]

    medlake = args.medlake_bin
    have_medlake = bool(medlake) and os.path.isfile(medlake) and os.access(medlake, os.X_OK)

    duck_cli = None
    if args.duckdb_cli != "none":
        cand = args.duckdb_cli or str(Path(sys.executable).parent / "duckdb")
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            duck_cli = cand
        elif not args.duckdb_cli:
            duck_cli = shutil.which("duckdb")

    con = duckdb.connect()
    if args.threads:
        con.execute(f"SET threads = {int(args.threads)}")
    con.execute(f"CREATE VIEW idc AS SELECT * FROM read_parquet({sql_str(str(parquet))})")
    nrows = con.execute("SELECT count(*) FROM idc").fetchone()[0]
    dthreads = con.execute("SELECT current_setting('threads')").fetchone()[0]

    tmp_lake = None
    lake = args.lake
    if have_medlake and lake is None:
        import tempfile
        tmp_lake = tempfile.mkdtemp(prefix="medlake-cohort-")
        lake = tmp_lake  # fresh, empty directory

    layout_secs = None
    con_layout = None
    if args.layout:
        if not have_medlake:
            sys.exit("--layout needs the medlake binary (medlake makes the layout)")
        args.layout = str(Path(args.layout).resolve())
        layout_secs = make_layout(medlake, lake, parquet, args.layout, args.timeout)
        con_layout = duckdb.connect()
        if args.threads:
            con_layout.execute(f"SET threads = {int(args.threads)}")
        con_layout.execute(
            "CREATE VIEW idc AS SELECT * FROM read_parquet("
            f"{sql_str(args.layout + '/**/*.parquet')}, hive_partitioning = true)")
    columns = [(r[0], r[1]) for r in con.execute(
        f"DESCRIBE SELECT * FROM read_parquet({sql_str(str(parquet))})").fetchall()]
    table_sql = medlake_table_sql(parquet, args.layout, columns) if have_medlake else None

    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    print(f"# cohort queries: {parquet} ({nrows} rows)")
    print(f"# date {time.strftime('%Y-%m-%d %H:%M')}, nproc {os.cpu_count()}, cpu {cpu}")
    print(f"# duckdb {duckdb.__version__} (threads={dthreads}), runs={args.runs} (+1 warm-up), "
          f"floats compared to {args.float_digits} significant digits")
    if have_medlake:
        print(f"# medlake: {medlake}")
        print(f"# medlake table: {table_sql}")
    else:
        print(f"# medlake binary not found at {medlake}: running DuckDB only")
    if args.layout:
        made = (f"made now in {layout_secs:.1f} s" if layout_secs is not None
                else "made earlier")
        print(f"# layout ({made}) by medlake: "
              + LAYOUT_COPY.format(dest=sql_str(args.layout + "/")))
        print("# DuckDB (ratio peer) reads the raw parquet; 'DuckDB on layout' reads the same "
              "layout as medlake (read_parquet(..., hive_partitioning = true))")
    if duck_cli:
        print(f"# duckdb CLI peer: {duck_cli}")
    print(flush=True)

    results = []
    for name, sql in queries:
        r = {"name": name}
        d_times, cols, d_rows = run_duckdb(con, sql, args.runs)
        r["duck_ms"] = statistics.median(d_times)
        r["duck_rows"] = len(d_rows)
        r["cols"] = cols
        if con_layout is not None:
            lt, _, l_rows = run_duckdb(con_layout, sql, args.runs)
            r["duck_layout_ms"] = statistics.median(lt)
            r["duck_layout_match"] = (norm_rows(d_rows, args.float_digits)
                                      == norm_rows(l_rows, args.float_digits))
        if duck_cli:
            w = run_duckdb_cli(duck_cli, parquet, sql, args.runs, args.timeout)
            r["duckcli_ms"] = statistics.median(w) if w else None
        if have_medlake:
            try:
                wall, selft, m_rows, found, err = run_medlake_cli(
                    medlake, lake, table_sql, sql, args.runs, cols, args.timeout)
            except subprocess.TimeoutExpired:
                wall, selft, m_rows, found, err = None, None, None, True, "timeout"
            r["err"] = err
            if err is None:
                r["ml_wall"] = statistics.median(wall)
                r["ml_self"] = statistics.median(selft) if selft else None
                r["ml_rows"] = len(m_rows)
                a, b = norm_rows(d_rows, args.float_digits), norm_rows(m_rows, args.float_digits)
                r["match"] = a == b
                r["header_found"] = found
                if not r["match"] and args.show_diff:
                    sa, sb = set(a), set(b)
                    print(f"[{name}] only in duckdb: {sorted(sa - sb)[:5]}", file=sys.stderr)
                    print(f"[{name}] only in medlake: {sorted(sb - sa)[:5]}", file=sys.stderr)
        results.append(r)
        print(f"  {name}: duckdb {fmt_ms(r['duck_ms'])} ms, {r['duck_rows']} rows"
              + (f"; medlake wall {fmt_ms(r.get('ml_wall'))} ms self {fmt_ms(r.get('ml_self'))} ms"
                 if have_medlake and not r.get("err") else "")
              + (f"; medlake ERROR {r['err']}" if r.get("err") else ""),
              file=sys.stderr, flush=True)

    # ratio basis
    basis = args.ratio_basis
    if basis == "auto":
        ok = [r for r in results if not r.get("err")]
        basis = "self" if have_medlake and ok and all(r.get("ml_self") is not None for r in ok) else "wall"

    print()
    hdr = ["query", "DuckDB ms"]
    if con_layout is not None:
        hdr.append("DuckDB on layout ms")
    if duck_cli:
        hdr.append("DuckDB CLI wall ms")
    if have_medlake:
        hdr += ["medlake self ms", "medlake CLI wall ms", f"ratio medlake/DuckDB ({basis})",
                "rows DuckDB/medlake", "match"]
    else:
        hdr += ["rows"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(hdr) - 1)) + "|")
    ratios, layout_ratios = [], []
    for r in results:
        row = [r["name"], fmt_ms(r["duck_ms"])]
        if con_layout is not None:
            row.append(fmt_ms(r["duck_layout_ms"])
                       + ("" if r["duck_layout_match"] else " (rows differ)"))
        if duck_cli:
            row.append(fmt_ms(r.get("duckcli_ms")))
        if have_medlake:
            if r.get("err"):
                row += ["error", "error", "n/a", f"{r['duck_rows']}/-", "ERROR"]
            else:
                ml = r["ml_self"] if basis == "self" else r["ml_wall"]
                ratio = (ml / r["duck_ms"]) if (ml is not None and r["duck_ms"] > 0) else None
                if ratio is not None:
                    ratios.append(ratio)
                if ml is not None and r.get("duck_layout_ms"):
                    layout_ratios.append(ml / r["duck_layout_ms"])
                m = "yes" if r["match"] else "NO"
                if not r["header_found"]:
                    m += " (no header seen)"
                row += [fmt_ms(r["ml_self"]), fmt_ms(r["ml_wall"]),
                        f"{ratio:.2f}" if ratio is not None else "n/a",
                        f"{r['duck_rows']}/{r['ml_rows']}", m]
        else:
            row.append(str(r["duck_rows"]))
        print("| " + " | ".join(row) + " |")

    print()
    if have_medlake:
        g = geomean(ratios)
        n_match = sum(1 for r in results if r.get("match"))
        n_err = sum(1 for r in results if r.get("err"))
        print(f"Geometric mean of medlake/DuckDB ratios ({basis}, {len(ratios)} queries): "
              + (f"{g:.2f}" if g else "n/a")
              + (f"; worst {max(ratios):.2f}" if ratios else ""))
        if layout_ratios:
            print(f"Against DuckDB on the same layout (not the target's peer): geometric mean "
                  f"{geomean(layout_ratios):.2f}, worst {max(layout_ratios):.2f}")
        print(f"Results matching: {n_match}/{len(results)}; medlake errors: {n_err}")
        if basis == "wall":
            print("Note: ratio uses medlake CLI wall time (process start + table registration + "
                  "query + CSV output) against an in-process DuckDB query; medlake did not "
                  "report `elapsed_ms:` (MEDLAKE_TIMING=1) for every run.")
        for r in results:
            if r.get("err"):
                print(f"  {r['name']}: {r['err']}")
    else:
        print(f"medlake binary absent ({medlake}): DuckDB only, no ratios or result checks.")
        print(f"Geometric mean of DuckDB medians: {geomean([r['duck_ms'] for r in results]):.1f} ms")

    if tmp_lake:
        shutil.rmtree(tmp_lake, ignore_errors=True)
    if have_medlake and any(not r.get("match") for r in results):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
