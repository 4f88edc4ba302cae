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
        settings = load_settings()
    upgrade_database(settings.database_url)
    click.echo(f"Database ready: {_redacted(settings.database_url)}")
    _ensure_first_admin(settings)
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
    if host in ("127.0.0.1", "localhost", "::1"):
        click.echo("Serving on loopback only: to expose it, put nginx in front with deploy/nginx (README, Production).")
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


@main.command()
@click.option("--beat/--no-beat", default=False, help="Also run the sweeper's schedule in this process.")
@click.option("--concurrency", default=2, show_default=True)
def worker(beat, concurrency):
    """Run a Celery worker (needs SCRIPTORIUM_BROKER_URL)."""
    if not load_settings().broker_url:
        raise click.ClickException("Set SCRIPTORIUM_BROKER_URL (e.g. redis://127.0.0.1:6379/0) to run a worker.")
    args = [sys.executable, "-m", "celery", "-A", "workers.worker", "worker", "--concurrency", str(concurrency)]
    os.execv(sys.executable, [*args, "-B"] if beat else args)


def _ensure_first_admin(settings) -> None:
    """Create the configured admin, or on a database without accounts a local one whose password is written
    into the instance folder; say how to sign in and get a token."""
    from webapp import create_app
    from webapp.errors import APIError
    from webapp.services import accounts

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
        f"Get an API token: scriptorium tokens create {email}   "
        f"(or POST /api/tokens with HTTP Basic {email}:<password>)"
    )


@main.group()
def users():
    """Manage accounts (run on the server, against its database)."""


@users.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice(["reader", "writer", "admin"]), default="reader", show_default=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True, help="Prompted, or from stdin.")
def users_create(email, role, password):
    """Create an account that signs in with EMAIL and a password (12 characters or more, not a common one)."""
    from webapp import create_app
    from webapp.errors import APIError
    from webapp.services import accounts

    with create_app().app_context():
        try:
            account = accounts.create_account(email, password, role)
        except APIError as exc:
            raise click.ClickException(exc.description) from exc
        click.echo(f"Created {account.email} ({account.role}), id {account.id}")


@users.command("set-password")
@click.argument("email")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True, help="Prompted, or from stdin.")
def users_set_password(email, password):
    """Give the account EMAIL a new password; its admin sessions end."""
    from webapp import create_app
    from webapp.errors import APIError
    from webapp.services import accounts

    with create_app().app_context():
        account = accounts.account_by_email(email)
        if account is None:
            raise click.ClickException(f"No account has the email {email!r}.")
        try:
            accounts.set_password(account, password)
        except APIError as exc:
            raise click.ClickException(exc.description) from exc
        click.echo(f"New password set for {account.email}; its admin sessions have ended.")


@main.group("tokens")
def token_commands():
    """Manage API tokens (run on the server, against its database)."""


@token_commands.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice(["reader", "writer", "admin"]), help="At most the account's (default).")
@click.option("--expires-in-days", type=click.IntRange(1, 3650))
@click.option("--name", default="cli", show_default=True)
def tokens_create(email, role, expires_in_days, name):
    """Create a token for the account EMAIL and print its secret (shown this once)."""
    from webapp import create_app
    from webapp.errors import APIError
    from webapp.services import accounts, tokens

    with create_app().app_context():
        account = accounts.account_by_email(email)
        if account is None:
            raise click.ClickException(f"No account has the email {email!r}.")
        try:
            token, secret = tokens.create_token(account, name, role, expires_in_days)
        except APIError as exc:
            raise click.ClickException(exc.description) from exc
        click.echo(f"Token {token.id} ({token.role}); its secret, shown this once:", err=True)
        click.echo(secret)


@token_commands.command("revoke")
@click.argument("token_id", type=click.UUID)
def tokens_revoke(token_id):
    """Revoke the token TOKEN_ID."""
    from webapp import create_app
    from webapp.errors import APIError
    from webapp.services import tokens

    with create_app().app_context():
        try:
            tokens.revoke_token(token_id)
        except APIError as exc:
            raise click.ClickException(exc.description) from exc
        click.echo(f"Revoked {token_id}")


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


ENDED = ("succeeded", "failed", "cancelled")


def _client(url: str | None, token: str | None):
    from webapp.remote import ApiClient, default_url

    return ApiClient(url or default_url(), token or os.environ.get("SCRIPTORIUM_TOKEN"))


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--script", "script_id", required=True, help="Id of the script the records belong to.")
@click.option("--experiment", help="Experiment of rows that name none.")
@click.option("--season", help="Season of rows that name none.")
@click.option("--site", help="Site of rows that name none.")
@click.option("--dataset", help="Dataset of rows that name none.")
@click.option("--collection-date", help="Collection date (YYYY-MM-DD) of rows that give none.")
@click.option("--key", help="Idempotency key (default: the file's SHA-256, so a rerun finds the same job).")
@click.option("--url", help="Server URL (default: $SCRIPTORIUM_URL or http://127.0.0.1:5000).")
@click.option("--token", help="API token (default: $SCRIPTORIUM_TOKEN).")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between progress polls.")
def upload(file, script_id, experiment, season, site, dataset, collection_date, key, url, token, interval):
    """Upload FILE (NDJSON, CSV or a JSON array) as a bulk job and follow it to its end."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from webapp.remote import ApiError

    client = _client(url, token)
    fields = {
        "experiment_name": experiment,
        "season_name": season,
        "site_name": site,
        "dataset_name": dataset,
        "collection_date": collection_date,
    }
    try:
        job = client.upload_bulk(script_id, file, fields, key)
        click.echo(f"Job {job['id']} queued.")
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns) as progress:
            bar = progress.add_task("queued", total=None)
            while True:
                progress.update(bar, description=job["state"], completed=job["processed"], total=job["total"])
                if job["state"] in ENDED:
                    break
                time.sleep(interval)
                job = client.job(job["id"])
    except ApiError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"{job['state']}: {job['inserted']} inserted, {job['duplicates']} duplicates, {job['failed']} failed"
        f" of {job['total'] if job['total'] is not None else job['processed']} rows."
    )
    for error in job["errors"][:10]:
        click.echo(f"  line {error['line']}: {error['error']}", err=True)
    if job["failed"] > 10:
        click.echo(f"  … see GET /api/jobs/{job['id']} for the first 100 errors.", err=True)
    if job["state"] != "succeeded":
        raise click.ClickException(job["error_description"] or f"The job ended {job['state']}.")


@main.command()
@click.option("--state", type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled"]))
@click.option("--script", "script_id", help="Only jobs of this script.")
@click.option("--limit", default=20, show_default=True)
@click.option("--url", help="Server URL (default: $SCRIPTORIUM_URL or http://127.0.0.1:5000).")
@click.option("--token", help="API token (default: $SCRIPTORIUM_TOKEN).")
def jobs(state, script_id, limit, url, token):
    """List recent jobs, newest first."""
    from rich.console import Console
    from rich.table import Table

    from webapp.remote import ApiError

    try:
        recent = _client(url, token).recent_jobs(limit, state=state, script_id=script_id)
    except ApiError as exc:
        raise click.ClickException(str(exc)) from exc
    table = Table("id", "kind", "state", "processed", "total", "inserted", "duplicates", "failed", "created")
    for job in recent:
        table.add_row(
            job["id"],
            job["kind"],
            job["state"],
            str(job["processed"]),
            str(job["total"] or "?"),
            str(job["inserted"]),
            str(job["duplicates"]),
            str(job["failed"]),
            job["created_at"][:19],
        )
    # Piped output is not cut to a terminal's width.
    Console(width=None if sys.stdout.isatty() else 200).print(table)
