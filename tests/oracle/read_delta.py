#!/usr/bin/env python3
"""Delta oracle: read columns of a Delta table with the deltalake Python package.

Usage: python3 tests/oracle/read_delta.py <table_dir> <column>[,<column>...]

Opens the latest version of the Delta table at <table_dir> with
deltalake.DeltaTable (see tests/oracle/requirements.txt for the pinned
version) and reads it with to_pyarrow_table(); tables with reader features
that path does not support (deletion vectors) are read through deltalake's
QueryBuilder instead (a note goes to stderr).  It selects the given columns in the given order, sorts the rows by all
of them (first column first, ascending, NULLs last, NaN after all other
numbers, like DataFusion's ORDER BY ... ASC), and writes CSV with a header row
to stdout (Python csv module, minimal quoting, "\\n" line ends).

Value formatting:
  NULL              empty field (so NULL and '' look the same)
  float64           repr(), e.g. 0.1, 1e+20, nan, inf
  float32           shortest float32 repr (str(numpy.float32)), e.g. 0.1
  bool              true / false
  date              ISO, YYYY-MM-DD
  timestamp         datetime.isoformat(), e.g. 2024-01-02T03:04:05+00:00
  decimal           str(Decimal)
  binary            lower-case hex
  list / struct     JSON (arrays / objects; a map is an array of [key, value])
                    with the same rules inside, except that NULL is null,
                    strings, integers and bools are plain JSON values, and
                    dates, decimals etc. are JSON strings
  anything else     str(value)
Exit status 2 on bad usage or an unknown column.
"""

from __future__ import annotations

import csv
import datetime
import decimal
import json
import math
import os
import sys

import numpy as np
import pyarrow as pa
from deltalake import DeltaTable, QueryBuilder
from deltalake.exceptions import DeltaProtocolError


def sort_key(v):
    """Total order: values < NaN < NULL; lists/structs compared element-wise."""
    if v is None:
        return (2,)
    if isinstance(v, float) and math.isnan(v):
        return (1,)
    if isinstance(v, list):
        return (0, tuple(sort_key(x) for x in v))
    if isinstance(v, dict):
        return (0, tuple(sort_key(x) for x in v.values()))
    if isinstance(v, tuple):  # map entries come back as (key, value) tuples
        return (0, tuple(sort_key(x) for x in v))
    return (0, v)


def is_float32(t: pa.DataType) -> bool:
    return pa.types.is_float32(t) or pa.types.is_float16(t)


def fmt_float(v: float, t: pa.DataType) -> str:
    return str(np.float32(v)) if is_float32(t) else repr(float(v))


def to_json_value(v, t: pa.DataType):
    """Convert a Python value of Arrow type t into something json.dumps takes."""
    if v is None:
        return None
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return [to_json_value(x, t.value_type) for x in v]
    if pa.types.is_struct(t):
        return {t.field(i).name: to_json_value(v.get(t.field(i).name), t.field(i).type)
                for i in range(t.num_fields)}
    if pa.types.is_map(t):
        return [[to_json_value(k, t.key_type), to_json_value(x, t.item_type)] for k, x in v]
    if isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        # json.dumps writes floats with repr(); float32 goes through its own
        # shortest repr and back so that 0.1f prints as 0.1.
        return float(str(np.float32(v))) if is_float32(t) else v
    return scalar_text(v, t)


def scalar_text(v, t: pa.DataType) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return fmt_float(v, t)
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, datetime.timedelta):
        return str(v)
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    return v if isinstance(v, str) else str(v)


def cell(v, t: pa.DataType) -> str:
    if v is None:
        return ""
    if (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
            or pa.types.is_struct(t) or pa.types.is_map(t)):
        return json.dumps(to_json_value(v, t), ensure_ascii=False)
    return scalar_text(v, t)


def read_columns(dt: DeltaTable, columns: list[str]) -> pa.Table:
    """DeltaTable.to_pyarrow_table(), or deltalake's QueryBuilder (DataFusion
    inside delta-rs) for tables whose reader features the pyarrow-dataset path
    refuses (deletionVectors in deltalake 1.6)."""
    try:
        return dt.to_pyarrow_table(columns=columns)
    except DeltaProtocolError as exc:
        print(f"read_delta: to_pyarrow_table refused ({exc}); using QueryBuilder",
              file=sys.stderr)
    select = ", ".join('"' + c.replace('"', '""') + '"' for c in columns)
    reader = QueryBuilder().register("t", dt).execute(f"SELECT {select} FROM t")
    return pa.RecordBatchReader.from_stream(reader).read_all()


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    table_dir, spec = argv[1], argv[2]
    columns = [c.strip() for c in spec.split(",") if c.strip()]
    if not columns:
        print("read_delta: no columns given", file=sys.stderr)
        return 2

    dt = DeltaTable(table_dir)
    available = [f.name for f in pa.schema(dt.schema().to_arrow())] \
        if hasattr(dt.schema(), "to_arrow") else None
    if available is not None:
        missing = [c for c in columns if c not in available]
        if missing:
            print(f"read_delta: unknown column(s) {missing}; table has {available}",
                  file=sys.stderr)
            return 2

    table = read_columns(dt, columns)
    types = [table.schema.field(c).type for c in columns]
    cols = [table.column(c).to_pylist() for c in columns]
    rows = list(zip(*cols)) if cols else []
    rows.sort(key=lambda r: tuple(sort_key(v) for v in r))

    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([cell(v, t) for v, t in zip(r, types)])
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    status = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: with deltalake 1.6 + pyarrow 26 it sometimes
    # aborts ("terminate called without an active exception", rc 134) while
    # native worker threads shut down, after all output was written
    # (cf. delta-io/delta-rs#2184, apache/arrow#34314).
    os._exit(status)
