"""Failed password sign-ins, counted per email and per client address; past either limit, 429 with Retry-After.

The counting is the `limits` library's (the engine under Flask-Limiter), in a moving window: in Redis when
configured (by default the broker's, so every web process shares the counts), else in the process's memory.
Flask-Limiter's decorators count requests, while here only the failures of a check made inside a request count,
and its one Limiter object keeps a single storage for every app of a process; this extension keeps both per app.
"""

import contextlib
import hashlib
import math
import time

from flask import Flask, current_app
from limits import parse
from limits.errors import StorageError as LimitsStorageError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from webapp.errors import APIError

# A dead Redis must fail a sign-in quickly, not hold a web thread.
REDIS_TIMEOUTS = {"socket_connect_timeout": 2, "socket_timeout": 2}


class TooManySigninsError(APIError):
    """Too many failed sign-ins for this email or from this address (429)."""

    status_code = 429


class ThrottleUnavailableError(APIError):
    """The store that counts sign-ins cannot be reached: sign-ins are refused rather than left uncounted."""

    status_code = 503


class SigninThrottle:
    """Per-app limits on failed sign-ins: ``check`` before comparing a password, ``count_failure`` after a miss.

    Attempts checked at the same moment are counted only once they have failed, so a burst can pass the limit by
    at most the number of requests served at once (a gunicorn worker's threads); then every attempt is refused.
    """

    def init_app(self, app: Flask) -> None:
        """Parse the limits (a bad one fails at boot) and open the storage named by ``RATELIMIT_STORAGE_URL``."""
        url = app.config["RATELIMIT_STORAGE_URL"]
        options = REDIS_TIMEOUTS if url.startswith("redis") else {}
        app.extensions["signin_throttle"] = _Limits(
            MovingWindowRateLimiter(storage_from_string(url, wrap_exceptions=True, **options)),
            prefix=app.config["RATELIMIT_KEY_PREFIX"],
            per_email=parse(app.config["SIGNIN_LIMIT_PER_EMAIL"]),
            per_address=parse(app.config["SIGNIN_LIMIT_PER_ADDRESS"]),
        )

    def check(self, email: str, address: str) -> None:
        """Refuse (429) a sign-in whose email or address has used up its failed attempts."""
        limits = current_app.extensions["signin_throttle"]
        with _store_errors():
            exhausted = [
                (item, ids) for item, ids in limits.keyed(email, address) if not limits.window.test(item, *ids)
            ]
            if not exhausted:
                return
            reset_at = max(limits.window.get_window_stats(item, *ids).reset_time for item, ids in exhausted)
        retry_after = max(math.ceil(reset_at - time.time()), 1)
        raise TooManySigninsError(
            f"Too many failed sign-ins for this account or from this address; try again in {retry_after} seconds.",
            headers={"Retry-After": str(retry_after)},
        )

    def count_failure(self, email: str, address: str) -> None:
        """Count a failed sign-in against the email and the address."""
        limits = current_app.extensions["signin_throttle"]
        with _store_errors():
            for item, ids in limits.keyed(email, address):
                limits.window.hit(item, *ids)


class _Limits:
    def __init__(self, window: MovingWindowRateLimiter, prefix: str, per_email, per_address):
        self.window, self.prefix, self.per_email, self.per_address = window, prefix, per_email, per_address

    def keyed(self, email: str, address: str):
        """Each limit with the identifiers it counts under. Emails are hashed: any length, never stored."""
        digest = hashlib.sha256(email.encode("utf-8", "surrogatepass")).hexdigest()
        return [
            (self.per_email, (self.prefix, "signin-email", digest)),
            (self.per_address, (self.prefix, "signin-address", address)),
        ]


@contextlib.contextmanager
def _store_errors():
    """Turn the storage's failures into a 503 to retry."""
    try:
        yield
    except LimitsStorageError as exc:
        raise ThrottleUnavailableError(
            "Sign-in is unavailable for a moment (its attempt counter cannot be reached); retry shortly.",
            headers={"Retry-After": "5"},
        ) from exc
