"""Single-record multipart POSTs under gunicorn, against GET /api/health of the same server in the same run; and
the same POSTs to a second server with metrics and logs on (multiprocess metrics as `scriptorium serve` runs them,
a JSON line per request) against the first with both off (metrics in the process's own registry, no request lines:
the hooks cannot be removed), in alternating rounds."""

import http.client
import itertools
import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from bench import support

DEFAULT_N = 5_000
THREADS = 8
WARMUP = 200
ROUNDS = 5
RATIO_TARGET = 0.35
OBSERVED_TARGET = 0.9  # observability may cost at most 10%
START = datetime(2024, 1, 1, tzinfo=UTC)
SCRIPT_DATA = json.dumps({"plot": 17, "genotype": "G-00017", "height_cm": 61.5, "ndvi": 0.71, "leaf_count": 12})

Request = tuple[str, str, bytes | None, dict[str, str]]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def print_cpu(cpu: dict[str, float], n: int, baseline: str) -> None:
    """Print the worker's CPU per request of each kind and its ratio to ``baseline``'s: unlike the rates, it
    hardly moves with other work on the machine."""
    per_request = {kind: seconds / n * 1e6 for kind, seconds in cpu.items()}
    parts = [f"{kind} {micros:,.0f} µs" for kind, micros in per_request.items()]
    parts += [
        f"{baseline} / {kind} {per_request[baseline] / micros:.2f}×"
        for kind, micros in per_request.items()
        if kind != baseline
    ]
    print(f"cpu:      the worker's CPU per request: {', '.join(parts)}")


def multipart(fields: dict[str, str]) -> tuple[bytes, str]:
    """A multipart/form-data body of text ``fields`` and its content type."""
    boundary = uuid.uuid4().hex
    body = support.form_parts(boundary, fields) + f"--{boundary}--\r\n"
    return body.encode(), f"multipart/form-data; boundary={boundary}"


def load(base_url: str, count: int, make_request: Callable[[int], Request], first: int = 0) -> float:
    """Send requests ``first`` … ``first + count - 1`` from ``THREADS`` keep-alive connections; the seconds taken."""
    host, port = base_url.removeprefix("http://").split(":")
    numbers = itertools.count(first)
    failures: list[str] = []

    def client() -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            # next() on itertools.count is atomic under the GIL, so each number goes to one thread only.
            while (number := next(numbers)) < first + count and not failures:
                method, path, body, headers = make_request(number)
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                content = response.read()
                if response.status != 200:
                    failures.append(f"{method} {path} answered {response.status}: {content[:500]!r}")
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(THREADS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(failures[0])
    return elapsed


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its numbers."""
    parser = support.arg_parser("post_record", __doc__, DEFAULT_N, "requests of each kind")
    args = parser.parse_args(argv)
    what = f"requests of each kind in {ROUNDS} alternating rounds, {THREADS} client threads, PostgreSQL"
    support.print_header("post_record", argv, args.n, what)
    with support.scratch_database() as url, tempfile.TemporaryDirectory(prefix="scriptorium-bench-") as tmp:
        env = support.app_env(url, Path(tmp))
        observed_env = support.app_env(
            url,
            Path(tmp) / "observed",
            LOG_FORMAT="json",
            LOG_LEVEL="INFO",
            METRICS_DIR=str(Path(tmp) / "metrics"),
            METRICS_PUBLIC="1",
        )
        observed_env["GUNICORN_CMD_ARGS"] = "--config python:config.gunicorn"
        (Path(tmp) / "observed").mkdir()
        token = support.api_token(url, Path(tmp))
        auth = {"Authorization": f"Bearer {token}"}
        with (
            support.gunicorn(env, Path(tmp) / "gunicorn.log") as server,
            support.gunicorn(observed_env, Path(tmp) / "observed.log") as observed,
        ):
            names = support.create_reference_data(support.api_session(token), server.url)
            path = f"/api/scripts/id/{names.pop('script_id')}/records"

            def health(_number: int) -> Request:
                return "GET", "/api/health", None, {}

            def post(number: int) -> Request:
                # A distinct millisecond per request keeps every record identity new (no 409s), all on one day.
                timestamp = (START + timedelta(milliseconds=number)).isoformat()
                body, content_type = multipart({"timestamp": timestamp, "script_data": SCRIPT_DATA, **names})
                return "POST", path, body, {"Content-Type": content_type, **auth}

            # The observed server's records get numbers of their own, past the other's.
            offset = args.n + WARMUP
            load(server.url, WARMUP, health)
            load(server.url, WARMUP, post, first=args.n)
            load(observed.url, WARMUP, post, first=offset + args.n)
            # Alternating rounds: a change in the machine's load during the run weighs on every kind alike.
            health_seconds = post_seconds = observed_seconds = 0.0
            worker, cpu = support.worker_pid(server.pid), {"health": 0.0, "POST": 0.0}
            round_size = -(-args.n // ROUNDS)
            for start in range(0, args.n, round_size):
                count = min(round_size, args.n - start)
                used = cpu_seconds(worker)
                health_seconds += load(server.url, count, health)
                cpu["health"] += cpu_seconds(worker) - used
                used = cpu_seconds(worker)
                post_seconds += load(server.url, count, post, first=start)
                cpu["POST"] += cpu_seconds(worker) - used
                observed_seconds += load(observed.url, count, post, first=offset + start)
            scrape = support.api_session(token).get(f"{observed.url}/metrics", timeout=30).text
        counted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in scrape.splitlines()
            if line.startswith("scriptorium_http_requests_total{") and 'method="POST"' in line
        )
        request_lines = sum(
            1 for line in (Path(tmp) / "observed.log").read_text().splitlines() if '"scriptorium.request"' in line
        )

        with psycopg.connect(support.psycopg_url(url)) as conn:
            stored = conn.execute("SELECT count(*) FROM script_records").fetchone()[0]
        if stored != 2 * (args.n + WARMUP):
            raise RuntimeError(f"{stored:,} records are stored, expected {2 * (args.n + WARMUP):,}")
        if counted < args.n + WARMUP or request_lines < args.n + WARMUP:
            raise RuntimeError(f"the observed server counted {counted:,.0f} POSTs and logged {request_lines:,} lines")
        baseline, result = args.n / health_seconds, args.n / post_seconds
        observed_result = args.n / observed_seconds
        print(f"baseline: GET /api/health: {args.n:,} requests in {health_seconds:.2f} s = {baseline:,.0f} req/s")
        print(f"result:   POST {{id}}/records form: {args.n:,} requests in {post_seconds:.2f} s = {result:,.0f} req/s")
        print(
            f"observed: the same POSTs, multiprocess metrics and JSON request lines on: {args.n:,} requests in "
            f"{observed_seconds:.2f} s = {observed_result:,.0f} req/s"
        )
        print(
            f"check:    every response was 200; {stored:,} records stored (2 × (N + {WARMUP} warm-up)); the "
            f"observed server counted {counted:,.0f} POSTs and wrote {request_lines:,} request lines"
        )
        print_cpu(cpu, args.n, "health")
        # Other work during the run weighs on the ratio, however the rounds alternate: show how much there was.
        print(f"machine:  load average {os.getloadavg()[0]:.2f} (1 min) at end")
        support.print_ratio("ratio", result / baseline, RATIO_TARGET)
        support.print_ratio("observability ratio (on / off)", observed_result / result, OBSERVED_TARGET)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
