"""GET /metrics: who may scrape it, and what it counts — under `scriptorium serve` with two gunicorn workers, and
from a Celery worker's own metrics port."""

import io
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import empty_tables, make_app, make_token, token_client
from tests.servers import free_port, running, stop_process_group, wait_until
from tests.test_workers import MACHINE_REDIS, bulk_rows, machine_redis  # noqa: F401  (a fixture)

SCRIPTORIUM = str(Path(sys.executable).parent / "scriptorium")
ROWS = b"".join(
    [
        b'{"timestamp": "2024-05-01T12:00:00Z", "script_data": {"plot": 1}}\n',
        b'{"timestamp": "2024-05-01T12:00:01Z", "script_data": {"plot": 2}}\n',
        b'{"timestamp": "not a time"}\n',
    ]
)


def samples(text: str) -> dict[tuple, float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scrape: dict, name: str, **labels) -> float:
    """One sample's value; 0 when the scrape has none."""
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


def seed(client) -> dict:
    """An experiment with a season, a site and a script."""
    experiment = client.post("/api/experiments", json={"experiment_name": "Drought 2024"}).json
    client.post(f"/api/experiments/id/{experiment['id']}/seasons", json={"season_name": "Summer"})
    client.post("/api/sites", json={"site_name": "Maricopa"})
    return client.post("/api/scripts", json={"script_name": "canopy-height"}).json


BULK_FORM = {"experiment_name": "Drought 2024", "season_name": "Summer", "site_name": "Maricopa"}


def test_metrics_need_an_admin_token(client, app):
    """Without METRICS_PUBLIC, /metrics is 401 without credentials and 403 for a reader; an admin gets the text."""
    assert app.test_client().get("/metrics").status_code == 401
    assert token_client(app, make_token(app, "reader")).get("/metrics").status_code == 403
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert "scriptorium_http_requests_total" in response.text


def test_metrics_public_needs_no_token(database_url, tmp_path):
    """With METRICS_PUBLIC, anyone may scrape; the OpenAPI document says the operation needs no credentials."""
    app = make_app(tmp_path, database_url, metrics_public=True)
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    operation = app.test_client().get("/api/openapi.json").json["paths"]["/metrics"]["get"]
    assert operation["security"] == []


def test_jobs_table_metrics_count_jobs_rows_and_queue_age(client, app, held_jobs):
    """Job gauges come from the jobs table: a queued bulk job shows as queued, with its age."""
    script = seed(client)
    response = client.post(
        f"/api/scripts/id/{script['id']}/records/bulk", data={"file": (io.BytesIO(ROWS), "rows.ndjson"), **BULK_FORM}
    )
    assert response.status_code == 202
    scrape = samples(client.get("/metrics").text)
    assert value(scrape, "scriptorium_jobs", kind="bulk_records", state="queued") == 1
    assert value(scrape, "scriptorium_jobs", kind="bulk_records", state="succeeded") == 0
    assert value(scrape, "scriptorium_oldest_queued_job_age_seconds") > 0


@pytest.fixture
def two_workers(tmp_path, postgresql_url):
    """`scriptorium serve --workers 2` on PostgreSQL (no broker: jobs run in the web processes); yields (base
    URL, admin token, the multiprocess folder, the in-process app on the same database)."""
    app = make_app(tmp_path / "tests", postgresql_url)
    token = make_token(app)
    port = free_port()
    env = {
        "SCRIPTORIUM_DATABASE_URL": postgresql_url,
        "SCRIPTORIUM_SECRET_KEY": "server-test-key",
        "SCRIPTORIUM_INSTANCE_PATH": str(tmp_path),
        "SCRIPTORIUM_STORAGE_LOCAL_DIR": str(tmp_path / "files"),
    }
    args = [SCRIPTORIUM, "serve", "--port", str(port), "--workers", "2", "--threads", "4"]
    base = f"http://127.0.0.1:{port}"
    # Values left by an earlier run must not count: gunicorn empties the folder as it starts.
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "counter_1.db").write_bytes(b"stale")
    with running(args, f"{base}/api/health", env=env, log_path=tmp_path / "gunicorn.log"):
        yield base, token, tmp_path / "metrics", app
    empty_tables(app)


def test_two_gunicorn_workers_report_every_request_they_answered(two_workers):
    """After known traffic spread over both workers, the counters equal the requests sent, by route pattern and
    status (ids and unknown paths never become labels); the scrape itself is the one request in flight."""
    base, token, folder, _app = two_workers
    assert not (folder / "counter_1.db").exists()
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {token}"
    sent = {"health": 0, "jobs": 0, "job": 0, "unknown": 0}

    def burst(_):
        with requests.Session() as own:
            own.headers["Authorization"] = f"Bearer {token}"
            assert own.get(f"{base}/api/health").status_code == 200
            assert own.get(f"{base}/api/jobs").status_code == 200
            assert own.get(f"{base}/api/jobs/{uuid.uuid4()}").status_code == 404
            assert own.get(f"{base}/no/such/{uuid.uuid4()}").status_code == 404

    def answering_pids() -> set[str]:
        return {path.stem.split("_")[-1] for path in folder.glob("counter_*.db")}

    # What came before (gunicorn's readiness probe) is left out by counting from a first scrape.
    before = samples(api.get(f"{base}/metrics").text)
    with ThreadPoolExecutor(8) as pool:
        # Parallel bursts until both workers have answered some (each writes counter_<pid>.db).
        while len(answering_pids()) < 2 and sent["health"] < 400:
            list(pool.map(burst, range(16)))
            for name in sent:
                sent[name] += 16
    assert len(answering_pids()) == 2

    scrape = samples(api.get(f"{base}/metrics").text)

    def counted(name: str, **labels) -> float:
        return value(scrape, name, **labels) - value(before, name, **labels)

    requests_total = "scriptorium_http_requests_total"
    assert counted(requests_total, method="GET", endpoint="/api/health", status="200") == sent["health"]
    assert counted(requests_total, method="GET", endpoint="/api/jobs", status="200") == sent["jobs"]
    assert counted(requests_total, method="GET", endpoint="/api/jobs/<uuid:job_id>", status="404") == sent["job"]
    assert counted(requests_total, method="GET", endpoint="<unmatched>", status="404") == sent["unknown"]
    assert counted(requests_total, method="GET", endpoint="/metrics", status="200") == 1
    count = "scriptorium_http_request_duration_seconds_count"
    assert counted(count, method="GET", endpoint="/api/health") == sent["health"]
    assert value(scrape, "scriptorium_http_requests_in_flight") == 1
    assert not [key for key in scrape if any("-" in v and len(v) == 36 for _, v in key[1])]  # no id as a label
    assert value(scrape, "scriptorium_db_pool_size") == 2 * 20


def test_two_gunicorn_workers_report_a_bulk_job_and_its_rows(two_workers):
    """A bulk job run by the in-process runner of a web worker: the jobs table's gauges and row counter, and the
    run's duration in the histogram of that worker."""
    base, token, _folder, app = two_workers
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {token}"
    script = seed(token_client(app, token))
    response = api.post(
        f"{base}/api/scripts/id/{script['id']}/records/bulk",
        files={"file": ("rows.ndjson", ROWS)},
        data=BULK_FORM,
    )
    assert response.status_code == 202, response.text
    job = wait_until(lambda: api.get(f"{base}/api/jobs/{response.json()['id']}").json(), lambda j: j["finished_at"])
    assert (job["state"], job["inserted"], job["failed"]) == ("succeeded", 2, 1)
    scrape = samples(api.get(f"{base}/metrics").text)
    assert value(scrape, "scriptorium_jobs", kind="bulk_records", state="succeeded") == 1
    assert value(scrape, "scriptorium_jobs", kind="bulk_records", state="queued") == 0
    assert value(scrape, "scriptorium_job_rows_total", outcome="inserted") == 2
    assert value(scrape, "scriptorium_job_rows_total", outcome="failed") == 1
    assert value(scrape, "scriptorium_job_rows_total", outcome="duplicate") == 0
    assert value(scrape, "scriptorium_oldest_queued_job_age_seconds") == 0
    assert value(scrape, "scriptorium_job_duration_seconds_count", kind="bulk_records", outcome="succeeded") == 1
    assert value(scrape, "scriptorium_job_run_rows_total", outcome="inserted") == 2


def test_a_celery_worker_serves_the_durations_and_rows_of_its_jobs(tmp_path, postgresql_url, machine_redis):  # noqa: F811
    """`scriptorium worker` (prefork, two pool processes) serves on --metrics-port the runs of the jobs it took,
    summed over its pool processes."""
    queue = f"scriptorium-test-{uuid.uuid4().hex[:8]}"
    settings = {
        "database_url": postgresql_url,
        "secret_key": "worker-test-key",
        "broker_url": machine_redis,
        "queue_name": queue,
        "storage_local_dir": str(tmp_path / "files"),
    }
    app = make_app(tmp_path, **settings)
    client = token_client(app, make_token(app))
    script = seed(client)
    port = free_port()
    env = {f"SCRIPTORIUM_{name.upper()}": setting for name, setting in settings.items()}
    env["SCRIPTORIUM_INSTANCE_PATH"] = str(tmp_path)
    args = [SCRIPTORIUM, "worker", "--concurrency", "2", "--metrics-port", str(port)]
    try:
        with running(args, f"http://127.0.0.1:{port}/metrics", env=env, log_path=tmp_path / "worker.log") as worker:
            content, expected = bulk_rows(30, invalid_every=10)
            ids = []
            for _ in range(3):
                response = client.post(
                    f"/api/scripts/id/{script['id']}/records/bulk",
                    data={"file": (io.BytesIO(content), "rows.ndjson")},
                )
                assert response.status_code == 202
                ids.append(response.json["id"])
            jobs = [wait_until(lambda i=i: client.get(f"/api/jobs/{i}").json, lambda j: j["finished_at"]) for i in ids]
            assert [job["state"] for job in jobs] == ["succeeded"] * 3
            scrape = samples(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
            stop_process_group(worker)
        runs = "scriptorium_job_duration_seconds_count"
        assert value(scrape, runs, kind="bulk_records", outcome="succeeded") == 3
        # The first job inserted the rows, the next two found them stored already.
        assert value(scrape, "scriptorium_job_run_rows_total", outcome="inserted") == expected["inserted"]
        assert value(scrape, "scriptorium_job_run_rows_total", outcome="duplicate") == 2 * expected["inserted"]
        assert value(scrape, "scriptorium_job_run_rows_total", outcome="failed") == 3 * expected["failed"]
    finally:
        empty_tables(app)
