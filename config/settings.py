"""The one place where settings and their defaults live.

Every setting is read from an environment variable named ``SCRIPTORIUM_<NAME>``. The defaults describe the
embedded default: a SQLite file and a local-folder object store inside the instance folder, so that a newcomer
needs no server. The secret key has no default: it comes from ``SCRIPTORIUM_SECRET_KEY`` or from the file
``<instance>/secret_key`` (which ``make run`` writes once), and the app refuses to start without one.
"""

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

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
        if self.ratelimit_storage_url is None:
            self.ratelimit_storage_url = self.broker_url or "memory://"
        if self.secret_key is None:
            key_file = instance / "secret_key"
            if key_file.is_file():
                self.secret_key = key_file.read_text().strip() or None

    def as_flask_config(self) -> dict:
        """Return the settings as Flask config keys (``database_url`` → ``DATABASE_URL``)."""
        return {name.upper(): value for name, value in asdict(self).items()}


_INT_FIELDS = {
    "db_pool_size",
    "max_content_length",
    "proxy_count",
    "download_url_expires",
    "job_lease_seconds",
    "job_sweep_seconds",
    "job_max_attempts",
    "bulk_chunk_rows",
    "bulk_max_row_bytes",
}
_FLOAT_FIELDS = {"s3_connect_timeout", "s3_read_timeout", "ready_timeout"}


_BOOL_FIELDS = {"anonymous_read", "session_cookie_secure", "metrics_public"}


def _parse(name: str, raw: str):
    if name in _INT_FIELDS:
        return int(raw)
    if name in _FLOAT_FIELDS:
        return float(raw)
    if name in _BOOL_FIELDS:
        return raw.strip().lower() in ("1", "true", "yes", "on")
    return raw


def load_settings(**overrides) -> Settings:
    """Build settings from ``SCRIPTORIUM_*`` environment variables, then apply ``overrides``."""
    values = {}
    for name in Settings.__dataclass_fields__:
        raw = _env(name.upper())
        if raw is not None and raw != "":
            values[name] = _parse(name, raw)
    values.update(overrides)
    return Settings(**values)
