"""Record POSTs with a file to the S3 backend (moto), against boto3 uploading the same bytes to the same server."""

import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from scriptorium_client.multipart import MultipartFile

from bench import support
from webapp.storage import S3Backend

DEFAULT_N = 20
FILE_MB = 10
BIG_MB = 1024
BUCKET = "scriptorium-bench"
RATIO_TARGET = 0.7
RSS_TARGET_MB = 50
START = datetime(2024, 1, 1, tzinfo=UTC)


def post_file(
    http: requests.Session, base_url: str, names: dict[str, str], number: int, path: Path, sha256: str
) -> float:
    """POST one record with the file at ``path``; the seconds the POST took. Then (untimed) wait for the
    worker to store it and check the stored size and checksum."""
    fields = {"timestamp": (START + timedelta(seconds=number)).isoformat(), **names}
    fields.pop("script_id")
    body = MultipartFile(path, fields, "record_file", "application/octet-stream")
    started = time.perf_counter()
    response = http.post(
        f"{base_url}/api/scripts/id/{names['script_id']}/records",
        data=body,
        headers={"Content-Type": body.content_type},
        timeout=(10, 1800),
    )
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"POST answered {response.status_code}: {response.text[:500]}")
    record = response.json()
    deadline = time.monotonic() + 600
    while record["file_status"] == "pending" and time.monotonic() < deadline:
        time.sleep(0.1)
        record = http.get(f"{base_url}/api/scripts/records/id/{record['id']}", timeout=30).json()
    if (record["file_sha256"], record["file_size"]) != (sha256, path.stat().st_size):
        raise RuntimeError(f"stored {record['file_size']} bytes with SHA-256 {record['file_sha256']}, sent {sha256}")
    return elapsed


def big_file_size(requested_mb: int, directory: Path) -> int:
    """``requested_mb``, reduced when moto (which keeps objects in memory) or the disk could not hold it."""
    # moto holds the parts and then the assembled object; the app and the client each keep one copy on disk.
    memory_mb = (support.available_memory() // support.MB - 2048) // 3
    disk = os.statvfs(directory)
    disk_mb = disk.f_bavail * disk.f_frsize // support.MB // 3
    size = min(requested_mb, memory_mb, disk_mb)
    if size < requested_mb:
        print(f"note:     --big-mb {requested_mb} does not fit this machine's free memory or disk; using {size} MB")
    return max(size, 0)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its numbers."""
    parser = support.arg_parser("record_file", __doc__, DEFAULT_N, f"posts of the {FILE_MB} MB file")
    parser.add_argument(
        "--file-mb", type=int, default=FILE_MB, help=f"size of the file posted N times (default {FILE_MB})"
    )
    parser.add_argument(
        "--big-mb", type=int, default=BIG_MB, help=f"size of the one big file (default {BIG_MB}; 0 skips)"
    )
    args = parser.parse_args(argv)
    support.print_header(
        "record_file", argv, args.n, f"posts of a {args.file_mb} MB file, then one {args.big_mb} MB file"
    )
    # moto accepts any credentials; boto3 only needs some to sign with.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    with support.scratch_database() as url, tempfile.TemporaryDirectory(prefix="scriptorium-bench-") as tmp:
        tmp = Path(tmp)
        with support.moto_server(tmp / "moto.log") as s3:
            backend = S3Backend(BUCKET, s3.url, None, "us-east-1")
            backend.ensure_bucket()
            small = tmp / "small.bin"
            small_sha256 = support.write_random_file(small, args.file_mb)
            megabytes = args.n * args.file_mb

            # boto3's own upload call on the app's client configuration, warmed up like the app will be.
            with open(small, "rb") as source:
                backend.client.upload_fileobj(source, BUCKET, "baseline/warm-up")
            started = time.perf_counter()
            for number in range(args.n):
                with open(small, "rb") as source:
                    backend.client.upload_fileobj(
                        source, BUCKET, f"baseline/{number}", ExtraArgs={"ContentType": "application/octet-stream"}
                    )
            baseline_seconds = time.perf_counter() - started
            baseline = megabytes / baseline_seconds
            print(
                f"baseline: boto3 upload_fileobj to moto: {args.n} × {args.file_mb} MB in {baseline_seconds:.2f} s "
                f"= {baseline:.1f} MB/s"
            )

            env = support.app_env(url, tmp / "instance", storage_backend="s3", s3_endpoint_url=s3.url, s3_bucket=BUCKET)
            http = support.api_session(support.api_token(url, tmp / "instance"))
            with support.gunicorn(env, tmp / "gunicorn.log") as server:
                names = support.create_reference_data(http, server.url)
                post_file(http, server.url, names, -1, small, small_sha256)  # warm-up: imports, pools, boto3 client
                post_seconds = sum(post_file(http, server.url, names, i, small, small_sha256) for i in range(args.n))
                result = megabytes / post_seconds
                print(
                    f"result:   POST {{id}}/records with record_file: {args.n} × {args.file_mb} MB "
                    f"in {post_seconds:.2f} s = {result:.1f} MB/s"
                )
                print("check:    every stored file_sha256 and file_size equal the sent file's")
                support.print_ratio("ratio", result / baseline, RATIO_TARGET)

                big_mb = big_file_size(args.big_mb, tmp)
                if big_mb:
                    big = tmp / "big.bin"
                    big_sha256 = support.write_random_file(big, big_mb)
                    with support.RssWatch(support.worker_pid(server.pid)) as rss:
                        big_seconds = post_file(http, server.url, names, args.n, big, big_sha256)
                    big.unlink()
                    print(
                        f"big file: POST {{id}}/records with a {big_mb} MB record_file in {big_seconds:.1f} s "
                        f"= {big_mb / big_seconds:.1f} MB/s; file_sha256 checked"
                    )
                    print(rss.describe())
                    support.print_ratio(
                        "RSS growth", rss.growth / support.MB, RSS_TARGET_MB, higher_is_better=False, unit=" MB"
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
