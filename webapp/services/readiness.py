"""Readiness: whether the dependencies of this process answer — the database, the object store, the broker.

The one home of the checks behind ``GET /api/ready`` and ``scriptorium check``. Each check runs on a thread of
its own and is waited for at most ``READY_TIMEOUT`` seconds, so a dependency that hangs makes the answer
"failing", never late. A check that is still running when the next probe comes is waited for again rather than
started twice: a hung dependency holds one thread per check, however often a load balancer asks. Details say
what failed in words an operator can act on; they never carry a host, a URL, a credential or an error's text.
"""

import logging
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from flask import Flask, current_app
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from webapp.extensions import db, store
from webapp.queue import BrokerUnavailable, ping_broker
from webapp.storage import StoreCheckFailed

log = logging.getLogger(__name__)


class CheckFailed(Exception):
    """A dependency failed its check; the message is safe to show to anyone."""


_running: weakref.WeakKeyDictionary[Flask, dict[str, Future]] = weakref.WeakKeyDictionary()
_running_lock = threading.Lock()


def check_readiness() -> dict:
    """Run every check of the current app at once; ``{"status": "ready" | "failing", "checks": {name: {"status":
    "ok" | "failing", "detail": ...}}}``, ready when every check is ok."""
    app = current_app._get_current_object()
    timeout = app.config["READY_TIMEOUT"]
    checks: dict[str, Callable[[float], str]] = {"database": _database, "object_store": _object_store}
    if app.config["BROKER_URL"]:
        checks["broker"] = _broker
    futures = {name: _start(app, name, check, timeout) for name, check in checks.items()}
    deadline = time.monotonic() + timeout
    results = {name: _outcome(name, future, deadline, timeout) for name, future in futures.items()}
    ready = all(result["status"] == "ok" for result in results.values())
    return {"status": "ready" if ready else "failing", "checks": results}


def _start(app: Flask, name: str, check: Callable[[float], str], timeout: float) -> Future:
    """The running check ``name`` of ``app``, or a new run of it on a daemon thread (it may hang: never joined)."""
    with _running_lock:
        running = _running.setdefault(app, {})
        future = running.get(name)
        if future is not None and not future.done():
            return future
        future = running[name] = Future()

    def run():
        with app.app_context():
            started = time.perf_counter()
            try:
                detail = check(timeout)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(f"{detail} ({(time.perf_counter() - started) * 1000:.0f} ms)")

    threading.Thread(target=run, name=f"scriptorium-ready-{name}", daemon=True).start()
    return future


def _outcome(name: str, future: Future, deadline: float, timeout: float) -> dict:
    try:
        return {"status": "ok", "detail": future.result(timeout=max(0.0, deadline - time.monotonic()))}
    except FutureTimeout:
        return {"status": "failing", "detail": f"no answer within {timeout:g} s"}
    except (CheckFailed, StoreCheckFailed, BrokerUnavailable) as exc:
        return {"status": "failing", "detail": str(exc)}
    except Exception:
        log.exception("The %s readiness check failed unexpectedly", name)
        return {"status": "failing", "detail": "the check failed unexpectedly (the server's log says why)"}


def _database(timeout: float) -> str:
    """One round trip (``SELECT 1``) on a pooled connection, as requests get theirs."""
    try:
        with db.autocommit() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise CheckFailed(_database_problem(exc)) from exc
    return f"{db.engine.dialect.name} answered"


def _database_problem(exc: SQLAlchemyError) -> str:
    """What a database error means, in words that name no host, database or user (the driver's message does)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return "the connection to the database was lost"
    message = str(getattr(exc, "orig", None) or exc).lower()
    for clue, meaning in (
        ("does not exist", "the database does not exist"),
        ("password authentication failed", "the database refused the credentials"),
        ("no password supplied", "the database refused the credentials"),
        ("connection refused", "cannot connect to the database (connection refused)"),
        ("timeout", "the database did not answer in time"),
        ("timed out", "the database did not answer in time"),
        ("the database system is starting up", "the database is starting up"),
        ("the database system is shutting down", "the database is shutting down"),
        ("too many clients", "the database has no connection to spare"),
        ("unable to open database file", "the database file cannot be opened"),
    ):
        if clue in message:
            return meaning
    return f"the database failed ({type(getattr(exc, 'orig', None) or exc).__name__})"


def _object_store(timeout: float) -> str:
    """The backend's own cheap call: HEAD of the bucket, or the local folder's writability."""
    kind = current_app.config["STORAGE_BACKEND"]
    return f"{kind}: {store.backend.check(timeout)}"


def _broker(timeout: float) -> str:
    """A PING to the broker's Redis."""
    return ping_broker(current_app.config["BROKER_URL"], timeout)
