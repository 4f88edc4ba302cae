"""Prometheus metrics a process records as it works (requests, jobs it runs, its database pool), and how they
are collected for a scrape.

Under gunicorn, and in a Celery worker, every process writes its values into files of one folder
(prometheus-client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``, which ``config/multiprocess.py`` sets
before anything imports prometheus-client), and a scrape sums them over the processes. Without that folder (the
test client, a lone process) the values live in this process's default registry. Labels stay few: a request is
labelled by its route's pattern, never by the ids in its path.
"""

import os

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import event
from sqlalchemy.engine import Engine

# The multiprocess mode exports no ``_created`` series; a lone process exports the same series as it.
disable_created_metrics()

# A request that matched no route: one label for every unknown path.
UNMATCHED = "<unmatched>"

HTTP_REQUESTS = Counter(
    "scriptorium_http_requests",
    "HTTP requests answered, by method, route pattern and status.",
    ["method", "endpoint", "status"],
)
HTTP_DURATION = Histogram(
    "scriptorium_http_request_duration_seconds",
    "Time to answer an HTTP request (to the first byte of a streamed body), by method and route pattern.",
    ["method", "endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
HTTP_IN_FLIGHT = Gauge(
    "scriptorium_http_requests_in_flight",
    "HTTP requests being handled right now.",
    multiprocess_mode="livesum",
)
JOB_DURATION = Histogram(
    "scriptorium_job_duration_seconds",
    "Time one run of a job took, by kind and how the run ended (succeeded, failed, retry, stopped).",
    ["kind", "outcome"],
    buckets=(0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600),
)
JOB_RUN_ROWS = Counter(
    "scriptorium_job_run_rows",
    "Bulk rows handled by the job runs of this process, by outcome (inserted, duplicate, failed).",
    ["outcome"],
)
DB_POOL_IN_USE = Gauge(
    "scriptorium_db_pool_connections_in_use",
    "Database connections checked out of the processes' pools.",
    multiprocess_mode="livesum",
)
DB_POOL_SIZE = Gauge(
    "scriptorium_db_pool_size",
    "Connections the processes' pools keep (each may open more for a while, past it).",
    multiprocess_mode="livesum",
)


def multiprocess_dir() -> str | None:
    """The folder of multiprocess files, when this process writes its values there."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def registry(*collectors) -> CollectorRegistry:
    """A registry for one scrape: every process's values (or this process's alone), then ``collectors``."""
    folder = multiprocess_dir()
    if folder is None:
        if not collectors:
            return REGISTRY
        scrape = CollectorRegistry(auto_describe=False)
        scrape.register(_Default())
    else:
        scrape = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(scrape, path=folder)
    for collector in collectors:
        scrape.register(collector)
    return scrape


class _Default:
    """This process's default registry, as one collector among others."""

    def collect(self):
        yield from REGISTRY.collect()


def exposition(scrape: CollectorRegistry) -> bytes:
    """The registry's metrics in Prometheus text format."""
    return generate_latest(scrape)


def watch_pool(engine: Engine) -> None:
    """Count the connections ``engine``'s pool hands out, and the connections it keeps."""
    pool = engine.pool
    size = getattr(pool, "size", None)
    if callable(size):
        DB_POOL_SIZE.inc(size())
    event.listen(pool, "checkout", lambda *args: DB_POOL_IN_USE.inc())
    event.listen(pool, "checkin", lambda *args: DB_POOL_IN_USE.dec())


def observe_request(method: str, endpoint: str | None, status: int, seconds: float) -> None:
    """Count one answered request and its duration."""
    endpoint = endpoint or UNMATCHED
    HTTP_REQUESTS.labels(method, endpoint, str(status)).inc()
    HTTP_DURATION.labels(method, endpoint).observe(seconds)


def observe_job_run(kind: str, outcome: str, seconds: float) -> None:
    """Count one run of a job and its duration."""
    JOB_DURATION.labels(kind, outcome).observe(seconds)


def count_rows(inserted: int, duplicate: int, failed: int) -> None:
    """Count bulk rows this process has just committed, by outcome."""
    for outcome, count in (("inserted", inserted), ("duplicate", duplicate), ("failed", failed)):
        if count:
            JOB_RUN_ROWS.labels(outcome).inc(count)
