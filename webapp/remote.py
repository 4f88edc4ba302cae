"""A small HTTP client of the Scriptorium API, used by the ``scriptorium`` command (upload, jobs)."""

import hashlib
import mimetypes
import os
import uuid
from pathlib import Path

import requests

CHUNK = 1024 * 1024


class ApiError(Exception):
    """The API answered with an error; the message is its error_description."""


class MultipartFile:
    """A multipart/form-data body of text ``fields`` and one file part, streamed from disk with a known length
    (so requests sends a Content-Length, not a chunked body)."""

    def __init__(self, path: Path, fields: dict[str, str], part: str = "file", content_type: str | None = None):
        self.path = path
        self.boundary = uuid.uuid4().hex
        if content_type is None and path.suffix.lower() in (".ndjson", ".jsonl"):
            content_type = "application/x-ndjson"
        content_type = content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        head = b"".join(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
            for name, value in fields.items()
        )
        quoted = path.name.replace('"', "_")
        self.head = (
            head
            + (
                f'--{self.boundary}\r\nContent-Disposition: form-data; name="{part}"; filename="{quoted}"\r\n'
                f"Content-Type: {content_type}\r\n\r\n"
            ).encode()
        )
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return len(self.head) + self.path.stat().st_size + len(self.tail)

    def __iter__(self):
        yield self.head
        with open(self.path, "rb") as file:
            while chunk := file.read(CHUNK):
                yield chunk
        yield self.tail


class ApiClient:
    """Talks to one Scriptorium server with an optional token."""

    def __init__(self, base_url: str, token: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def _check(self, response: requests.Response) -> requests.Response:
        if response.status_code >= 400:
            try:
                body = response.json()
                message = body.get("error_description") or body.get("error")
                if body.get("errors"):
                    message += " " + "; ".join(f"{k}: {' '.join(v)}" for k, v in body["errors"].items())
            except ValueError:
                message = response.text[:500]
            raise ApiError(f"{response.status_code}: {message}")
        return response

    def upload_bulk(self, script_id: str, path: Path, fields: dict[str, str], key: str | None = None) -> dict:
        """Queue a bulk upload; the idempotency key defaults to the file's SHA-256, so a rerun finds its job
        (``replayed`` is then true in the answer)."""
        body = MultipartFile(path, {name: value for name, value in fields.items() if value})
        headers = {"Content-Type": body.content_type, "Idempotency-Key": key or file_sha256(path)}
        response = self.http.post(
            f"{self.base_url}/api/scripts/id/{script_id}/records/bulk", data=body, headers=headers
        )
        job = self._check(response).json()
        job["replayed"] = response.headers.get("Idempotent-Replayed") == "true"
        return job

    def job(self, job_id: str) -> dict:
        """One job."""
        return self._check(self.http.get(f"{self.base_url}/api/jobs/{job_id}")).json()

    def recent_jobs(self, limit: int, **filters) -> list[dict]:
        """The ``limit`` newest jobs matching ``filters``, newest first."""
        params = {name: value for name, value in filters.items() if value}
        total = int(
            self._check(self.http.get(f"{self.base_url}/api/jobs", params={**params, "limit": 0})).headers[
                "X-Total-Count"
            ]
        )
        params.update(limit=limit, offset=max(total - limit, 0))
        return list(reversed(self._check(self.http.get(f"{self.base_url}/api/jobs", params=params)).json()))


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def default_url() -> str:
    return os.environ.get("SCRIPTORIUM_URL", f"http://127.0.0.1:{os.environ.get('PORT', 5000)}")
