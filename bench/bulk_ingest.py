"""An NDJSON bulk upload through gunicorn and a Celery worker, against a binary COPY of the same rows and against
single-record POSTs, all in the same run on PostgreSQL."""

import contextlib
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psycopg
import redis
import requests
from psycopg.types.json import set_json_dumps
from scriptorium_client.multipart import MultipartFile

from bench import support
from webapp.fields import new_id

DEFAULT_N = 1_000_000
SAMPLE = 500
WARMUP = 20
COPY_TARGET = 0.85
PER_ROW_TARGET = 50
JOBS = 3
# How far the worker's RSS may end above where it started a job (issue 12, item 5).
RSS_TARGET_MB = 10
BROKER_URL = os.environ.get("SCRIPTORIUM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
DATASET = "Bench Dataset"
START = datetime(2024, 1, 1, tzinfo=UTC)
SAMPLE_START = datetime(2023, 1, 1, tzinfo=UTC)
WARMUP_START = datetime(2022, 1, 1, tzinfo=UTC)
COPY_COLUMNS = (
    "id",
    "timestamp",
    "collection_date",
    "script_id",
    "dataset_id",
    "experiment_id",
    "season_id",
    "site_id",
    "script_data",
    "record_info",
    "created_at",
)
COPY_TYPES = ("uuid", "timestamptz", "date", "uuid", "uuid", "uuid", "uuid", "uuid", "jsonb", "jsonb", "timestamptz")
TERMINAL = ("succeeded", "failed", "cancelled")


# --- helpers shared with bench.worker_files ----------------------------------------------------------------


def broker_settings() -> dict[str, str]:
    """``SCRIPTORIUM_*`` settings of a broker database and a queue of this run's own."""
    return {"broker_url": BROKER_URL, "queue_name": f"scriptorium-bench-{os.getpid()}-{uuid.uuid4().hex[:8]}"}


def forget_queue(queue: str) -> None:
    """Delete the Redis keys Celery kept for ``queue``."""
    client = redis.Redis.from_url(BROKER_URL)
    try:
        client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
    finally:
        client.close()


@contextlib.contextmanager
def celery_worker(env: dict[str, str], log: Path, concurrency: int) -> Iterator[int]:
    """A Celery worker on the queue of ``env`` (``--pool solo`` when ``concurrency`` is 0); yields its pid."""
    pool = ["--pool", "solo"] if concurrency == 0 else ["--pool", "prefork", "--concurrency", str(concurrency)]
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.worker",
        "worker",
        *pool,
        "--without-mingle",
        "--without-gossip",
        "--queues",
        env["SCRIPTORIUM_QUEUE_NAME"],
        "--hostname",
        f"bench-{os.getpid()}@%h",
        "--loglevel",
        "INFO",
    ]
    # The worker's INFO line "ready." is how this knows it has started; the benchmarks' WARNING level would hide it.
    env = {**env, "SCRIPTORIUM_LOG_LEVEL": "INFO"}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, env=env, cwd=support.ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while b" ready." not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Celery worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        print(f"worker:   {shlex.join(command)}", flush=True)
        try:
            yield process.pid
        except Exception:
            print(f"--- last lines of the worker log ---\n{log.read_text()[-3000:]}", file=sys.stderr)
            raise
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            # The worker started its pool children in its own session: stop them with it.
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            ppid = int(status.split("\nPPid:\t", 1)[1].split("\n", 1)[0])
            parents.setdefault(ppid, []).append(int(entry.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(parents.get(current, []))
    return tree


def peak_rss(pid: int) -> str:
    """The VmHWM (peak RSS) of ``pid`` and each of its descendants, in MB."""
    return ", ".join(f"pid {p} VmHWM {support.memory(p)['VmHWM'] / support.MB:.1f} MB" for p in process_tree(pid))


def multipart_form(fields: dict[str, str]) -> tuple[bytes, str]:
    """A multipart/form-data body of text ``fields`` and its content type."""
    boundary = uuid.uuid4().hex
    body = support.form_parts(boundary, fields) + f"--{boundary}--\r\n"
    return body.encode(), f"multipart/form-data; boundary={boundary}"


# --- the rows ----------------------------------------------------------------------------------------------


def script_data(index: int) -> dict:
    """A small, plausible measurement payload."""
    return {
        "plot": index % 480 + 1,
        "genotype": f"G-{index % 97:05d}",
        "height_cm": round(40 + index % 300 / 10, 1),
        "ndvi": round(0.3 + index % 60 / 100, 2),
        "leaf_count": 4 + index % 20,
    }


def invalid_lines(n: int) -> dict[int, bytes]:
    """A few invalid lines spread over the file, one of each kind of mistake, by physical line number."""
    lines = sorted({n * k // 6 + 1 for k in range(1, 6)})
    stamp = START.isoformat()
    kinds = [
        orjson.dumps({"timestamp": "not-a-time", "script_data": script_data(0)}),
        b'{"timestamp": "' + stamp.encode() + b'", "script_data": ',
        orjson.dumps({"script_data": script_data(0)}),
        orjson.dumps({"timestamp": stamp, "script_data": [1, 2]}),
        orjson.dumps({"timestamp": stamp, "script_data": script_data(0), "colour": "red"}),
    ]
    return {line: kind for line, kind in zip(lines, kinds, strict=False)}


def write_ndjson(path: Path, n: int, bad: dict[int, bytes]) -> None:
    """Write ``n`` NDJSON rows with distinct timestamps, the lines in ``bad`` replaced by invalid ones."""
    with open(path, "wb") as out:
        batch = []
        for index in range(n):
            line = index + 1
            if line in bad:
                batch.append(bad[line])
            else:
                stamp = (START + timedelta(seconds=index)).isoformat()
                batch.append(orjson.dumps({"timestamp": stamp, "script_data": script_data(index)}))
            if len(batch) == 10_000:
                out.write(b"\n".join(batch) + b"\n")
                batch = []
        if batch:
            out.write(b"\n".join(batch) + b"\n")


def copy_rows(n: int, bad: dict[int, bytes], ids: dict[str, uuid.UUID]) -> list[tuple]:
    """The column values the valid rows are stored with, in ``COPY_COLUMNS`` order."""
    now = datetime.now(UTC)
    rows = []
    for index in range(n):
        if index + 1 in bad:
            continue
        timestamp = START + timedelta(seconds=index)
        rows.append(
            (
                new_id(),
                timestamp,
                timestamp.date(),
                ids["script"],
                ids["dataset"],
                ids["experiment"],
                ids["season"],
                ids["site"],
                script_data(index),
                {},
                now,
            )
        )
    return rows


# --- the measurements --------------------------------------------------------------------------------------


def reference_ids(conninfo: str, names: dict[str, str], dataset_id: str) -> dict[str, uuid.UUID]:
    """The ids the rows refer to."""
    with psycopg.connect(conninfo) as conn:
        experiment, season = conn.execute(
            "SELECT e.id, s.id FROM experiments e JOIN seasons s ON s.experiment_id = e.id "
            "WHERE e.experiment_name = %s AND s.season_name = %s",
            (names["experiment_name"], names["season_name"]),
        ).fetchone()
        (site,) = conn.execute("SELECT id FROM sites WHERE site_name = %s", (names["site_name"],)).fetchone()
    return {
        "script": uuid.UUID(names["script_id"]),
        "dataset": uuid.UUID(dataset_id),
        "experiment": experiment,
        "season": season,
        "site": site,
    }


def checkpoint(conninfo: str) -> None:
    """Flush dirty buffers so one phase's writes are not paid for during the next."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def binary_copy(conninfo: str, rows: list[tuple]) -> float:
    """COPY ``rows`` into script_records in binary and commit, then empty the table; the seconds taken."""
    with psycopg.connect(conninfo) as conn:
        set_json_dumps(orjson.dumps, conn)
        started = time.perf_counter()
        statement = f"COPY script_records ({', '.join(COPY_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
        with conn.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(COPY_TYPES)
            for row in rows:
                copy.write_row(row)
        conn.commit()
        elapsed = time.perf_counter() - started
    stored = empty_table(conninfo)
    if stored != len(rows):
        raise RuntimeError(f"COPY stored {stored:,} rows, expected {len(rows):,}")
    return elapsed


def empty_table(conninfo: str) -> int:
    """Empty script_records; how many rows of the upload (from ``START`` on) it held."""
    with psycopg.connect(conninfo) as conn:
        (stored,) = conn.execute("SELECT count(*) FROM script_records WHERE timestamp >= %s", (START,)).fetchone()
        conn.execute("TRUNCATE script_records")
    return stored


def post_records(session: requests.Session, base_url: str, names: dict[str, str], count: int, start: datetime) -> float:
    """POST ``count`` records one after another through the single-record endpoint; the seconds taken."""
    fields = {name: value for name, value in names.items() if name != "script_id"}
    url = f"{base_url}/api/scripts/id/{names['script_id']}/records"
    started = time.perf_counter()
    for index in range(count):
        body, content_type = multipart_form(
            {
                "timestamp": (start + timedelta(seconds=index)).isoformat(),
                "script_data": orjson.dumps(script_data(index)).decode(),
                "dataset_name": DATASET,
                **fields,
            }
        )
        response = session.post(url, data=body, headers={"Content-Type": content_type}, timeout=60)
        if response.status_code != 200:
            raise RuntimeError(f"POST {url} answered {response.status_code}: {response.text[:500]}")
    return time.perf_counter() - started


def wait_for_job(session: requests.Session, url: str, timeout: float) -> tuple[dict, float]:
    """Poll the job at ``url`` until it ends; the job and the ``perf_counter`` when its end was seen."""
    deadline = time.monotonic() + timeout
    while True:
        job = session.get(url, timeout=30).json()
        seen = time.perf_counter()
        if job["state"] in TERMINAL:
            return job, seen
        if time.monotonic() > deadline:
            raise RuntimeError(f"the job did not end within {timeout:.0f} s: {job}")
        time.sleep(0.1)


def bulk_upload(
    session: requests.Session,
    base_url: str,
    names: dict[str, str],
    path: Path,
    timeout: float,
    content_type: str = "application/x-ndjson",
) -> tuple[float, float, dict]:
    """POST ``path`` as a bulk upload and follow its job to the end; seconds to the 202, seconds to the end, job."""
    fields = {"dataset_name": DATASET, **{name: value for name, value in names.items() if name != "script_id"}}
    body = MultipartFile(path, fields, "file", content_type)
    started = time.perf_counter()
    response = session.post(
        f"{base_url}/api/scripts/id/{names['script_id']}/records/bulk",
        data=body,
        headers={"Content-Type": body.content_type},
        timeout=(10, 3600),
    )
    accepted = time.perf_counter() - started
    if response.status_code != 202:
        raise RuntimeError(f"the bulk POST answered {response.status_code}: {response.text[:500]}")
    job, seen = wait_for_job(session, base_url + response.headers["Location"], timeout)
    return accepted, seen - started, job


def seconds_between(job: dict, start: str, end: str) -> float:
    """Seconds from the job's ``start`` to its ``end`` timestamp."""
    return (datetime.fromisoformat(job[end]) - datetime.fromisoformat(job[start])).total_seconds()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its numbers."""
    parser = support.arg_parser("bulk_ingest", __doc__, DEFAULT_N, "NDJSON rows in the upload")
    parser.add_argument("--sample", type=int, default=SAMPLE, help=f"single-record POSTs (default {SAMPLE})")
    parser.add_argument(
        "--concurrency", type=int, default=0, help="Celery prefork processes; 0 (default) runs --pool solo"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=JOBS,
        help=f"rounds of a binary COPY then a bulk upload of the file (into a dataset of its own), each into the "
        f"emptied table (default {JOBS}); the ratio is the rounds' median; the worker's RSS is shown before, at peak "
        "and after each job, and held to the target from the second on",
    )
    args = parser.parse_args(argv)
    bad = invalid_lines(args.n)
    valid = args.n - len(bad)
    support.print_header(
        "bulk_ingest", argv, args.n, f"NDJSON rows ({len(bad)} invalid), {args.sample} single POSTs, PostgreSQL"
    )
    with support.scratch_database() as url, tempfile.TemporaryDirectory(prefix="scriptorium-bench-") as tmp:
        tmp = Path(tmp)
        conninfo = support.psycopg_url(url)
        upload = tmp / "rows.ndjson"
        started = time.perf_counter()
        write_ndjson(upload, args.n, bad)
        size_mb = upload.stat().st_size / support.MB
        print(f"file:     {upload.name}, {size_mb:.1f} MB, written in {time.perf_counter() - started:.1f} s (untimed)")

        settings = broker_settings()
        env = support.app_env(url, tmp / "instance", **settings)
        token = support.api_token(url, tmp / "instance")
        try:
            with (
                support.gunicorn(env, tmp / "gunicorn.log") as server,
                celery_worker(env, tmp / "worker.log", args.concurrency) as worker,
                support.api_session(token) as session,
            ):
                web = support.worker_pid(server.pid)
                names = support.create_reference_data(session, server.url)
                response = session.post(
                    f"{server.url}/api/scripts/id/{names['script_id']}/datasets",
                    json={"dataset_name": DATASET, "experiment_name": names["experiment_name"]},
                    timeout=30,
                )
                response.raise_for_status()
                ids = reference_ids(conninfo, names, response.json()["id"])

                rows = copy_rows(args.n, bad, ids)
                post_records(session, server.url, names, WARMUP, WARMUP_START)
                sample_seconds = post_records(session, server.url, names, args.sample, SAMPLE_START)
                sample_per_row = sample_seconds / args.sample
                print(
                    f"baseline: (b) {args.sample} single-record POSTs one by one: {sample_seconds:.2f} s = "
                    f"{sample_per_row * 1000:.2f} ms/row ({1 / sample_per_row:,.0f} rows/s)"
                )

                before = {"web": support.memory(web), "worker": support.memory(worker)}
                # The process that runs the jobs: the solo worker itself, else its (first) pool process.
                runner = worker if args.concurrency == 0 else process_tree(worker)[1]
                # Each round times a COPY and a job into the same empty table, one right after the other, so a load
                # that changes during the run weighs on both alike; the ratio is the rounds' median.
                empty_table(conninfo)
                jobs, watches, copies, stored = [], [], [], []
                for index in range(args.jobs):
                    checkpoint(conninfo)
                    copies.append(binary_copy(conninfo, rows))
                    print(
                        f"baseline: (a) round {index + 1}: binary COPY of the {valid:,} valid rows into "
                        f"script_records: {copies[-1]:.2f} s = {valid / copies[-1]:,.0f} rows/s",
                        flush=True,
                    )
                    checkpoint(conninfo)
                    dataset = DATASET if index == 0 else f"{DATASET} {index + 1}"
                    with support.RssWatch(runner, interval=0.05) as watch:
                        jobs.append(
                            bulk_upload(
                                session,
                                server.url,
                                {**names, "dataset_name": dataset},
                                upload,
                                timeout=max(600, args.n / 500),
                            )
                        )
                    watches.append((watch, support.memory(runner)["VmRSS"]))
                    stored.append(empty_table(conninfo))
                web_peak = peak_rss(web)
                worker_peak = peak_rss(worker)
        finally:
            forget_queue(settings["queue_name"])

    accepted, bulk_seconds, job = jobs[0]
    bulk_rate = args.n / bulk_seconds
    bulk_per_row = bulk_seconds / args.n
    rounds = [(args.n / seconds) / (valid / copy) for (_, seconds, _), copy in zip(jobs, copies, strict=True)]
    error_lines = [error["line"] for error in job["errors"]]
    print(
        f"result:   bulk POST {{id}}/records/bulk to succeeded: {args.n:,} rows in {bulk_seconds:.2f} s = "
        f"{bulk_rate:,.0f} rows/s ({bulk_per_row * 1e6:.1f} µs/row)"
    )
    print(
        f"phases:   202 after {accepted:.2f} s ({size_mb / accepted:.0f} MB/s upload); by the job's clock queued "
        f"{seconds_between(job, 'created_at', 'started_at'):.2f} s, ran "
        f"{seconds_between(job, 'started_at', 'finished_at'):.2f} s"
    )
    for index, (_, seconds, other) in enumerate(jobs[1:], start=2):
        print(f"job {index}:    {args.n / seconds:,.0f} rows/s, {other['state']}, inserted {other['inserted']:,}")
    print(
        f"check:    job {job['state']}; total {job['total']:,}, processed {job['processed']:,}, inserted "
        f"{job['inserted']:,}, duplicates {job['duplicates']:,}, failed {job['failed']:,} at lines {error_lines}; "
        f"rows stored by each job: {', '.join(f'{count:,}' for count in stored)}"
    )
    print("errors:   " + "; ".join(f"{error['line']}: {error['error'][:70]}" for error in job["errors"]))
    print(f"RSS:      web worker VmRSS {before['web']['VmRSS'] / support.MB:.1f} MB before the upload, peak {web_peak}")
    print(
        f"RSS:      celery worker VmRSS {before['worker']['VmRSS'] / support.MB:.1f} MB before the upload, peak "
        f"{worker_peak}"
    )
    print(f"machine:  load average {os.getloadavg()[0]:.2f} (1 min) at end")
    for index, (watch, after) in enumerate(watches, start=1):
        print(
            f"RSS:      job {index}, pid {runner}: before {watch.start['VmRSS'] / support.MB:.1f} MB, peak "
            f"{watch.peak / support.MB:.1f} MB, after {after / support.MB:.1f} MB "
            f"({(after - watch.start['VmRSS']) / support.MB:+.1f} MB)"
        )
    expected = {"state": "succeeded", "total": args.n, "processed": args.n, "inserted": valid, "failed": len(bad)}
    outcomes = [
        ({name: other[name] for name in expected}, [error["line"] for error in other["errors"]]) for _, _, other in jobs
    ]
    if any(outcome != (expected, sorted(bad)) for outcome in outcomes) or stored != [valid] * len(jobs):
        raise RuntimeError(f"a job's outcome is not the expected {expected} with errors at {sorted(bad)}")
    print("rounds:   bulk rows/s over the same round's COPY: " + ", ".join(f"{ratio:.2f}×" for ratio in rounds))
    support.print_ratio(
        f"ratio (a) bulk rows/s vs binary COPY, median of {len(rounds)} rounds", statistics.median(rounds), COPY_TARGET
    )
    support.print_ratio("ratio (b) bulk vs single POSTs, per row", sample_per_row / bulk_per_row, PER_ROW_TARGET)
    # The first job in a fresh worker also pays what any first use keeps for good (imports, compiled statements,
    # the arenas its rows needed, which later jobs reuse); what the target is about is what each job adds to that.
    first = (watches[0][1] - watches[0][0].start["VmRSS"]) / support.MB
    print(f"RSS:      the first job in this worker left it {first:+.1f} MB (its one-time costs)")
    if len(watches) > 1:
        growth = max(after - watch.start["VmRSS"] for watch, after in watches[1:]) / support.MB
        support.print_ratio(
            "worker RSS after a later job over before it", growth, RSS_TARGET_MB, higher_is_better=False, unit=" MB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
