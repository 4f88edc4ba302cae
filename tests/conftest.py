"""Fixtures: a real database per run (PostgreSQL, and SQLite for the API suite), an app, a client, entities.

Services the tests need are never faked: a missing PostgreSQL fails the run instead of skipping it.
"""

import io
import os
import shutil
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from config import load_settings
from tests.servers import s3_server, wait_until
from webapp import create_app
from webapp.cli.setup import upgrade_database
from webapp.extensions import db, queue
from webapp.models import Base

# Meets the password policy (12 characters or more, not common, not the email).
PASSWORD = "lichen plots at dawn"
POSTGRES_URL = os.environ.get("SCRIPTORIUM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session", autouse=True)
def isolated_environment():
    """Settings come from each test's own values, never from the developer's shell."""
    with pytest.MonkeyPatch.context() as patch:
        for name in os.environ:
            if name.startswith("SCRIPTORIUM_") and not name.startswith("SCRIPTORIUM_TEST_"):
                patch.delenv(name)
        # Credentials for the test S3 server (moto accepts any); workers started by tests inherit them.
        patch.setenv("AWS_ACCESS_KEY_ID", "scriptorium-test")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "scriptorium-test-secret")
        yield


@pytest.fixture(scope="session")
def postgresql_url():
    """A fresh PostgreSQL database for this run, migrated to head, dropped at the end."""
    server = make_url(POSTGRES_URL)
    name = f"scriptorium_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL is needed at {server.render_as_string(hide_password=True)}: {exc}")
    url = server.set(database=name).render_as_string(hide_password=False)
    upgrade_database(url)
    yield url
    stop_background_threads()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory):
    """A SQLite file database for this run, migrated to head."""
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'scriptorium.db'}"
    upgrade_database(url)
    return url


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """moto's S3-protocol server for the run."""
    with s3_server(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        yield endpoint


def make_app(tmp_path: Path, database_url: str, **overrides):
    """An app on ``database_url`` with its own instance folder and local store."""
    values = {
        "instance_path": str(tmp_path),
        "database_url": database_url,
        "secret_key": "test-secret-key",
        "storage_backend": "local",
        "storage_local_dir": str(tmp_path / "files"),
        **overrides,
    }
    settings = load_settings(**values)
    app = create_app(settings)
    app.config["TESTING"] = True
    _apps.append(app)
    return app


_apps: list = []


def stop_background_threads() -> None:
    """Stop every test app's in-process job thread and sweeper (before the databases are dropped)."""
    for app in _apps:
        if hasattr(app.extensions["job_queue"], "stop"):
            app.extensions["job_queue"].stop()


@pytest.fixture(scope="session", params=["postgresql", "sqlite"])
def database_url(request):
    """The API suite runs once on PostgreSQL and once on SQLite."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture(scope="session")
def session_app(database_url, tmp_path_factory):
    return make_app(tmp_path_factory.mktemp("instance"), database_url)


@pytest.fixture
def app(session_app):
    """The app, with every table and the file store emptied after the test (commits in the code are real)."""
    with session_app.app_context():
        yield session_app
        queue.dispatcher.drain()
    empty_tables(session_app)
    shutil.rmtree(session_app.config["STORAGE_LOCAL_DIR"], ignore_errors=True)


def empty_tables(app) -> None:
    """Delete every row so the next test starts from nothing."""
    with app.app_context(), db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} CASCADE"))
        else:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())


def make_token(app, role: str = "admin", email: str | None = None) -> str:
    """A fresh account with ``role`` and a token of it; returns the token's secret."""
    from webapp.services import accounts, tokens

    with app.app_context():
        account = accounts.create_account(email or f"{role}-{uuid.uuid4().hex[:8]}@example.org", PASSWORD, role)
        return tokens.create_token(account, "tests")[1]


def token_client(app, token: str):
    """A test client sending ``token`` with every request."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@pytest.fixture
def client(app):
    """A client with an admin token: most tests are about what the API does, not who may call it."""
    return token_client(app, make_token(app))


@pytest.fixture
def anonymous(app):
    """A client without credentials."""
    return app.test_client()


@pytest.fixture
def reference(client):
    """An experiment with a season, and a site: what every record needs."""
    experiment = client.post("/api/experiments", json={"experiment_name": "Drought 2024"}).json
    season = client.post(f"/api/experiments/id/{experiment['id']}/seasons", json={"season_name": "Summer"}).json
    site = client.post("/api/sites", json={"site_name": "Maricopa"}).json
    return {"experiment": experiment, "season": season, "site": site}


@pytest.fixture
def script(client):
    """A script with no associations."""
    response = client.post("/api/scripts", json={"script_name": "canopy-height", "script_extension": "py"})
    assert response.status_code == 200
    return response.json


def record_form(timestamp="2024-05-01T12:00:00Z", **fields):
    """A valid multipart form for one record of the ``reference`` fixture's experiment, season and site."""
    form = {
        "timestamp": timestamp,
        "experiment_name": "Drought 2024",
        "season_name": "Summer",
        "site_name": "Maricopa",
        "script_data": '{"height_cm": 41.5}',
    }
    form.update(fields)
    return {key: value for key, value in form.items() if value is not None}


def db_job(job_id: str):
    """The stored job (with its params, which the API does not show)."""
    from webapp.models import Job

    return db.session.get(Job, uuid.UUID(job_id))


def wait_for_file(client, record: dict) -> dict:
    """The record once a worker has stored its file (``file_status`` no longer pending)."""
    return wait_until(
        lambda: client.get(f"/api/scripts/records/id/{record['id']}").json, lambda r: r["file_status"] != "pending"
    )


class HeldJobs:
    """A job queue that keeps the ids it is handed instead of running them: the test runs each job itself."""

    def dispatch(self, job_id: uuid.UUID, delay: float = 0) -> None:
        """The job stays queued in its table, where the test finds it."""

    def start(self) -> None:
        """Nothing runs in the background."""

    def drain(self, timeout: float = 60) -> None:
        """Nothing is running."""


@pytest.fixture
def held_jobs(app, monkeypatch):
    """Jobs are queued, not run (the app's job queue swapped for ``HeldJobs``)."""
    held = HeldJobs()
    monkeypatch.setitem(app.extensions, "job_queue", held)
    return held


class _Interrupted(io.RawIOBase):
    """A stream that serves ``limit`` bytes of ``source``, calls ``at_limit`` (which may raise), then goes on."""

    def __init__(self, source, limit: int, at_limit):
        self.source, self.left, self.at_limit = source, limit, at_limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.left == 0:
            self.left = -1
            self.at_limit()
        wanted = len(buffer) if self.left < 0 else min(len(buffer), self.left)
        data = self.source.read(wanted)
        if self.left > 0:
            self.left -= len(data)
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.source.close()
        super().close()


class FailingStore:
    """The app's object store with faults on order. ``put_error`` is raised by every put. A stream opened from the
    store calls ``read_hook`` once it has served ``read_limit`` bytes, or raises ``read_error`` there. Everything
    else is the real store."""

    def __init__(self, backend):
        self.backend = backend
        self.put_error: BaseException | None = None
        self.read_error: BaseException | None = None
        self.read_hook = None
        self.read_limit = 0

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def put(self, key, stream, content_type):
        if self.put_error is not None:
            raise self.put_error
        return self.backend.put(key, stream, content_type)

    def open(self, key):
        stream = self.backend.open(key)
        if self.read_error is None and self.read_hook is None:
            return stream
        return io.BufferedReader(_Interrupted(stream, self.read_limit, self.read_hook or self._raise))

    def _raise(self):
        raise self.read_error


@pytest.fixture
def failing_store(app, monkeypatch):
    """The app's object store wrapped in a ``FailingStore`` (no faults until the test orders one)."""
    failing = FailingStore(app.extensions["object_store"])
    monkeypatch.setitem(app.extensions, "object_store", failing)
    return failing
