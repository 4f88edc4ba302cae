"""Cheap authenticated reads under gunicorn: ``GET /api/scripts/all`` and ``GET /api/scripts/id/{id}`` against
``GET /api/health`` of the same server (one worker, 8 threads), in alternating rounds, with a realistic number of
scripts stored."""

import json
import os
import tempfile
from pathlib import Path

from bench import support
from bench.post_record import THREADS, Request, cpu_seconds, load, print_cpu

DEFAULT_N = 5_000
WARMUP = 200
ROUNDS = 5
SCRIPTS = 50
RATIO_TARGET = 0.6


def seed_scripts(token: str, base_url: str, count: int) -> list[str]:
    """Create ``count`` scripts with a little info each through the API; their ids, oldest first."""
    session = support.api_session(token)
    ids = []
    for number in range(count):
        body = {
            "script_name": f"bench-script-{number:03d}",
            "script_url": f"https://example.org/scripts/{number:03d}.py",
            "script_extension": "py",
            "script_info": {"version": f"1.{number}", "author": "bench", "parameters": {"threshold": number / 10}},
        }
        response = session.post(f"{base_url}/api/scripts", json=body, timeout=30)
        if response.status_code != 200:
            raise RuntimeError(f"POST /api/scripts answered {response.status_code}: {response.text[:500]}")
        ids.append(response.json()["id"])
    return ids


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its numbers."""
    parser = support.arg_parser("read_paths", __doc__, DEFAULT_N, "requests of each kind")
    args = parser.parse_args(argv)
    what = f"requests of each kind in {ROUNDS} alternating rounds, {THREADS} client threads, {SCRIPTS} scripts"
    support.print_header("read_paths", argv, args.n, what)
    with support.scratch_database() as url, tempfile.TemporaryDirectory(prefix="scriptorium-bench-") as tmp:
        env = support.app_env(url, Path(tmp))
        token = support.api_token(url, Path(tmp))
        auth = {"Authorization": f"Bearer {token}"}
        with support.gunicorn(env, Path(tmp) / "gunicorn.log") as server:
            ids = seed_scripts(token, server.url, SCRIPTS)
            session = support.api_session(token)
            listed = session.get(f"{server.url}/api/scripts/all", timeout=30)
            if [item["id"] for item in listed.json()] != ids or listed.headers["X-Total-Count"] != str(SCRIPTS):
                raise RuntimeError(f"GET /api/scripts/all does not list the {SCRIPTS} scripts: {listed.text[:500]}")

            def health(_number: int) -> Request:
                return "GET", "/api/health", None, {}

            def all_scripts(_number: int) -> Request:
                return "GET", "/api/scripts/all", None, auth

            def one_script(number: int) -> Request:
                return "GET", f"/api/scripts/id/{ids[number % len(ids)]}", None, auth

            kinds = {"health": health, "all": all_scripts, "one": one_script}
            for make_request in kinds.values():
                load(server.url, WARMUP, make_request)
            # Alternating rounds: a change in the machine's load during the run weighs on every kind alike.
            seconds, cpu = dict.fromkeys(kinds, 0.0), dict.fromkeys(kinds, 0.0)
            worker = support.worker_pid(server.pid)
            round_size = -(-args.n // ROUNDS)
            for start in range(0, args.n, round_size):
                count = min(round_size, args.n - start)
                for kind, make_request in kinds.items():
                    used = cpu_seconds(worker)
                    seconds[kind] += load(server.url, count, make_request, first=start)
                    cpu[kind] += cpu_seconds(worker) - used
            one = session.get(f"{server.url}/api/scripts/id/{ids[7]}", timeout=30).json()
        if one["id"] != ids[7] or one["script_info"]["version"] != "1.7":
            raise RuntimeError(f"GET /api/scripts/id/{{id}} answered another script: {json.dumps(one)[:500]}")
        rates = {kind: args.n / spent for kind, spent in seconds.items()}
        print(
            f"baseline: GET /api/health: {args.n:,} requests in {seconds['health']:.2f} s "
            f"= {rates['health']:,.0f} req/s"
        )
        print(
            f"result:   GET /api/scripts/all ({SCRIPTS} scripts a page): {args.n:,} requests in {seconds['all']:.2f} s "
            f"= {rates['all']:,.0f} req/s"
        )
        print(
            f"result:   GET /api/scripts/id/{{id}}: {args.n:,} requests in {seconds['one']:.2f} s "
            f"= {rates['one']:,.0f} req/s"
        )
        print(f"check:    every response was 200; the list holds the {SCRIPTS} scripts in order, one script its own")
        print_cpu(cpu, args.n, "health")
        # Other work during the run weighs on the ratio, however the rounds alternate: show how much there was.
        print(f"machine:  load average {os.getloadavg()[0]:.2f} (1 min) at end")
        support.print_ratio("ratio /all", rates["all"] / rates["health"], RATIO_TARGET)
        support.print_ratio("ratio /id/{id}", rates["one"] / rates["health"], RATIO_TARGET)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
