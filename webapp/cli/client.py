"""Commands that call a running server over HTTP with an API token (``webapp/remote.py``): ``upload``, ``jobs``."""

import os
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from webapp.remote import ApiClient, ApiError, default_url

ENDED = ("succeeded", "failed", "cancelled")


def _client(url: str | None, token: str | None) -> ApiClient:
    return ApiClient(url or default_url(), token or os.environ.get("SCRIPTORIUM_TOKEN"))


@click.command()
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
        if job["replayed"]:
            click.echo(f"This file was uploaded before: following its job {job['id']} (nothing is inserted again).")
        else:
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
    if job["inserted"] == 0:
        raise click.ClickException(
            f"No row was stored: {job['failed']} failed and {job['duplicates']} were stored already."
        )


@click.command()
@click.option("--state", type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled"]))
@click.option("--script", "script_id", help="Only jobs of this script.")
@click.option("--limit", default=20, show_default=True)
@click.option("--url", help="Server URL (default: $SCRIPTORIUM_URL or http://127.0.0.1:5000).")
@click.option("--token", help="API token (default: $SCRIPTORIUM_TOKEN).")
def jobs(state, script_id, limit, url, token):
    """List recent jobs, newest first."""
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
