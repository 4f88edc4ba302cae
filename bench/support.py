"""What the benchmarks share: a scratch database, servers on 127.0.0.1, RSS readings and the report lines."""

import argparse
import contextlib
import hashlib
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from webapp.cli.setup import upgrade_database

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("SCRIPTORIUM_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
MB = 1024 * 1024


def arg_parser(module: str, doc: str, default_n: int, n_help: str) -> argparse.ArgumentParser:
    """An argument parser with ``--n`` for the benchmark ``bench.<module>``."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{module}", description=doc)
    parser.add_argument("--n", type=int, default=default_n, help=f"{n_help} (default {default_n:,})")
    return parser


def print_header(module: str, argv: list[str] | None, n: int, what: str) -> None:
    """Print the benchmark's name, the command that reproduces it and N."""
    options = sys.argv[1:] if argv is None else argv
    print(f"== {module} ==", flush=True)
    print(f"command:  {shlex.join([sys.executable, '-m', f'bench.{module}', *options])}")
    print(f"N:        {n:,} {what}")
    # Other work on the machine skews every number below; the load at the start tells whether there was some.
    print(f"machine:  {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (1 min) at start", flush=True)


def print_ratio(label: str, value: float, target: float, higher_is_better: bool = True, unit: str = "×") -> None:
    """Print ``value`` against its target and whether it meets it."""
    met = value >= target if higher_is_better else value < target
    sign = "≥" if higher_is_better else "<"
    print(f"{label}: {value:.2f}{unit} (target {sign} {target:g}{unit}): {'meets' if met else 'MISSES'} target")


def form_parts(boundary: str, fields: dict[str, str]) -> str:
    """The multipart/form-data parts of text ``fields``, without the closing delimiter."""
    return "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()
    )


def write_random_file(path: Path, size_mb: int) -> str:
    """Write ``size_mb`` MiB of random bytes to ``path`` one MiB at a time; their SHA-256."""
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        for _ in range(size_mb):
            chunk = os.urandom(MB)
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def psycopg_url(url: str) -> str:
    """``url`` in the form psycopg itself accepts (no SQLAlchemy driver suffix)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.contextmanager
def scratch_database(label: str = "") -> Iterator[str]:
    """A new PostgreSQL database migrated to head, dropped on exit; yields its SQLAlchemy URL. Its name holds the
    process id and ``label``, so one process may hold several at once with different labels."""
    server = make_url(POSTGRES_URL)
    name = f"scriptorium_bench_{os.getpid()}" + (f"_{label}" if label else "")
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = server.set(database=name).render_as_string(hide_password=False)
        upgrade_database(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_env(database_url: str, instance: Path, **settings: str) -> dict[str, str]:
    """The environment of an app process: this one's, plus the given ``SCRIPTORIUM_*`` settings."""
    env = dict(os.environ)
    env.update(
        SCRIPTORIUM_DATABASE_URL=database_url,
        SCRIPTORIUM_SECRET_KEY="bench-secret-key",
        SCRIPTORIUM_INSTANCE_PATH=str(instance),
        SCRIPTORIUM_STORAGE_BACKEND="local",
        SCRIPTORIUM_LOG_LEVEL="WARNING",
    )
    env.update({f"SCRIPTORIUM_{name.upper()}": value for name, value in settings.items()})
    return env


@dataclass
class Server:
    """A server process started by a benchmark."""

    url: str
    pid: int
    command: list[str]


@contextlib.contextmanager
def running(command: list[str], env: dict[str, str], log: Path, ready_path: str, port: int) -> Iterator[Server]:
    """Start ``command``, wait until ``ready_path`` answers on ``port``, and stop the process on exit."""
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command[2]} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if requests.get(url + ready_path, timeout=2).status_code < 500:
                    break
            except requests.RequestException:  # not listening yet, or too busy starting up to answer
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command[2]} did not answer within 60 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        try:
            yield Server(url=url, pid=process.pid, command=command)
        except Exception:
            # The server's own account of a failed request is usually the useful part.
            print(f"--- last lines of {command[2]} log ---\n{log.read_text()[-3000:]}", file=sys.stderr)
            raise
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def gunicorn(env: dict[str, str], log: Path, threads: int = 8) -> Iterator[Server]:
    """The app under gunicorn, one gthread worker, as ``scriptorium serve`` runs it."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--worker-class",
        "gthread",
        "--workers",
        "1",
        "--threads",
        str(threads),
        "webapp:create_app()",
    ]
    with running(command, env, log, "/api/health", port) as server:
        print(f"server:   {shlex.join(command)}", flush=True)
        yield server


@contextlib.contextmanager
def moto_server(log: Path) -> Iterator[Server]:
    """moto's S3-protocol server on a free port of 127.0.0.1."""
    port = free_port()
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with running(command, dict(os.environ), log, "/moto-api/", port) as server:
        print(f"s3:       {shlex.join(command)}", flush=True)
        yield server


def worker_pid(master_pid: int) -> int:
    """The one worker process of a gunicorn master."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{master_pid}\n" in status:
                children.append(int(entry.name))
    if len(children) != 1:
        raise RuntimeError(f"gunicorn {master_pid} has {len(children)} child processes, expected one worker")
    return children[0]


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) * 1024
    return values


def available_memory() -> int:
    """MemAvailable of the machine, in bytes."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemAvailable")


class RssWatch:
    """Samples a process's VmRSS while the block runs; ``growth`` is its peak over the VmRSS at the start."""

    def __init__(self, pid: int, interval: float = 0.01):
        self.pid = pid
        self.interval = interval
        self.start: dict[str, int] = {}
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, memory(self.pid)["VmRSS"])

    def __enter__(self) -> "RssWatch":
        self.start = memory(self.pid)
        self.peak = self.start["VmRSS"]
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        end = memory(self.pid)
        self.peak = max(self.peak, end["VmRSS"])
        # A rise of the high-water mark catches a spike shorter than the sampling interval.
        if end["VmHWM"] > self.start["VmHWM"]:
            self.peak = max(self.peak, end["VmHWM"])

    @property
    def growth(self) -> int:
        """Peak VmRSS during the block minus VmRSS at its start, in bytes."""
        return self.peak - self.start["VmRSS"]

    def describe(self) -> str:
        """The readings in MB."""
        return (
            f"worker VmRSS before {self.start['VmRSS'] / MB:.1f} MB, peak {self.peak / MB:.1f} MB, "
            f"growth {self.growth / MB:.1f} MB"
        )


def api_token(database_url: str, instance: Path) -> str:
    """The secret of a writer token of a new account in the benchmark's database: the API wants credentials."""
    from config import load_settings
    from webapp import create_app
    from webapp.services import accounts, tokens

    settings = load_settings(
        database_url=database_url, instance_path=str(instance), secret_key="bench-secret-key", log_level="WARNING"
    )
    app = create_app(settings)
    with app.app_context():
        account = accounts.create_account(f"bench-{uuid.uuid4().hex[:8]}@localhost", None, "writer")
        _, secret = tokens.create_token(account, "bench")
    app.extensions["database"].dispose()
    return secret


def api_session(token: str) -> requests.Session:
    """A keep-alive HTTP session that sends ``token`` with every request."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def create_reference_data(session: requests.Session, base_url: str) -> dict[str, str]:
    """An experiment with a season, a site and a script, through the API; the names and the script id."""

    def post(path: str, body: dict) -> dict:
        response = session.post(base_url + path, json=body, timeout=30)
        if response.status_code != 200:
            raise RuntimeError(f"POST {path} answered {response.status_code}: {response.text[:500]}")
        return response.json()

    names = {"experiment_name": "Bench Experiment", "season_name": "Bench Season", "site_name": "Bench Site"}
    experiment = post("/api/experiments", {"experiment_name": names["experiment_name"]})
    post(f"/api/experiments/id/{experiment['id']}/seasons", {"season_name": names["season_name"]})
    post("/api/sites", {"site_name": names["site_name"]})
    script = post("/api/scripts", {"script_name": "bench-script", "experiment_name": names["experiment_name"]})
    return {"script_id": script["id"], **names}
