"""Signing in to the admin pages and out of them."""

from flask import flash, redirect, render_template, request, url_for

from webapp.admin.blueprint import blp
from webapp.auth import end_session, sign_in_with_password, start_session
from webapp.errors import APIError


def safe_next(target: str) -> str | None:
    """``target`` when it is a path on this site, else None. Browsers read ``//host`` and ``/\\host`` as another
    site and drop tabs and newlines inside URLs, so those are refused along with every control character."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    return None if any(ord(char) < 0x20 or ord(char) == 0x7F for char in target) else target


@blp.route("/login", methods=["GET", "POST"])
def login():
    """Sign in with email and password (one message for any mistake)."""
    if request.method == "GET":
        return render_template("admin/login.html", error=None)
    try:
        account = sign_in_with_password(request.form.get("email", ""), request.form.get("password", ""))
    except APIError as exc:  # too many failed attempts (429), or their counter is unreachable (503)
        return render_template("admin/login.html", error=exc.description), exc.status_code, exc.headers
    if account is None:
        return render_template("admin/login.html", error="Wrong email or password."), 401
    start_session(account)
    # Only paths of this site: never redirect a signed-in user to another one.
    return redirect(safe_next(request.args.get("next", "")) or url_for("admin.dashboard"))


@blp.post("/logout")
def logout():
    """Sign out: this session, and every other of the account, ends on the server."""
    end_session()
    flash("Signed out.")
    return redirect(url_for("admin.login"))
