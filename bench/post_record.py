"""Single-record multipart POSTs under gunicorn, against GET /api/health of the same server in the same run."""

import http.client
import itertools
import json
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
RATIO_TARGET = 0.2
START = datetime(2024, 1, 1, tzinfo=UTC)
SCRIPT_DATA = json.dumps({"plot": 17, "genotype": "G-00017", "height_cm": 61.5, "ndvi": 0.71, "leaf_count": 12})

Request = tuple[str, str, bytes | None, dict[str, str]]


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
        token = support.api_token(url, Path(tmp))
        auth = {"Authorization": f"Bearer {token}"}
        with support.gunicorn(env, Path(tmp) / "gunicorn.log") as server:
            names = support.create_reference_data(support.api_session(token), server.url)
            path = f"/api/scripts/id/{names.pop('script_id')}/records"

            def health(_number: int) -> Request:
                return "GET", "/api/health", None, {}

            def post(number: int) -> Request:
                # A distinct millisecond per request keeps every record identity new (no 409s), all on one day.
                timestamp = (START + timedelta(milliseconds=number)).isoformat()
                body, content_type = multipart({"timestamp": timestamp, "script_data": SCRIPT_DATA, **names})
                return "POST", path, body, {"Content-Type": content_type, **auth}

            load(server.url, WARMUP, health)
            load(server.url, WARMUP, post, first=args.n)
            # Alternating rounds: a change in the machine's load during the run weighs on both kinds alike.
            health_seconds = post_seconds = 0.0
            round_size = -(-args.n // ROUNDS)
            for start in range(0, args.n, round_size):
                count = min(round_size, args.n - start)
                health_seconds += load(server.url, count, health)
                post_seconds += load(server.url, count, post, first=start)

        with psycopg.connect(support.psycopg_url(url)) as conn:
            stored = conn.execute("SELECT count(*) FROM script_records").fetchone()[0]
        if stored != args.n + WARMUP:
            raise RuntimeError(f"{stored:,} records are stored, expected {args.n + WARMUP:,}")
        baseline, result = args.n / health_seconds, args.n / post_seconds
        print(f"baseline: GET /api/health: {args.n:,} requests in {health_seconds:.2f} s = {baseline:,.0f} req/s")
        print(f"result:   POST {{id}}/records form: {args.n:,} requests in {post_seconds:.2f} s = {result:,.0f} req/s")
        print(f"check:    every response was 200; {stored:,} records stored (N + {WARMUP} warm-up)")
        support.print_ratio("ratio", result / baseline, RATIO_TARGET)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
