"""Health probes while slow clients trickle request bodies: gunicorn as `scriptorium serve` runs it (1 worker × 8
threads) with nothing in front, then behind the shipped nginx config (deploy/nginx)."""

import json
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from http.client import HTTPResponse
from pathlib import Path
from urllib.parse import urlsplit

import requests

from bench import support
from tests.servers import NGINX, nginx_proxy

DEFAULT_N = 200
DIRECT = (8, 32)
SECONDS = 20
BYTES_PER_SECOND = 2
PROBE_EVERY = 0.5
PROBE_TIMEOUT = 2.0
TARGET = 1.0


@dataclass
class Outcome:
    """What the health probes and the slow requests got."""

    probes: int
    answered: int
    timed_out: int
    slow_served: int

    def describe(self) -> str:
        """One line of numbers."""
        return (
            f"{self.answered}/{self.probes} health probes answered 200, {self.timed_out} timed out "
            f"(after {PROBE_TIMEOUT:g} s); {self.slow_served} slow requests served once complete"
        )


def slow_clients(base_url: str, token: str, n: int, seconds: int, label: str) -> Outcome:
    """Open ``n`` connections that each send a script POST's body at BYTES_PER_SECOND for ``seconds``, probing
    GET /api/health every PROBE_EVERY seconds meanwhile; then read every slow request's answer."""
    parts = urlsplit(base_url)
    bodies = [
        json.dumps({"script_name": f"slow-{label}-{i}"}).rjust(seconds * BYTES_PER_SECOND).encode() for i in range(n)
    ]
    connections = []
    for body in bodies:
        sock = socket.create_connection((parts.hostname, parts.port), timeout=120)
        sock.sendall(
            f"POST /api/scripts HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        connections.append(sock)
    probes: list[str] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            try:
                probes.append(str(requests.get(f"{base_url}/api/health", timeout=PROBE_TIMEOUT).status_code))
            except requests.Timeout:
                probes.append("timeout")
            except requests.RequestException as exc:
                probes.append(type(exc).__name__)
            done.wait(PROBE_EVERY)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        for second in range(seconds):
            chunk = slice(second * BYTES_PER_SECOND, (second + 1) * BYTES_PER_SECOND)
            for sock, body in zip(connections, bodies, strict=True):
                sock.sendall(body[chunk])
            time.sleep(1)
    finally:
        done.set()
        prober.join()
    served = 0
    for sock in connections:
        try:
            response = HTTPResponse(sock)
            response.begin()
            served += response.status == 200
            response.read()
        except OSError:  # nginx or gunicorn gave up on it
            pass
        sock.close()
    return Outcome(len(probes), probes.count("200"), probes.count("timeout"), served)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its numbers."""
    parser = support.arg_parser("slow_clients", __doc__, DEFAULT_N, "slow connections behind nginx")
    parser.add_argument("--seconds", type=int, default=SECONDS, help=f"how long each runs (default {SECONDS})")
    args = parser.parse_args(argv)
    support.print_header(
        "slow_clients",
        argv,
        args.n,
        f"slow connections behind nginx ({', '.join(map(str, DIRECT))} straight to gunicorn), {args.seconds} s "
        f"each at {BYTES_PER_SECOND} bytes/s, a health probe every {PROBE_EVERY:g} s",
    )
    with support.scratch_database() as url, tempfile.TemporaryDirectory(prefix="scriptorium-bench-") as tmp:
        tmp = Path(tmp)
        token = support.api_token(url, tmp / "instance")
        env = support.app_env(url, tmp / "instance")
        with support.gunicorn(env, tmp / "gunicorn.log") as server:
            for n in DIRECT:
                outcome = slow_clients(server.url, token, n, args.seconds, f"direct-{n}")
                print(f"direct:   {n} slow connections to gunicorn: {outcome.describe()}", flush=True)
            with nginx_proxy(server.url, tmp) as base:
                print(f"nginx:    {NGINX} with deploy/nginx/scriptorium.conf.template, on {base}")
                outcome = slow_clients(base, token, args.n, args.seconds, "nginx")
                print(f"result:   {args.n} slow connections through nginx: {outcome.describe()}")
        support.print_ratio("answered behind nginx", outcome.answered / max(outcome.probes, 1), TARGET)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
