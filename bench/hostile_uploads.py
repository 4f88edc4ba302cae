"""Hostile uploads against gunicorn and a Celery worker on PostgreSQL, Redis and S3 (moto): how far each process's
memory rises for a deeply nested JSON array, one NDJSON line of --n MB, a gzip bomb and 10 MB of '[' as a JSON body,
against an ordinary upload of 100,000 rows measured in the same run."""

import gzip
import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench import support
from bench.bulk_ingest import broker_settings, bulk_upload, celery_worker, forget_queue

DEFAULT_N = 2048  # MB in the one long line
ORDINARY_ROWS = 100_000
TARGET_MB = 50
START = datetime(2024, 1, 1, tzinfo=UTC)
PIECE = b"x" * support.MB


def row(names: dict[str, str], number: int) -> bytes:
    """One valid NDJSON row."""
    values = {name: value for name, value in names.items() if name != "script_id"}
    values["timestamp"] = (START + timedelta(seconds=number)).isoformat()
    return json.dumps(values).encode()


def write_files(directory: Path, names: dict[str, str], line_mb: int) -> dict[str, tuple[Path, str, int]]:
    """Each case's file: (path, content type, rows that should be stored)."""
    files = {}
    ordinary = directory / "ordinary.ndjson"
    with open(ordinary, "wb") as out:
        for number in range(ORDINARY_ROWS):
            out.write(row(names, number) + b"\n")
    files["ordinary 100k rows"] = (ordinary, "application/x-ndjson", ORDINARY_ROWS)

    nested = directory / "nested.json"
    depth = 100_000
    nested.write_bytes(b'[{"script_data": ' + b"[" * depth + b"]" * depth + b"}, " + row(names, 10**6) + b"]")
    files[f"JSON array item {depth:,} levels deep"] = (nested, "application/json", 1)

    long_line = directory / "long-line.ndjson"
    with open(long_line, "wb") as out:
        out.write(row(names, 10**6 + 1) + b'\n{"script_data": {"x": "')
        for _ in range(line_mb):
            out.write(PIECE)
        out.write(b'"}}\n' + row(names, 10**6 + 2) + b"\n")
    files[f"NDJSON line of {line_mb:,} MB"] = (long_line, "application/x-ndjson", 2)

    bomb = directory / "bomb.ndjson.gz"
    with gzip.open(bomb, "wb", compresslevel=6) as out:
        out.write(row(names, 10**6 + 3) + b"\n")
        zeros = b"0" * support.MB
        for _ in range(line_mb):
            out.write(zeros)
        out.write(b"\n" + row(names, 10**6 + 4) + b"\n")
    files[f"gzip bomb: {bomb.stat().st_size / support.MB:.1f} MB to {line_mb:,} MB in one line"] = (
        bomb,
        "application/gzip",
        2,
    )
    return files


def main(argv: list[str] | None = None) -> int:
    """Run every case and print each process's memory growth."""
    parser = support.arg_parser("hostile_uploads", __doc__, DEFAULT_N, "MB in the long line and the gzip bomb")
    args = parser.parse_args(argv)
    support.print_header("hostile_uploads", argv, args.n, "MB in the long line and the gzip bomb; PostgreSQL, S3")
    results, failures = [], []
    with (
        support.scratch_database() as url,
        tempfile.TemporaryDirectory(prefix="scriptorium-bench-") as tmp,
        support.moto_server(Path(tmp) / "moto.log") as s3,
    ):
        tmp = Path(tmp)
        settings = {**broker_settings(), "storage_backend": "s3", "s3_endpoint_url": s3.url, "s3_bucket": "hostile"}
        # moto completes a multipart upload of gigabytes silently, where S3 and MinIO keep the connection alive.
        settings["s3_read_timeout"] = "600"
        env = {**support.app_env(url, tmp / "instance", **settings), "AWS_ACCESS_KEY_ID": "bench"}
        env.setdefault("AWS_SECRET_ACCESS_KEY", "bench-secret")
        token = support.api_token(url, tmp / "instance")
        try:
            with (
                support.gunicorn(env, tmp / "gunicorn.log") as server,
                celery_worker(env, tmp / "worker.log", 0) as worker,
                support.api_session(token) as session,
            ):
                web = support.worker_pid(server.pid)
                names = support.create_reference_data(session, server.url)
                files = write_files(tmp, names, args.n)
                for label, (path, content_type, stored) in files.items():
                    with support.RssWatch(web) as web_rss, support.RssWatch(worker) as worker_rss:
                        _, _, job = bulk_upload(session, server.url, names, path, 3600, content_type)
                    results.append((label, web_rss.growth, worker_rss.growth, job))
                    if job["inserted"] != stored:
                        failures.append(f"{label}: {job['inserted']} rows stored, expected {stored}")
                with support.RssWatch(web) as web_rss:
                    answer = session.post(
                        f"{server.url}/api/scripts",
                        data=b"[" * (10 * support.MB),
                        headers={"Content-Type": "application/json"},
                        timeout=120,
                    )
                results.append(("10 MB of '[' as a JSON body", web_rss.growth, 0, {"answer": answer.status_code}))
                if answer.status_code != 400:
                    failures.append(f"10 MB of '[': answered {answer.status_code}, expected 400")
        finally:
            forget_queue(settings["queue_name"])

    for label, web_growth, worker_growth, job in results:
        outcome = (
            f"answered {job['answer']}"
            if "answer" in job
            else f"job {job['state']}, inserted {job['inserted']}, failed {job['failed']}"
            + (f" ({job['errors'][0]['error'][:60]})" if job.get("errors") else "")
        )
        print(
            f"result:   {label}: web +{web_growth / support.MB:.1f} MB, worker +{worker_growth / support.MB:.1f} MB; "
            f"{outcome}"
        )
    baseline = max(results[0][1], results[0][2])
    worst = max(max(web_growth, worker_growth) for _, web_growth, worker_growth, _ in results[1:])
    print(f"baseline: the ordinary upload's larger growth, {baseline / support.MB:.1f} MB")
    support.print_ratio("worst hostile growth", worst / support.MB, TARGET_MB, higher_is_better=False, unit=" MB")
    for failure in failures:
        print(f"FAILED:   {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
