"""The one place where settings and their defaults live.

Every setting is read from an environment variable named ``SCRIPTORIUM_<NAME>``. The defaults describe the
embedded default: a SQLite file and a local-folder object store inside the instance folder, so that a newcomer
needs no server. The secret key has no default: it comes from ``SCRIPTORIUM_SECRET_KEY`` or from the file
``<instance>/secret_key`` (which ``make run`` writes once), and the app refuses to start without one.
"""

import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

PREFIX = "SCRIPTORIUM_"


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(PREFIX + name, default)


def _default_instance_path() -> str:
    return str(Path(_env("INSTANCE_PATH") or Path.cwd() / "instance").resolve())


@dataclass
class Settings:
    """Typed settings; ``as_flask_config`` turns them into Flask's upper-case config keys."""

    instance_path: str = field(default_factory=_default_instance_path)
    secret_key: str | None = None
    database_url: str | None = None
    # Pooled database connections per process. Keep it at least twice gunicorn's threads: a request may hold
    # two at once, and connections past the pool are opened and closed per use (a PostgreSQL fork each).
    db_pool_size: int = 20
    # The largest request body accepted, in bytes (413 beyond it).
    max_content_length: int = 5 * 1024**3
    # How many proxies in front of the app (deploy/nginx: 1) whose X-Forwarded-For, -Proto and -Host values it
    # believes, counted from the last; with 0 it believes none, since any client can send them.
    proxy_count: int = 0
    storage_backend: str = "local"  # "local" or "s3"
    storage_local_dir: str | None = None
    s3_bucket: str = "scriptorium"
    s3_endpoint_url: str | None = None
    # Where clients reach the object store; presigned URLs are signed for this host.
    s3_public_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    # Seconds to wait for the object store to accept a connection, and then for each answer: no request hangs
    # on a store that is down.
    s3_connect_timeout: float = 3.0
    s3_read_timeout: float = 30.0
    download_url_expires: int = 300
    # Background work. Without a broker URL, jobs run on a thread inside the web process (embedded default):
    # a Redis on localhost is never assumed, since it would queue jobs that no worker takes.
    broker_url: str | None = None
    queue_name: str = "scriptorium"
    # A running job whose worker stops renewing its lease for this long is resumed by another worker.
    job_lease_seconds: int = 60
    # How often queued jobs with lost messages and running jobs with expired leases are looked for.
    job_sweep_seconds: int = 15
    job_max_attempts: int = 5
    bulk_chunk_rows: int = 5000
    # The longest row a bulk file may hold; a longer one fails alone, read past without being held in memory.
    bulk_max_row_bytes: int = 1024**2
    # Every request needs credentials; with this on, reads (GET) are allowed without them.
    anonymous_read: bool = False
    # When both are set, `scriptorium init` / `serve` make sure this admin account exists.
    admin_email: str | None = None
    admin_password: str | None = None
    # Sends the admin session cookie with `Secure` even on plain HTTP (it always is on HTTPS).
    session_cookie_secure: bool = False
    # Failed password sign-ins allowed per email and per client address (the `limits` library's notation).
    signin_limit_per_email: str = "10 per 15 minutes"
    signin_limit_per_address: str = "100 per 15 minutes"
    # Where failed sign-ins are counted: default the broker's Redis, so every web process shares the counts;
    # without a broker, the process's memory (the embedded default runs one process).
    ratelimit_storage_url: str | None = None
    ratelimit_key_prefix: str = "scriptorium"
    log_level: str = "INFO"
    # "text" (readable lines, the embedded default) or "json" (one JSON object a line on stderr, for collectors).
    log_format: str = "text"
    # Serve /metrics without a token (for a scraper on a private network); off, it needs an admin token.
    metrics_public: bool = False
    # Folder for prometheus-client's multiprocess files, shared by every process of one host; empty means
    # "<instance>/metrics".
    metrics_dir: str | None = None
    # Seconds each readiness check (database, object store, broker) may take before it counts as failing.
    ready_timeout: float = 2.0

    def __post_init__(self):
        instance = Path(self.instance_path)
        if self.database_url is None:
            self.database_url = f"sqlite:///{instance / 'scriptorium.db'}"
        if self.storage_local_dir is None:
            self.storage_local_dir = str(instance / "files")
        if not self.metrics_dir:
            self.metrics_dir = str(instance / "metrics")
        if isinstance(self.log_level, str):
            self.log_level = self.log_level.strip().upper()
        if self.ratelimit_storage_url is None:
            self.ratelimit_storage_url = self.broker_url or "memory://"
        if self.secret_key is None:
            key_file = instance / "secret_key"
            if key_file.is_file():
                self.secret_key = key_file.read_text().strip() or None

    def as_flask_config(self) -> dict:
        """Return the settings as Flask config keys (``database_url`` → ``DATABASE_URL``)."""
        return {name.upper(): value for name, value in asdict(self).items()}


_POSITIVE_INTS = {
    "db_pool_size",
    "max_content_length",
    "download_url_expires",
    "job_lease_seconds",
    "job_sweep_seconds",
    "job_max_attempts",
    "bulk_chunk_rows",
    "bulk_max_row_bytes",
}
_NON_NEGATIVE_INTS = {"proxy_count"}
_POSITIVE_FLOATS = {"s3_connect_timeout", "s3_read_timeout", "ready_timeout"}
_BOOL_FIELDS = {"anonymous_read", "session_cookie_secure", "metrics_public"}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_CHOICES = {
    "storage_backend": ("local", "s3"),
    "log_format": ("text", "json"),
    "log_level": ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
}
_DATABASE_FORMS = "postgresql+psycopg://user:password@host:5432/database or sqlite:///path/to/file.db"
_S3_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class SettingsError(ValueError):
    """Settings that cannot work: one message per bad setting, each naming its variable and what it accepts."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("Bad settings (fix them and start again):\n" + "\n".join(f"  {p}" for p in problems))


def variable(name: str) -> str:
    """The environment variable of the setting ``name``."""
    return PREFIX + name.upper()


def _parse(name: str, raw: str):
    """The typed value of the setting ``name`` from its variable's text; ValueError says what it accepts."""
    text = raw.strip()
    if name in _POSITIVE_INTS or name in _NON_NEGATIVE_INTS:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"accepts a whole number ({_lowest(name)}), not {raw!r}") from None
    if name in _POSITIVE_FLOATS:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"accepts a number of seconds above 0 (e.g. 2 or 0.5), not {raw!r}") from None
    if name in _BOOL_FIELDS:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"accepts {', '.join(_TRUE)} or {', '.join(_FALSE)}, not {raw!r}")
    return raw


def _lowest(name: str) -> str:
    return "0 or more" if name in _NON_NEGATIVE_INTS else "1 or more"


def _problems(settings: Settings) -> dict[str, str]:
    """What is wrong with ``settings``, by setting name: what the setting accepts (never a secret's value)."""
    problems = {}
    for name in sorted(_POSITIVE_INTS | _NON_NEGATIVE_INTS):
        value = getattr(settings, name)
        lowest = 0 if name in _NON_NEGATIVE_INTS else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            problems[name] = f"accepts a whole number ({_lowest(name)}), not {value!r}"
    for name in sorted(_POSITIVE_FLOATS):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            problems[name] = f"accepts a number of seconds above 0 (e.g. 2 or 0.5), not {value!r}"
    for name in sorted(_BOOL_FIELDS):
        if not isinstance(getattr(settings, name), bool):
            problems[name] = f"accepts {', '.join(_TRUE)} or {', '.join(_FALSE)}"
    for name, accepted in _CHOICES.items():
        value = getattr(settings, name)
        if value not in accepted:
            problems[name] = f"accepts {' or '.join(repr(choice) for choice in accepted)}, not {value!r}"
    if reason := _database_url_problem(settings.database_url):
        problems["database_url"] = f"accepts {_DATABASE_FORMS}; {reason}"
    if reason := _redis_url_problem(settings.broker_url, memory_ok=False):
        problems["broker_url"] = reason
    # By default the sign-in counts follow the broker: a bad broker URL is reported once, as the broker's.
    if settings.ratelimit_storage_url != settings.broker_url and (
        reason := _redis_url_problem(settings.ratelimit_storage_url, memory_ok=True)
    ):
        problems["ratelimit_storage_url"] = reason
    for name in ("s3_endpoint_url", "s3_public_endpoint_url"):
        value = getattr(settings, name)
        if value is not None and (reason := _http_url_problem(value)):
            problems[name] = f"accepts an http:// or https:// URL such as http://minio:9000; {reason}"
    if settings.storage_backend == "s3":
        if not (settings.s3_bucket or "").strip():
            problems["s3_bucket"] = "the s3 storage backend needs a bucket name"
        elif not _S3_BUCKET_NAME.fullmatch(settings.s3_bucket):
            problems["s3_bucket"] = (
                "accepts a bucket name of 3 to 63 lowercase letters, digits, dots and hyphens, "
                f"not {settings.s3_bucket!r}"
            )
        if not (settings.s3_region or "").strip():
            problems["s3_region"] = "the s3 storage backend needs a region (e.g. us-east-1)"
    if not (settings.queue_name or "").strip():
        problems["queue_name"] = "accepts a queue name, not an empty one"
    for name in ("signin_limit_per_email", "signin_limit_per_address"):
        if reason := _rate_limit_problem(getattr(settings, name)):
            problems[name] = reason
    return problems


def _database_url_problem(url) -> str | None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    # The URL is never quoted back: it may hold a password.
    try:
        parsed = make_url(url)
        port = parsed.port
    except (ArgumentError, ValueError, TypeError):
        return "this value is not such a URL"
    if parsed.get_backend_name() not in ("postgresql", "sqlite"):
        return f"{parsed.get_backend_name()!r} databases are not supported"
    try:
        parsed.get_dialect()
    except NoSuchModuleError:
        return f"the driver {parsed.get_driver_name()!r} is not known (use psycopg)"
    if port is not None and not 0 < port < 65536:
        return "the port is out of range"
    return None


def _redis_url_problem(url, memory_ok: bool) -> str | None:
    if url is None or (memory_ok and url == "memory://"):
        return None
    accepts = "accepts redis://[:password@]host[:port][/db] or rediss://…" + (" or memory://" if memory_ok else "")
    try:
        parts = urlsplit(url)
        port = parts.port
    except (ValueError, AttributeError) as exc:
        return f"{accepts}; {_urlsplit_problem(exc)}"
    if parts.scheme not in ("redis", "rediss"):
        return f"{accepts}; {parts.scheme or 'no scheme'!r} is not one of them"
    if not parts.hostname:
        return f"{accepts}; the host is missing"
    if port is not None and not 0 < port < 65536:
        return f"{accepts}; the port is out of range"
    if parts.path not in ("", "/") and not parts.path[1:].isdigit():
        return f"{accepts}; the database after the host must be a number"
    return None


def _http_url_problem(url) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except (ValueError, AttributeError) as exc:
        return _urlsplit_problem(exc)
    if parts.scheme not in ("http", "https"):
        return f"{parts.scheme or 'no scheme'!r} is not http or https"
    if not parts.hostname:
        return "the host is missing"
    if port is not None and not 0 < port < 65536:
        return "the port is out of range"
    return None


def _urlsplit_problem(exc: Exception) -> str:
    return "the port is out of range" if "out of range" in str(exc) else "this value is not such a URL"


def _rate_limit_problem(text) -> str | None:
    from limits import parse

    try:
        parse(text)
    except (ValueError, TypeError):
        return f"accepts a limit such as '10 per 15 minutes' or '100/hour', not {text!r}"
    return None


def load_settings(**overrides) -> Settings:
    """Build settings from ``SCRIPTORIUM_*`` environment variables, then apply ``overrides``; raise
    ``SettingsError`` listing every bad setting at once."""
    values, problems = {}, {}
    for name in Settings.__dataclass_fields__:
        raw = _env(name.upper())
        if raw is not None and raw != "" and name not in overrides:
            try:
                values[name] = _parse(name, raw)
            except ValueError as exc:
                problems[name] = str(exc)
    values.update(overrides)
    settings = Settings(**values)
    # A setting that did not parse keeps its default meanwhile: it is reported once, as it was written.
    problems = {**_problems(settings), **problems}
    if problems:
        raise SettingsError([f"{variable(name)}: {problems[name]}" for name in sorted(problems)])
    return settings
