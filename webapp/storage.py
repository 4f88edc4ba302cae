"""The object store behind one small interface, with two backends chosen by configuration.

``local`` keeps files in a folder and hands out signed, expiring URLs that the app itself serves;
``s3`` talks to any S3-protocol server through boto3 and hands out presigned URLs signed for the public endpoint.
"""

import base64
import hashlib
import io
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
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
    """What the store learned while writing a file: its size, its SHA-256 (hex) and, for a store that keeps
    checksums of its own, the one it reports for the object (S3's base64 ``ChecksumSHA256``, ``-N`` for N parts)."""

    size: int
    sha256: str
    checksum: str | None = None


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
    def put(self, key: str, stream: BinaryIO, content_type: str) -> StoredFile: ...
    def verify(self, key: str, sent: StoredFile) -> bool: ...  # FileNotFoundError when there is no such key
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

    def put(self, key: str, stream: BinaryIO, content_type: str) -> StoredFile:
        """Write ``stream`` to ``key``, hashing it on the way; a key that exists already is FileExistsError."""
        path = self.path_of(key)
        partial = path.with_name(path.name + ".partial")
        digest, size = hashlib.sha256(), 0
        # 'xb' refuses to overwrite; the rename makes the file appear whole or not at all.
        with self._in_folder(partial, lambda: open(partial, "xb")) as out:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        if path.exists():
            partial.unlink()
            raise FileExistsError(key)
        os.replace(partial, path)
        return StoredFile(size=size, sha256=digest.hexdigest())

    def verify(self, key: str, sent: StoredFile) -> bool:
        """Hash the file again: a folder keeps no checksum of its own, and reading a local disk is cheap."""
        with self.open(key) as stream:
            stored = file_digest(stream)
        return (stored.size, stored.sha256) == (sent.size, sent.sha256)

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
    # A file smaller than SINGLE_PUT goes in one PutObject (held in memory): fewer requests than parts, and a
    # store assembles nothing. Larger ones go in parts of PART_SIZE.
    SINGLE_PUT = 16 * CHUNK
    PART_SIZE = 8 * CHUNK
    MAX_PARTS = 10_000  # the most parts S3 takes in one upload
    # Parts sent at once by one upload, each held in memory until sent: with 2, a 1 GB upload grew the web
    # process by 44 MB rather than 31, and was no faster on 2 cores.
    PARTS_IN_FLIGHT = 1

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

    def put(self, key: str, stream: BinaryIO, content_type: str) -> StoredFile:
        """Upload ``stream`` to ``key``, sending the SHA-256 of each request's bytes for the store to check."""
        start = stream.tell() if stream.seekable() else None
        try:
            return self._upload(key, stream, content_type)
        except Exception as exc:
            # A bucket emptied away (or never made) is made again, once, rather than failing every upload until
            # someone runs `scriptorium init`.
            if start is None or not _missing_bucket(exc) or not self.ensure_bucket():
                raise
            log.warning("The bucket %r was missing and has been created again", self.bucket)
            stream.seek(start)
            return self._upload(key, stream, content_type)

    def _upload(self, key: str, stream: BinaryIO, content_type: str) -> StoredFile:
        """One PutObject for a small file, else a multipart upload, each request with the SHA-256 of its bytes;
        the whole file is hashed from the same reads."""
        part_size = self._part_size(stream)
        first = _read_full(stream, self.SINGLE_PUT)
        whole = hashlib.sha256(first)
        if len(first) < self.SINGLE_PUT:
            checksum = _base64_sha256(first)
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=first,
                ContentType=content_type,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
            )
            return StoredFile(size=len(first), sha256=whole.hexdigest(), checksum=checksum)
        target = {"Bucket": self.bucket, "Key": key}
        upload_id = self.client.create_multipart_upload(**target, ContentType=content_type, ChecksumAlgorithm="SHA256")[
            "UploadId"
        ]
        parts, digests, size = [], [], 0
        sending: deque[Future] = deque()
        # Parts are read and hashed in order on this thread while earlier ones are sent: at most PARTS_IN_FLIGHT
        # parts wait or travel at once, plus the one being read.
        with ThreadPoolExecutor(self.PARTS_IN_FLIGHT, thread_name_prefix="s3-part") as senders:
            try:
                for part in _pieces(first, stream, part_size, whole):
                    digest = hashlib.sha256(part).digest()
                    checksum = base64.b64encode(digest).decode()
                    number = len(digests) + 1
                    if len(sending) == self.PARTS_IN_FLIGHT:
                        parts.append(sending.popleft().result())
                    sending.append(senders.submit(self._upload_part, target, upload_id, number, part, checksum))
                    digests.append(digest)
                    size += len(part)
                while sending:
                    parts.append(sending.popleft().result())
                self.client.complete_multipart_upload(**target, UploadId=upload_id, MultipartUpload={"Parts": parts})
            except BaseException:
                for pending in sending:
                    pending.cancel()
                wait(sending)
                self._abort_quietly(target, upload_id)
                raise
        # S3's checksum of a multipart object: the SHA-256 of its parts' SHA-256s, and how many parts there are.
        composite = f"{_base64_sha256(b''.join(digests))}-{len(parts)}"
        return StoredFile(size=size, sha256=whole.hexdigest(), checksum=composite)

    def _upload_part(self, target: dict, upload_id: str, number: int, body: bytes, checksum: str) -> dict:
        """Send one part with its SHA-256; the part as CompleteMultipartUpload lists it."""
        answer = self.client.upload_part(
            **target,
            UploadId=upload_id,
            PartNumber=number,
            Body=body,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=checksum,
        )
        return {"ETag": answer["ETag"], "PartNumber": number, "ChecksumSHA256": checksum}

    def _part_size(self, stream: BinaryIO) -> int:
        """``PART_SIZE``, or larger when a stream whose length is known would need more than ``MAX_PARTS``."""
        if not stream.seekable():
            return self.PART_SIZE
        start = stream.tell()
        remaining = stream.seek(0, io.SEEK_END) - start
        stream.seek(start)
        return max(self.PART_SIZE, -(-remaining // self.MAX_PARTS))

    def _abort_quietly(self, target: dict, upload_id: str) -> None:
        """Abort a multipart upload that failed (its parts would be kept, and billed, until aborted)."""
        try:
            self.client.abort_multipart_upload(**target, UploadId=upload_id)
        except Exception:
            log.warning("Could not abort the multipart upload of %s", target["Key"], exc_info=True)

    def verify(self, key: str, sent: StoredFile) -> bool:
        """Compare the size and SHA-256 checksum the store reports for ``key`` with what was sent; a store that
        reports no checksum (or an object stored without one) is read back and hashed instead."""
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(key) from exc
            raise
        reported = head.get("ChecksumSHA256")
        if reported is None or sent.checksum is None:
            with self.open(key) as stream:
                stored = file_digest(stream)
            return (stored.size, stored.sha256) == (sent.size, sent.sha256)
        return head["ContentLength"] == sent.size and same_checksum(sent.checksum, reported)

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


def same_checksum(sent: str, reported: str) -> bool:
    """True when the store's ``reported`` checksum is the ``sent`` one. A multipart checksum ends in ``-N`` (N
    parts); some stores (moto's HeadObject) leave that suffix off, so only a suffix both carry is compared."""
    sent_value, _, sent_parts = sent.partition("-")
    reported_value, _, reported_parts = reported.partition("-")
    return sent_value == reported_value and (not sent_parts or not reported_parts or sent_parts == reported_parts)


def _base64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _pieces(head: bytes, stream: BinaryIO, size: int, digest) -> Iterator[bytes]:
    """``head`` and then the rest of ``stream`` in pieces of ``size`` bytes (the last may be shorter), feeding
    what is read from ``stream`` to ``digest``."""
    while True:
        if len(head) < size:
            more = _read_full(stream, size - len(head))
            digest.update(more)
            head += more
        if not head:
            return
        yield head[:size]
        head = head[size:]


def _read_full(stream: BinaryIO, size: int) -> bytes:
    """``size`` bytes of ``stream``, fewer only at its end (a raw stream may answer a read with less)."""
    data = stream.read(size)
    if len(data) == size or not data:
        return data
    pieces, got = [data], len(data)
    while got < size and (piece := stream.read(size - got)):
        pieces.append(piece)
        got += len(piece)
    return b"".join(pieces)


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
