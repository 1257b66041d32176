#!/usr/bin/env python3
"""De-identification oracle: what identifies the patients of a DICOM corpus, read with
pydicom apart from medlake; and whether any of it is anywhere in a lake.

Usage:
  python3 tests/oracle/deid_originals.py originals OUT.json DIR_OR_FILE...
  python3 tests/oracle/deid_originals.py scan NEEDLES.json LAKE_DIR OUT.json

`originals` reads every file pydicom can read (force=True, stop before pixels) and writes:
  needles   the search terms, each {"kind", "value"}:
            patient_id   PatientID, OtherPatientIDs, PatientID in OtherPatientIDsSequence
            accession    AccessionNumber
            birth_date   PatientBirthDate as written (YYYYMMDD) and as a date (YYYY-MM-DD),
                         the form Parquet Date32 values print as
            person_name  every PN value anywhere in the header (patients, physicians,
                         operators, observers...), whole, each `=` group and each `^`
                         component
            Values too short to mean anything are left out (IDs: fewer than 3 characters,
            or only digits and fewer than 4; names: fewer than 3 characters, 2 for
            non-Latin script), and so are placeholder words that name nobody (PLACEHOLDERS:
            "Anonymized", "Test", "First", "Name", "Modality"...): they occur in any lake (a
            column is called Modality) and are not identifiers.
  patients  one entry per PatientID: names, birth dates, accession numbers
  series    SeriesInstanceUID -> number of distinct SOPInstanceUIDs
  private   {"elements": private elements (odd groups, creators included) at any depth,
             "top_level": those at the top level, "files": files with any}
  files     files read, and files pydicom could not read

Needles come from every file pydicom reads (DICOMDIRs too); the rest from files with a
SOP Instance UID.

`scan` looks for every needle in every file under LAKE_DIR except `_secrets/` (which
holds the secret and the map of original identifiers by design):
  - the raw bytes (UTF-8) of every file that is not a compressed container: Delta JSON
    logs (with their column statistics), `_last_checkpoint`, the index's meta.json, term
    dictionaries, postings, fast fields and field norms;
  - Parquet files (data files and Delta checkpoints) decompressed: every value of every
    column read with pyarrow, as text (nested lists and structs flattened, dates printed as
    YYYY-MM-DD and YYYYMMDD), and the footer: the column statistics (min, max) and the
    key-value metadata;
  - tantivy doc stores (`*.store`) decompressed: every stored field of every document of
    each index under the lake, read with tantivy-py.
The raw bytes of the compressed containers are not searched: a compressed stream holds
short strings by chance (the snappy bytes of "does" hold a "Doe" followed by a copy
marker), and what they hold is searched decompressed. For the same reason the index's
binary structures (the FST term dictionary, bit-packed postings and positions, field norms,
fast-field columns) are searched for needles of 4 bytes or more only: any 3 bytes occur in
them by chance ("PLA"), while a leaked 4-byte sequence would not go unseen. The index's terms are lowercased and
stemmed from the stored text and the `reports` columns, which are searched; a stemmed term
cannot be told from a name ("does" is stored as "doe"), so they are not searched again.
A needle is found where it occurs with no ASCII letter or digit next to an edge of it that
is itself an ASCII letter or digit (so "0010" is not found inside "00100010", nor "ID1"
inside "PID10"). Case matters. The answer is {"hits": [{"kind", "needle", "file", "where"}],
"count", "files", "parquet_values", "index_docs"}.
"""
import datetime
import json
import os
import re
import sys

PLACEHOLDERS = {
    "anonymized", "anonymous", "anon", "test", "first", "last", "name", "names",
    "firstname", "lastname", "first name", "last name", "patient", "modality", "lut",
    "voi", "mid", "pre", "unknown", "none", "demo", "phantom", "ward", "enter text",
    "operator", "observer", "verifying",
}


def clean(v):
    return str(v).strip().strip("\x00").strip()


def id_ok(v):
    return len(v) >= 4 or (len(v) == 3 and not v.isdigit())


def name_ok(v):
    if v.lower() in PLACEHOLDERS or not any(c.isalpha() for c in v):
        return False
    n = len(v)
    return n >= 3 or (n == 2 and not v.isascii())


def walk(ds, fn, depth=0):
    for elem in ds:
        fn(elem, depth)
        if elem.VR == "SQ" and elem.value is not None:
            for item in elem.value:
                walk(item, fn, depth + 1)


def values(elem):
    v = elem.value
    if v is None:
        return []
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        return [clean(x) for x in v if clean(x)]
    s = clean(v)
    return [s] if s else []


def originals(out_path, inputs):
    import pydicom

    needles = set()
    patients = {}
    series = {}
    private = {"elements": 0, "top_level": 0, "files": 0}
    read, unread = 0, []
    paths = []
    for inp in inputs:
        if os.path.isdir(inp):
            for d, _, fs in os.walk(inp):
                paths.extend(os.path.join(d, f) for f in fs)
        else:
            paths.append(inp)
    seen_sop = {}
    for p in sorted(paths):
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True, force=True)
            # Touch every element, so that a file pydicom cannot decode fails here.
            list(ds.keys())
        except Exception as e:  # noqa: BLE001 - an unreadable file is reported, not fatal
            unread.append(f"{p}: {type(e).__name__}")
            continue
        read += 1
        counts = {"all": 0, "top": 0}

        def visit(elem, depth):
            if elem.tag.group % 2 == 1:
                counts["all"] += 1
                if depth == 0:
                    counts["top"] += 1
                return
            try:
                vr = elem.VR
                vals = values(elem) if vr != "SQ" else []
            except Exception:  # noqa: BLE001 - undecodable values are not searched
                return
            if vr == "PN":
                for v in vals:
                    full = v.rstrip("=^")
                    if name_ok(full):
                        needles.add(("person_name", full))
                    for group in full.split("="):
                        group = group.rstrip("^")
                        if name_ok(group):
                            needles.add(("person_name", group))
                        for part in group.split("^"):
                            if name_ok(part):
                                needles.add(("person_name", part))
            kw = elem.keyword
            if kw in ("PatientID", "OtherPatientIDs"):
                for v in vals:
                    if id_ok(v):
                        needles.add(("patient_id", v))
            elif kw == "AccessionNumber":
                for v in vals:
                    if id_ok(v):
                        needles.add(("accession", v))
            elif kw == "PatientBirthDate":
                for v in vals:
                    d = v.replace(".", "")
                    if len(d) == 8 and d.isdigit():
                        needles.add(("birth_date", d))
                        needles.add(("birth_date", f"{d[:4]}-{d[4:6]}-{d[6:]}"))

        try:
            walk(ds, visit)
        except Exception as e:  # noqa: BLE001
            unread.append(f"{p}: walk {type(e).__name__}")
        # Files without a SOP Instance UID (DICOMDIRs...) give needles, nothing more.
        if "SOPInstanceUID" not in ds and "SOPInstanceUID" not in getattr(ds, "file_meta", {}):
            continue
        private["elements"] += counts["all"]
        private["top_level"] += counts["top"]
        private["files"] += 1 if counts["all"] else 0

        def get(kw):
            try:
                return clean(ds.get(kw, "") or "")
            except Exception:  # noqa: BLE001
                return ""

        pid = get("PatientID")
        if pid:
            e = patients.setdefault(pid, {"PatientID": pid, "names": set(), "birth_dates": set(),
                                          "accessions": set()})
            for k, f in (("names", "PatientName"), ("birth_dates", "PatientBirthDate"),
                         ("accessions", "AccessionNumber")):
                v = get(f)
                if v:
                    e[k].add(v.rstrip("=^") if f == "PatientName" else v)
        sop = get("SOPInstanceUID") or clean(ds.file_meta.get("MediaStorageSOPInstanceUID", ""))
        s = get("SeriesInstanceUID")
        if s and sop and sop not in seen_sop:
            seen_sop[sop] = s
            series[s] = series.get(s, 0) + 1
    out = {
        "needles": [{"kind": k, "value": v} for k, v in sorted(needles)],
        "patients": [
            {k: sorted(v) if isinstance(v, set) else v for k, v in e.items()}
            for _, e in sorted(patients.items())
        ],
        "series": series,
        "private": private,
        "files": {"read": read, "unread": unread},
    }
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)


def pattern(needle):
    left = r"(?<![A-Za-z0-9])" if re.match(r"[A-Za-z0-9]", needle[0]) else ""
    right = r"(?![A-Za-z0-9])" if re.match(r"[A-Za-z0-9]", needle[-1]) else ""
    return left + re.escape(needle) + right


def texts(v):
    """Every value inside a Parquet cell as text."""
    if v is None:
        return
    if isinstance(v, dict):
        for x in v.values():
            yield from texts(x)
    elif isinstance(v, (list, tuple)):
        for x in v:
            yield from texts(x)
    elif isinstance(v, bytes):
        yield v.decode("utf-8", "replace")
    elif isinstance(v, (datetime.date, datetime.datetime)):
        yield v.isoformat()
        yield v.strftime("%Y%m%d")
    else:
        yield str(v)


def scan(needles_path, lake, out_path):
    import pyarrow.parquet as pq

    with open(needles_path) as f:
        needles = json.load(f)["needles"]
    compiled = [(n["kind"], n["value"], re.compile(pattern(n["value"]))) for n in needles]
    as_bytes = [(k, v, re.compile(pattern(v).encode("utf-8"))) for k, v, _ in compiled]
    # Binary index files are matched only against needles of 6 bytes or more: a 4-byte
    # needle such as PatientID "0010" turns up by chance in a few MB of random-looking
    # postings (about once per thousand runs, since the content moves with the lake's
    # random secret), which would make the scan flaky without finding anything real.
    long_bytes = [(k, v, p) for k, v, p in as_bytes if len(v.encode("utf-8")) >= 6]
    # Generated UUIDs (Delta file names and transaction ids) are not data, and a 4-hex-digit
    # group of one can equal a short numeric identifier.
    uuid = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    # One pass per text instead of one per needle: a combined pattern finds candidates.
    combined = re.compile("|".join(f"(?:{pattern(v)})" for _, v, _ in compiled)) if compiled else None
    combined_b = re.compile(b"|".join(b"(?:" + p.pattern + b")" for _, _, p in as_bytes)) if as_bytes else None

    hits = []

    def record(text, where, file):
        if combined is None or not combined.search(text):
            return
        for kind, value, p in compiled:
            if p.search(text):
                hits.append({"kind": kind, "needle": value, "file": file, "where": where})

    files = 0
    parquet_values = 0
    index_dirs = set()
    for d, dirs, fs in os.walk(lake):
        rel_d = os.path.relpath(d, lake)
        if rel_d.split(os.sep)[0] == "_secrets":
            dirs[:] = []
            continue
        for name in fs:
            path = os.path.join(d, name)
            rel = os.path.relpath(path, lake)
            files += 1
            with open(path, "rb") as f:
                data = uuid.sub(b"<uuid>", f.read())
            compressed = name.endswith(".parquet") or name.endswith(".store")
            binary = os.path.splitext(name)[1] in (".term", ".idx", ".pos", ".fieldnorm", ".fast")
            if not compressed and combined_b is not None and combined_b.search(data):
                for kind, value, p in long_bytes if binary else as_bytes:
                    if p.search(data):
                        hits.append({"kind": kind, "needle": value, "file": rel, "where": "bytes"})
            if name == "meta.json" and os.sep + "_search" + os.sep in os.sep + rel:
                index_dirs.add(d)
            if name.endswith(".parquet"):
                pf = pq.ParquetFile(path)
                meta = pf.metadata
                for k, v in (meta.metadata or {}).items():
                    record(k.decode("utf-8", "replace") + "=" + v.decode("utf-8", "replace"),
                           "parquet key-value metadata", rel)
                for rg in range(meta.num_row_groups):
                    for c in range(meta.num_columns):
                        st = meta.row_group(rg).column(c).statistics
                        if st is not None and st.has_min_max:
                            for t in texts([st.min, st.max]):
                                record(t, "parquet statistics", rel)
                table = pf.read()
                for col in table.column_names:
                    for v in table.column(col).to_pylist():
                        for t in texts(v):
                            parquet_values += 1
                            record(t, f"parquet column {col}", rel)
    index_docs = 0
    if index_dirs:
        import tantivy

        for d in sorted(index_dirs):
            index = tantivy.Index.open(d)
            index.reload()
            searcher = index.searcher()
            n = searcher.num_docs
            if n == 0:
                continue
            result = searcher.search(tantivy.Query.all_query(), limit=n)
            for _, addr in result.hits:
                doc = searcher.doc(addr).to_dict()
                index_docs += 1
                for field, vals in doc.items():
                    for v in vals:
                        for t in texts(v):
                            record(t, f"index stored field {field}", os.path.relpath(d, lake))
    out = {
        "hits": hits,
        "count": len(hits),
        "files": files,
        "parquet_values": parquet_values,
        "index_docs": index_docs,
    }
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)


def main():
    cmd = sys.argv[1]
    if cmd == "originals":
        originals(sys.argv[2], sys.argv[3:])
    elif cmd == "scan":
        scan(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
