"""Accounts and their tokens (admins only). The password policy is the accounts service's."""

import uuid

from flask import flash, g, redirect, render_template, request, url_for

from webapp.admin.blueprint import blp, requires
from webapp.errors import APIError
from webapp.models import Role
from webapp.services import accounts, overview, tokens


@blp.route("/accounts", methods=["GET", "POST"])
@requires(Role.ADMIN)
def account_list():
    """Accounts and their tokens; admins create accounts here."""
    errors = {}
    if request.method == "POST":
        email, password, role = (request.form.get(k, "") for k in ("email", "password", "role"))
        try:
            account = accounts.create_account(email, password, role)
            flash(f"Created {account.email}.")
            return redirect(url_for("admin.account_list"))
        except APIError as exc:  # the policy names the field; a taken email does not
            errors = exc.errors or {"email": [exc.description]}
    return render_template(
        "admin/accounts.html", accounts=overview.accounts_with_tokens(), errors=errors
    ), 422 if errors else 200


@blp.post("/tokens/<uuid:token_id>/revoke")
@requires(Role.ADMIN)
def token_revoke(token_id: uuid.UUID):
    """Revoke anyone's token."""
    tokens.revoke_token(token_id, g.account)
    flash("Token revoked.")
    return redirect(url_for("admin.account_list"))
