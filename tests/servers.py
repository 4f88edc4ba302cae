"""Start real servers (an S3-protocol server, gunicorn, nginx) as subprocesses on loopback for the tests."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import requests

from config import Settings

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
NGINX_TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "nginx" / "scriptorium.conf.template"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 90.0) -> None:
    """Poll ``url`` until it answers; fail early if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering {url}")
        try:
            requests.get(url, timeout=5)
            return
        except requests.RequestException:  # not listening yet, or too busy starting to answer
            time.sleep(0.1)
    raise RuntimeError(f"server did not answer {url} within {timeout} s")


@contextmanager
def running(args: list[str], ready_url: str, env: dict | None = None, log_path=None):
    """Run ``args`` in its own process group until the block ends; yields the process once it answers."""
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        args, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_until_up(ready_url, process)
        yield process
    finally:
        stop_process_group(process)
        if log_path:
            log.close()


def stop_process_group(process: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``grace`` seconds."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def gunicorn_app(database_url: str, instance_path, **settings):
    """gunicorn (gthread, as in production) serving the app on a free port; yields its base URL."""
    port = free_port()
    env = {
        "SCRIPTORIUM_DATABASE_URL": database_url,
        "SCRIPTORIUM_SECRET_KEY": "server-test-key",
        "SCRIPTORIUM_INSTANCE_PATH": str(instance_path),
        **{f"SCRIPTORIUM_{name.upper()}": str(value) for name, value in settings.items()},
    }
    args = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--worker-class", "gthread"]
    args += ["--threads", "4", "webapp:create_app()"]
    base = f"http://127.0.0.1:{port}"
    with running(args, f"{base}/api/health", env=env, log_path=instance_path / "gunicorn.log"):
        yield base


def render_nginx_config(**values: str) -> str:
    """The shipped nginx config with its ``${NAME}`` placeholders replaced, as envsubst does; each needs a value."""
    text = NGINX_TEMPLATE.read_text()
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    missing = sorted(set(re.findall(r"\$\{(\w+)\}", text)))
    if missing:
        raise ValueError(f"no value for the nginx config's {', '.join(missing)}")
    return text


@contextmanager
def nginx_proxy(upstream_url: str, tmp_dir, max_body_size: int = Settings.max_content_length):
    """Debian's nginx with the shipped config (only addresses and the body limit filled in) in front of
    ``upstream_url`` on a free loopback port; yields its base URL."""
    port = free_port()
    config = render_nginx_config(
        NGINX_LISTEN=f"127.0.0.1:{port}",
        NGINX_UPSTREAM=urlsplit(upstream_url).netloc,
        SCRIPTORIUM_MAX_CONTENT_LENGTH=str(max_body_size),
    )
    # nginx's prefix holds its pid file and the bodies it spools. Run as root, its workers switch to an
    # unprivileged user, who cannot enter pytest's private temporary folders: the prefix is a folder of its own.
    prefix = Path(tempfile.mkdtemp(prefix="scriptorium-nginx-"))
    try:
        prefix.chmod(0o755)
        (prefix / "nginx.conf").write_text(config)
        args = [NGINX, "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"]
        base = f"http://127.0.0.1:{port}"
        with running(args, f"{base}/api/health", log_path=Path(tmp_dir) / f"nginx-{port}.log"):
            yield base
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


@contextmanager
def s3_server(log_path=None):
    """moto's S3-protocol server on a free loopback port; yields its endpoint URL."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with running(args, endpoint, log_path=log_path):
        yield endpoint


def wait_until(fetch, done, timeout: float = 60.0, interval: float = 0.1):
    """Call ``fetch`` until ``done(result)`` holds or ``timeout`` passes; return the last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = fetch()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(interval)


@contextmanager
def celery_worker(env: dict, log_path, queue: str):
    """A real Celery worker (with the sweeper's beat schedule) in its own process group; yields the process."""
    args = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.worker",
        "worker",
        "-B",
        "--schedule",
        str(log_path.with_suffix(".beat")),
        "--pool",
        "solo",
        "--without-mingle",
        "--without-gossip",
        "--queues",
        queue,
        "--hostname",
        f"test-{os.getpid()}-{time.monotonic_ns()}@%h",
        "--loglevel",
        "INFO",
    ]
    log = open(log_path, "ab")  # noqa: SIM115
    process = subprocess.Popen(
        args, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 90
        while b" ready." not in log_path.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"celery worker did not start: {log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        yield process
    finally:
        stop_process_group(process)
        log.close()


def kill_process_group(process: subprocess.Popen) -> None:
    """kill -9 the process and everything it started."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextmanager
def redis_server(port: int, log_path):
    """A private redis-server on ``port`` (no persistence), stopped when the block ends."""
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    log = open(log_path, "ab")  # noqa: SIM115
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)
        log.close()
