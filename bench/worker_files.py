"""Record files posted to gunicorn and stored by a Celery worker on S3 (moto) until every one is ready, against
boto3 putting the same files to the same server in the same run."""

import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from scriptorium_client.multipart import MultipartFile

from bench import support
from bench.bulk_ingest import (
    broker_settings,
    celery_worker,
    forget_queue,
    peak_rss,
)
from webapp.storage import S3Backend

DEFAULT_N = 100
FILE_MB = 10
RATIO_TARGET = 0.8
ROUND = 20
BUCKET = "scriptorium-bench-files"
START = datetime(2024, 1, 1, tzinfo=UTC)


def write_random_files(directory: Path, count: int, size_mb: int, prefix: str = "scan") -> list[tuple[Path, str]]:
    """``count`` files of ``size_mb`` MiB of random bytes, each with its SHA-256."""
    files = []
    for number in range(count):
        path = directory / f"{prefix}-{number:04d}.tif"
        files.append((path, support.write_random_file(path, size_mb)))
    return files


def boto3_puts(backend: S3Backend, files: list[tuple[Path, str]]) -> float:
    """Upload each file with the app's boto3 client configuration and boto3's own call, then delete them
    (untimed); the seconds taken."""
    started = time.perf_counter()
    for number, (path, _) in enumerate(files):
        with open(path, "rb") as source:
            backend.client.upload_fileobj(
                source, backend.bucket, f"baseline/{number}", ExtraArgs={"ContentType": "image/tiff"}
            )
    elapsed = time.perf_counter() - started
    # moto keeps objects in memory; the baseline's copies need not weigh on the app's run.
    backend.delete([f"baseline/{number}" for number in range(len(files))])
    return elapsed


def post_record(session: requests.Session, base_url: str, names: dict[str, str], number: int, path: Path) -> str:
    """POST one record with ``path`` as its file; the record's id (its file is then pending)."""
    fields = {"timestamp": (START + timedelta(seconds=number)).isoformat(), "script_data": "{}"}
    fields.update({name: value for name, value in names.items() if name != "script_id"})
    body = MultipartFile(path, fields, "record_file", "image/tiff")
    response = session.post(
        f"{base_url}/api/scripts/id/{names['script_id']}/records",
        data=body,
        headers={"Content-Type": body.content_type},
        timeout=(10, 600),
    )
    if response.status_code != 200:
        raise RuntimeError(f"POST answered {response.status_code}: {response.text[:500]}")
    return response.json()["id"]


def wait_until_stored(session: requests.Session, base_url: str, ids: list[str], timeout: float) -> dict[str, dict]:
    """Poll the records until none is pending; each record by id."""
    records: dict[str, dict] = {}
    pending = list(ids)
    deadline = time.monotonic() + timeout
    while pending:
        for record_id in pending:
            records[record_id] = session.get(f"{base_url}/api/scripts/records/id/{record_id}", timeout=30).json()
        pending = [record_id for record_id in pending if records[record_id]["file_status"] == "pending"]
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} files were still pending after {timeout:.0f} s")
        if pending:
            time.sleep(0.1)
    return records


def check_stored(backend: S3Backend, records: list[dict], files: list[tuple[Path, str]]) -> None:
    """Every record is ready with the sent file's size and SHA-256, and its object has that size."""
    for record, (path, sha256) in zip(records, files, strict=True):
        size = path.stat().st_size
        if (record["file_status"], record["file_size"], record["file_sha256"]) != ("ready", size, sha256):
            raise RuntimeError(
                f"record {record['id']}: {record['file_status']}, {record['file_size']} bytes, SHA-256 "
                f"{record['file_sha256']}; sent {size} bytes with SHA-256 {sha256}"
            )
        stored = backend.client.head_object(Bucket=backend.bucket, Key=record["record_file"])["ContentLength"]
        if stored != size:
            raise RuntimeError(f"the object of record {record['id']} holds {stored} bytes, sent {size}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its numbers."""
    parser = support.arg_parser("worker_files", __doc__, DEFAULT_N, f"record files of {FILE_MB} MB")
    parser.add_argument("--file-mb", type=int, default=FILE_MB, help=f"size of each file (default {FILE_MB})")
    parser.add_argument(
        "--round", type=int, default=ROUND, help=f"files per round, the baseline's and the app's alternating ({ROUND})"
    )
    parser.add_argument(
        "--concurrency", type=int, default=0, help="Celery prefork processes; 0 (default) runs --pool solo"
    )
    args = parser.parse_args(argv)
    support.print_header(
        "worker_files", argv, args.n, f"record files of {args.file_mb} MB, S3 on moto, Celery worker, PostgreSQL"
    )
    # moto accepts any credentials; boto3 needs some to sign with.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    megabytes = args.n * args.file_mb
    with support.scratch_database() as url, tempfile.TemporaryDirectory(prefix="scriptorium-bench-") as tmp:
        tmp = Path(tmp)
        files = write_random_files(tmp, args.n, args.file_mb)
        [(warm_up, _)] = write_random_files(tmp, 1, 1, prefix="warm-up")
        with support.moto_server(tmp / "moto.log") as s3:
            backend = S3Backend(BUCKET, s3.url, None, "us-east-1")
            backend.ensure_bucket()
            boto3_puts(backend, [files[0]])  # warms up the client as the app's warm-up POST does
            settings = broker_settings()
            env = support.app_env(
                url, tmp / "instance", storage_backend="s3", s3_endpoint_url=s3.url, s3_bucket=BUCKET, **settings
            )
            token = support.api_token(url, tmp / "instance")
            baseline_seconds = elapsed = posted = 0.0
            ids: list[str] = []
            records: dict[str, dict] = {}
            try:
                with (
                    support.gunicorn(env, tmp / "gunicorn.log") as server,
                    celery_worker(env, tmp / "worker.log", args.concurrency) as worker,
                    support.api_session(token) as session,
                ):
                    web = support.worker_pid(server.pid)
                    names = support.create_reference_data(session, server.url)
                    # Warms up both processes (imports, boto3 clients, pools) as the baseline's first put did.
                    first = post_record(session, server.url, names, -1, warm_up)
                    wait_until_stored(session, server.url, [first], timeout=120)
                    before = {"web": support.memory(web), "worker": support.memory(worker)}
                    # Alternating rounds: a machine shared with other work slows both sides alike.
                    for start in range(0, args.n, args.round):
                        batch = files[start : start + args.round]
                        baseline_seconds += boto3_puts(backend, batch)
                        started = time.perf_counter()
                        batch_ids = [
                            post_record(session, server.url, names, start + i, p) for i, (p, _) in enumerate(batch)
                        ]
                        posted += time.perf_counter() - started
                        records.update(wait_until_stored(session, server.url, batch_ids, timeout=max(300, megabytes)))
                        elapsed += time.perf_counter() - started
                        ids += batch_ids
                    web_peak = peak_rss(web)
                    worker_peak = peak_rss(worker)
            finally:
                forget_queue(settings["queue_name"])
            check_stored(backend, [records[record_id] for record_id in ids], files)

    baseline = megabytes / baseline_seconds
    print(
        f"baseline: boto3 upload_fileobj to moto: {args.n} × {args.file_mb} MB in {baseline_seconds:.2f} s "
        f"= {baseline:.1f} MB/s (in rounds of {args.round}, alternating with the app's)"
    )
    result = megabytes / elapsed
    print(
        f"result:   POST {{id}}/records with record_file until every file is ready: {args.n} × {args.file_mb} MB "
        f"in {elapsed:.2f} s = {result:.1f} MB/s"
    )
    print(
        f"phases:   the {args.n} POSTs (each answered pending) took {posted:.2f} s = {megabytes / posted:.1f} MB/s; "
        f"the files were all ready {elapsed - posted:.2f} s after the last answer of their round (summed)"
    )
    print(
        f"check:    {args.n} records ready; file_size, file_sha256 and the stored object's size equal the sent file's"
    )
    print(f"RSS:      web worker VmRSS {before['web']['VmRSS'] / support.MB:.1f} MB after the warm-up, peak {web_peak}")
    print(
        f"RSS:      celery worker VmRSS {before['worker']['VmRSS'] / support.MB:.1f} MB after the warm-up, peak "
        f"{worker_peak}"
    )
    support.print_ratio("ratio MB/s vs boto3 puts", result / baseline, RATIO_TARGET)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
