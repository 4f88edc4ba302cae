"""Accounts and API tokens, managed on the server against its database: ``users``, ``tokens``."""

import click

from webapp import create_app
from webapp.errors import APIError
from webapp.services import accounts, tokens


@click.group()
def users():
    """Manage accounts (run on the server, against its database)."""


@users.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice(["reader", "writer", "admin"]), default="reader", show_default=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True, help="Prompted, or from stdin.")
def users_create(email, role, password):
    """Create an account that signs in with EMAIL and a password (12 characters or more, not a common one)."""
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
    with create_app().app_context():
        account = _account(email)
        try:
            accounts.set_password(account, password)
        except APIError as exc:
            raise click.ClickException(exc.description) from exc
        click.echo(f"New password set for {account.email}; its admin sessions have ended.")


# Named apart from the tokens service this module calls.
@click.group("tokens")
def token_commands():
    """Manage API tokens (run on the server, against its database)."""


@token_commands.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice(["reader", "writer", "admin"]), help="At most the account's (default).")
@click.option("--expires-in-days", type=click.IntRange(1, 3650))
@click.option("--name", default="cli", show_default=True)
def tokens_create(email, role, expires_in_days, name):
    """Create a token for the account EMAIL and print its secret (shown this once)."""
    with create_app().app_context():
        account = _account(email)
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
    with create_app().app_context():
        try:
            tokens.revoke_token(token_id)
        except APIError as exc:
            raise click.ClickException(exc.description) from exc
        click.echo(f"Revoked {token_id}")


def _account(email: str):
    """The account of ``email``; a command error when there is none."""
    account = accounts.account_by_email(email)
    if account is None:
        raise click.ClickException(f"No account has the email {email!r}.")
    return account
