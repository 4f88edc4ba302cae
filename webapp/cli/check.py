"""``scriptorium check``: each dependency's state as ``GET /api/ready`` sees it, and how every command reports
settings that cannot work (one line per bad setting, no traceback)."""

import json

import click

from config import load_settings
from config.settings import SettingsError
from webapp import create_app
from webapp.services import readiness


class SettingsGroup(click.Group):
    """The command group: a command that meets bad settings prints each problem and exits 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SettingsError as exc:
            raise click.ClickException(str(exc)) from None


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the body GET /api/ready would answer.")
def check(as_json):
    """Check the database, the object store and the broker as /api/ready does; exit 1 when one fails."""
    with create_app(load_settings()).app_context():
        answer = readiness.check_readiness()
    if as_json:
        click.echo(json.dumps(answer, indent=2))
    else:
        for name, result in answer["checks"].items():
            click.echo(f"{name}: {result['status']} — {result['detail']}")
        click.echo(answer["status"])
    if answer["status"] != "ready":
        raise SystemExit(1)
