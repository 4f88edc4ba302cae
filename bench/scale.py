"""Flat cost to 10M records: the same reads and writes against a table of 1M records and one of 10M (200 scripts),
each in its own scratch database with its own server, in alternating rounds of the same run: a script's NDJSON
stream, a two-site one-week /filter (time to first byte, rows/s), single POSTs, 100k-row bulk uploads and the WAL
each upload wrote."""

import contextlib
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
# Per table size. Every kind runs in rounds whose order turns each time (small, large, large, small, ...), so a
# load that rises or falls steadily during the run weighs on both sizes alike.
STREAMS = 6
FILTERS = 20
POST_ROUNDS = 4
POSTS_PER_ROUND = 75
# Two uploads per size, in ABBA order; each size's targets hold its first, as the issue measures it. An upload into
# a table VACUUM has gone over puts its rows into the space left at the end of old pages (VACUUM records it in the
# free space map), one row a page, each page's first change after a checkpoint a full-page image in WAL: at 2M
# records 100k rows went into 100,000 old pages and wrote 974 MB of WAL (96 MB into an empty table with the same
# indexes). That space is taken once: at 1M records the first upload used it up and the second went to new pages; at
# 10M (588k pages) both went to old pages, and about six uploads would use it up.
BULK_UPLOADS = 2
RATE_TARGET = 0.9
WAL_TARGET = 2.0
# Disk per seeded record (table, TOAST, indexes: 733 bytes measured at 200k and 400k, rounded up for the uploads'
# rows), and what seeding needs on top for a while: WAL up to max_wal_size and the index builds' sort files.
RECORD_BYTES = 800
SEED_SLACK_BYTES = 3 * 10**9
# Seeded records sit in 2020, one minute apart per script: clear of the bulk (2024) and POST (2022-23) timestamps.
SEED_START = "2020-01-01T00:00:00Z"
WEEK = ("2020-01-08T00:00:00Z", "2020-01-14T23:59:59Z")
FILTER_QUERY = {"start_timestamp": WEEK[0], "end_timestamp": WEEK[1], "site_names": "Bench Site 1,Bench Site 2"}

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
# The streamed script's records go first and on their own (the statement runs with ``streamed_only`` true, then
# false), so both tables hold them in pages alike: interleaved, the week the /filter reads would have the script's
# records alone in their pages in 1M records (the other scripts' 4.5k minutes each end before it) but one in 200 in
# 10M, and the reads would compare layouts, not sizes.
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
WHERE (sc.k = 0) = %(streamed_only)s AND g < CASE WHEN sc.k = 0 THEN %(streamed)s ELSE %(per_script)s END
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
class Table:
    """One table size: its database, its server once started, and what each round measured against it."""

    records: int
    url: str
    seed_seconds: float
    table_mb: float
    streamed: str
    names: dict[str, str]
    http: requests.Session | None = None
    server_url: str = ""
    streams: list[tuple[float, float, int]] = field(default_factory=list)
    filters: list[tuple[float, float, int]] = field(default_factory=list)
    post_seconds: float = 0.0
    bulk_seconds: list[float] = field(default_factory=list)
    wal: list[tuple[int, dict[str, int]]] = field(default_factory=list)
    pages: list[tuple[int, int, int]] = field(default_factory=list)

    @property
    def conninfo(self) -> str:
        """The database's URL as psycopg takes it."""
        return support.psycopg_url(self.url)

    @property
    def records_url(self) -> str:
        """The streamed script's records on this table's server."""
        return f"{self.server_url}/api/scripts/id/{self.streamed}/records"

    @property
    def stream_rate(self) -> float:
        """Median rows/s of the streams."""
        return statistics.median(rate for _, rate, _ in self.streams)

    @property
    def filter_ttfb(self) -> float:
        """Median seconds to the first byte of the filters."""
        return statistics.median(ttfb for ttfb, _, _ in self.filters)

    @property
    def filter_rate(self) -> float:
        """Median rows/s of the filters."""
        return statistics.median(rate for _, rate, _ in self.filters)

    @property
    def post_rate(self) -> float:
        """Single POSTs per second over all rounds."""
        return POST_ROUNDS * POSTS_PER_ROUND / self.post_seconds

    def bulk_rate(self, upload: int) -> float:
        """Rows per second of the upload with that index (0: the first)."""
        return BULK_ROWS / self.bulk_seconds[upload]

    def wal_bytes(self, upload: int) -> float:
        """WAL bytes of the upload with that index."""
        return self.wal[upload][0]


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
            for streamed_only in (True, False):
                conn.execute(
                    RECORDS_SQL,
                    {
                        **ids,
                        "sites": SITES,
                        "streamed": STREAMED,
                        "per_script": per_script,
                        "start": SEED_START,
                        "streamed_only": streamed_only,
                    },
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
    """The streamed script's id, and the names the POSTs and the bulk uploads go to (the second script)."""
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


def seeded(url: str, records: int) -> Table:
    """Seed the database at ``url`` with ``records`` records and check their count."""
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
    print(
        f"seeded:   {count:,} records in {seed_seconds:.0f} s; script_records {size / support.MB:,.0f} MB "
        f"({size / count:,.0f} bytes a record)",
        flush=True,
    )
    streamed, names = script_names(conninfo)
    return Table(count, url, seed_seconds, size / support.MB, streamed, names)


@contextlib.contextmanager
def serving(table: Table, tmp: Path) -> Iterator[None]:
    """A Celery worker and gunicorn on ``table``'s database, each on a queue of its own, warmed up."""
    settings = bulk_ingest.broker_settings()
    instance = tmp / f"instance-{table.records}"
    env = support.app_env(table.url, instance, **settings)
    table.http = support.api_session(support.api_token(table.url, instance))
    try:
        with (
            bulk_ingest.celery_worker(env, tmp / f"worker-{table.records}.log", 0),
            support.gunicorn(env, tmp / f"gunicorn-{table.records}.log") as server,
        ):
            table.server_url = server.url
            # Warms the server (imports, pool, the streaming and POST paths) before anything is timed.
            stream_rate(table.http, f"{table.records_url}?site_name=none")
            bulk_ingest.post_records(table.http, server.url, table.names, 20, datetime(2022, 1, 1, tzinfo=UTC))
            yield
    finally:
        bulk_ingest.forget_queue(settings["queue_name"])


def turns(tables: list[Table], rounds: int) -> Iterator[tuple[int, Table]]:
    """Each round's number and table, the order turning every round: A B, B A, A B, ..."""
    for number in range(rounds):
        for table in tables if number % 2 == 0 else tables[::-1]:
            yield number, table


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


def heap_pages(conninfo: str) -> int:
    """The pages script_records' heap has now."""
    with psycopg.connect(conninfo) as conn:
        return conn.execute(
            "SELECT pg_relation_size('script_records') / current_setting('block_size')::int"
        ).fetchone()[0]


def pages_landed(conninfo: str, dataset_name: str, old_pages: int) -> tuple[int, int, int]:
    """Where the dataset's records went: how many of the heap's ``old_pages`` pages they landed in (the free space
    VACUUM left at the end of full pages), in how many pages added after, and ``old_pages``."""
    with psycopg.connect(conninfo) as conn:
        old, new = conn.execute(
            "SELECT count(DISTINCT page) FILTER (WHERE page < %(old)s),"
            " count(DISTINCT page) FILTER (WHERE page >= %(old)s)"
            " FROM (SELECT (r.ctid::text::point)[0]::bigint AS page FROM script_records r"
            " JOIN datasets d ON d.id = r.dataset_id WHERE d.dataset_name = %(name)s) landed",
            {"old": old_pages, "name": dataset_name},
        ).fetchone()
    return old, new, old_pages


@contextlib.contextmanager
def wal_kept(conninfo: str) -> Iterator[None]:
    """The server keeps its WAL from here to the block's end (a temporary replication slot, gone with its session),
    so no checkpoint during an upload removes segments pg_walinspect has yet to read."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        try:
            conn.execute("SELECT pg_create_physical_replication_slot(%s, true, true)", (f"bench_scale_{os.getpid()}",))
        except psycopg.Error as error:
            print(f"note:     WAL not kept for pg_walinspect: {str(error).strip()[:100]}", flush=True)
        yield


def measure(tables: list[Table], upload: Path) -> None:
    """Every kind of request against every table, in rounds of turning order; the samples go to each table."""
    for _, table in turns(tables, STREAMS):
        table.streams.append(stream_rate(table.http, table.records_url))
    for table in tables:
        if {rows for _, _, rows in table.streams} != {STREAMED}:
            raise RuntimeError(f"streams returned {[rows for _, _, rows in table.streams]} rows")

    for _, table in turns(tables, FILTERS):
        url = requests.Request("GET", f"{table.records_url}/filter", params=FILTER_QUERY).prepare().url
        table.filters.append(stream_rate(table.http, url))
    filtered = {rows for table in tables for _, _, rows in table.filters}
    if len(filtered) != 1 or 0 in filtered:
        raise RuntimeError(f"the filters returned {sorted(filtered)} rows, expected the same rows every time")

    for number, table in turns(tables, POST_ROUNDS):
        start = datetime(2023, 1, 1, tzinfo=UTC) + timedelta(seconds=number * POSTS_PER_ROUND)
        table.post_seconds += bulk_ingest.post_records(
            table.http, table.server_url, table.names, POSTS_PER_ROUND, start
        )

    for number, table in turns(tables, BULK_UPLOADS):
        # A dataset of its own per upload, so no row of the same file is a duplicate of an earlier upload's.
        names = {**table.names, "dataset_name": f"{bulk_ingest.DATASET} upload {number + 1}"}
        bulk_ingest.checkpoint(table.conninfo)
        old_pages = heap_pages(table.conninfo)
        with wal_kept(table.conninfo):
            lsn = wal_lsn(table.conninfo)
            _, seconds, job = bulk_ingest.bulk_upload(table.http, table.server_url, names, upload, timeout=1800)
            # Uploads run one at a time and the other server is idle meanwhile: the server's WAL is this upload's.
            table.wal.append(wal_since(table.conninfo, lsn))
        if (job["state"], job["inserted"]) != ("succeeded", BULK_ROWS):
            raise RuntimeError(f"the bulk job ended {job}")
        table.bulk_seconds.append(seconds)
        table.pages.append(pages_landed(table.conninfo, names["dataset_name"], old_pages))


def report(table: Table) -> None:
    """Print one table size's numbers."""
    print(
        f"result:   {table.records:,} records: stream {table.stream_rate:,.0f} rows/s (median of {STREAMS}, "
        f"{STREAMED:,} rows); filter TTFB {table.filter_ttfb * 1000:.1f} ms, {table.filter_rate:,.0f} rows/s "
        f"(median of {FILTERS}, {table.filters[0][2]:,} rows); POST {table.post_rate:,.0f} req/s ({POST_ROUNDS} "
        f"rounds of {POSTS_PER_ROUND} one by one)",
        flush=True,
    )
    for upload, ((size, fpi), (old, new, old_pages)) in enumerate(zip(table.wal, table.pages, strict=True)):
        images = "".join(f"; {manager} full-page images {value / support.MB:,.1f} MB" for manager, value in fpi.items())
        print(
            f"upload {upload + 1}: {table.records:,} records: {BULK_ROWS:,} rows to succeeded at "
            f"{table.bulk_rate(upload):,.0f} rows/s; WAL {size / support.MB:,.1f} MB{images}; the rows landed in "
            f"{old:,} of the heap's {old_pages:,} pages from before ({old / old_pages:.0%}) and in {new:,} new pages",
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
    what = f"records against {args.baseline:,}, {SCRIPTS} scripts, PostgreSQL, both at once in alternating rounds"
    support.print_header("scale", argv, args.n, what)
    free = shutil.disk_usage("/").free
    needed = (args.n + args.baseline) * RECORD_BYTES + SEED_SLACK_BYTES
    print(f"disk:     {free / 1e9:.0f} GB free before seeding; both tables need about {needed / 1e9:.0f} GB")
    if free < needed:
        raise RuntimeError(
            f"{free / 1e9:.0f} GB of disk is free, the {args.baseline:,}- and {args.n:,}-record tables need about "
            f"{needed / 1e9:.0f} GB ({RECORD_BYTES} bytes a record and {SEED_SLACK_BYTES / 1e9:.0f} GB while "
            "seeding): free some, or lower --n"
        )
    print("note:     WAL is the server's; other databases' writes on it during the upload count too")
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scriptorium-bench-")))
        small = seeded(stack.enter_context(support.scratch_database("baseline")), args.baseline)
        large = seeded(stack.enter_context(support.scratch_database("large")), args.n)
        upload = tmp / "bulk.ndjson"
        bulk_ingest.write_ndjson(upload, BULK_ROWS, {})
        for table in (small, large):
            stack.enter_context(serving(table, tmp))
        measure([small, large], upload)
    report(small)
    report(large)
    print(f"machine:  load average {os.getloadavg()[0]:.2f} (1 min) at the end")
    for label, attribute in (
        ("stream rows/s", "stream_rate"),
        ("filter rows/s", "filter_rate"),
        ("POST req/s", "post_rate"),
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
    for upload, which in enumerate(("first", "second")):
        support.print_ratio(
            f"ratio bulk rows/s, {which} upload, {args.n:,} / {args.baseline:,}",
            large.bulk_rate(upload) / small.bulk_rate(upload),
            RATE_TARGET,
        )
        support.print_ratio(
            f"ratio bulk WAL, {which} upload, {args.n:,} / {args.baseline:,}",
            large.wal_bytes(upload) / small.wal_bytes(upload),
            WAL_TARGET,
            higher_is_better=False,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
