"""Flat cost to 10M records: the same reads and writes against a table of 1M records and one of 10M (200 scripts),
each in its own scratch database, in the same run: a script's NDJSON stream, a two-site one-week /filter (time to
first byte, rows/s), single POSTs, a 100k-row bulk upload and the WAL that upload wrote."""

import os
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import requests

from bench import bulk_ingest, support

DEFAULT_RECORDS = 10_000_000
DEFAULT_BASELINE = 1_000_000
SCRIPTS = 200
SITES = 10
# The streamed and filtered script holds the same records in both tables, so both read the same rows.
STREAMED = 100_000
BULK_ROWS = 100_000
POSTS = 300
FILTERS = 20
RATE_TARGET = 0.9
WAL_TARGET = 2.0
# Seeded records sit in 2020, one minute apart per script: clear of the bulk (2024) and POST (2022-23) timestamps.
SEED_START = "2020-01-01T00:00:00Z"
WEEK = ("2020-01-08T00:00:00Z", "2020-01-14T23:59:59Z")

REFERENCE_SQL = (
    "INSERT INTO experiments (id, experiment_name, experiment_info, created_at)"
    " VALUES (%(experiment)s, 'Bench Experiment', '{}', now())",
    "INSERT INTO seasons (id, experiment_id, season_name, season_info, created_at)"
    " VALUES (%(season)s, %(experiment)s, 'Bench Season', '{}', now())",
    "INSERT INTO datasets (id, dataset_name, dataset_info, created_at)"
    f" VALUES (%(dataset)s, '{bulk_ingest.DATASET}', '{{}}', now())",
    "INSERT INTO sites (id, site_name, site_info, created_at)"
    " SELECT gen_random_uuid(), 'Bench Site ' || k, '{}', now() FROM generate_series(0, %(sites)s - 1) k",
    "INSERT INTO scripts (id, script_name, script_info, created_at, updated_at)"
    " SELECT gen_random_uuid(), 'bench-script-' || lpad(k::text, 3, '0'), '{}', now(), now()"
    " FROM generate_series(0, %(scripts)s - 1) k",
    "INSERT INTO script_experiments SELECT id, %(experiment)s FROM scripts",
    "INSERT INTO script_datasets SELECT id, %(dataset)s FROM scripts",
)

# Interleaved by time across the scripts, as records arrive; ids random, as every record stored before UUIDv7 has.
RECORDS_SQL = """
WITH sc AS (SELECT id, row_number() OVER (ORDER BY script_name) - 1 AS k FROM scripts),
     si AS (SELECT array_agg(id ORDER BY site_name) AS ids FROM sites)
INSERT INTO script_records (id, timestamp, collection_date, script_id, dataset_id, experiment_id, season_id,
                            site_id, script_data, record_info, created_at)
SELECT gen_random_uuid(), ts, ts::date, sc.id, %(dataset)s, %(experiment)s, %(season)s, si.ids[1 + g %% %(sites)s],
       jsonb_build_object(
           'plot', g %% 500, 'row', g %% 40, 'column', g %% 25, 'replicate', 1 + g %% 4,
           'genotype', 'G-' || lpad((g %% 2000)::text, 5, '0'), 'height_cm', 50 + (g %% 1000) / 10.0,
           'canopy_cover', (g %% 100) / 100.0, 'leaf_count', g %% 37, 'ndvi', 0.2 + (g %% 70) / 100.0,
           'image', 'plot_' || g || '.png', 'checksum', md5(g::text)),
       '{}'::jsonb, now()
FROM generate_series(0, %(streamed)s - 1) AS g CROSS JOIN sc CROSS JOIN si,
     LATERAL (SELECT %(start)s::timestamptz + g * interval '1 minute' AS ts) t
WHERE g < CASE WHEN sc.k = 0 THEN %(streamed)s ELSE %(per_script)s END
"""

# Secondary indexes and the identity constraint are built once after the seed instead of row by row (much faster);
# the primary key stays, so the seed pays what random-id inserts cost.
SECONDARY_INDEXES_SQL = """
SELECT i.relname, c.conname, coalesce(pg_get_constraintdef(c.oid), pg_get_indexdef(i.oid))
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid
WHERE x.indrelid = 'script_records'::regclass AND NOT x.indisprimary
"""


@dataclass
class Figures:
    """What one table size measured."""

    records: int
    seed_seconds: float
    table_mb: float
    stream_rate: float
    filter_ttfb: float
    filter_rate: float
    filter_rows: int
    post_rate: float
    bulk_rate: float
    wal_bytes: int
    wal_fpi: dict[str, int]


def seed(conninfo: str, records: int) -> None:
    """The reference rows, 200 scripts and ``records`` records (``STREAMED`` of them in the first script)."""
    ids = {name: uuid.uuid4() for name in ("experiment", "season", "dataset")}
    per_script = (records - STREAMED) // (SCRIPTS - 1)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        with conn.transaction():
            for statement in REFERENCE_SQL:
                conn.execute(statement, {**ids, "sites": SITES, "scripts": SCRIPTS})
            secondary = conn.execute(SECONDARY_INDEXES_SQL).fetchall()
            for index, constraint, _ in secondary:
                if constraint:
                    conn.execute(f'ALTER TABLE script_records DROP CONSTRAINT "{constraint}"')
                else:
                    conn.execute(f'DROP INDEX "{index}"')
            conn.execute(
                RECORDS_SQL,
                {**ids, "sites": SITES, "streamed": STREAMED, "per_script": per_script, "start": SEED_START},
            )
            for _, constraint, definition in secondary:
                if constraint:
                    conn.execute(f'ALTER TABLE script_records ADD CONSTRAINT "{constraint}" {definition}')
                else:
                    conn.execute(definition)
        # Hint bits and statistics now, so no timed reader pays for the fresh rows first.
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")


def script_names(conninfo: str) -> tuple[str, dict[str, str]]:
    """The streamed script's id, and the names the POSTs and the bulk upload go to (the second script)."""
    with psycopg.connect(conninfo) as conn:
        streamed, target = (
            str(row[0]) for row in conn.execute("SELECT id FROM scripts ORDER BY script_name LIMIT 2").fetchall()
        )
    return streamed, {
        "script_id": target,
        "experiment_name": "Bench Experiment",
        "season_name": "Bench Season",
        "site_name": "Bench Site 0",
    }


def stream_rate(http: requests.Session, url: str) -> tuple[float, float, int]:
    """Seconds to the first byte, rows per second and rows of one NDJSON stream."""
    lines = 0
    started = time.perf_counter()
    first = None
    with http.get(url, stream=True, timeout=600) as response:
        response.raise_for_status()
        for chunk in response.iter_content(chunk_size=1024 * 1024):
            if first is None:
                first = time.perf_counter() - started
            lines += chunk.count(b"\n")
    elapsed = time.perf_counter() - started
    return first or elapsed, lines / elapsed, lines


def wal_lsn(conninfo: str) -> str:
    """The server's current WAL insert position."""
    with psycopg.connect(conninfo) as conn:
        return conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]


def wal_since(conninfo: str, lsn: str) -> tuple[int, dict[str, int]]:
    """WAL bytes written since ``lsn``, and the bytes of full-page images in it by resource manager (empty without
    pg_walinspect, or what it could not read)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        (size,) = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s)", (lsn,)).fetchone()
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
            # pg_walinspect reads only flushed WAL: the job's commit flushed everything it wrote.
            rows = conn.execute(
                'SELECT "resource_manager/record_type", fpi_size FROM pg_get_wal_stats(%s, pg_current_wal_flush_lsn())'
                " WHERE fpi_size > 0",
                (lsn,),
            ).fetchall()
        except psycopg.Error as error:
            # Segments a checkpoint recycled during a long upload, say: the total above still holds.
            return int(size), {f"unknown ({str(error).strip()[:100]})": 0}
    return int(size), {manager: int(fpi) for manager, fpi in rows}


def measure(records: int, tmp: Path) -> Figures:
    """Seed a scratch database with ``records`` records, measure it and drop it."""
    with support.scratch_database() as url:
        conninfo = support.psycopg_url(url)
        started = time.perf_counter()
        seed(conninfo, records)
        seed_seconds = time.perf_counter() - started
        with psycopg.connect(conninfo) as conn:
            (count, size) = conn.execute(
                "SELECT count(*), pg_total_relation_size('script_records') FROM script_records"
            ).fetchone()
        if count != STREAMED + (records - STREAMED) // (SCRIPTS - 1) * (SCRIPTS - 1):
            raise RuntimeError(f"the seed stored {count:,} records")
        print(f"seeded:   {count:,} records in {seed_seconds:.0f} s; script_records {size / support.MB:,.0f} MB")
        streamed, names = script_names(conninfo)
        upload = tmp / "bulk.ndjson"
        if not upload.exists():
            bulk_ingest.write_ndjson(upload, BULK_ROWS, {})
        settings = bulk_ingest.broker_settings()
        env = support.app_env(url, tmp / "instance", **settings)
        http = support.api_session(support.api_token(url, tmp / "instance"))
        try:
            with (
                bulk_ingest.celery_worker(env, tmp / f"worker-{records}.log", 0),
                support.gunicorn(env, tmp / f"gunicorn-{records}.log") as server,
            ):
                base = f"{server.url}/api/scripts/id/{streamed}/records"
                # Warms the worker (imports, pool, the streaming path) before anything is timed.
                stream_rate(http, f"{base}?site_name=none")
                streams = [stream_rate(http, base) for _ in range(3)]
                if {rows for _, _, rows in streams} != {STREAMED}:
                    raise RuntimeError(f"streams returned {[rows for _, _, rows in streams]} rows")
                query = {
                    "start_timestamp": WEEK[0],
                    "end_timestamp": WEEK[1],
                    "site_names": "Bench Site 1,Bench Site 2",
                }
                filter_url = requests.Request("GET", f"{base}/filter", params=query).prepare().url
                filters = [stream_rate(http, filter_url) for _ in range(FILTERS)]

                bulk_ingest.post_records(http, server.url, names, 20, datetime(2022, 1, 1, tzinfo=UTC))
                post_seconds = bulk_ingest.post_records(
                    http, server.url, names, POSTS, datetime(2023, 1, 1, tzinfo=UTC)
                )

                bulk_ingest.checkpoint(conninfo)
                lsn = wal_lsn(conninfo)
                _, bulk_seconds, job = bulk_ingest.bulk_upload(http, server.url, names, upload, timeout=1800)
                wal_bytes, wal_fpi = wal_since(conninfo, lsn)
                if (job["state"], job["inserted"]) != ("succeeded", BULK_ROWS):
                    raise RuntimeError(f"the bulk job ended {job}")
        finally:
            bulk_ingest.forget_queue(settings["queue_name"])
    return Figures(
        records=count,
        seed_seconds=seed_seconds,
        table_mb=size / support.MB,
        stream_rate=statistics.median(rate for _, rate, _ in streams),
        filter_ttfb=statistics.median(ttfb for ttfb, _, _ in filters),
        filter_rate=statistics.median(rate for _, rate, _ in filters),
        filter_rows=filters[0][2],
        post_rate=POSTS / post_seconds,
        bulk_rate=BULK_ROWS / bulk_seconds,
        wal_bytes=wal_bytes,
        wal_fpi=wal_fpi,
    )


def report(figures: Figures) -> None:
    """Print one table size's numbers."""
    fpi = "".join(
        f"; {manager} full-page images {size / support.MB:,.1f} MB" for manager, size in figures.wal_fpi.items()
    )
    print(
        f"result:   {figures.records:,} records: stream {figures.stream_rate:,.0f} rows/s (median of 3, "
        f"{STREAMED:,} rows); filter TTFB {figures.filter_ttfb * 1000:.1f} ms, {figures.filter_rate:,.0f} rows/s "
        f"(median of {FILTERS}, {figures.filter_rows:,} rows); POST {figures.post_rate:,.0f} req/s ({POSTS} one by "
        f"one); bulk {figures.bulk_rate:,.0f} rows/s ({BULK_ROWS:,} rows to succeeded); bulk WAL "
        f"{figures.wal_bytes / support.MB:,.1f} MB{fpi}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its numbers."""
    parser = support.arg_parser("scale", __doc__, DEFAULT_RECORDS, "records in the large table")
    parser.add_argument(
        "--baseline",
        type=int,
        default=DEFAULT_BASELINE,
        help=f"records in the baseline table (default {DEFAULT_BASELINE:,})",
    )
    args = parser.parse_args(argv)
    if min(args.n, args.baseline) < STREAMED + SCRIPTS:
        parser.error(f"each table needs at least {STREAMED + SCRIPTS:,} records")
    support.print_header("scale", argv, args.n, f"records against {args.baseline:,}, {SCRIPTS} scripts, PostgreSQL")
    print(f"disk:     {shutil.disk_usage('/').free / 1e9:.0f} GB free before seeding")
    print("note:     WAL is the server's; other databases' writes on it during the upload count too")
    with tempfile.TemporaryDirectory(prefix="scriptorium-bench-") as tmp:
        small = measure(args.baseline, Path(tmp))
        report(small)
        large = measure(args.n, Path(tmp))
        report(large)
    print(f"machine:  load average {os.getloadavg()[0]:.2f} (1 min) at the end")
    for label, attribute in (
        ("stream rows/s", "stream_rate"),
        ("filter rows/s", "filter_rate"),
        ("POST req/s", "post_rate"),
        ("bulk rows/s", "bulk_rate"),
    ):
        support.print_ratio(
            f"ratio {label} {args.n:,} / {args.baseline:,}",
            getattr(large, attribute) / getattr(small, attribute),
            RATE_TARGET,
        )
    support.print_ratio(
        f"ratio filter TTFB {args.n:,} / {args.baseline:,}",
        large.filter_ttfb / small.filter_ttfb,
        1 / RATE_TARGET,
        higher_is_better=False,
    )
    support.print_ratio(
        f"ratio bulk WAL {args.n:,} / {args.baseline:,}",
        large.wal_bytes / small.wal_bytes,
        WAL_TARGET,
        higher_is_better=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
