"""Background work on real parts: a Celery worker process, Redis, PostgreSQL and an S3-protocol server.

Includes the fault tests: a worker killed with SIGKILL mid-job, the object store stopped during a file task,
and Redis restarted (losing its queue) while a job waits.
"""

import gzip
import hashlib
import io
import json
import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis

from tests.conftest import empty_tables, make_app, make_token, token_client
from tests.memory import peak_rss_growth
from tests.servers import celery_worker, free_port, kill_process_group, redis_server, s3_server, wait_until

MACHINE_REDIS = os.environ.get("SCRIPTORIUM_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
ROW = {"experiment_name": "Drought 2024", "season_name": "Summer", "site_name": "Maricopa"}


@pytest.fixture(scope="module")
def machine_redis():
    """The machine's Redis; the run fails (never skips) without it."""
    try:
        redis.Redis.from_url(MACHINE_REDIS).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is needed at {MACHINE_REDIS}: {exc}")
    return MACHINE_REDIS


class Stack:
    """The web app (in this process) and the settings a worker process needs to join it."""

    def __init__(self, tmp_path, database_url, s3_endpoint, broker_url, **overrides):
        self.queue = f"scriptorium-test-{uuid.uuid4().hex[:8]}"
        self.settings = {
            "database_url": database_url,
            "secret_key": "worker-test-key",
            "storage_backend": "s3",
            "s3_endpoint_url": s3_endpoint,
            "s3_bucket": f"bucket-{uuid.uuid4().hex[:12]}",
            "broker_url": broker_url,
            "queue_name": self.queue,
            "job_lease_seconds": 3,
            "job_sweep_seconds": 1,
            **overrides,
        }
        self.tmp_path = tmp_path
        self.app = make_app(tmp_path, **self.settings)
        self.client = token_client(self.app, make_token(self.app))
        with self.app.app_context():
            from webapp.extensions import store

            store.backend.ensure_bucket()

    def worker(self, name: str = "worker", **overrides):
        """A Celery worker process for this stack."""
        settings = {**self.settings, **overrides, "instance_path": str(self.tmp_path)}
        env = {f"SCRIPTORIUM_{key.upper()}": str(value) for key, value in settings.items()}
        return celery_worker(env, self.tmp_path / f"{name}.log", self.queue)

    def seed(self) -> dict:
        """An experiment, season, site and script."""
        experiment = self.client.post("/api/experiments", json={"experiment_name": "Drought 2024"}).json
        self.client.post(f"/api/experiments/id/{experiment['id']}/seasons", json={"season_name": "Summer"})
        self.client.post("/api/sites", json={"site_name": "Maricopa"})
        return self.client.post("/api/scripts", json={"script_name": "canopy-height"}).json

    def job(self, job_id: str) -> dict:
        return self.client.get(f"/api/jobs/{job_id}").json

    def wait_for_job(self, job_id: str, timeout: float = 300) -> dict:
        return wait_until(
            lambda: self.job(job_id), lambda j: j["state"] in ("succeeded", "failed", "cancelled"), timeout
        )


@pytest.fixture
def stack(tmp_path, postgresql_url, s3_endpoint, machine_redis):
    stack = Stack(tmp_path, postgresql_url, s3_endpoint, machine_redis)
    yield stack
    empty_tables(stack.app)


def bulk_rows(count: int, *, invalid_every: int = 0, duplicate_every: int = 0) -> tuple[bytes, dict]:
    """NDJSON of ``count`` rows and the counts an uninterrupted ingest reports for it.

    Every ``invalid_every``-th line has a bad timestamp; every ``duplicate_every``-th line repeats line 1.
    """
    start = datetime(2024, 1, 1, tzinfo=UTC)
    lines, expected = [], {"inserted": 0, "duplicates": 0, "failed": 0, "error_lines": []}
    for index in range(count):
        line = index + 1
        if invalid_every and line % invalid_every == 0:
            row = {**ROW, "timestamp": f"not-a-time-{line}"}
            expected["failed"] += 1
            expected["error_lines"].append(line)
        elif duplicate_every and line % duplicate_every == 0:
            row = {**ROW, "timestamp": start.isoformat()}
            expected["duplicates"] += 1
        else:
            row = {**ROW, "timestamp": (start + timedelta(seconds=index)).isoformat(), "script_data": {"i": index}}
            expected["inserted"] += 1
        lines.append(json.dumps(row))
    return ("\n".join(lines) + "\n").encode(), expected


def post_bulk(stack: Stack, script: dict, content: bytes, **headers) -> dict:
    response = stack.client.post(
        f"/api/scripts/id/{script['id']}/records/bulk",
        data={"file": (io.BytesIO(content), "rows.ndjson")},
        headers=headers,
    )
    assert response.status_code == 202, response.json
    return response.json


def counts(job: dict) -> dict:
    return {name: job[name] for name in ("inserted", "duplicates", "failed")}


def test_record_file_goes_pending_then_ready_with_its_checksum(stack):
    """A worker process checks the uploaded file against the checksum its store reports and records size and
    SHA-256."""
    script = stack.seed()
    payload = os.urandom(3 * 1024 * 1024 + 17)
    form = {"timestamp": "2024-05-01T00:00:00Z", **ROW, "record_file": (io.BytesIO(payload), "scan.tif")}
    with stack.worker():
        record = stack.client.post(f"/api/scripts/id/{script['id']}/records", data=form).json
        assert record["file_status"] == "pending"
        ready = wait_until(
            lambda: stack.client.get(f"/api/scripts/records/id/{record['id']}").json,
            lambda r: r["file_status"] != "pending",
        )
    assert ready["file_status"] == "ready"
    assert ready["file_size"] == len(payload)
    assert ready["file_sha256"] == hashlib.sha256(payload).hexdigest()
    download = stack.client.get(f"/api/scripts/records/id/{record['id']}/download")
    assert download.status_code == 307


def test_bulk_upload_of_10k_rows_ends_with_exact_counts_and_lines(stack):
    """10k rows with invalid and duplicate rows: exact counts, error lines, and one stored row per valid row."""
    script = stack.seed()
    content, expected = bulk_rows(10_000, invalid_every=97, duplicate_every=89)
    with stack.worker():
        job = post_bulk(stack, script, content, **{"Idempotency-Key": "batch-1"})
        again = post_bulk(stack, script, content, **{"Idempotency-Key": "batch-1"})
        assert again["id"] == job["id"]
        job = stack.wait_for_job(job["id"])
    assert job["state"] == "succeeded", job
    assert job["total"] == job["processed"] == 10_000
    assert counts(job) == {name: expected[name] for name in ("inserted", "duplicates", "failed")}
    assert [error["line"] for error in job["errors"]] == expected["error_lines"][:100]
    stored = stack.client.get(f"/api/scripts/id/{script['id']}/records").data.count(b"\n")
    assert stored == expected["inserted"]


def test_hostile_files_leave_the_worker_alive_with_flat_memory(stack):
    """Deep nesting, a gzip bomb and a 40 MB line each fail as one row; the worker lives and its memory stays flat."""
    script = stack.seed()
    valid = json.dumps({**ROW, "timestamp": "2024-05-01T00:00:00Z"}).encode()
    later = json.dumps({**ROW, "timestamp": "2024-05-01T00:00:01Z"}).encode()
    bomb = io.BytesIO()
    with gzip.GzipFile(fileobj=bomb, mode="wb") as out:
        out.write(valid + b"\n")
        for _ in range(200):
            out.write(b"0" * 1_000_000)
        out.write(b"\n" + later + b"\n")
    files = {
        "deep.json": b'[{"script_data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}, " + valid + b"]",
        "bomb.ndjson.gz": bomb.getvalue(),
        "long.ndjson": valid + b'\n{"script_data": {"x": "' + b"x" * 40_000_000 + b'"}}\n' + later + b"\n",
    }
    with stack.worker() as worker:
        for name, content in files.items():
            # Measured from before the POST: the worker may take the job before the answer arrives.
            with peak_rss_growth(worker.pid) as growth:
                response = stack.client.post(
                    f"/api/scripts/id/{script['id']}/records/bulk", data={"file": (io.BytesIO(content), name)}
                )
                assert response.status_code == 202, response.json
                job = stack.wait_for_job(response.json["id"])
            assert (job["state"], job["failed"]) == ("succeeded", 1), (name, job)
            assert growth.mb < 50, name
            assert worker.poll() is None


def test_the_worker_returns_within_10_mb_of_its_memory_before_each_bulk_job(stack):
    """After a first 20k-row job, two more in a row: after each, the worker's RSS is within 10 MB of where it was
    before it."""
    script = stack.seed()
    start = datetime(2024, 1, 1, tzinfo=UTC)
    with stack.worker() as worker:
        # A worker's first job builds what it keeps for good (the store client's operation models, compiled
        # statements, the allocator's arenas for a chunk's rows, which later jobs reuse), as the stream and
        # export benchmarks warm each path first: what is measured is what each later job leaves behind.
        for flight in (0, 1, 2):
            rows = (
                {**ROW, "dataset_name": f"Flight {flight}", "timestamp": (start + timedelta(seconds=index)).isoformat()}
                for index in range(20_000)
            )
            content = b"".join(json.dumps(row).encode() + b"\n" for row in rows)
            before = rss_mb(worker.pid)
            job = stack.wait_for_job(post_bulk(stack, script, content)["id"])
            assert (job["state"], job["inserted"]) == ("succeeded", 20_000), job
            if flight:
                assert rss_mb(worker.pid) - before < 10, (flight, before, rss_mb(worker.pid))


def rss_mb(pid: int) -> float:
    """The VmRSS of ``pid``, in MB."""
    with open(f"/proc/{pid}/status") as status_file:
        status = dict(line.split(":", 1) for line in status_file.read().splitlines())
    return int(status["VmRSS"].split()[0]) / 1024


def test_worker_killed_mid_job_is_resumed_with_the_same_counts(stack):
    """kill -9 of the worker once rows are processed; a new worker resumes after the lease and finishes with
    the counts of an uninterrupted run, every valid row stored once."""
    script = stack.seed()
    content, expected = bulk_rows(200_000, invalid_every=1013, duplicate_every=1009)
    with stack.worker("first") as first:
        job = post_bulk(stack, script, content)
        wait_until(
            lambda: stack.job(job["id"]), lambda j: j["processed"] > 0 or j["state"] in ("succeeded", "failed"), 120
        )
        kill_process_group(first)
    killed = stack.job(job["id"])
    assert killed["state"] == "running" and 0 < killed["processed"] < 200_000, killed
    with stack.worker("second"):
        job = stack.wait_for_job(job["id"])
    assert job["state"] == "succeeded", job
    assert job["processed"] == job["total"] == 200_000
    assert counts(job) == {name: expected[name] for name in ("inserted", "duplicates", "failed")}
    assert [error["line"] for error in job["errors"]] == expected["error_lines"][:100]
    stored = stack.client.get(f"/api/scripts/id/{script['id']}/records").data.count(b"\n")
    assert stored == expected["inserted"]


def test_object_store_down_during_a_file_task_fails_after_retries(tmp_path, postgresql_url, machine_redis):
    """With the S3 server stopped after the upload, the job retries, then fails with a reason; the
    record says its file failed and offers no download."""
    with s3_server(tmp_path / "moto-down.log") as endpoint:
        stack = Stack(tmp_path, postgresql_url, endpoint, machine_redis, job_max_attempts=3)
        script = stack.seed()
        form = {"timestamp": "2024-05-01T00:00:00Z", **ROW, "record_file": (io.BytesIO(b"leaf"), "leaf.png")}
        record = stack.client.post(f"/api/scripts/id/{script['id']}/records", data=form).json
        assert record["file_status"] == "pending"
    try:
        with stack.worker():
            job = wait_until(
                lambda: stack.client.get("/api/jobs", query_string={"kind": "record_file"}).json[0],
                lambda j: j["state"] in ("succeeded", "failed"),
                120,
            )
        assert job["state"] == "failed"
        assert "object store" in job["error_description"] and "3 attempts" in job["error_description"]
        record = stack.client.get(f"/api/scripts/records/id/{record['id']}").json
        assert record["file_status"] == "failed" and record["file_sha256"] is None
        assert stack.client.get(f"/api/scripts/records/id/{record['id']}/download").status_code == 404
    finally:
        empty_tables(stack.app)


def test_job_queued_while_redis_restarts_still_completes(tmp_path, postgresql_url, s3_endpoint):
    """A job whose queue message is lost with a Redis restart is dispatched again from the jobs table."""
    port = free_port()
    with redis_server(port, tmp_path / "redis-1.log"):
        stack = Stack(tmp_path, postgresql_url, s3_endpoint, f"redis://127.0.0.1:{port}/0")
        script = stack.seed()
        content, expected = bulk_rows(500, invalid_every=50)
        job = post_bulk(stack, script, content)
        assert stack.job(job["id"])["state"] == "queued"
    try:
        with redis_server(port, tmp_path / "redis-2.log"), stack.worker():
            job = stack.wait_for_job(job["id"], timeout=120)
        assert job["state"] == "succeeded", job
        assert counts(job) == {name: expected[name] for name in ("inserted", "duplicates", "failed")}
    finally:
        empty_tables(stack.app)
