"""Setting up and running an instance: ``init``, ``migrate``, ``serve``, ``worker``."""

import os
import secrets
import socket
import sys
from pathlib import Path

import click
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

import migrations
from config import load_settings
from webapp import create_app
from webapp.errors import APIError
from webapp.extensions import store
from webapp.services import accounts


def alembic_config(database_url: str) -> Config:
    """An Alembic config for this project's migrations against ``database_url``."""
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_database(database_url: str) -> None:
    """Bring the database at ``database_url`` to the newest schema."""
    command.upgrade(alembic_config(database_url), "head")


@click.command()
def init():
    """Create the instance folder and its secret key (once), migrate the database, create the bucket."""
    settings = load_settings()
    instance = Path(settings.instance_path)
    instance.mkdir(parents=True, exist_ok=True)
    key_file = instance / "secret_key"
    if not key_file.exists() and not settings.secret_key:
        key_file.write_text(secrets.token_urlsafe(48) + "\n")
        key_file.chmod(0o600)
        click.echo(f"Wrote a new secret key to {key_file}")
        settings = load_settings()
    upgrade_database(settings.database_url)
    click.echo(f"Database ready: {_redacted(settings.database_url)}")
    _ensure_first_admin(settings)
    if settings.storage_backend == "s3":
        # The app's own backend, so the bucket is made with every configured S3 setting (timeouts included).
        with create_app(settings).app_context():
            store.backend.ensure_bucket()
        click.echo(f"Bucket ready: {settings.s3_bucket}")


@click.command()
def migrate():
    """Bring the configured database to the newest schema."""
    settings = load_settings()
    upgrade_database(settings.database_url)
    click.echo(f"Database migrated: {_redacted(settings.database_url)}")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=lambda: int(os.environ.get("PORT", 5000)), show_default="$PORT or 5000")
@click.option("--workers", default=1, show_default=True)
@click.option("--threads", default=8, show_default=True)
def serve(host, port, workers, threads):
    """Serve the API under gunicorn (gthread, so long streams are not cut off)."""
    _check_port_is_free(host, port)
    click.echo(f"Scriptorium on http://{host}:{port}/api/docs")
    if host in ("127.0.0.1", "localhost", "::1"):
        click.echo("Serving on loopback only: to expose it, put nginx in front with deploy/nginx (README, Production).")
    settings = load_settings()
    click.echo(f"Get an API token: {_this_command()} tokens create {settings.admin_email or 'admin@localhost'}")
    os.execv(
        sys.executable,
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"{host}:{port}",
            "--worker-class",
            "gthread",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            # Multiprocess metrics and JSON logs for gunicorn itself; no access log: the app logs each request
            # with its id, and without the secret part of a signed download's path.
            "--config",
            "python:config.gunicorn",
            "webapp:create_app()",
        ],
    )


@click.command()
@click.option("--beat/--no-beat", default=False, help="Also run the sweeper's schedule in this process.")
@click.option("--concurrency", default=2, show_default=True)
@click.option("--metrics-port", default=9101, show_default=True, help="Serve Prometheus metrics here (0: off).")
def worker(beat, concurrency, metrics_port):
    """Run a Celery worker (needs SCRIPTORIUM_BROKER_URL)."""
    if not load_settings().broker_url:
        raise click.ClickException("Set SCRIPTORIUM_BROKER_URL (e.g. redis://127.0.0.1:6379/0) to run a worker.")
    args = [sys.executable, "-m", "celery", "-A", "workers.worker", "worker", "--concurrency", str(concurrency)]
    args += ["--metrics-port", str(metrics_port)]
    os.execv(sys.executable, [*args, "-B"] if beat else args)


def _ensure_first_admin(settings) -> None:
    """Create the configured admin, or on a database without accounts a local one whose password is written
    into the instance folder; say how to sign in and get a token."""
    with create_app(settings).app_context():
        if settings.admin_email and settings.admin_password:
            try:
                accounts.ensure_admin(settings.admin_email, settings.admin_password)
            except APIError as exc:
                settings_of = {"email": "SCRIPTORIUM_ADMIN_EMAIL", "password": "SCRIPTORIUM_ADMIN_PASSWORD"}
                problems = exc.errors or {"email": [exc.description]}
                raise click.ClickException(
                    "; ".join(
                        f"{settings_of.get(name, name)}: {' '.join(messages)}" for name, messages in problems.items()
                    )
                ) from exc
            email, where = settings.admin_email, "SCRIPTORIUM_ADMIN_PASSWORD"
        elif accounts.count_accounts() == 0:
            email = "admin@localhost"
            password_file = Path(settings.instance_path) / "admin_password"
            password = accounts.random_password(email)
            accounts.create_account(email, password, "admin")
            password_file.write_text(password + "\n")
            password_file.chmod(0o600)
            where = str(password_file)
        else:
            return
    port = os.environ.get("PORT", 5000)
    click.echo(
        f"Sign in at http://127.0.0.1:{port}/admin/ as {email} (password: {where}).\n"
        f"Get an API token: {_this_command()} tokens create {email}   "
        f"(or POST /api/tokens with HTTP Basic {email}:<password>)"
    )


def _check_port_is_free(host: str, port: int) -> None:
    """Fail with the variable to set when something listens on ``host:port`` already (gunicorn would retry for
    a while, then exit with a traceback)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise click.ClickException(
                f"Port {port} on {host} is taken ({exc.strerror}): set PORT to another one (e.g. PORT={port + 1} make "
                "run) or stop what listens there."
            ) from exc


def _this_command() -> str:
    """This command as a path that works from the current folder (``.venv/bin/scriptorium`` after ``make run``,
    where the virtual environment is not on PATH)."""
    installed = Path(sys.executable).parent / "scriptorium"
    return os.path.relpath(installed) if installed.exists() else "scriptorium"


def _redacted(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)
