"""Logging: one setup for the web app, the workers and the CLI, and the context every line carries.

``LOG_FORMAT=text`` (the default) writes readable lines; ``json`` one JSON object a line (python-json-logger), for
collectors. Either way each line carries the context of what the process is doing: the request id of the request
being served, or the job (and the request that created it) being run. The context lives in context variables, set
by the request hooks and by the job runner, so code that logs needs to know nothing of it.
"""

import logging
import re
import sys
import uuid
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.json import JsonFormatter

REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID_LENGTH = 128
# Printable ASCII only: a header value with anything else (a newline above all) is never echoed back.
_REQUEST_ID = re.compile(rf"[\x20-\x7e]{{1,{MAX_REQUEST_ID_LENGTH}}}")

# What the current line is about: {"request_id": ..., "job_id": ..., ...}; empty outside requests and jobs.
_context: ContextVar[dict[str, Any] | None] = ContextVar("scriptorium_log_context", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
JSON_FIELDS = "%(levelname)s %(name)s %(message)s"


def accepted_request_id(candidate: str | None) -> str:
    """The caller's request id when it is at most 128 printable ASCII characters, else a new one."""
    if candidate and _REQUEST_ID.fullmatch(candidate) and candidate.strip():
        return candidate
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    """The request id of the request being served, or of the request that created the job being run."""
    return (_context.get() or {}).get("request_id")


def bind(**fields) -> None:
    """Replace this thread's log context with ``fields`` (``None`` values are left out)."""
    _context.set({name: value for name, value in fields.items() if value is not None})


def unbind() -> None:
    """Clear this thread's log context."""
    _context.set(None)


@contextmanager
def bound(**fields):
    """Add ``fields`` to the log context for the duration of the block."""
    token = _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Copies the log context onto each record (``request_id`` always, ``-`` when there is none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get() or {}
        for name, value in context.items():
            if not hasattr(record, name):
                setattr(record, name, value)
        if not hasattr(record, "request_id"):
            record.request_id = "-"
        return True


class _Handler(logging.StreamHandler):
    """Our handler, told apart from others so configuring twice replaces it instead of adding one. Without a
    stream of its own it writes to whatever ``sys.stderr`` is when a line is written (test runners swap it)."""

    def __init__(self, stream=None):
        super().__init__(stream)
        self._follows_stderr = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        if self._follows_stderr:
            self.stream = sys.stderr
        super().emit(record)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``log_format`` (``text`` or ``json``)."""
    if log_format == "json":
        return JsonFormatter(
            JSON_FIELDS,
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",  # ISO 8601, UTC
            json_ensure_ascii=False,
        )
    return logging.Formatter(TEXT_FORMAT)


def handler(log_format: str, stream=None) -> logging.Handler:
    """A handler writing ``log_format`` lines, with the log context, to ``stream`` (default stderr)."""
    result = _Handler(stream)
    result.setFormatter(formatter(log_format))
    result.addFilter(ContextFilter())
    return result


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    """Send every logger's lines to stderr in ``log_format``, at ``level``; calling it again reconfigures."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler(log_format))
    root.setLevel(level)
