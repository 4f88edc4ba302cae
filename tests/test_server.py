"""The product as users meet it: gunicorn serving the API over a real socket, and the setup command."""

import hashlib
import json
import time
import uuid

import psycopg
import pytest
import requests
from click.testing import CliRunner

from tests.conftest import empty_tables, make_app, make_token, token_client
from tests.servers import gunicorn_app, wait_until


@pytest.fixture
def server(tmp_path, postgresql_url):
    """gunicorn serving the app on PostgreSQL with the local store; yields (base URL, admin token)."""
    app = make_app(tmp_path, postgresql_url)
    token = make_token(app)
    with gunicorn_app(postgresql_url, tmp_path) as base:
        yield base, token
    empty_tables(app)


def session_with(token: str) -> requests.Session:
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    return http


def test_record_with_file_round_trip_over_http(server):
    """Create references, post a record with a file, stream it, and download the file through the 307."""
    server, token = server
    http = session_with(token)
    experiment = http.post(f"{server}/api/experiments", json={"experiment_name": "E"}).json()
    http.post(f"{server}/api/experiments/id/{experiment['id']}/seasons", json={"season_name": "S"})
    http.post(f"{server}/api/sites/", json={"site_name": "X"})
    script = http.post(f"{server}/api/scripts", json={"script_name": "ndvi"}).json()
    payload = b"\x00\x01image-bytes" * 50_000
    response = http.post(
        f"{server}/api/scripts/id/{script['id']}/records",
        data={"timestamp": "2024-06-01T08:00:00+02:00", "experiment_name": "E", "season_name": "S", "site_name": "X"},
        files={"record_file": ("scan.bin", payload, "application/octet-stream")},
    )
    assert response.status_code == 200, response.text
    assert response.json()["file_status"] == "pending"
    record = wait_until(
        lambda: http.get(f"{server}/api/scripts/records/id/{response.json()['id']}").json(),
        lambda r: r["file_status"] != "pending",
    )
    assert record["file_status"] == "ready"
    assert record["file_sha256"] == hashlib.sha256(payload).hexdigest()

    with http.get(f"{server}/api/scripts/id/{script['id']}/records", stream=True) as stream:
        assert stream.headers["Content-Type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in stream.iter_lines() if line]
    assert [line["id"] for line in lines] == [record["id"]]

    download = http.get(f"{server}/api/scripts/records/id/{record['id']}/download", allow_redirects=False)
    assert download.status_code == 307
    # The download URL is the credential: a fresh client without any state fetches it.
    fetched = requests.get(requests.compat.urljoin(server, download.headers["Location"]), timeout=10)
    assert fetched.content == payload
    assert 'filename="scan.bin"' in fetched.headers["Content-Disposition"]


def test_init_writes_a_secret_key_once_and_migrates(tmp_path, monkeypatch):
    """`scriptorium init` creates the instance folder, a secret key kept across runs, and the database."""
    from webapp.cli import main

    instance = tmp_path / "instance"
    monkeypatch.setenv("SCRIPTORIUM_INSTANCE_PATH", str(instance))
    runner = CliRunner()
    first = runner.invoke(main, ["init"])
    assert first.exit_code == 0, first.output
    key = (instance / "secret_key").read_text()
    assert len(key.strip()) >= 32
    assert "admin@localhost" in first.output and "scriptorium tokens create" in first.output
    assert (instance / "admin_password").is_file()
    second = runner.invoke(main, ["init"])
    assert second.exit_code == 0, second.output
    assert (instance / "secret_key").read_text() == key
    assert (instance / "scriptorium.db").is_file()


def test_connections_dropped_by_the_database_are_replaced(tmp_path, postgresql_url):
    """A pooled connection PostgreSQL has ended (a restart, an idle timeout) is replaced before it is used
    when it has been idle; one used a moment ago fails its request with a 503 to retry, and is replaced."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from webapp.extensions import db

    app = make_app(tmp_path, postgresql_url)
    client = token_client(app, make_token(app))
    server = make_url(postgresql_url).set(drivername="postgresql").render_as_string(hide_password=False)

    def end_the_pooled_connection():
        with app.app_context():
            pid = db.session.scalar(text("SELECT pg_backend_pid()"))
            db.session.commit()
        with psycopg.connect(server, autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)

    end_the_pooled_connection()
    time.sleep(1.2)  # longer than a connection stays trusted after its last use
    assert client.get("/api/sites").status_code == 200
    end_the_pooled_connection()
    failed = client.get("/api/sites")
    assert (failed.status_code, failed.headers["Retry-After"]) == (503, "1")
    assert client.get("/api/sites").status_code == 200
    app.extensions["database"].dispose()


def test_app_refuses_to_start_without_a_secret_key(tmp_path, sqlite_url):
    """A deployment without a secret key fails at boot, not at the first request."""
    from config import load_settings
    from webapp import create_app

    with pytest.raises(RuntimeError, match="secret key"):
        create_app(load_settings(instance_path=str(tmp_path), database_url=sqlite_url))


def test_cli_upload_follows_the_job_and_sets_the_exit_status(server, tmp_path):
    """`scriptorium upload` queues a file, follows it to the end, exits 0 on success and 1 on a failed job;
    `scriptorium jobs` lists both."""
    from webapp.cli import main

    server, token = server
    http = session_with(token)
    experiment = http.post(f"{server}/api/experiments", json={"experiment_name": "E"}).json()
    http.post(f"{server}/api/experiments/id/{experiment['id']}/seasons", json={"season_name": "S"})
    http.post(f"{server}/api/sites", json={"site_name": "X"})
    script = http.post(f"{server}/api/scripts", json={"script_name": "ndvi"}).json()
    rows = tmp_path / "rows.ndjson"
    rows.write_text(
        "".join(json.dumps({"timestamp": f"2024-06-01T00:00:{i:02d}Z"}) + "\n" for i in range(30)) + "{bad\n"
    )
    runner = CliRunner()
    args = [
        "--script",
        script["id"],
        "--experiment",
        "E",
        "--season",
        "S",
        "--site",
        "X",
        "--url",
        server,
        "--token",
        token,
    ]
    ok = runner.invoke(main, ["upload", str(rows), *args, "--interval", "0.1"])
    assert ok.exit_code == 0, ok.output
    assert "succeeded: 30 inserted, 0 duplicates, 1 failed of 31 rows" in ok.output
    assert "line 31" in ok.output

    broken = tmp_path / "rows.json"
    broken.write_text('[{"timestamp": "2024-06-02T00:00:00Z"}, {"timestamp": ')
    failed = runner.invoke(main, ["upload", str(broken), *args, "--interval", "0.1"])
    assert failed.exit_code == 1
    assert "ends before its closing bracket" in failed.output

    listed = runner.invoke(main, ["jobs", "--url", server], env={"SCRIPTORIUM_TOKEN": token})
    assert listed.exit_code == 0
    assert listed.output.count("bulk_records") == 2

    again = runner.invoke(main, ["upload", str(rows), *args, "--interval", "0.1"])
    assert again.exit_code == 0, again.output
    assert "uploaded before" in again.output and "nothing is inserted again" in again.output

    natural = tmp_path / "natural.csv"  # a column the records do not have: every row fails
    natural.write_text("timestamp,plot,height_cm\n2024-06-03T00:00:00Z,7,41.5\n")
    unstored = runner.invoke(main, ["upload", str(natural), *args, "--interval", "0.1"])
    assert unstored.exit_code == 1
    assert "No row was stored: 1 failed" in unstored.output


def test_cli_upload_to_unknown_script_is_an_error(server, tmp_path):
    """An API error is reported with its description and a non-zero exit status."""
    from webapp.cli import main

    server, token = server
    rows = tmp_path / "rows.ndjson"
    rows.write_text('{"timestamp": "2024-06-01T00:00:00Z"}\n')
    result = CliRunner().invoke(
        main, ["upload", str(rows), "--script", str(uuid.uuid4()), "--url", server, "--token", token]
    )
    assert result.exit_code == 1
    assert "404" in result.output
