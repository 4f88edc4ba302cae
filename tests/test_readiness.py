"""GET /api/ready and `scriptorium check`: the database, the object store and the broker, each stopped in turn
(the tests' own redis-server, their own moto server, a PostgreSQL database that is dropped)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.conftest import POSTGRES_URL, make_app
from tests.servers import free_port, gunicorn_app, redis_server, s3_server, wait_until

SCRIPTORIUM = str(Path(sys.executable).parent / "scriptorium")


@contextmanager
def scratch_database():
    """A PostgreSQL database of its own (migrated); yields its URL and a function that drops it WITH (FORCE)."""
    from webapp.cli.setup import upgrade_database

    server = make_url(POSTGRES_URL)
    name = f"scriptorium_ready_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")

    def drop():
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = server.set(database=name).render_as_string(hide_password=False)
        upgrade_database(url)
        yield url, name, drop
    finally:
        drop()
        admin.dispose()


@contextmanager
def silent_server():
    """A TCP server that accepts connections and never answers; yields its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        for connection in held:
            connection.close()


def assert_nothing_revealed(body: dict, *secrets) -> None:
    """No host, port, database name or credential appears in what /api/ready says."""
    said = json.dumps(body)
    for secret in ("127.0.0.1", "localhost", "scriptorium-test-secret", "scriptorium-test", *map(str, secrets)):
        assert secret not in said, (secret, said)


def test_ready_when_the_database_and_the_local_store_answer(database_url, tmp_path):
    """The embedded default: no broker to check; both databases; anonymous callers may ask."""
    app = make_app(tmp_path, database_url)
    response = app.test_client().get("/api/ready")
    assert response.status_code == 200, response.json
    body = response.json
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "object_store"}
    dialect = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["database"]["detail"].startswith(f"{dialect} answered (")
    assert body["checks"]["object_store"] == {"status": "ok", "detail": body["checks"]["object_store"]["detail"]}
    assert body["checks"]["object_store"]["detail"].startswith("local: the folder is writable")
    assert_nothing_revealed(body, tmp_path)
    assert app.test_client().get("/api/ready/").status_code == 200


def test_ready_is_503_when_the_local_folder_cannot_hold_files(sqlite_url, tmp_path):
    """A local store whose folder's path is taken by a file fails its check; the database's still passes."""
    app = make_app(tmp_path, sqlite_url)
    shutil.rmtree(app.config["STORAGE_LOCAL_DIR"])
    Path(app.config["STORAGE_LOCAL_DIR"]).write_text("not a folder")
    response = app.test_client().get("/api/ready")
    assert response.status_code == 503
    assert response.json["status"] == "failing"
    assert response.json["checks"]["database"]["status"] == "ok"
    assert response.json["checks"]["object_store"] == {
        "status": "failing",
        "detail": "the folder's path is taken by something that is not a folder",
    }


def test_ready_is_503_naming_the_database_once_it_is_dropped(tmp_path):
    """A PostgreSQL database dropped under a running app: ready, then 503 naming the database only."""
    with scratch_database() as (url, name, drop):
        app = make_app(tmp_path, url)
        client = app.test_client()
        assert client.get("/api/ready").status_code == 200
        drop()
        failing = wait_until(
            lambda: client.get("/api/ready"),
            lambda r: r.json["checks"]["database"]["detail"] == "the database does not exist",
        )
        assert failing.status_code == 503
        assert failing.json["status"] == "failing"
        assert failing.json["checks"]["database"] == {"status": "failing", "detail": "the database does not exist"}
        assert failing.json["checks"]["object_store"]["status"] == "ok"
        assert_nothing_revealed(failing.json, name)
        app.extensions["database"].dispose()


def test_ready_is_503_naming_the_object_store_when_s3_stops(postgresql_url, tmp_path):
    """Against the tests' own moto server: ready while it answers; a missing bucket, then a stopped server, fail
    the object store's check alone."""
    with s3_server(tmp_path / "moto.log") as endpoint:
        port = endpoint.rsplit(":", 1)[1]
        app = make_app(tmp_path, postgresql_url, storage_backend="s3", s3_endpoint_url=endpoint, s3_bucket="ready")
        client = app.test_client()
        missing = client.get("/api/ready")
        assert missing.status_code == 503
        assert missing.json["checks"]["object_store"] == {
            "status": "failing",
            "detail": "the bucket does not exist (`scriptorium init` creates it)",
        }
        with app.app_context():
            app.extensions["object_store"].ensure_bucket()
        ready = client.get("/api/ready")
        assert ready.status_code == 200, ready.json
        assert ready.json["checks"]["object_store"]["detail"].startswith("s3: the bucket answered (")
    stopped = client.get("/api/ready")
    assert stopped.status_code == 503
    assert stopped.json["checks"]["object_store"] == {
        "status": "failing",
        "detail": "cannot connect to the object store",
    }
    assert stopped.json["checks"]["database"]["status"] == "ok"
    assert_nothing_revealed(stopped.json, port, "ready")


@pytest.fixture
def own_redis(tmp_path):
    """The tests' own redis-server on a free port: (its URL, a function that stops it)."""
    port = free_port()
    with redis_server(port, tmp_path / "redis.log") as process:

        def stop():
            process.terminate()
            process.wait(timeout=10)

        yield f"redis://127.0.0.1:{port}/0", stop


def test_ready_under_gunicorn_is_503_naming_the_broker_when_redis_stops(postgresql_url, tmp_path, own_redis):
    """gunicorn with a broker: ready while the tests' own redis-server answers, 503 naming the broker once it
    stops, while the database and the object store still pass."""
    broker_url, stop_redis = own_redis
    with gunicorn_app(postgresql_url, tmp_path, broker_url=broker_url) as base:
        ready = requests.get(f"{base}/api/ready", timeout=30)
        assert ready.status_code == 200, ready.text
        assert set(ready.json()["checks"]) == {"database", "object_store", "broker"}
        assert ready.json()["checks"]["broker"]["detail"].startswith("the broker answered (")
        stop_redis()
        failing = requests.get(f"{base}/api/ready", timeout=30)
    assert failing.status_code == 503
    body = failing.json()
    assert body["status"] == "failing"
    assert body["checks"]["broker"]["status"] == "failing"
    assert body["checks"]["broker"]["detail"].startswith("cannot connect to the broker")
    assert {body["checks"][name]["status"] for name in ("database", "object_store")} == {"ok"}
    assert_nothing_revealed(body, broker_url.rsplit(":", 1)[1].split("/")[0])


def test_dependencies_that_never_answer_fail_within_the_timeout_and_are_not_probed_twice(tmp_path):
    """A database, a store and a broker that accept connections and stay silent fail their checks (the answer
    does not wait for them), and a check still hanging is waited for again by the next probe, not started twice."""
    with silent_server() as port:
        app = make_app(
            tmp_path,
            f"postgresql+psycopg://postgres@127.0.0.1:{port}/silent",
            storage_backend="s3",
            s3_endpoint_url=f"http://127.0.0.1:{port}",
            broker_url=f"redis://127.0.0.1:{port}/0",
            ready_timeout=0.5,
        )
        client = app.test_client()
        for _ in range(3):
            response = client.get("/api/ready")
            assert response.status_code == 503
            checks = response.json["checks"]
            # The driver has no timeout of its own here: only the check's deadline ends the wait.
            assert checks["database"] == {"status": "failing", "detail": "no answer within 0.5 s"}
            for name, own_words in (
                ("object_store", "the object store did not answer within 0.5 s"),
                ("broker", "the broker did not answer within 0.5 s"),
            ):
                assert checks[name]["status"] == "failing"
                assert checks[name]["detail"] in ("no answer within 0.5 s", own_words), checks[name]
            assert_nothing_revealed(response.json, port)
        names = [thread.name for thread in threading.enumerate()]
        assert names.count("scriptorium-ready-database") == 1


def run_check(env: dict, *args: str) -> subprocess.CompletedProcess:
    """`scriptorium check` run with the settings ``env``."""
    return subprocess.run(
        [SCRIPTORIUM, "check", *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )


def test_scriptorium_check_says_what_ready_says_and_exits_1_when_one_fails(postgresql_url, tmp_path, own_redis):
    """Each dependency on a line of its own, exit 0 when all answer; with the broker stopped, 1 and the broker
    failing; `--json` prints the body of /api/ready."""
    broker_url, stop_redis = own_redis
    env = {
        "SCRIPTORIUM_INSTANCE_PATH": str(tmp_path),
        "SCRIPTORIUM_SECRET_KEY": "check-test-key",
        "SCRIPTORIUM_DATABASE_URL": postgresql_url,
        "SCRIPTORIUM_BROKER_URL": broker_url,
    }
    passing = run_check(env)
    assert passing.returncode == 0, passing.stderr
    lines = passing.stdout.splitlines()
    assert [line.split(" — ")[0] for line in lines[:-1]] == ["database: ok", "object_store: ok", "broker: ok"]
    assert lines[-1] == "ready"
    stop_redis()
    failing = run_check(env)
    assert failing.returncode == 1
    assert "database: ok — postgresql answered" in failing.stdout
    assert "broker: failing — cannot connect to the broker" in failing.stdout
    assert failing.stdout.splitlines()[-1] == "failing"
    as_json = run_check(env, "--json")
    assert as_json.returncode == 1
    body = json.loads(as_json.stdout)
    assert body["status"] == "failing" and body["checks"]["broker"]["status"] == "failing"
    assert body["checks"]["database"]["status"] == "ok"
