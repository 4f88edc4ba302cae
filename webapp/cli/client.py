"""Commands that call a running server over HTTP with an API token, through the Python client
(``client/``, package ``scriptorium_client``): ``upload``, ``jobs``, ``export``."""

import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from scriptorium_client import APIError, Client

URL_HELP = "Server URL (default: $SCRIPTORIUM_URL or http://127.0.0.1:5000)."
TOKEN_HELP = "API token (default: $SCRIPTORIUM_TOKEN)."

UPLOAD_EPILOG = """
Row layouts (sample files: examples/records.csv, examples/records.ndjson):

\b
CSV, a header row then one record a row; script_data holds the record's values as JSON:
  timestamp,experiment_name,season_name,site_name,script_data
  2024-05-01T12:00:00Z,Drought 2024,Summer,Maricopa,"{""plot"": 7, ""height_cm"": 41.5}"
\b
NDJSON, one JSON object a line:
  {"timestamp": "2024-05-01T12:00:00Z", "site_name": "Maricopa", "script_data": {"plot": 7}}

A JSON array of such objects works too. Columns are record fields only (timestamp, collection_date,
experiment_name, season_name, site_name, dataset_name, script_run_id, script_data, record_info): any other
column, such as plot or height_cm, fails its row with "Unknown field"; put such keys inside script_data.
Fields a row lacks come from --experiment, --season, --site, --dataset and --collection-date.
"""


def _client(url: str | None, token: str | None) -> Client:
    # PORT is what `make run` serves on, so a changed port needs no second setting here.
    default = os.environ.get("SCRIPTORIUM_URL") or f"http://127.0.0.1:{os.environ.get('PORT', 5000)}"
    return Client(url or default, token or os.environ.get("SCRIPTORIUM_TOKEN"))


@click.command(epilog=UPLOAD_EPILOG)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--script", "script_id", required=True, help="Id of the script the records belong to.")
@click.option("--experiment", help="Experiment of rows that name none.")
@click.option("--season", help="Season of rows that name none.")
@click.option("--site", help="Site of rows that name none.")
@click.option("--dataset", help="Dataset of rows that name none.")
@click.option("--collection-date", help="Collection date (YYYY-MM-DD) of rows that give none.")
@click.option("--key", help="Idempotency key (default: the file's SHA-256, so a rerun finds the same job).")
@click.option("--url", help=URL_HELP)
@click.option("--token", help=TOKEN_HELP)
@click.option("--interval", default=1.0, show_default=True, help="Seconds between progress polls.")
def upload(file, script_id, experiment, season, site, dataset, collection_date, key, url, token, interval):
    """Upload FILE (NDJSON, CSV or a JSON array, optionally .gz) as a bulk job and follow it to its end."""
    defaults = {
        "experiment_name": experiment,
        "season_name": season,
        "site_name": site,
        "dataset_name": dataset,
        "collection_date": collection_date,
    }
    try:
        with _client(url, token) as client:
            job = client.bulk_upload(script_id, file, wait=False, key=key, **defaults)
            if job["replayed"]:
                click.echo(f"This file was uploaded before: following its job {job['id']} (nothing is inserted again).")
            else:
                click.echo(f"Job {job['id']} queued.")
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns) as progress:
                bar = progress.add_task("queued", total=None)

                def show(current: dict) -> None:
                    progress.update(
                        bar, description=current["state"], completed=current["processed"], total=current["total"]
                    )

                job = client.wait_job(job["id"], interval=interval, progress=show, first=job)
    except APIError as exc:
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
@click.option("--url", help=URL_HELP)
@click.option("--token", help=TOKEN_HELP)
def jobs(state, script_id, limit, url, token):
    """List recent jobs, newest first."""
    try:
        with _client(url, token) as client:
            recent = client.recent_jobs(limit, state=state, script_id=script_id)
    except APIError as exc:
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


@click.command()
@click.option("--script", "script_id", required=True, help="Id of the script whose records to export.")
@click.option("--format", "table_format", type=click.Choice(["csv", "parquet"]), default="parquet", show_default=True)
@click.option(
    "-o", "--output", required=True, type=click.Path(path_type=Path), help="File (or folder) to write the table to."
)
@click.option("--start", help="Records at or after this time (ISO 8601; UTC when it has no offset).")
@click.option("--end", help="Records at or before this time.")
@click.option("--site", "sites", multiple=True, help="Only this site (repeat for several).")
@click.option("--experiment", "experiments", multiple=True, help="Only this experiment (repeatable).")
@click.option("--season", "seasons", multiple=True, help="Only this season (repeatable).")
@click.option("--dataset", "datasets", multiple=True, help="Only this dataset (repeatable).")
@click.option("--url", help=URL_HELP)
@click.option("--token", help=TOKEN_HELP)
def export(script_id, table_format, output, start, end, sites, experiments, seasons, datasets, url, token):
    """Export a script's records as one table (CSV, or Parquet for pandas, R and Arrow) with a progress display."""
    filters = {
        "start_timestamp": start,
        "end_timestamp": end,
        "site_names": list(sites) or None,
        "experiment_names": list(experiments) or None,
        "season_names": list(seasons) or None,
        "dataset_names": list(datasets) or None,
    }
    columns = (TextColumn("{task.description}"), DownloadColumn(), TransferSpeedColumn(), TimeElapsedColumn())
    try:
        with _client(url, token) as client, Progress(*columns, console=Console(stderr=True)) as progress:
            bar = progress.add_task("exporting", total=None)
            table_rows: list[int | None] = [None]

            def show(received: int, rows: int | None) -> None:
                table_rows[0] = rows
                label = f"{rows:,} rows" if rows is not None else "rows"
                progress.update(bar, description=label, completed=received)

            written = client.export(script_id, output, format=table_format, progress=show, **filters)
    except APIError as exc:
        raise click.ClickException(str(exc)) from exc
    rows = table_rows[0]
    click.echo(f"Wrote {'' if rows is None else f'{rows:,} records '}to {written} ({written.stat().st_size:,} bytes).")
