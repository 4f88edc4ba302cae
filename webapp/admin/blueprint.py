"""The admin pages' Blueprint: a signed-in session on every page but sign-in, a CSRF token on every form post,
the role a page needs, the error pages, and the templates' globals.

The area modules (``webapp/admin/scripts.py``, …) register their pages on ``blp``; the package imports them.
"""

from datetime import UTC, datetime, timedelta
from functools import wraps
from urllib.parse import urlsplit

from flask import Blueprint, abort, g, redirect, render_template, request, session, url_for

from webapp.auth import csrf_token, signs_in_pages, valid_csrf
from webapp.errors import APIError
from webapp.models import Role

blp = signs_in_pages(
    Blueprint("admin", __name__, url_prefix="/admin", template_folder="../templates", static_folder="../static")
)

SESSION_LIFETIME = timedelta(hours=8)


@blp.record_once
def register_template_globals(state):
    # Globals, not context: the form macros are imported without the template's context.
    state.app.jinja_env.globals.update(csrf_token=csrf_token, Role=Role)
    state.app.jinja_env.tests["web_url"] = is_web_url


def is_web_url(value) -> bool:
    """True for an absolute http(s) URL: the only kind of stored URL the pages render as a link (autoescaping
    keeps ``javascript:`` or ``data:`` URLs as they are, and a browser would run them)."""
    try:
        parts = urlsplit(str(value))
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


@blp.before_request
def require_session_and_csrf():
    """Sign-in for every page but the sign-in page; a valid CSRF token on every form post."""
    if request.endpoint in ("admin.login", "admin.static"):
        pass
    elif g.account is None or _session_expired():
        session.clear()
        return redirect(url_for("admin.login", next=request.full_path))
    if request.method == "POST" and not valid_csrf(request.form.get("csrf_token")):
        abort(400, description="The form has expired or did not come from this site; reload the page and try again.")
    return None


def _session_expired() -> bool:
    signed_in = session.get("signed_in_at")
    return signed_in is None or datetime.now(UTC) - datetime.fromisoformat(signed_in) > SESSION_LIFETIME


def requires(role: str):
    """Only accounts with at least ``role`` see the page (403 for the others)."""

    def decorator(view):
        @wraps(view)
        def checked(*args, **kwargs):
            if not Role.at_least(g.role, role):
                abort(403, description=f"This page needs the {role} role.")
            return view(*args, **kwargs)

        return checked

    return decorator


@blp.errorhandler(APIError)
def api_error_page(error: APIError):
    page = render_template("admin/error.html", code=error.status_code, message=error.description)
    return page, error.status_code, error.headers


@blp.errorhandler(400)
@blp.errorhandler(403)
@blp.errorhandler(404)
def http_error_page(error):
    return render_template("admin/error.html", code=error.code, message=error.description), error.code
