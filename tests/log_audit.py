"""pytest plugin (``-p tests.log_audit``, in pyproject's addopts): no secret the suite used reaches a log line.

From the start of the run it keeps every log record of the test process (message, extra fields and traceback, as
JSON lines) and notes the secrets the tests use: the fixed ones (passwords, secret keys, the S3 secret), every API
token the services mint in this process and every signed download URL the object store hands out. When the run
ends it greps those records and the log files of the servers the tests started (gunicorn, workers: every ``*.log``
under the run's temporary folder but those of moto, nginx and redis, which are not ours) for each secret, and
fails the run naming the file and the secret's kind when one is found.
"""

import logging
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

FIXED_SECRETS = {
    "lichen plots at dawn": "the tests' account password",
    "test-secret-key": "a secret key",
    "server-test-key": "a secret key",
    "worker-test-key": "a secret key",
    "scriptorium-test-secret": "the S3 secret access key",
}
NOT_OURS = ("moto", "nginx", "redis")

_secrets: dict[str, str] = dict(FIXED_SECRETS)
_records: Path | None = None


def _note_tokens() -> None:
    from webapp.services import tokens

    create_token = tokens.create_token

    def noting(*args, **kwargs):
        row, secret = create_token(*args, **kwargs)
        _secrets[secret] = "an API token"
        return row, secret

    tokens.create_token = noting


def _note_download_urls() -> None:
    from webapp.storage import ObjectStore

    download_url = ObjectStore.download_url

    def noting(self, *args, **kwargs):
        url = download_url(self, *args, **kwargs)
        parts = urlsplit(url)
        _secrets[url] = "a signed download URL"
        if parts.path.startswith("/files/"):
            _secrets[parts.path.rsplit("/", 1)[-1]] = "a signed download's token"
        for signature in parse_qs(parts.query).get("X-Amz-Signature", []):
            _secrets[signature] = "a presigned URL's signature"
        return url

    ObjectStore.download_url = noting


def pytest_configure(config) -> None:
    global _records
    from webapp import logs

    _records = Path(tempfile.mkdtemp(prefix="scriptorium-log-audit-")) / "records.jsonl"
    # A plain handler: the app's own (``logs.handler``) is replaced whenever an app configures logging.
    handler = logging.StreamHandler(_records.open("a", encoding="utf-8"))
    handler.setFormatter(logs.formatter("json"))
    handler.addFilter(logs.ContextFilter())
    logging.getLogger().addHandler(handler)
    _note_tokens()
    _note_download_urls()


def _log_files(config) -> list[Path]:
    files = [_records] if _records else []
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is not None:
        base = factory.getbasetemp()
        files += [p for p in base.rglob("*.log") if not any(name in p.name for name in NOT_OURS)]
    return files


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus) -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()
    found, lines = [], 0
    secrets = {secret: kind for secret, kind in _secrets.items() if len(secret) >= 8}
    for path in _log_files(session.config):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        lines += text.count("\n")
        found += [f"{path}: {kind}" for secret, kind in secrets.items() if secret in text]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if found:
        if reporter:
            reporter.write_sep("=", "secrets in the logs", red=True)
            for finding in sorted(set(found)):
                reporter.write_line(finding)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif reporter:
        reporter.write_sep("-", f"log audit: {len(secrets)} secrets, none in {lines} log lines")
