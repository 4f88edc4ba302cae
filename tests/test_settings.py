"""Settings fail fast: every bad setting is reported at boot, all at once, each naming its variable and what it
accepts; the CLI, gunicorn and the Celery worker refuse to start with them."""

import subprocess
import sys
from pathlib import Path

import pytest

from config import load_settings
from config.settings import SettingsError
from tests.servers import free_port

SCRIPTORIUM = str(Path(sys.executable).parent / "scriptorium")


def problems_of(monkeypatch, **variables) -> list[str]:
    """The problems ``load_settings`` reports with ``SCRIPTORIUM_<NAME>`` set to each value."""
    for name, value in variables.items():
        monkeypatch.setenv(f"SCRIPTORIUM_{name}", value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    return caught.value.problems


def test_the_defaults_are_valid():
    """The embedded default needs no setting at all."""
    settings = load_settings()
    assert (settings.storage_backend, settings.log_format, settings.ready_timeout) == ("local", "text", 2.0)
    assert settings.metrics_public is False
    assert settings.metrics_dir == str(Path(settings.instance_path) / "metrics")


def test_good_values_of_every_kind_are_accepted(monkeypatch, tmp_path):
    """Booleans in their usual spellings, levels in any case, well-formed URLs, limits above their floor."""
    for name, value in {
        "INSTANCE_PATH": str(tmp_path),
        "METRICS_PUBLIC": "Yes",
        "ANONYMOUS_READ": "off",
        "LOG_LEVEL": "debug",
        "LOG_FORMAT": "json",
        "METRICS_DIR": str(tmp_path / "prom"),
        "READY_TIMEOUT": "0.5",
        "PROXY_COUNT": "0",
        "DB_POOL_SIZE": "4",
        "DATABASE_URL": "postgresql+psycopg://user:pw@db.internal:5432/scriptorium",
        "BROKER_URL": "redis://:pw@redis:6379/0",
        "STORAGE_BACKEND": "s3",
        "S3_BUCKET": "lab-files.2024",
        "S3_ENDPOINT_URL": "http://minio:9000",
        "S3_PUBLIC_ENDPOINT_URL": "https://files.example.org",
        "SIGNIN_LIMIT_PER_EMAIL": "5/minute",
    }.items():
        monkeypatch.setenv(f"SCRIPTORIUM_{name}", value)
    settings = load_settings()
    assert (settings.metrics_public, settings.anonymous_read, settings.log_level) == (True, False, "DEBUG")
    assert (settings.metrics_dir, settings.ready_timeout, settings.proxy_count) == (str(tmp_path / "prom"), 0.5, 0)
    assert settings.ratelimit_storage_url == "redis://:pw@redis:6379/0"


def test_an_unknown_storage_backend(monkeypatch):
    """The backend is `local` or `s3`."""
    assert problems_of(monkeypatch, STORAGE_BACKEND="gcs") == [
        "SCRIPTORIUM_STORAGE_BACKEND: accepts 'local' or 's3', not 'gcs'"
    ]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgres//db/scriptorium", "this value is not such a URL"),
        ("postgresql+psycopg://scientist:hunter2-hunter2@db:fivefourthreetwo/x", "this value is not such a URL"),
        ("postgresql+psycopg://scientist:hunter2-hunter2@db:99999/x", "the port is out of range"),
        ("mysql://scientist:hunter2-hunter2@db/x", "'mysql' databases are not supported"),
        ("postgresql+pg8001://db/x", "the driver 'pg8001' is not known"),
    ],
)
def test_a_malformed_database_url(monkeypatch, url, reason):
    """The database URL is PostgreSQL's or SQLite's, well formed; the message never repeats it (a password)."""
    [problem] = problems_of(monkeypatch, DATABASE_URL=url)
    assert problem.startswith("SCRIPTORIUM_DATABASE_URL: accepts postgresql+psycopg://")
    assert reason in problem
    assert "hunter2" not in problem and "scientist" not in problem


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://redis:6379/0", "'http' is not one of them"),
        ("redis://", "the host is missing"),
        ("redis://redis:123456/0", "the port is out of range"),
        ("redis://redis:port/0", "this value is not such a URL"),
        ("redis://redis:6379/zero", "the database after the host must be a number"),
    ],
)
def test_a_malformed_broker_url(monkeypatch, url, reason):
    """The broker is a redis:// (or rediss://) URL with a host; the sign-in counts that follow it are not
    reported a second time."""
    [problem] = problems_of(monkeypatch, BROKER_URL=url)
    assert problem.startswith("SCRIPTORIUM_BROKER_URL: accepts redis://")
    assert reason in problem


def test_a_malformed_ratelimit_storage_url(monkeypatch):
    """Sign-in counts go to memory:// or a Redis."""
    [problem] = problems_of(monkeypatch, RATELIMIT_STORAGE_URL="postgresql://db/x")
    assert problem.startswith("SCRIPTORIUM_RATELIMIT_STORAGE_URL: accepts redis://") and "memory://" in problem


@pytest.mark.parametrize(
    ("name", "url", "reason"),
    [
        ("S3_ENDPOINT_URL", "minio:9000", "'minio' is not http or https"),
        ("S3_ENDPOINT_URL", "http://", "the host is missing"),
        ("S3_PUBLIC_ENDPOINT_URL", "ftp://files.example.org", "'ftp' is not http or https"),
        ("S3_PUBLIC_ENDPOINT_URL", "https://files.example.org:0", "the port is out of range"),
    ],
)
def test_a_malformed_s3_endpoint_url(monkeypatch, name, url, reason):
    """Object store endpoints are http(s) URLs with a host."""
    [problem] = problems_of(monkeypatch, **{name: url})
    assert problem == f"SCRIPTORIUM_{name}: accepts an http:// or https:// URL such as http://minio:9000; {reason}"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DB_POOL_SIZE", "0"),
        ("MAX_CONTENT_LENGTH", "-1"),
        ("DOWNLOAD_URL_EXPIRES", "0"),
        ("JOB_LEASE_SECONDS", "-60"),
        ("JOB_SWEEP_SECONDS", "0"),
        ("JOB_MAX_ATTEMPTS", "0"),
        ("BULK_CHUNK_ROWS", "-5000"),
        ("BULK_MAX_ROW_BYTES", "0"),
        ("PROXY_COUNT", "-1"),
    ],
)
def test_a_negative_or_zero_limit(monkeypatch, name, value):
    """Counts and sizes have a floor: 1 (or 0 for the proxies in front)."""
    floor = "0 or more" if name == "PROXY_COUNT" else "1 or more"
    assert problems_of(monkeypatch, **{name: value}) == [
        f"SCRIPTORIUM_{name}: accepts a whole number ({floor}), not {int(value)}"
    ]


@pytest.mark.parametrize("value", ["ten", "1.5", "5k"])
def test_a_limit_that_is_not_a_whole_number(monkeypatch, value):
    """A count is a whole number, and the message quotes what was written."""
    assert problems_of(monkeypatch, BULK_CHUNK_ROWS=value) == [
        f"SCRIPTORIUM_BULK_CHUNK_ROWS: accepts a whole number (1 or more), not {value!r}"
    ]


@pytest.mark.parametrize(
    ("name", "value"),
    [("READY_TIMEOUT", "0"), ("S3_CONNECT_TIMEOUT", "-3"), ("S3_READ_TIMEOUT", "soon"), ("READY_TIMEOUT", "inf")],
)
def test_a_timeout_that_is_not_a_positive_number(monkeypatch, name, value):
    """Timeouts are finite numbers of seconds above 0."""
    [problem] = problems_of(monkeypatch, **{name: value})
    assert problem.startswith(f"SCRIPTORIUM_{name}: accepts a number of seconds above 0")


def test_an_s3_backend_without_a_bucket(monkeypatch):
    """The s3 backend needs a bucket, and one whose name S3 accepts."""
    assert problems_of(monkeypatch, STORAGE_BACKEND="s3", S3_BUCKET="  ") == [
        "SCRIPTORIUM_S3_BUCKET: the s3 storage backend needs a bucket name"
    ]
    [problem] = problems_of(monkeypatch, STORAGE_BACKEND="s3", S3_BUCKET="Lab_Files")
    assert problem.startswith("SCRIPTORIUM_S3_BUCKET: accepts a bucket name of 3 to 63 lowercase letters")


def test_a_bad_bool(monkeypatch):
    """Booleans are spelled 1/true/yes/on or 0/false/no/off; anything else is not quietly false."""
    assert problems_of(monkeypatch, METRICS_PUBLIC="maybe") == [
        "SCRIPTORIUM_METRICS_PUBLIC: accepts 1, true, yes, on or 0, false, no, off, not 'maybe'"
    ]


def test_a_bad_log_format_or_level(monkeypatch):
    """Logs are `text` or `json`, at one of logging's levels."""
    assert problems_of(monkeypatch, LOG_FORMAT="xml", LOG_LEVEL="loud") == [
        "SCRIPTORIUM_LOG_FORMAT: accepts 'text' or 'json', not 'xml'",
        "SCRIPTORIUM_LOG_LEVEL: accepts 'DEBUG' or 'INFO' or 'WARNING' or 'ERROR' or 'CRITICAL', not 'LOUD'",
    ]


def test_a_bad_signin_limit(monkeypatch):
    """Sign-in limits use the limits library's notation."""
    assert problems_of(monkeypatch, SIGNIN_LIMIT_PER_ADDRESS="lots") == [
        "SCRIPTORIUM_SIGNIN_LIMIT_PER_ADDRESS: accepts a limit such as '10 per 15 minutes' or '100/hour', not 'lots'"
    ]


def test_every_bad_setting_is_reported_at_once(monkeypatch):
    """One error lists each bad setting on a line of its own, so one restart fixes them all."""
    problems = problems_of(
        monkeypatch, STORAGE_BACKEND="s4", DB_POOL_SIZE="-1", BROKER_URL="redis://", ANONYMOUS_READ="sometimes"
    )
    assert [problem.split(":")[0] for problem in problems] == [
        "SCRIPTORIUM_ANONYMOUS_READ",
        "SCRIPTORIUM_BROKER_URL",
        "SCRIPTORIUM_DB_POOL_SIZE",
        "SCRIPTORIUM_STORAGE_BACKEND",
    ]
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value).splitlines()[1:] == [f"  {problem}" for problem in problems]


def test_overrides_are_validated_and_replace_the_environment(monkeypatch):
    """Values given in code are held to the same rules, and a bad variable they replace does not matter."""
    monkeypatch.setenv("SCRIPTORIUM_DB_POOL_SIZE", "none")
    assert load_settings(db_pool_size=3).db_pool_size == 3
    with pytest.raises(SettingsError, match="SCRIPTORIUM_STORAGE_BACKEND"):
        load_settings(db_pool_size=3, storage_backend="ftp")


BAD = {"SCRIPTORIUM_STORAGE_BACKEND": "s4", "SCRIPTORIUM_BULK_CHUNK_ROWS": "0"}
BAD_LINES = (
    "SCRIPTORIUM_BULK_CHUNK_ROWS: accepts a whole number (1 or more), not 0",
    "SCRIPTORIUM_STORAGE_BACKEND: accepts 'local' or 's3', not 's4'",
)


def run(args: list[str], tmp_path, **env) -> subprocess.CompletedProcess:
    """``args`` run with the bad settings (and ``env``) in an instance folder of the test's own."""
    import os

    environment = {**os.environ, "SCRIPTORIUM_INSTANCE_PATH": str(tmp_path), **BAD, **env}
    return subprocess.run(args, env=environment, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "command", [["init"], ["migrate"], ["serve", "--port", "0"], ["worker"], ["check"], ["tokens", "create", "a@b.c"]]
)
def test_cli_commands_print_the_bad_settings_and_exit_non_zero(tmp_path, command):
    """Any command that reads the settings prints one line per bad setting and exits 1, without a traceback."""
    result = run([SCRIPTORIUM, *command], tmp_path, SCRIPTORIUM_BROKER_URL="redis://127.0.0.1:6379/9")
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    for line in BAD_LINES:
        assert f"  {line}" in lines, result.stderr
    assert not (tmp_path / "scriptorium.db").exists()


def test_gunicorn_refuses_to_boot_with_bad_settings(tmp_path):
    """gunicorn's workers fail to boot, gunicorn exits non-zero, and its log names each bad setting."""
    args = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{free_port()}", "webapp:create_app()"]
    result = run(args, tmp_path, SCRIPTORIUM_SECRET_KEY="boot-test-key")
    assert result.returncode != 0
    for line in BAD_LINES:
        assert line in result.stderr, result.stderr[-3000:]


def test_celery_worker_refuses_to_boot_with_bad_settings(tmp_path):
    """The Celery worker exits non-zero naming each bad setting."""
    args = [sys.executable, "-m", "celery", "-A", "workers.worker", "worker", "--pool", "solo"]
    result = run(args, tmp_path, SCRIPTORIUM_SECRET_KEY="boot-test-key", SCRIPTORIUM_BROKER_URL="redis://127.0.0.1:1/0")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    for line in BAD_LINES:
        assert line in output, output[-3000:]
