"""The ``scriptorium`` command: set up the instance, migrate the database, serve the API."""

import os
import secrets
import sys
from pathlib import Path

import click

import migrations
from config import load_settings


def alembic_config(database_url: str):
    """An Alembic config for this project's migrations against ``database_url``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_database(database_url: str) -> None:
    """Bring the database at ``database_url`` to the newest schema."""
    from alembic import command

    command.upgrade(alembic_config(database_url), "head")


@click.group()
def main():
    """Scriptorium, the Scripts API of a plant-phenotyping data platform."""


@main.command()
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
    upgrade_database(settings.database_url)
    click.echo(f"Database ready: {_redacted(settings.database_url)}")
    if settings.storage_backend == "s3":
        from webapp.storage import S3Backend

        S3Backend(
            settings.s3_bucket, settings.s3_endpoint_url, settings.s3_public_endpoint_url, settings.s3_region
        ).ensure_bucket()
        click.echo(f"Bucket ready: {settings.s3_bucket}")


@main.command()
def migrate():
    """Bring the configured database to the newest schema."""
    settings = load_settings()
    upgrade_database(settings.database_url)
    click.echo(f"Database migrated: {_redacted(settings.database_url)}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=lambda: int(os.environ.get("PORT", 5000)), show_default="$PORT or 5000")
@click.option("--workers", default=1, show_default=True)
@click.option("--threads", default=8, show_default=True)
def serve(host, port, workers, threads):
    """Serve the API under gunicorn (gthread, so long streams are not cut off)."""
    click.echo(f"Scriptorium on http://{host}:{port}/api/docs")
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
            "--access-logfile",
            "-",
            "webapp:create_app()",
        ],
    )


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
