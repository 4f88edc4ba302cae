"""Scriptorium — the Scripts API of a plant-phenotyping data platform.

It registers the analysis **scripts** a lab runs, their **runs**, the **datasets** they produce and the
time-stamped **records** they emit (JSON payloads, optionally with an attached file), each tied to an
**experiment**, **season** and **site**.

**Ids** are UUIDs; a path id that is not a UUID is simply not found (404).
**Timestamps** are ISO 8601; one without an offset is taken as UTC; all are returned in UTC with an offset.
**JSON fields** (`*_info`, `script_data`) take a JSON object, or a string holding one.

**Lists** are bare JSON arrays, oldest first (creation time, then id), paged with `limit` (default 100, at most
1000; `0` returns only the count) and `offset` (default 0); the total is in the `X-Total-Count` header.
Record searches are NDJSON streams instead: every match, one record per line, not paged.

**Files** attached to a record are stored by a background job: the POST answers with `file_status: pending`,
then `ready` (with size and SHA-256) or `failed`; `/download` is 409 with `Retry-After` until then. File names
keep only their last path component, without control characters or leading dots, at most 200 bytes of UTF-8 (a
name with nothing left, or one that is not UTF-8, is 422); a part's media type is kept when well formed, else
guessed from the name. When the object store is unreachable or does not answer in time, the POST is 503 with
`Retry-After` and nothing is stored.

**Other choices**: DELETE answers 200 with the deleted object. Text may not hold NUL characters or unpaired
surrogates, JSON fields may nest at most 64 levels and hold no NaN or Infinity (422). Concurrent requests that
collide in the database get 409 with `Retry-After`; a request whose database connection was lost gets 503 with
`Retry-After`. A body sent with a `Content-Encoding` is 415 (none is decoded). An experiment or season may not
end before it starts (422).

**Bulk uploads** answer 202 with a job to poll at `/api/jobs`. A file may be gzip-compressed (`rows.ndjson.gz`;
known by its first bytes), and is read in bounded memory: a row over `SCRIPTORIUM_BULK_MAX_ROW_BYTES` (1 MiB by
default), nested past 65 levels, not UTF-8 or malformed fails alone on its line and the job reads on; a file that
cannot be read on (a CSV header, a JSON array that never closes, a broken gzip stream, more decompressed data than an
upload may hold) fails the job after storing the rows before it. Cancelling a job deletes its staged upload, and a
record whose file job is cancelled says its file `failed`.

**Credentials**: send `Authorization: Bearer <token>` (or `X-API-Key: <token>`). Reads need the `reader`
role, writes `writer`; a deployment may open reads to anonymous callers. Get a token with `POST /api/tokens`
(HTTP Basic with your email and password, or an existing token) or `scriptorium tokens create EMAIL`. Download URLs
handed out by `/download` need no credentials: they are signed and expire.

**Errors** have one shape everywhere: `{"code", "error", "error_description", "errors"}` — `errors` maps fields
to messages and appears for validation errors only. Validation errors are 422 (a malformed JSON body is 400),
conflicts 409, oversize bodies 413, a body of the wrong media type 415. Unknown body fields are 422; unknown
query parameters are ignored.
"""

import logging
import time
from pathlib import Path

import flask_swagger_ui
from flask import Blueprint, Flask, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

from config import Settings, load_settings
from webapp import logs, telemetry
from webapp.admin import blp as admin_blp
from webapp.auth import register_auth
from webapp.common.api import Api
from webapp.common.forms import Request, refuse_encoded_bodies
from webapp.experiments.routes import blp as experiments_blp
from webapp.extensions import db, queue, signin_throttle, store
from webapp.files.routes import blp as files_blp
from webapp.health.routes import blp as health_blp
from webapp.jobs.routes import blp as jobs_blp
from webapp.metrics.routes import make_blueprint as metrics_blueprint
from webapp.records.routes import blp as records_blp
from webapp.scripts.routes import blp as scripts_blp
from webapp.services import job_kinds, jobs
from webapp.sites.routes import blp as sites_blp
from webapp.tokens.routes import blp as tokens_blp

API_CONFIG = {
    "API_TITLE": "Scriptorium Scripts API",
    "API_VERSION": "1.0",
    "OPENAPI_VERSION": "3.0.3",
    "OPENAPI_URL_PREFIX": "/api",
    "OPENAPI_JSON_PATH": "openapi.json",
    "OPENAPI_SWAGGER_UI_PATH": "docs",
    # Served by the app itself so the docs work offline.
    "OPENAPI_SWAGGER_UI_URL": "/api/docs/assets/",
    "API_SPEC_OPTIONS": {
        "info": {"description": __doc__},
        "components": {
            "securitySchemes": {
                "bearerToken": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "emailPassword": {"type": "http", "scheme": "basic", "description": "POST /api/tokens only."},
            }
        },
        "security": [{"bearerToken": []}, {"apiKey": []}],
    },
}
# On every response. The pages (admin, API docs) load scripts and styles only from files of this site, never
# inline, so injected markup cannot run; nothing may frame them; no browser guesses a type from the content.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app from ``settings`` (default: the environment)."""
    settings = settings or load_settings()
    app = Flask(__name__, instance_path=settings.instance_path)
    app.request_class = Request  # splits small multipart forms itself (webapp/common/forms.py)
    if settings.proxy_count:
        n = settings.proxy_count
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)
    app.config.update(settings.as_flask_config())
    app.config.update(API_CONFIG)
    if not app.config["SECRET_KEY"]:
        raise RuntimeError(
            "No secret key: set SCRIPTORIUM_SECRET_KEY or write one into <instance>/secret_key "
            "(`scriptorium init` does)."
        )
    # Collection paths answer with and without a trailing slash, never by redirect.
    app.url_map.strict_slashes = False
    app.url_map.merge_slashes = False  # '//' is a 404 like any unknown path, not a redirect
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    configure_logger(app)
    register_request_hooks(app)
    register_extensions(app)
    register_blueprints(app)
    register_auth(app)
    app.after_request(add_security_headers)
    return app


def add_security_headers(response):
    """Add ``SECURITY_HEADERS`` to the response."""
    response.headers.update(SECURITY_HEADERS)
    return response


def configure_logger(app: Flask) -> None:
    """Log to stderr at the configured level, as text or JSON lines (``LOG_FORMAT``)."""
    logs.configure_logging(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"])


request_log = logging.getLogger("scriptorium.request")
# Path parts that are secrets themselves (a signed download's token): the raw path in a log line hides them.
SECRET_PATH_PARTS = {"token"}


def register_request_hooks(app: Flask) -> None:
    """Give every request an id (``X-Request-ID``), count it in the metrics and log one line for it. Registered
    before every other hook, so a request refused by a later one is counted and logged too."""
    app.before_request(start_request)
    app.after_request(end_request)
    app.teardown_request(leave_request)


def start_request() -> None:
    """Take the caller's request id (or make one) for the response, the log lines and the jobs of the request."""
    g.request_started = time.perf_counter()
    g.request_id = logs.accepted_request_id(request.headers.get(logs.REQUEST_ID_HEADER))
    logs.bind(request_id=g.request_id)
    telemetry.HTTP_IN_FLIGHT.inc()


def end_request(response):
    """Send the request id back, count the request and log it."""
    seconds = time.perf_counter() - g.request_started
    response.headers[logs.REQUEST_ID_HEADER] = g.request_id
    route = request.url_rule.rule if request.url_rule is not None else None
    telemetry.observe_request(request.method, route, response.status_code, seconds)
    path = _loggable_path()
    request_log.info(
        "%s %s %s %.1f ms",
        request.method,
        path,
        response.status_code,
        seconds * 1000,
        extra={
            "method": request.method,
            "route": route or telemetry.UNMATCHED,
            "path": path,
            "status": response.status_code,
            "duration_ms": round(seconds * 1000, 3),
            "account": str(g.account_id) if g.get("account_id") else None,
            "remote_addr": request.remote_addr,
        },
    )
    return response


def leave_request(exc) -> None:
    """The request is over: it no longer counts as in flight, and later lines of this thread are not its own."""
    if g.pop("request_started", None) is not None:
        telemetry.HTTP_IN_FLIGHT.dec()
    logs.unbind()


def _loggable_path() -> str:
    """The raw path, with the parts that are secrets (``SECRET_PATH_PARTS``) replaced by their name."""
    secret = SECRET_PATH_PARTS.intersection(request.view_args or {})
    if not secret:
        return request.path
    path = request.path
    for name in secret:
        path = path.replace(str(request.view_args[name]), f"<{name}>")
    return path


def register_extensions(app: Flask) -> None:
    """Bind the database, the object store, the job queue (with the kinds of job it runs) and the sign-in limits
    to the app."""
    db.init_app(app)
    store.init_app(app)
    app.extensions["job_handlers"] = dict(job_kinds.HANDLERS)
    telemetry.watch_pool(app.extensions["database"])
    queue.init_app(app, run_job=jobs.run_job, sweep=jobs.sweep)
    signin_throttle.init_app(app)
    # The in-process queue's sweeper starts with the first request (it also resumes unfinished jobs).
    app.before_request(queue.start)
    app.before_request(refuse_encoded_bodies)


def register_blueprints(app: Flask) -> None:
    """Register the API resources (on the app's ``Api``), the admin pages, the local-store downloads and the
    offline docs assets."""
    api = app.extensions["api"] = Api(app)
    for blp in (scripts_blp, records_blp, experiments_blp, sites_blp, jobs_blp, tokens_blp, health_blp):
        api.register_blueprint(blp)
    api.register_blueprint(metrics_blueprint(public=app.config["METRICS_PUBLIC"]))
    app.register_blueprint(files_blp)
    app.register_blueprint(admin_blp)
    app.register_blueprint(
        Blueprint(
            "docs_assets",
            __name__,
            static_folder=str(Path(flask_swagger_ui.__file__).parent / "dist"),
            static_url_path="/api/docs/assets",
        )
    )
