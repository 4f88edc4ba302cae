"""The gunicorn worker's memory comes back after record streams and exports, whichever threads served them.

glibc gives each thread an arena of its own and keeps what a request freed in it; a stream's batches are megabytes
each, so every thread that had served one once kept ~7 MB (26 MB here for four threads, without the fix)."""

import sys
import threading

import pytest
import requests

from bench.stream_records import seed
from bench.support import memory, worker_pid
from tests.conftest import empty_tables, make_app, make_token
from tests.servers import free_port, running

RECORDS = 40_000
THREADS = 4
# The bound: after a request ends, the process is back within 10 MB of its RSS before it.
KEPT_MB = 10
MB = 1024 * 1024


@pytest.fixture
def served(tmp_path, postgresql_url):
    """A script of ``RECORDS`` records and gunicorn (one gthread worker) serving them; yields what the tests need."""
    app = make_app(tmp_path, postgresql_url)
    token = make_token(app)
    script_id = seed(postgresql_url, RECORDS)
    port = free_port()
    args = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--worker-class", "gthread"]
    args += ["--workers", "1", "--threads", str(THREADS), "webapp:create_app()"]
    env = {
        "SCRIPTORIUM_DATABASE_URL": postgresql_url,
        "SCRIPTORIUM_SECRET_KEY": "server-test-key",
        "SCRIPTORIUM_INSTANCE_PATH": str(tmp_path),
    }
    base = f"http://127.0.0.1:{port}"
    with running(args, f"{base}/api/health", env=env, log_path=tmp_path / "gunicorn.log") as master:
        yield base, token, script_id, worker_pid(master.pid)
    empty_tables(app)


def fetch(base: str, token: str, path: str, params: dict, sizes: list[int]) -> None:
    """GET ``path`` on a connection of its own, reading the body through; its length goes into ``sizes``."""
    size = 0
    with requests.get(
        base + path, params=params, headers={"Authorization": f"Bearer {token}"}, stream=True, timeout=300
    ) as response:
        response.raise_for_status()
        for chunk in response.iter_content(chunk_size=MB):
            size += len(chunk)
    sizes.append(size)


def at_once(base: str, token: str, path: str, params: dict) -> list[int]:
    """``THREADS`` requests at the same time, so that every thread of the worker serves one; the body sizes."""
    sizes: list[int] = []
    clients = [threading.Thread(target=fetch, args=(base, token, path, params, sizes)) for _ in range(THREADS)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    assert len(sizes) == THREADS
    return sizes


def test_worker_rss_comes_back_after_streams_on_every_thread(served):
    """Two rounds of four concurrent NDJSON streams leave the worker within ``KEPT_MB`` of its RSS before them."""
    base, token, script_id, worker = served
    path = f"/api/scripts/id/{script_id}/records"
    at_once(base, token, path, {"site_name": "none"})
    before = memory(worker)["VmRSS"]
    for _ in range(2):
        sizes = at_once(base, token, path, {})
        # Every request sent the whole stream (the same bytes; a line takes ~900).
        assert len(set(sizes)) == 1 and sizes[0] > RECORDS * 800
        kept = (memory(worker)["VmRSS"] - before) / MB
        assert kept < KEPT_MB, f"the worker kept {kept:.1f} MB after {THREADS} requests at once"
