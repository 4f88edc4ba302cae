"""The object store behind one small interface, with two backends chosen by configuration.

``local`` keeps files in a folder and hands out signed, expiring URLs that the app itself serves;
``s3`` talks to any S3-protocol server through boto3 and hands out presigned URLs signed for the public endpoint.
"""

import hashlib
import io
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import quote

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer

CHUNK = 1024 * 1024
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredFile:
    """What the store learned while writing a file."""

    size: int
    sha256: str


def file_digest(stream: BinaryIO) -> StoredFile:
    """Read ``stream`` to its end in chunks and return its size and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return StoredFile(size=size, sha256=digest.hexdigest())


def content_disposition(file_name: str) -> str:
    """An ``attachment`` disposition carrying ``file_name`` safely for any characters (RFC 6266/5987)."""
    ascii_name = file_name.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(file_name, safe='')}"


class StoreCheckFailed(Exception):
    """The object store failed a readiness check; the message says why, naming no host or credential."""


class Backend(Protocol):
    def check(self, timeout: float) -> str: ...  # a cheap call; StoreCheckFailed when the store cannot serve
    def put(self, key: str, stream: BinaryIO, content_type: str) -> None: ...
    def open(self, key: str) -> BinaryIO: ...  # FileNotFoundError when there is no such key
    def move(self, source: str, target: str) -> None: ...
    def delete(self, keys: list[str]) -> None: ...  # missing keys are no error
    def download_url(self, key: str, file_name: str, content_type: str, expires_in: int) -> str: ...


class _BodyReader(io.RawIOBase):
    """A raw stream over an S3 response body, so it can be buffered and decoded like a local file."""

    def __init__(self, body):
        self.body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.body.close()
        super().close()


class LocalBackend:
    """Files in a local folder; downloads through signed URLs served by the app."""

    def __init__(self, root: str, secret_key: str):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.signer = URLSafeSerializer(secret_key, salt="scriptorium.download")

    def path_of(self, key: str) -> Path:
        """The file holding ``key``; keys never leave the root."""
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"key escapes the store: {key!r}")
        return path

    def check(self, timeout: float) -> str:
        """Say the folder exists (made again if it went away, as a put would) and this process may write in it."""
        if self.root.exists() and not self.root.is_dir():
            raise StoreCheckFailed("the folder's path is taken by something that is not a folder")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreCheckFailed(f"the folder cannot be made ({exc.strerror})") from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StoreCheckFailed("the folder is not writable by this process")
        return "the folder is writable"

    def put(self, key: str, stream: BinaryIO, content_type: str) -> None:
        path = self.path_of(key)
        partial = path.with_name(path.name + ".partial")
        # 'xb' refuses to overwrite; the rename makes the file appear whole or not at all.
        with self._in_folder(partial, lambda: open(partial, "xb")) as out:
            shutil.copyfileobj(stream, out, CHUNK)
        if path.exists():
            partial.unlink()
            raise FileExistsError(key)
        os.replace(partial, path)

    def open(self, key: str) -> BinaryIO:
        return open(self.path_of(key), "rb")

    def move(self, source: str, target: str) -> None:
        path, source_path = self.path_of(target), self.path_of(source)
        self._in_folder(path, lambda: os.replace(source_path, path))
        self._prune(source_path.parent)

    @staticmethod
    def _in_folder(path: Path, write, attempts: int = 3):
        """``write()`` once ``path``'s folder exists, again if a prune removed the folder in between."""
        for attempt in range(attempts):
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                return write()
            except FileNotFoundError:
                if attempt == attempts - 1 or path.parent.exists():
                    raise

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            path = self.path_of(key)
            path.unlink(missing_ok=True)
            self._prune(path.parent)

    def _prune(self, folder: Path) -> None:
        """Remove ``folder`` and the folders above it while they are empty (S3 has no folders to leave behind)."""
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except OSError:  # not empty (or gone already, or just refilled by another upload)
                return
            folder = folder.parent

    def download_url(self, key: str, file_name: str, content_type: str, expires_in: int) -> str:
        token = self.signer.dumps(
            {"key": key, "name": file_name, "type": content_type, "exp": int(time.time()) + expires_in}
        )
        return f"/files/{token}"

    def read_token(self, token: str) -> dict | None:
        """The payload of a download token, or None when it is forged, tampered with or expired."""
        try:
            payload = self.signer.loads(token)
        except BadSignature:
            return None
        if not isinstance(payload, dict) or payload.get("exp", 0) < time.time():
            return None
        return payload


class S3Backend:
    """Files in an S3 bucket; downloads through presigned URLs signed for the public endpoint."""

    DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes

    def __init__(
        self,
        bucket: str,
        endpoint_url: str | None,
        public_endpoint_url: str | None,
        region: str,
        connect_timeout: float = 3.0,
        read_timeout: float = 30.0,
    ):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        # S3-compatible servers reject the checksum headers boto3 >= 1.36 sends by default. The timeouts keep a
        # request from hanging on a store that is down: two attempts, each bounded.
        config = Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": 2, "mode": "standard"},
        )
        self.bucket = bucket
        self._config, self._client_args = config, {"endpoint_url": endpoint_url, "region_name": region}
        self._check_clients: dict[float, object] = {}
        self._check_lock = threading.Lock()
        # s3transfer holds each part of a file object in memory while sending it: bound how many at once,
        # so a 1 GB upload costs the web process tens of megabytes, not a hundred.
        self.transfer = TransferConfig(multipart_chunksize=8 * CHUNK, max_concurrency=3, max_io_queue=3)
        self.transfer.max_in_memory_upload_chunks = 3
        self.client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
        self.public_client = boto3.client(
            "s3", endpoint_url=public_endpoint_url or endpoint_url, region_name=region, config=config
        )

    def check(self, timeout: float) -> str:
        """HEAD the bucket with one attempt bounded by ``timeout`` (to connect, then to answer)."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        try:
            self._check_client(timeout).head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise StoreCheckFailed("the bucket does not exist (`scriptorium init` creates it)") from exc
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise StoreCheckFailed("the object store refused these credentials for the bucket") from exc
            raise StoreCheckFailed(f"the object store answered with the error {code[:40]!r}") from exc
        except (ConnectTimeoutError, ReadTimeoutError) as exc:
            raise StoreCheckFailed(f"the object store did not answer within {timeout:g} s") from exc
        except EndpointConnectionError as exc:
            raise StoreCheckFailed("cannot connect to the object store") from exc
        except NoCredentialsError as exc:
            raise StoreCheckFailed("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from exc
        except BotoCoreError as exc:
            raise StoreCheckFailed(f"the object store failed ({type(exc).__name__})") from exc
        return "the bucket answered"

    def _check_client(self, timeout: float):
        """A client for checks: one attempt, short timeouts (the request path's client retries and waits longer)."""
        import boto3
        from botocore.config import Config

        with self._check_lock:
            if timeout not in self._check_clients:
                config = self._config.merge(
                    Config(connect_timeout=timeout, read_timeout=timeout, retries={"total_max_attempts": 1})
                )
                # A session of its own: boto3's default session may not make clients on several threads at once.
                self._check_clients[timeout] = boto3.session.Session().client("s3", config=config, **self._client_args)
            return self._check_clients[timeout]

    def ensure_bucket(self) -> bool:
        """Create the bucket when it does not exist yet; True when it had to be created."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
            return False
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise
        self.client.create_bucket(Bucket=self.bucket)
        return True

    def put(self, key: str, stream: BinaryIO, content_type: str) -> None:
        start = stream.tell() if stream.seekable() else None
        try:
            self._upload(key, stream, content_type)
        except Exception as exc:
            # A bucket emptied away (or never made) is made again, once, rather than failing every upload until
            # someone runs `scriptorium init`.
            if start is None or not _missing_bucket(exc) or not self.ensure_bucket():
                raise
            log.warning("The bucket %r was missing and has been created again", self.bucket)
            stream.seek(start)
            self._upload(key, stream, content_type)

    def _upload(self, key: str, stream: BinaryIO, content_type: str) -> None:
        self.client.upload_fileobj(
            _KeptOpen(stream), self.bucket, key, ExtraArgs={"ContentType": content_type}, Config=self.transfer
        )

    def open(self, key: str) -> BinaryIO:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except self.client.exceptions.NoSuchKey as exc:
            raise FileNotFoundError(key) from exc
        return io.BufferedReader(_BodyReader(body), CHUNK)

    def move(self, source: str, target: str) -> None:
        # A server-side copy: the bytes do not cross the network again.
        self.client.copy({"Bucket": self.bucket, "Key": source}, self.bucket, target)
        self.client.delete_object(Bucket=self.bucket, Key=source)

    def delete(self, keys: list[str]) -> None:
        if len(keys) == 1:
            self.client.delete_object(Bucket=self.bucket, Key=keys[0])
            return
        from botocore.exceptions import ClientError

        failed = []
        for start in range(0, len(keys), self.DELETE_BATCH):
            batch = keys[start : start + self.DELETE_BATCH]
            try:
                answer = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True}
                )
            except ClientError:
                # Some S3-compatible stores lack DeleteObjects or refuse its checksum: one request per key.
                for key in batch:
                    self.client.delete_object(Bucket=self.bucket, Key=key)
                continue
            failed += [f"{error['Key']} ({error.get('Code')})" for error in answer.get("Errors", [])]
        if failed:
            raise OSError(f"The object store kept {len(failed)} of {len(keys)} objects: {', '.join(failed[:10])}")

    def download_url(self, key: str, file_name: str, content_type: str, expires_in: int) -> str:
        return self.public_client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ResponseContentDisposition": content_disposition(file_name),
                "ResponseContentType": content_type,
            },
            ExpiresIn=expires_in,
        )


class _KeptOpen:
    """A stream as s3transfer is given it: s3transfer closes what it has sent, and a retry must read it again."""

    def __init__(self, stream: BinaryIO):
        self._stream = stream

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def close(self) -> None:
        """Left to the stream's owner."""


def _missing_bucket(error: BaseException | None) -> bool:
    """True when ``error`` (or what it was raised from: boto3 wraps upload errors) says the bucket is missing."""
    while error is not None:
        if "NoSuchBucket" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


class ObjectStore:
    """Flask extension exposing the current app's configured backend as ``store.backend``."""

    def init_app(self, app) -> None:
        """Create the backend named by ``STORAGE_BACKEND``."""
        app.extensions["object_store"] = self._make_backend(app.config)

    @staticmethod
    def _make_backend(config) -> Backend:
        kind = config["STORAGE_BACKEND"]
        if kind == "local":
            return LocalBackend(config["STORAGE_LOCAL_DIR"], config["SECRET_KEY"])
        if kind == "s3":
            return S3Backend(
                config["S3_BUCKET"],
                config["S3_ENDPOINT_URL"],
                config["S3_PUBLIC_ENDPOINT_URL"],
                config["S3_REGION"],
                config["S3_CONNECT_TIMEOUT"],
                config["S3_READ_TIMEOUT"],
            )
        raise RuntimeError(f"SCRIPTORIUM_STORAGE_BACKEND must be 'local' or 's3', not {kind!r}")

    @property
    def backend(self) -> Backend:
        """The backend of the current app."""
        return current_app.extensions["object_store"]

    def delete_quietly(self, *keys: str) -> None:
        """Delete ``keys``, logging rather than raising when the store fails (an orphan is harmless)."""
        try:
            self.backend.delete(list(keys))
        except Exception:
            log.exception("Could not delete %d stored file(s): %s", len(keys), ", ".join(keys[:3]))

    def download_url(self, key: str, file_name: str, content_type: str, expires_in: int) -> str:
        """A short-lived URL serving ``key`` under ``file_name``."""
        return self.backend.download_url(key, file_name, content_type, expires_in)
