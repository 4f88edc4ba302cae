"""Who is calling, and may they: credentials for every request in one place.

API calls carry a token (``Authorization: Bearer``, or ``X-API-Key`` as older clients send; ``Authorization``
wins when both are sent). ``POST /api/tokens`` also takes HTTP Basic (email and password); failed password
sign-ins are limited per email and per client address (webapp/throttle.py). The admin pages sign in with a session
cookie that holds the account's session generation: signing out (or a new password) bumps it, which ends every
session of the account, copies of the cookie included. API calls made with that session must send its CSRF token
when they change anything. Reads need ``reader``, writes ``writer``; ``ANONYMOUS_READ`` opens reads to everyone.
"""

import hmac
import secrets
import uuid
from datetime import UTC, datetime

from flask import Flask, current_app, g, request, session
from flask.sessions import SecureCookieSessionInterface

from webapp.errors import ForbiddenError, UnauthorizedError
from webapp.extensions import db, signin_throttle
from webapp.models import Account, Role
from webapp.services import accounts, tokens

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Who may call a view is declared where the view is defined (``public``, ``requires``, ``signs_in_pages``); an
# undeclared view needs the reader role to read and the writer role for anything else.
PUBLIC = "public"
SESSION_PAGES = "session pages"  # pages that check the session themselves and send strangers to sign in
# Views the frameworks define, which no decorator of ours reaches: the API docs and static files.
FRAMEWORK_PUBLIC_ENDPOINTS = {"api-docs.openapi_json", "api-docs.openapi_swagger_ui", "docs_assets.static", "static"}
CSRF_HEADER = "X-CSRF-Token"


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, whose cookie is also ``Secure`` whenever the request came over HTTPS
    (Flask's own setting is fixed per app; ``SESSION_COOKIE_SECURE`` still forces it on)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return super().get_cookie_secure(app) or request.is_secure


def register_auth(app: Flask) -> None:
    """Check credentials before every request."""
    app.session_interface = SessionInterface()
    app.before_request(authorize_request)


def _declare(rule: str, **marks):
    def mark(view):
        view.access = rule
        for name, value in marks.items():
            setattr(view, name, value)
        return view

    return mark


def public(view):
    """The view (a function, a MethodView or one of its methods) needs no credentials."""
    return _declare(PUBLIC)(view)


def requires(role: str, accepts_password: bool = False):
    """The view needs ``role`` whatever its method; with ``accepts_password`` it also takes HTTP Basic."""
    return _declare(role, accepts_password=accepts_password)


def signs_in_pages(blueprint):
    """Every view of ``blueprint`` is a page that checks the session itself (the caller is still looked up)."""
    blueprint.access = SESSION_PAGES
    return blueprint


def _declared(name: str):
    """What the requested view declares as ``name``: on its method, its MethodView class, the view function or
    its blueprint, the nearest first; None when nothing does. Views are declared once: the answer is kept."""
    known = current_app.extensions.setdefault("declared_access", {})
    key = (request.endpoint, request.method, name)
    if key not in known:
        view = current_app.view_functions.get(request.endpoint)
        view_class = getattr(view, "view_class", None)
        method = getattr(view_class, request.method.lower(), None) if view_class else None
        holders = (method, view_class, view, current_app.blueprints.get(request.blueprint or ""))
        known[key] = next((getattr(h, name) for h in holders if getattr(h, name, None) is not None), None)
    return known[key]


def authorize_request() -> None:
    """Find the caller (``g.account_id``, ``g.role``) and refuse the request when they may not make it."""
    g.account, g.account_id, g.role = None, None, None
    if request.endpoint is None or request.endpoint in FRAMEWORK_PUBLIC_ENDPOINTS:
        return
    blueprint = current_app.blueprints.get(request.blueprint or "")
    rule = PUBLIC if getattr(blueprint, "public", False) else _declared("access")  # an API blueprint of public views
    if rule == PUBLIC:
        return
    if rule == SESSION_PAGES:
        _from_session(check_csrf=False)  # the pages check CSRF on their forms and redirect to sign-in
        return
    _from_headers() or _from_session(check_csrf=request.method not in SAFE_METHODS)
    needed = rule or (Role.READER if request.method in SAFE_METHODS else Role.WRITER)
    if g.account_id is None:
        if needed == Role.READER and current_app.config["ANONYMOUS_READ"]:
            return
        raise UnauthorizedError(
            "Credentials are needed: send 'Authorization: Bearer <token>' (or 'X-API-Key: <token>'). "
            "Get a token with POST /api/tokens or `scriptorium tokens create`."
        )
    if not Role.at_least(g.role, needed):
        raise ForbiddenError(f"This needs the {needed} role; your credentials have {g.role}.")


def _from_headers() -> bool:
    """Authenticate from the request's headers; False when it sent none."""
    authorization = request.authorization
    if authorization is not None and authorization.type == "basic":
        if not _declared("accepts_password"):
            raise UnauthorizedError("Email and password are only accepted by POST /api/tokens; send a token.")
        account = sign_in_with_password(authorization.username or "", authorization.password or "")
        if account is None:
            raise UnauthorizedError("Wrong email or password.")
        g.account, g.account_id, g.role = account, account.id, account.role
        return True
    secret = authorization.token if authorization is not None and authorization.type == "bearer" else None
    secret = secret or request.headers.get("X-API-Key")
    if authorization is not None and secret is None:
        raise UnauthorizedError("Unsupported Authorization scheme: use Bearer.")
    if secret is None:
        return False
    grant = tokens.token_grant(secret)
    if grant is None:
        raise UnauthorizedError("The token is unknown, revoked or expired.")
    # A token never has more rights than its account has now.
    g.account_id, g.role = grant.account_id, min(grant.role, grant.account_role, key=Role.ORDER.index)
    return True


def _from_session(check_csrf: bool) -> bool:
    """Authenticate from the admin session cookie, while its account's session generation is the one it was
    signed in with; unsafe API calls must echo its CSRF token."""
    account_id = session.get("account_id")
    if account_id is None:
        return False
    account = db.session.get(Account, uuid.UUID(account_id))
    if account is None or session.get("generation") != account.session_generation:
        session.clear()
        return False
    if check_csrf and not valid_csrf(request.headers.get(CSRF_HEADER)):
        raise ForbiddenError(f"Requests made with the admin session must send the {CSRF_HEADER} header.")
    g.account, g.account_id, g.role = account, account.id, account.role
    return True


def sign_in_with_password(email: str, password: str) -> Account | None:
    """The account when email and password match, else None. Failures count against the email and the client
    address; past either limit the attempt is refused (429) before any password is compared."""
    counted_as, address = accounts.normalise_email(email), request.remote_addr or ""
    signin_throttle.check(counted_as, address)
    account = accounts.check_password(email, password)
    if account is None:
        signin_throttle.count_failure(counted_as, address)
    return account


def start_session(account: Account) -> None:
    """Sign ``account`` in to the admin pages (a fresh session: nothing of an earlier one is kept)."""
    session.clear()
    session.permanent = True
    session.update(
        account_id=str(account.id),
        generation=account.session_generation,
        signed_in_at=datetime.now(UTC).isoformat(),
    )


def end_session() -> None:
    """Sign out: end every session of the signed-in account on the server, and clear this one."""
    account = current_account()
    if account is not None:
        accounts.end_sessions(account)
    session.clear()


def current_account() -> Account | None:
    """The caller's account, loaded on first use: most requests need only ``g.role``."""
    if g.account is None and g.account_id is not None:
        g.account = db.session.get(Account, g.account_id)
    return g.account


def csrf_token() -> str:
    """The session's CSRF token, created on first use."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def valid_csrf(candidate: str | None) -> bool:
    expected = session.get("csrf")
    return bool(candidate and expected and hmac.compare_digest(candidate, expected))
