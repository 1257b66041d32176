#!/usr/bin/env python3
"""Similarity oracle: exact cosine neighbours from the `embeddings` Delta table, with numpy.

Usage: python3 tests/oracle/similarity_numpy.py <embeddings_table_dir> <model_sha256> <k>

Reads the table with the deltalake package (to_pyarrow_table), keeps the rows of the
model, and for every series computes the cosine similarity (float64) of its vector with
every other series' vector, then the k best (ties by SeriesInstanceUID). Writes JSON to
stdout: {"dim": d, "neighbours": {uid: [[uid, score], ...]}, "pairs": [[uid_a, uid_b,
cosine], ...]} with every unordered pair, for cosine_similarity.
"""

import json
import sys

import numpy as np
from deltalake import DeltaTable


def main():
    table_dir, sha, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
    t = DeltaTable(table_dir).to_pyarrow_table(columns=["SeriesInstanceUID", "model_sha256", "vector"])
    rows = [
        (u, np.asarray(v, dtype=np.float64))
        for u, s, v in zip(
            t.column("SeriesInstanceUID").to_pylist(),
            t.column("model_sha256").to_pylist(),
            t.column("vector").to_pylist(),
        )
        if s == sha
    ]
    rows.sort(key=lambda r: r[0])
    uids = [u for u, _ in rows]
    m = np.stack([v for _, v in rows])
    norms = np.linalg.norm(m, axis=1)
    unit = m / np.where(norms > 0, norms, 1.0)[:, None]
    cos = unit @ unit.T
    out = {"dim": int(m.shape[1]), "neighbours": {}, "pairs": []}
    for i, u in enumerate(uids):
        order = sorted((j for j in range(len(uids)) if j != i), key=lambda j: (-cos[i, j], uids[j]))
        out["neighbours"][u] = [[uids[j], float(cos[i, j])] for j in order[:k]]
        for j in range(i + 1, len(uids)):
            out["pairs"].append([u, uids[j], float(cos[i, j])])
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
