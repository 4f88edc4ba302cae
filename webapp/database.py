"""The database seam: one engine and one scoped session per app, and the dialect's details.

PostgreSQL is the production database; SQLite is the embedded default. Code elsewhere is dialect-neutral and
asks this module for the few things that differ (connection setup, JSON containment, what an error means);
SQL for many rows at once (inserts that skip taken keys, COPY, NDJSON lines) is in ``webapp/bulk_sql.py``.
"""

import contextlib
import json
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator

from flask import current_app
from sqlalchemy import create_engine, event, func, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError
from sqlalchemy.orm import Session, scoped_session
from sqlalchemy.sql import Executable


def json_contains(document, pattern) -> bool:
    """Tell whether ``document`` contains ``pattern`` the way PostgreSQL's jsonb ``@>`` does."""
    if isinstance(pattern, dict):
        return isinstance(document, dict) and all(
            key in document and json_contains(document[key], value) for key, value in pattern.items()
        )
    if isinstance(pattern, list):
        if not isinstance(document, list):
            return False
        return all(any(json_contains(item, wanted) for item in document) for wanted in pattern)
    if isinstance(pattern, bool) or isinstance(document, bool):
        return type(pattern) is type(document) and pattern == document
    return document == pattern


def _sqlite_json_contains(document_text, pattern_text):
    if document_text is None:
        return 0
    return int(json_contains(json.loads(document_text), json.loads(pattern_text)))


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: sqlite3.Connection, _record):
        # WAL lets a streaming reader and a writer work at once; the busy timeout waits out short locks.
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA busy_timeout=30000")
        dbapi_connection.execute("PRAGMA foreign_keys=ON")
        dbapi_connection.create_function("json_contains", 2, _sqlite_json_contains, deterministic=True)


def make_engine(url: str, **kwargs) -> Engine:
    """Create an engine for ``url`` with the settings its dialect needs."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)
        _configure_sqlite(engine)
        return engine
    # Timestamps cross the wire in UTC whatever the server's default zone is.
    engine = create_engine(url, connect_args={"options": "-c timezone=UTC"}, **kwargs)
    _ping_idle_connections(engine)
    return engine


def _ping_idle_connections(engine: Engine, idle_seconds: float = 1.0) -> None:
    """Check a pooled connection before use when it has been idle, and replace it when the server dropped
    it (after a restart, or an idle timeout). Unlike ``pool_pre_ping`` a connection back in the pool for
    less than ``idle_seconds`` is used unchecked, as HikariCP does: under load, the ping was a round trip
    per request."""

    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def on_connect_or_checkin(_dbapi_connection, record):
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def on_checkout(dbapi_connection, record, _proxy):
        if time.monotonic() - record.info.get("returned_at", 0.0) > idle_seconds:
            try:
                engine.dialect.do_ping(dbapi_connection)
            except Exception as exc:
                raise DisconnectionError("The pooled connection was dropped by the server.") from exc


# PostgreSQL's deadlock, serialization failure and lock timeout.
COLLISION_SQLSTATES = {"40P01", "40001", "55P03"}


class Database:
    """Flask extension: one engine per app and a scoped session bound to the current app's engine."""

    def __init__(self):
        # One session per app and thread: tests and tools may hold several apps in one process.
        self.session = scoped_session(
            self._new_session, scopefunc=lambda: (id(current_app._get_current_object()), threading.get_ident())
        )
        # SQL text of the constant statements ``rows`` runs, by statement (PostgreSQL's dialect only).
        self._compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def init_app(self, app) -> None:
        """Create the app's engine from ``DATABASE_URL`` and end the session with each app context."""
        app.extensions["database"] = make_engine(app.config["DATABASE_URL"], pool_size=app.config["DB_POOL_SIZE"])
        app.teardown_appcontext(lambda _exc: self.session.remove())

    def _new_session(self) -> Session:
        return Session(bind=self.engine, expire_on_commit=False)

    @property
    def engine(self) -> Engine:
        """The engine of the current app."""
        return current_app.extensions["database"]

    @contextlib.contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """A connection outside the session's transaction on which each statement commits by itself: one
        round trip for a lookup or a one-statement write, without BEGIN and COMMIT around it."""
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            yield connection

    def rows(self, stmt: Executable, params: dict) -> list:
        """The rows of ``stmt`` (a module-level constant: its SQL is kept), run outside the session's transaction.

        On PostgreSQL the statement runs on the pooled driver connection itself, in autocommit: for a cheap read
        or a one-statement write SQLAlchemy's work per execution (cache key, execution context, result
        processing) costs more than the database's. Parameters are converted by their types as SQLAlchemy would;
        the columns must need no conversion by SQLAlchemy (text, numbers, UUIDs, timestamps, JSONB). Errors are
        SQLAlchemy's, and a lost connection is invalidated, as on any connection of the pool.
        """
        engine = self.engine
        if engine.dialect.name != "postgresql":
            with self.autocommit() as connection:
                return connection.execute(stmt, params).all()
        constant = self._compiled.get(stmt)
        if constant is None:
            constant = self._compiled[stmt] = _ConstantStatement(stmt, engine.dialect)
        sql, params = constant.sql, constant.parameters(params)
        pooled = engine.raw_connection()
        try:
            driver = pooled.driver_connection
            driver.autocommit = True
            try:
                return driver.execute(sql, params).fetchall()
            finally:
                if not driver.closed:
                    driver.autocommit = False
        except engine.dialect.loaded_dbapi.Error as exc:
            lost = engine.dialect.is_disconnect(exc, pooled.dbapi_connection, None)
            if lost:
                # What SQLAlchemy's own connections do: this one is dropped, and every older one is replaced at
                # its next checkout (the server that ended this one likely ended them too).
                engine.pool._invalidate(pooled, exc)
            raise DBAPIError.instance(
                sql, params, exc, engine.dialect.loaded_dbapi.Error, connection_invalidated=lost
            ) from exc
        finally:
            pooled.close()

    @property
    def is_postgresql(self) -> bool:
        """True when the bound database is PostgreSQL."""
        return self.engine.dialect.name == "postgresql"

    def contains_json(self, column, pattern: dict):
        """SQL condition: the JSON ``column`` contains every key/value of ``pattern`` (jsonb ``@>``)."""
        if self.is_postgresql:
            return type_coerce(column, JSONB).contains(pattern)
        return func.json_contains(column, json.dumps(pattern)) == 1

    @staticmethod
    def is_collision(exc: DBAPIError) -> bool:
        """True when concurrent work collided (a deadlock, a serialization failure, a lock timeout)."""
        return getattr(exc.orig, "sqlstate", None) in COLLISION_SQLSTATES

    @classmethod
    def is_transient(cls, exc: DBAPIError) -> bool:
        """True when a retry may succeed: the connection was lost, or concurrent work collided."""
        return exc.connection_invalidated or cls.is_collision(exc)

    @staticmethod
    def is_unique_violation(exc: IntegrityError) -> bool:
        """True for a unique-key violation (a duplicate), False for other integrity errors (e.g. a foreign key)."""
        state = getattr(exc.orig, "sqlstate", None)
        return state == "23505" if state else "UNIQUE constraint failed" in str(exc.orig)


class _ConstantStatement:
    """A statement's SQL for one dialect, compiled once, and how its parameters become the driver's: under the
    names the SQL uses, with the values compiled into it, each converted by its type's bind processor (JSON, for
    one)."""

    def __init__(self, stmt: Executable, dialect):
        compiled = stmt.compile(dialect=dialect)
        self.sql = compiled.string
        self.escaped = dict(compiled.escaped_bind_names)
        self.defaults = compiled.params  # by the names the SQL uses
        self.processors = {}
        for name, bind in compiled.binds.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self.processors[self.escaped.get(name, name)] = processor

    def parameters(self, params: dict) -> dict:
        """The driver's parameters for ``params`` (by bind name)."""
        if self.escaped:
            params = {self.escaped.get(name, name): value for name, value in params.items()}
        values = {**self.defaults, **params}
        for name, processor in self.processors.items():
            values[name] = processor(values[name])
        return values
