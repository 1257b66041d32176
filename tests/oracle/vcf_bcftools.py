#!/usr/bin/env python3
"""VCF/BCF oracle: what bcftools makes of one variant file.

Usage: python3 tests/oracle/vcf_bcftools.py <file.vcf|.vcf.gz|.bcf>
           [--region REGION ...] [--info FIELD ...] [--format FIELD ...]
           [--overlap pos|record|variant]

Uses only the bcftools command-line tool (via subprocess; $BCFTOOLS, default
"bcftools" on PATH; written against bcftools/htslib 1.16) and Python's
standard library.  Prints one JSON object to stdout:

  {"records_per_chrom": {chrom: int, ...},
   "samples": [name, ...],
   "nonref_genotypes_per_sample": {name: int, ...},
   "alt_count_sum_per_sample": {name: int, ...},
   "regions": {REGION: [[chrom, pos, ref, alt], ...], ...},
   "info": {FIELD: [[chrom, pos, ref, alt, value], ...], ...},
   "format": {FIELD: [[chrom, pos, ref, alt, sample, value], ...], ...},
   "meta": {"bcftools": "<version line>", "overlap": "...",
            "region_access": "index"|"targets"}}

Semantics (what a Rust/SQL result is compared against):

  records_per_chrom
      Number of data records per CHROM, from
      `bcftools query -f '%CHROM\\n' FILE`: every record of the file, no
      filtering, no deduplication.  CHROM exactly as written in the file
      ("22" and "chr22" are different keys).  Keys in order of first
      appearance; chromosomes declared in the header (##contig) but without
      records are absent.

  samples
      Sample names in header order, from `bcftools query -l FILE`.  [] for
      a sites-only file.

  nonref_genotypes_per_sample, alt_count_sum_per_sample
      From `bcftools query -f '[%SAMPLE\\t%GT\\n]' FILE`: one line per record
      per sample.  The GT string is split on '/' and '|' (phasing is
      ignored); each allele is either '.' (missing) or a non-negative integer
      allele index.  For one genotype (one record, one sample):
        * it is "non-ref" when at least one allele is an integer > 0;
          missing alleles never count (so "./1" and "1/." are non-ref,
          "./.", ".", "0/." and "0/0" are not);
        * its alt count is the number of alleles that are integers > 0
          ("0/1" -> 1, "1|1" -> 2, "1/2" -> 2, "2/2" -> 2, haploid "1" -> 1,
          triploid "0/1/." -> 1).  Which ALT an index refers to does not
          matter, and an index larger than the number of ALT alleles is
          counted like any other index > 0.
      nonref_genotypes_per_sample[s] = number of records whose genotype of
      sample s is non-ref; alt_count_sum_per_sample[s] = sum over all records
      of the alt count of sample s.  A record without a GT FORMAT field
      gives "." for every sample (counts 0).  Every sample from "samples" is
      a key, 0 when it has no non-ref genotype; {} for a sites-only file.
      When the header declares no FORMAT/GT (bcftools then refuses %GT) and
      no record has GT in its FORMAT column, every count is 0 (cyvcf2's
      bug.vcf.gz); GT in records without a header declaration is an error.
      Any other allele token makes the oracle fail.

  regions (one entry per --region, key = REGION as given)
      Records selected by bcftools for REGION ("22", "22:50300000-50400000",
      "22:1000"; 1-based, inclusive), as [CHROM, POS (int), REF, ALT], in
      file order.  ALT is the ALT column as written (multi-allelic sites
      comma-joined, e.g. "A,<*:DEL>"; "." when there is no ALT allele).
      Which records are selected depends on --overlap, passed on to bcftools
      (default "record", the default of `bcftools view -r`):
        pos      POS lies inside REGION;
        record   the record's reference span [POS, POS + rlen - 1] overlaps
                 REGION, where rlen is len(REF), or END - POS + 1 when the
                 record has INFO/END (ignored with a warning when END < POS);
                 so a deletion or <DEL>/<DUP> starting before REGION is
                 included when it reaches into it;
        variant  like record, but only the truly varying part counts (the
                 padding base of an indel is not part of the variant).
      How the file is read: when an index sits beside it (FILE.tbi or
      FILE.csi) the oracle runs `bcftools view -H -r REGION
      --regions-overlap OVERLAP FILE` (index access, as a region query would
      use it); otherwise (plain .vcf, plain-gzip .vcf.gz, unindexed BCF) it
      streams the whole file with `bcftools view -H -t REGION
      --targets-overlap OVERLAP FILE`.  With the same overlap mode both give
      the same records (checked on chr22.vcf.gz and structural.vcf with all
      three modes); no temporary copy is made.  meta.region_access says
      which was used.  A REGION whose chromosome is not in the file gives [].

  info (one entry per --info, key = FIELD as given, without "INFO/")
      For every record, from `bcftools query -f
      '%CHROM\\t%POS\\t%REF\\t%ALT\\t%INFO/FIELD\\n' FILE`:
      [CHROM, POS (int), REF, ALT, value], value a string exactly as
      bcftools prints it:
        * absent in the record: "."
        * Flag: "1" when set, "." when absent (bcftools 1.16 prints no "0")
        * Integer/Float/String with several values: comma-joined ("-56,20")
        * Float: bcftools' own formatting, not the file's text ("0.150" in
          the file prints "0.15"), so compare floats numerically
        * String: as written, including any '|' or '(' of annotations.
      A FIELD that is not declared in the header is an error (bcftools
      refuses it).

  format (one entry per --format, key = FIELD as given, without "FORMAT/")
      For every record and every sample, from `bcftools query -f
      '[%CHROM\\t%POS\\t%REF\\t%ALT\\t%SAMPLE\\t%FIELD\\n]' FILE`:
      [CHROM, POS (int), REF, ALT, SAMPLE, value], value as bcftools prints it
      (the same conventions as info: "." when missing, lists comma-joined,
      a missing list item "."; floats in bcftools' formatting).

Errors: exits 1 with a message on stderr when bcftools exits non-zero, when
it reports an error ("[E::..." on stderr, e.g. a truncated BGZF file, which
bcftools 1.16 reports with exit status 0), when a GT allele is neither '.'
nor an integer, or when its output is not UTF-8.  bcftools warnings
("[W::...", e.g. undeclared contigs) are written once each to stderr and do
not fail the run.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

BCFTOOLS = os.environ.get("BCFTOOLS", "bcftools")
_warnings = []


def die(msg):
    print(f"vcf_bcftools: ERROR: {msg}", file=sys.stderr)
    sys.exit(1)


def bcftools_lines(args):
    """Run bcftools with args and yield its stdout lines (without newline).

    stderr goes to a temporary file (no pipe deadlock on large output) and is
    checked after the process has finished."""
    cmd = [BCFTOOLS] + args
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        except OSError as e:
            die(f"cannot run {BCFTOOLS}: {e}")
        try:
            for raw in proc.stdout:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    proc.kill()
                    die(f"non-UTF-8 output from {' '.join(cmd)}: {e}")
                yield line.rstrip("\n")
        finally:
            proc.stdout.close()
            rc = proc.wait()
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    errors = [l for l in stderr.splitlines() if l.startswith("[E::")]
    if rc != 0 or errors:
        die(f"{' '.join(cmd)} failed (exit status {rc}):\n{stderr.rstrip()}")
    for l in stderr.splitlines():
        if l.strip() and l not in _warnings:
            _warnings.append(l)


def count_alleles(gt, where):
    """(non-ref?, number of alleles with index > 0) of one GT string."""
    n = 0
    for a in re.split(r"[/|]", gt):
        if a == ".":
            continue
        if not a.isdigit():
            die(f"unexpected GT allele {a!r} in {gt!r} ({where})")
        if int(a) > 0:
            n += 1
    return n > 0, n


def query_rows(path, value, per_sample):
    """[CHROM, POS (int), REF, ALT, (SAMPLE,) value] for every record (and sample)."""
    cols = "%CHROM\\t%POS\\t%REF\\t%ALT\\t" + ("%SAMPLE\\t" if per_sample else "")
    fmt = f"[{cols}{value}\\n]" if per_sample else f"{cols}{value}\\n"
    width = 6 if per_sample else 5
    rows = []
    for line in bcftools_lines(["query", "-f", fmt, path]):
        f = line.split("\t")
        if len(f) != width:
            die(f"unexpected line from bcftools query ({value}): {line!r}")
        rows.append([f[0], int(f[1])] + f[2:])
    return rows


def has_index(path):
    return os.path.isfile(path + ".tbi") or os.path.isfile(path + ".csi")


def main():
    ap = argparse.ArgumentParser(
        description="Print bcftools' view of a VCF/BCF file as one JSON object "
                    "(semantics: see the module docstring).")
    ap.add_argument("file")
    ap.add_argument("--region", action="append", default=[], metavar="REGION",
                    help="chrom[:beg[-end]], 1-based inclusive; repeatable")
    ap.add_argument("--info", action="append", default=[], metavar="FIELD",
                    help="INFO field to list per record; repeatable")
    ap.add_argument("--format", action="append", default=[], metavar="FIELD",
                    help="FORMAT field to list per record and sample; repeatable")
    ap.add_argument("--overlap", choices=["pos", "record", "variant"], default="record",
                    help="which records a region selects (default: record)")
    opts = ap.parse_args()
    path = opts.file
    if not os.path.isfile(path):
        die(f"no such file: {path}")

    version = (list(bcftools_lines(["--version"])) or [""])[0]

    records_per_chrom = {}
    for chrom in bcftools_lines(["query", "-f", "%CHROM\\n", path]):
        records_per_chrom[chrom] = records_per_chrom.get(chrom, 0) + 1

    samples = list(bcftools_lines(["query", "-l", path]))

    nonref = {s: 0 for s in samples}
    altsum = {s: 0 for s in samples}
    gt_declared = any(re.match(r"##FORMAT=<ID=GT[,>]", l)
                      for l in bcftools_lines(["view", "-h", path]))
    if samples and not gt_declared:
        for line in bcftools_lines(["view", "-H", path]):
            f = line.split("\t")
            if len(f) > 8 and "GT" in f[8].split(":"):
                die(f"records have FORMAT/GT but the header does not declare it: {line[:200]!r}")
    if samples and gt_declared:
        for line in bcftools_lines(["query", "-f", "[%SAMPLE\\t%GT\\n]", path]):
            sample, sep, gt = line.rpartition("\t")
            if not sep or sample not in nonref:
                die(f"unexpected line from bcftools query: {line!r}")
            is_nonref, n = count_alleles(gt, f"sample {sample}")
            nonref[sample] += is_nonref
            altsum[sample] += n

    indexed = has_index(path)
    regions = {}
    for region in opts.region:
        if indexed:
            sel = ["-r", region, "--regions-overlap", opts.overlap]
        else:
            sel = ["-t", region, "--targets-overlap", opts.overlap]
        rows = []
        for line in bcftools_lines(["view", "-H"] + sel + [path]):
            f = line.split("\t")
            if len(f) < 5:
                die(f"short VCF line from bcftools view: {line!r}")
            rows.append([f[0], int(f[1]), f[3], f[4]])
        regions[region] = rows

    info = {}
    for field in opts.info:
        name = field[5:] if field.startswith("INFO/") else field
        info[name] = query_rows(path, f"%INFO/{name}", per_sample=False)

    formats = {}
    for field in opts.format:
        name = field[7:] if field.startswith("FORMAT/") else field
        formats[name] = query_rows(path, f"%{name}", per_sample=True)

    for w in _warnings:
        print(f"vcf_bcftools: bcftools: {w}", file=sys.stderr)

    json.dump({
        "records_per_chrom": records_per_chrom,
        "samples": samples,
        "nonref_genotypes_per_sample": nonref,
        "alt_count_sum_per_sample": altsum,
        "regions": regions,
        "info": info,
        "format": formats,
        "meta": {
            "bcftools": version,
            "overlap": opts.overlap,
            "region_access": "index" if indexed else "targets",
        },
    }, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
