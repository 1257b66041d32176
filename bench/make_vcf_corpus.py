#!/usr/bin/env python3
"""Build a large multi-sample VCF by tiling a real one with shifted positions.

Usage:
    python3 bench/make_vcf_corpus.py [--source 1kg.vcf.gz] [--records 5000000]
        [--samples 100] [--workdir /tmp/medlake-vcf-bench] [--threads 2] [--force]

Source (default): `1kg.vcf.gz` from the pyvcf3 1.0.4 wheel (vcf/test/), a 1000 Genomes
pilot extract: 381 biallelic SNPs on chromosome 2 (POS 10,038-40,424), 629 samples, FORMAT
GT:AD:DP:GD:GL:GQ:OG, phased genotypes (44 % of them missing, ./.).

The source records are repeated as tiles. Tile k is every source record with POS shifted by
k * stride, where stride is the source's span rounded up to 100 bp (30,400 for 1kg.vcf.gz),
so positions strictly increase from one tile to the next and the record density stays the
source's (one SNP per ~80 bp). Tiles fill chromosome 1, then 2, 3, ... up to their GRCh37
lengths; the last tile is cut to give exactly --records records. Each record keeps its
REF/ALT/QUAL/FILTER/INFO/FORMAT and the genotype columns of the first --samples samples,
unchanged; the ID stays `.`.

Header: the source's meta lines, with `##fileformat=VCFv4.1` (the source says 4.0, which
has no ##contig lines), GL declared `Number=G` instead of `Number=3` (the same thing for these
biallelic sites; VCF 4.1 reserves GL as Number=G and htslib warns about 3), `##samples=` set
to the kept count, one `##contig=<ID=..,length=..>`
per chromosome used (GRCh37 lengths), and a `##source=` line naming this tiling. The #CHROM
line keeps the first --samples sample names.

Output: <workdir>/vcf_<records>r_<samples>s.vcf.gz, bgzip-compressed (`bgzip -@ threads`,
default level) and tabix-indexed (`tabix -p vcf`), plus a `.params` JSON sidecar with the
parameters, the source's SHA-256 and the layout (records and first/last POS per
chromosome). A rerun with the same parameters reuses the file; --force rebuilds.

Sizes with the defaults (5,000,000 records x 100 samples = 500 M genotypes): about 3 KB per
record uncompressed (~15 GB of VCF text, never stored), 1,368 MiB bgzipped; chromosome 1
(1..249.2 Mb) is full and chromosome 2 holds the rest. All 629 samples would be ~95 GB of
text, hence the default of 100.

Can be imported: corpus(...) returns (path, params).
"""

import argparse
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_SOURCE = str(Path.home() / ".cache/medlake/test-data/pyvcf3/vcf/test/1kg.vcf.gz")
DEFAULT_WORKDIR = "/tmp/medlake-vcf-bench"
FORMAT_VERSION = 2  # bump when the output for the same parameters changes

# GRCh37 chromosome lengths (the source, 1000 Genomes pilot data, is on GRCh37/b36 coordinates).
GRCH37 = [
    ("1", 249250621), ("2", 243199373), ("3", 198022430), ("4", 191154276),
    ("5", 180915260), ("6", 171115067), ("7", 159138663), ("8", 146364022),
    ("9", 141213431), ("10", 135534747), ("11", 135006516), ("12", 133851895),
    ("13", 115169878), ("14", 107349540), ("15", 102531392), ("16", 90354753),
    ("17", 81195210), ("18", 78077248), ("19", 59128983), ("20", 63025520),
    ("21", 48129895), ("22", 51304566), ("X", 155270560), ("Y", 59373566),
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def read_source(path, samples):
    """(meta lines, #CHROM line fields, [(pos, tail)], total sample count)."""
    meta, header, recs, chroms = [], None, [], set()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="\n") as f:
        for line in f:
            line = line.rstrip("\n").rstrip("\r")
            if line.startswith("##"):
                meta.append(line)
            elif line.startswith("#"):
                header = line[1:].split("\t")
            elif line:
                fields = line.split("\t")
                chroms.add(fields[0])
                # tail: ID .. FORMAT plus the kept sample columns
                recs.append((int(fields[1]), "\t".join(fields[2:9 + samples])))
    if header is None or len(header) < 10:
        sys.exit(f"{path}: no #CHROM line with samples")
    if len(chroms) != 1:
        sys.exit(f"{path}: tiling needs a single-chromosome source, found {sorted(chroms)}")
    if any(a[0] > b[0] for a, b in zip(recs, recs[1:])):
        sys.exit(f"{path}: records are not sorted by POS")
    return meta, header, recs, len(header) - 9


def plan(recs, records):
    """Tile layout: stride, and [(chrom, length, n_tiles_full, n_records, first, last)]."""
    lo, hi = recs[0][0], recs[-1][0]
    stride = -(-(hi - lo + 1) // 100) * 100
    per_tile = len(recs)
    layout, left = [], records
    for chrom, length in GRCH37:
        if left <= 0:
            break
        tiles = (length - hi) // stride + 1  # tiles k = 0 .. tiles-1 end at or before `length`
        n = min(left, tiles * per_tile)
        last_k, last_i = divmod(n - 1, per_tile)
        layout.append({"chrom": chrom, "length": length, "records": n,
                       "first_pos": lo, "last_pos": recs[last_i][0] + last_k * stride})
        left -= n
    if left > 0:
        sys.exit(f"--records {records}: more than GRCh37 holds at this density")
    return stride, layout


def build(source, out, records, samples, threads):
    meta, header, recs, n_src = read_source(source, samples)
    if samples > n_src:
        sys.exit(f"--samples {samples}: the source has only {n_src}")
    stride, layout = plan(recs, records)
    head = []
    for line in meta:
        if line.startswith("##fileformat="):
            line = "##fileformat=VCFv4.1"
        elif line.startswith("##samples="):
            line = f"##samples={samples}"
        elif line.startswith("##contig="):
            continue
        elif line.startswith("##FORMAT=<ID=GL,Number=3,"):
            # VCF 4.1 declares GL as one value per genotype (Number=G); htslib warns otherwise
            line = line.replace("Number=3,", "Number=G,", 1)
        head.append(line)
    head += [f"##contig=<ID={c['chrom']},length={c['length']}>" for c in layout]
    head.append(f"##source=medlake bench/make_vcf_corpus.py: {Path(source).name} tiled "
                f"{records} records, POS shifted by k*{stride}, first {samples} samples")
    head.append("#" + "\t".join(header[:9 + samples]))
    tmp = out + ".tmp"
    with open(tmp, "wb") as fo:
        bg = subprocess.Popen(["bgzip", "-@", str(threads), "-c"], stdin=subprocess.PIPE,
                              stdout=fo)
        w = bg.stdin
        w.write(("\n".join(head) + "\n").encode())
        per_tile = len(recs)
        # bytes per source record after "CHROM\tPOS\t": precomputed once
        tails = [("\t" + t + "\n").encode() for _, t in recs]
        poss = [p for p, _ in recs]
        for c in layout:
            cb = (c["chrom"] + "\t").encode()
            n = c["records"]
            k = 0
            while n > 0:
                m = min(n, per_tile)
                off = k * stride
                w.write(b"".join(cb + str(p + off).encode() + t
                                 for p, t in zip(poss[:m], tails[:m])))
                n -= m
                k += 1
        w.close()
        if bg.wait() != 0:
            sys.exit("bgzip failed")
    subprocess.run(["tabix", "-f", "-p", "vcf", tmp], check=True)
    os.replace(tmp + ".tbi", out + ".tbi")
    os.replace(tmp, out)
    return stride, layout, n_src


def corpus(source=DEFAULT_SOURCE, records=5_000_000, samples=100, workdir=DEFAULT_WORKDIR,
           threads=2, force=False, log=sys.stderr):
    """Build or reuse the corpus; returns (path, params)."""
    source = str(Path(source).expanduser().resolve())
    if not os.path.isfile(source):
        sys.exit(f"source VCF not found: {source}\n(get it from the pyvcf3 1.0.4 wheel: "
                 "pip download --no-deps pyvcf3==1.0.4 && unzip pyvcf3-1.0.4-py3-none-any.whl "
                 "vcf/test/1kg.vcf.gz; then pass --source)")
    for tool in ("bgzip", "tabix"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not on PATH (Debian package tabix)")
    os.makedirs(workdir, exist_ok=True)
    out = os.path.join(workdir, f"vcf_{records}r_{samples}s.vcf.gz")
    # the source is identified by its content, not its path
    want = {"format_version": FORMAT_VERSION, "source_sha256": sha256(source),
            "records": records, "samples": samples}
    side = out + ".params"
    if not force and os.path.isfile(out) and os.path.isfile(out + ".tbi") \
            and os.path.isfile(side):
        try:
            have = json.load(open(side))
        except ValueError:
            have = {}
        if all(have.get(k) == v for k, v in want.items()):
            print(f"reusing {out} ({os.path.getsize(out) / 2**20:,.0f} MiB)", file=log)
            return out, have
    print(f"building {out}: {records:,} records x {samples} samples from {source} ...",
          file=log, flush=True)
    t0 = time.perf_counter()
    stride, layout, n_src = build(source, out, records, samples, threads)
    dt = time.perf_counter() - t0
    params = dict(want, source=source, stride=stride, source_samples=n_src, layout=layout,
                  bytes=os.path.getsize(out), build_seconds=round(dt, 1),
                  genotypes=records * samples)
    with open(side + ".tmp", "w") as f:
        json.dump(params, f, indent=1)
    os.replace(side + ".tmp", side)
    print(f"built {out} in {dt:.0f} s: {params['bytes'] / 2**20:,.0f} MiB, "
          + ", ".join(f"chrom {c['chrom']}: {c['records']:,} records, POS {c['first_pos']:,}-"
                      f"{c['last_pos']:,}" for c in layout), file=log, flush=True)
    return out, params


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=DEFAULT_SOURCE,
                    help=f"single-chromosome, POS-sorted VCF to tile (default {DEFAULT_SOURCE})")
    ap.add_argument("--records", type=int, default=5_000_000, help="records to write")
    ap.add_argument("--samples", type=int, default=100,
                    help="keep the first N samples (default 100)")
    ap.add_argument("--workdir", default=DEFAULT_WORKDIR, help="output folder")
    ap.add_argument("--threads", type=int, default=2, help="bgzip -@ threads")
    ap.add_argument("--force", action="store_true", help="rebuild even if it exists")
    args = ap.parse_args()
    if args.records < 1 or args.samples < 1:
        sys.exit("--records and --samples must be >= 1")
    path, params = corpus(args.source, args.records, args.samples, args.workdir,
                          args.threads, args.force)
    print(path)


if __name__ == "__main__":
    main()
