"""psycopg (libpq) as a client of `medlake serve`, for tests/server.rs.

    pg_clients.py types DSN LAKE COLLECTION
        Parameters ($1-style through psycopg's server-side binding) and types: a query
        over `instances` must return what the deltalake package reads from the same
        Delta table, row for row, with dates as datetime.date, lists as lists and
        NULLs as None. Prints {"rows": n}.
    pg_clients.py concurrent DSN CLIENTS ROUNDS LAKE COLLECTION
        CLIENTS threads, each its own connection, run a mix of queries ROUNDS times;
        every answer is checked against deltalake's reading. Prints {"queries": n,
        "errors": [...]}.
    pg_clients.py memory DSN
        A query past the connection's memory pool fails with an error naming the
        resources, and the same connection then still answers. Prints {"error": msg}.
"""
import datetime
import json
import sys
import threading

import psycopg
from deltalake import DeltaTable


def instances(lake, collection):
    rows = DeltaTable(f"{lake}/instances").to_pyarrow_table().to_pylist()
    return [r for r in rows if r["collection"] == collection]


def types(dsn, lake, collection):
    ref = sorted(
        (
            r["SOPInstanceUID"],
            r["StudyDate"],
            r["ImageType"],
            r["ImagePositionPatient"],
            r["PatientWeight"],
            r["InstanceNumber"],
        )
        for r in instances(lake, collection)
        if r["InstanceNumber"] is not None and r["InstanceNumber"] <= 3
    )
    assert ref, "the reference has no rows: the test would prove nothing"
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(
            'SELECT "SOPInstanceUID", "StudyDate", "ImageType", "ImagePositionPatient", '
            '"PatientWeight", "InstanceNumber" FROM instances '
            'WHERE collection = %s AND "InstanceNumber" <= %s ORDER BY 1',
            (collection, 3),
        )
        got = [tuple(r) for r in cur.fetchall()]
    assert len(got) == len(ref), (len(got), len(ref))
    for g, r in zip(got, ref):
        assert isinstance(g[1], datetime.date), ("StudyDate type", type(g[1]))
        assert isinstance(g[2], list) and isinstance(g[3], list), ("list types", g)
        g = (g[0], g[1], list(g[2]), [float(x) for x in g[3]], g[4], g[5])
        r = (r[0], r[1], list(r[2]), [float(x) for x in r[3]], r[4], r[5])
        assert g == r, (g, r)
    nulls = sum(1 for g in got if g[4] is None)
    # A named prepared statement, executed several times with different parameters.
    with psycopg.connect(dsn, autocommit=True) as conn:
        for limit in (1, 2, 3):
            (n,) = conn.execute(
                'SELECT count(*) FROM instances WHERE collection = %s AND "InstanceNumber" <= %s',
                (collection, limit),
                prepare=True,
            ).fetchone()
            want = sum(1 for r in instances(lake, collection)
                       if r["InstanceNumber"] is not None and r["InstanceNumber"] <= limit)
            assert n == want, ("prepared", limit, n, want)
        # What DBeaver asks first: schemas and tables from pg_catalog.
        schemas = {r[0] for r in conn.execute(
            "SELECT n.nspname FROM pg_catalog.pg_namespace n").fetchall()}
        assert "public" in schemas, schemas
        tables = {r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public'").fetchall()}
        assert "instances" in tables, tables
    # A NULL literal and a NULL parameter come back as None, typed ones too.
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT CAST(NULL AS DATE), %s::text, CAST(%s AS DATE), ARRAY[1, NULL, 3]",
            (None, datetime.date(2024, 2, 29)),
        ).fetchone()
    assert row == (None, None, datetime.date(2024, 2, 29), [1, None, 3]), row
    print(json.dumps({"rows": len(got), "null_weights": nulls}))


def concurrent(dsn, clients, rounds, lake, collection):
    ref = instances(lake, collection)
    n_instances = len(ref)
    series = sorted({r["SeriesInstanceUID"] for r in ref})
    per_series = {s: sum(1 for r in ref if r["SeriesInstanceUID"] == s) for s in series}
    modalities = sorted({r["Modality"] for r in ref})
    errors = []
    done = [0]
    lock = threading.Lock()

    def client(i):
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                for k in range(rounds):
                    q = (i + k) % 4
                    if q == 0:
                        (n,) = conn.execute("SELECT count(*) FROM instances").fetchone()
                        assert n == n_instances, ("count", n, n_instances)
                    elif q == 1:
                        s = series[(i + k) % len(series)]
                        (n,) = conn.execute(
                            'SELECT count(*) FROM instances WHERE "SeriesInstanceUID" = %s', (s,)
                        ).fetchone()
                        assert n == per_series[s], ("series", s, n, per_series[s])
                    elif q == 2:
                        got = [r[0] for r in conn.execute(
                            'SELECT DISTINCT "Modality" FROM series ORDER BY 1').fetchall()]
                        assert got == modalities, ("modalities", got, modalities)
                    else:
                        rows = conn.execute(
                            'SELECT "SeriesInstanceUID", count(*) FROM instances '
                            'GROUP BY 1 ORDER BY 1').fetchall()
                        assert dict(rows) == per_series, ("group by", rows)
                    with lock:
                        done[0] += 1
        except Exception as e:  # noqa: BLE001 - every failure is reported
            with lock:
                errors.append(f"client {i}: {e!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"queries": done[0], "errors": errors}))


def memory(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute(
                # Scrambled, so that the groups come unordered: over generate_series' own
                # (sorted) order DataFusion aggregates as a stream, in constant memory.
                "SELECT count(*) FROM (SELECT DISTINCT (v * 7919) % 100000007 AS k "
                "FROM generate_series(1, 20000000) AS t(v))"
            ).fetchall()
        except psycopg.Error as e:
            msg = str(e)
        else:
            raise AssertionError("a query past the memory pool succeeded")
        (one,) = conn.execute("SELECT 1").fetchone()
        assert one == 1
    print(json.dumps({"error": msg}))


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "types":
        types(*args)
    elif cmd == "concurrent":
        concurrent(args[0], int(args[1]), int(args[2]), args[3], args[4])
    elif cmd == "memory":
        memory(*args)
    else:
        raise SystemExit(f"unknown command {cmd}")
