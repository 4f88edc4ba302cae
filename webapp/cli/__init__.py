"""The ``scriptorium`` command, by audience: setting up and running an instance (``webapp/cli/setup.py``),
accounts and tokens on the server (``accounts.py``), and the HTTP client of a running server (``client.py``)."""

import click

from webapp.cli.accounts import token_commands, users
from webapp.cli.check import SettingsGroup, check
from webapp.cli.client import export, jobs, upload
from webapp.cli.setup import init, migrate, serve, worker


@click.group(cls=SettingsGroup)
def main():
    """Scriptorium, the Scripts API of a plant-phenotyping data platform."""


for command in (init, migrate, serve, worker, check, users, token_commands, upload, jobs, export):
    main.add_command(command)
