#!/usr/bin/env python3
"""Exact cosine similarity search: medlake's VectorIndex against numpy, same data, same run.

    cargo build --release -p medlake-udfs --example similarity_search
    python3 bench/similarity.py [--sizes 100000,1000000] [--dim 256] [--k 10] [--runs 20]

For each size N: N random vectors and `runs` queries (numpy, fixed seed) are written as raw
f32 to a scratch folder; numpy (the peer) normalizes the rows once, then per query takes
`rows @ q` (BLAS sgemv) and the top k by argpartition + sort; medlake's example reads the
same bytes into a VectorIndex (normalized at insert) and searches. Both report the median
seconds per query after one untimed query; the top-k indices must agree (ties aside).
Prints one table row per size and the ratio numpy / medlake (above 1: medlake faster).
"""

import argparse
import json
import os
import subprocess
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(
    os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release/examples/similarity_search"
)


def numpy_search(unit, queries, k, runs):
    times, tops = [], []
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    def one(q):
        s = unit @ q
        idx = np.argpartition(-s, k)[:k]
        return idx[np.lexsort((idx, -s[idx]))]
    one(qn[0])
    for i in range(runs):
        t = time.perf_counter()
        top = one(qn[i % len(qn)])
        times.append(time.perf_counter() - t)
        tops.append(top.tolist())
    times.sort()
    return times[len(times) // 2], tops


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    rng = np.random.default_rng(42)
    print(f"| vectors | dim | k | numpy median | medlake median | ratio (numpy / medlake) | top-k equal |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(x) for x in args.sizes.split(",")]:
            data = rng.standard_normal((n, args.dim), dtype=np.float32)
            queries = rng.standard_normal((args.runs, args.dim), dtype=np.float32)
            dpath, qpath = os.path.join(tmp, "data.f32"), os.path.join(tmp, "queries.f32")
            data.tofile(dpath)
            queries.tofile(qpath)
            unit = data / np.linalg.norm(data, axis=1, keepdims=True)
            del data
            np_s, np_tops = numpy_search(unit, queries, args.k, args.runs)
            del unit
            out = subprocess.run(
                [EXAMPLE, "--data", dpath, "--queries", qpath, "--dim", str(args.dim),
                 "--k", str(args.k), "--runs", str(args.runs)],
                check=True, capture_output=True, text=True,
            ).stdout
            ours = json.loads(out)
            equal = sum(a == b for a, b in zip(np_tops, ours["top"]))
            print(
                f"| {n:,} | {args.dim} | {args.k} | {np_s * 1e3:.1f} ms | {ours['median_s'] * 1e3:.1f} ms | "
                f"{np_s / ours['median_s']:.2f}x | {equal}/{len(np_tops)} |"
            )


if __name__ == "__main__":
    main()
