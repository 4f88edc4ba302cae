"""Export N records as CSV and as Parquet from the API under gunicorn, against PostgreSQL's own
``COPY (SELECT …) TO STDOUT (FORMAT csv)`` of the same table: the record fields and one column per script_data
key, with the same joins and order. The COPY of the record fields alone is printed too, for scale."""

import tempfile
import time
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import requests
from psycopg import sql

from bench import support
from bench.stream_records import RECORD_ROWS_SQL, seed

DEFAULT_N = 1_000_000
RATIO_TARGET = 0.5
RSS_TARGET_MB = 50

# The seeded records' script_data keys, as the export orders its columns.
KEYS = sorted(
    (
        "plot",
        "row",
        "column",
        "replicate",
        "genotype",
        "height_cm",
        "canopy_cover",
        "leaf_count",
        "ndvi",
        "image",
        "checksum",
        "sensor",
    )
)
TABLE_COLUMNS = ", ".join(f"rec.script_data->>'{key}'" for key in KEYS)

FIELDS_SQL = "COPY (" + RECORD_ROWS_SQL + ") TO STDOUT (FORMAT csv)"


def copy_baseline(url: str, script_id: str, with_keys: bool) -> tuple[int, int, float]:
    """Lines, bytes and seconds of PostgreSQL's COPY of the script's rows as CSV (with the key columns or not)."""
    keys = sql.SQL(", " + TABLE_COLUMNS if with_keys else "")
    query = sql.SQL(FIELDS_SQL).format(script=sql.Literal(script_id), more=keys)
    lines = size = 0
    with psycopg.connect(support.psycopg_url(url), options="-c timezone=UTC") as conn:
        started = time.perf_counter()
        with conn.cursor().copy(query) as copy:
            for chunk in copy:
                lines += bytes(chunk).count(b"\n")
                size += len(chunk)
        elapsed = time.perf_counter() - started
    return lines, size, elapsed


def export(
    http: requests.Session, base_url: str, script_id: str, fmt: str, dest: Path, **filters: str
) -> tuple[int, float, str]:
    """Bytes and seconds of the API's export of the script's records into ``dest``, and X-Total-Count."""
    size = 0
    started = time.perf_counter()
    url = f"{base_url}/api/scripts/id/{script_id}/records/export"
    params = {"format": fmt, **filters}
    with http.get(url, params=params, stream=True, timeout=600) as response, open(dest, "wb") as out:
        response.raise_for_status()
        for chunk in response.iter_content(chunk_size=1024 * 1024):
            out.write(chunk)
            size += len(chunk)
    return size, time.perf_counter() - started, response.headers["X-Total-Count"]


def check_csv(path: Path, n: int) -> None:
    """The CSV holds a header and N rows (no value of the seeded rows holds a newline), and no error line."""
    with open(path, "rb") as file:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: file.read(1 << 20), b""))
        file.seek(max(path.stat().st_size - 4096, 0))
        tail = file.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    if lines != n + 1 or tail.startswith(b'{"error"'):
        raise RuntimeError(f"the CSV export has {lines:,} lines (expected {n + 1:,}); last line {tail[:200]!r}")


def check_parquet(path: Path, n: int) -> tuple[int, int]:
    """The Parquet file reads back with N rows; its row groups and columns."""
    metadata = pq.read_metadata(path)
    if metadata.num_rows != n:
        raise RuntimeError(f"the Parquet export has {metadata.num_rows:,} rows, expected {n:,}")
    return metadata.num_row_groups, metadata.num_columns


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its numbers."""
    parser = support.arg_parser("export_records", __doc__, DEFAULT_N, "records to export")
    args = parser.parse_args(argv)
    support.print_header("export_records", argv, args.n, "records, PostgreSQL")
    with support.scratch_database() as url, tempfile.TemporaryDirectory(prefix="scriptorium-bench-") as tmp:
        started = time.perf_counter()
        script_id = seed(url, args.n)
        print(f"seeded:   {args.n:,} records in {time.perf_counter() - started:.1f} s (12 script_data keys each)")

        rates = {}
        for with_keys, label in ((False, "record fields"), (True, "record fields + 12 key columns")):
            lines, size, elapsed = copy_baseline(url, script_id, with_keys)
            rates[with_keys] = lines / elapsed
            print(
                f"baseline: psycopg COPY (SELECT {label} …) TO STDOUT (FORMAT csv): {lines:,} lines, "
                f"{size / support.MB:.0f} MB in {elapsed:.2f} s = {rates[with_keys]:,.0f} rows/s"
            )
            if lines != args.n:
                raise RuntimeError(f"the baseline returned {lines:,} lines, expected {args.n:,}")
        baseline = rates[True]

        env = support.app_env(url, Path(tmp))
        http = support.api_session(support.api_token(url, Path(tmp)))
        with support.gunicorn(env, Path(tmp) / "gunicorn.log") as server:
            # Warm the worker before the RSS baseline: the pool, and the code pages pyarrow touches only once it
            # parses and writes rows (an hour of records).
            for fmt in ("csv", "parquet"):
                export(http, server.url, script_id, fmt, Path(tmp) / "warm", end_timestamp="2024-01-01T01:00:00Z")
            worker = support.worker_pid(server.pid)
            for fmt in ("csv", "parquet"):
                dest = Path(tmp) / f"export.{fmt}"
                with support.RssWatch(worker) as rss:
                    size, elapsed, total = export(http, server.url, script_id, fmt, dest)
                if fmt == "csv":
                    check_csv(dest, args.n)
                    shape = ""
                else:
                    groups, columns = check_parquet(dest, args.n)
                    shape = f", {groups} row groups of {columns} columns"
                result = args.n / elapsed
                print(
                    f"result:   export?format={fmt}: {args.n:,} rows (X-Total-Count {total}), "
                    f"{size / support.MB:.0f} MB{shape} in {elapsed:.2f} s = {result:,.0f} rows/s"
                )
                support.print_ratio(f"ratio {fmt}", result / baseline, RATIO_TARGET)
                print(f"          (against the COPY of the record fields alone: {result / rates[False]:.2f}×)")
                print(rss.describe())
                support.print_ratio(
                    f"RSS growth {fmt}", rss.growth / support.MB, RSS_TARGET_MB, higher_is_better=False, unit=" MB"
                )
                dest.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
