"""The client of one Scriptorium server: every call a pipeline or an analysis reaches for."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
import tempfile
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Literal
from urllib.parse import unquote, urljoin

import requests

from scriptorium_client.errors import APIError
from scriptorium_client.multipart import MultipartFile, MultipartStream, file_sha256, seekable

if TYPE_CHECKING:
    import pandas

__all__ = ["DEFAULT_URL", "ENDED", "Client"]

DEFAULT_URL = "http://127.0.0.1:5000"
ENDED = ("succeeded", "failed", "cancelled")
CHUNK = 1024 * 1024
PAGE = 1000  # the API's largest page

Json = dict[str, Any]
PathLike = str | os.PathLike[str]
ExportProgress = Callable[[int, int | None], None]
JobProgress = Callable[[Json], None]

# The exact filters of GET /records; the lists and time bounds of /records/filter (and of /records/export).
EXACT_FILTERS = ("experiment_name", "season_name", "site_name", "dataset_name", "collection_date")
RANGE_FILTERS = (
    "start_timestamp",
    "end_timestamp",
    "dataset_names",
    "experiment_names",
    "season_names",
    "site_names",
)
BULK_DEFAULTS = ("experiment_name", "season_name", "site_name", "dataset_name", "collection_date")
NAME_BYTES = 200
TAIL = 64 * 1024  # the end of an export kept to check how it ended (an error line is short)
PARQUET_MAGIC = b"PAR1"


class Client:
    """A client of one Scriptorium server, sending ``token`` with every API call.

    ``url`` defaults to ``$SCRIPTORIUM_URL`` (else http://127.0.0.1:5000), ``token`` to ``$SCRIPTORIUM_TOKEN``.
    Requests that are safe to repeat (reads, and bulk uploads of a file, which carry an Idempotency-Key) are retried
    up to ``retries`` times on 503, and on 409 when it says ``Retry-After``, waiting as the server asks (at most
    ``max_wait`` seconds) or backing off. Every error is an :class:`APIError`.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 5,
        max_wait: float = 30.0,
    ) -> None:
        self.url = (url or os.environ.get("SCRIPTORIUM_URL") or DEFAULT_URL).rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.max_wait = max_wait
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "scriptorium-client/0.1"
        token = token if token is not None else os.environ.get("SCRIPTORIUM_TOKEN")
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        # Download URLs are their own credential: they are fetched without the API's headers, even on this host.
        self._files = requests.Session()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the client's connections."""
        self.session.close()
        self._files.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # -- transport

    def _send(
        self,
        method: str,
        path: str,
        *,
        safe: bool | None = None,
        session: requests.Session | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """One API call, retried when it is safe to and the server asks for it; an error answer raises."""
        safe = method in ("GET", "HEAD") if safe is None else safe
        url = path if path.startswith(("http://", "https://")) else self.url + path
        kwargs.setdefault("timeout", self.timeout)
        attempt = 0
        while True:
            response = (session or self.session).request(method, url, **kwargs)
            wait = self._retry_wait(response, attempt) if safe and attempt < self.retries else None
            if wait is None:
                break
            response.close()
            time.sleep(wait)
            attempt += 1
        if response.status_code >= 400:
            error = APIError.from_response(response)
            response.close()
            raise error
        return response

    def _retry_wait(self, response: requests.Response, attempt: int) -> float | None:
        """Seconds to wait before repeating a request that got ``response``, or None not to repeat it."""
        after = response.headers.get("Retry-After")
        if response.status_code == 409 and after is None:
            return None  # a real conflict: repeating it changes nothing
        if response.status_code not in (409, 503):
            return None
        backoff = min(self.max_wait, 0.5 * 2.0**attempt)
        if after is None:
            return backoff
        try:
            return min(self.max_wait, max(0.0, float(after)))
        except ValueError:  # an HTTP date: rare from this API; back off instead
            return backoff

    def _json(self, method: str, path: str, **kwargs: Any) -> Json:
        body = self._send(method, path, **kwargs).json()
        if not isinstance(body, dict):
            raise APIError(200, "Unexpected answer", f"{method} {path} answered {type(body).__name__}, not an object")
        return body

    def _list(self, path: str, params: Mapping[str, Any] | None = None, missing_is_empty: bool = False) -> list[Json]:
        """Every item of a paged list, page by page (oldest first)."""
        items: list[Json] = []
        while True:
            try:
                query = {**_params(params or {}), "limit": PAGE, "offset": len(items)}
                response = self._send("GET", path, params=query)
            except APIError as exc:
                if missing_is_empty and exc.status == 404 and not items:
                    return []
                raise
            page = response.json()
            items.extend(page)
            total = int(response.headers.get("X-Total-Count", len(items)))
            if not page or len(items) >= total:
                return items

    def _script_list(self, script_id: str, what: str) -> list[Json]:
        # These lists are 404 both for an unknown script and for one with none: only the first is an error.
        try:
            return self._list(f"/api/scripts/id/{script_id}/{what}")
        except APIError as exc:
            if exc.status != 404:
                raise
            self.script(script_id)
            return []

    # -- scripts, runs, datasets

    def scripts(self, **search: Any) -> list[Json]:
        """Scripts matching ``search`` (``script_name``, ``script_url``, ``script_extension``, ``script_info`` (a
        dict the script's info must contain), ``experiment_name``); every script without one. ``[]`` for none."""
        return self._list("/api/scripts", search, missing_is_empty=True)

    def script(self, script_id: str) -> Json:
        """One script."""
        return self._json("GET", f"/api/scripts/id/{script_id}")

    def create_script(self, **fields: Any) -> Json:
        """Create a script (``script_name`` required; ``experiment_name`` associates it with that experiment)."""
        return self._json("POST", "/api/scripts", json=_body(fields))

    def update_script(self, script_id: str, **fields: Any) -> Json:
        """Change the given fields of a script (``None`` clears one; ``experiment_name`` associates)."""
        return self._json("PATCH", f"/api/scripts/id/{script_id}", json=_body(fields, keep_none=True))

    def delete_script(self, script_id: str) -> Json:
        """Delete a script with its runs, records and their files."""
        return self._json("DELETE", f"/api/scripts/id/{script_id}")

    def script_experiments(self, script_id: str) -> list[Json]:
        """The experiments a script is associated with."""
        return self._script_list(script_id, "experiments")

    def runs(self, script_id: str) -> list[Json]:
        """A script's runs, oldest first."""
        return self._script_list(script_id, "runs")

    def create_run(self, script_id: str, script_run_info: Mapping[str, Any] | None = None) -> Json:
        """Start a new run of a script."""
        body = {} if script_run_info is None else {"script_run_info": dict(script_run_info)}
        return self._json("POST", f"/api/scripts/id/{script_id}/runs", json=body)

    def datasets(self, script_id: str) -> list[Json]:
        """The datasets associated with a script."""
        return self._script_list(script_id, "datasets")

    def create_dataset(self, script_id: str, dataset_name: str, **fields: Any) -> Json:
        """Create a dataset (or reuse the one of that name) and associate it with a script (``dataset_info``,
        ``collection_date``, ``experiment_name`` optional)."""
        body = _body({"dataset_name": dataset_name, **fields})
        return self._json("POST", f"/api/scripts/id/{script_id}/datasets", json=body)

    # -- experiments, seasons, sites

    def experiments(self) -> list[Json]:
        """Every experiment."""
        return self._list("/api/experiments")

    def experiment(self, experiment_id: str) -> Json:
        """One experiment."""
        return self._json("GET", f"/api/experiments/id/{experiment_id}")

    def create_experiment(self, experiment_name: str, **fields: Any) -> Json:
        """Create an experiment (``experiment_info``, ``experiment_start_date``, ``experiment_end_date``)."""
        return self._json("POST", "/api/experiments", json=_body({"experiment_name": experiment_name, **fields}))

    def update_experiment(self, experiment_id: str, **fields: Any) -> Json:
        """Change the given fields of an experiment."""
        return self._json("PATCH", f"/api/experiments/id/{experiment_id}", json=_body(fields, keep_none=True))

    def delete_experiment(self, experiment_id: str) -> Json:
        """Delete an experiment (409 while records reference it)."""
        return self._json("DELETE", f"/api/experiments/id/{experiment_id}")

    def seasons(self, experiment_id: str | None = None) -> list[Json]:
        """The seasons of an experiment; every season without one."""
        if experiment_id is None:
            return self._list("/api/seasons/all")
        return self._list(f"/api/experiments/id/{experiment_id}/seasons")

    def season(self, season_id: str) -> Json:
        """One season."""
        return self._json("GET", f"/api/seasons/id/{season_id}")

    def create_season(self, experiment_id: str, season_name: str, **fields: Any) -> Json:
        """Create a season of an experiment (``season_info``, ``season_start_date``, ``season_end_date``)."""
        body = _body({"season_name": season_name, **fields})
        return self._json("POST", f"/api/experiments/id/{experiment_id}/seasons", json=body)

    def update_season(self, season_id: str, **fields: Any) -> Json:
        """Change the given fields of a season."""
        return self._json("PATCH", f"/api/seasons/id/{season_id}", json=_body(fields, keep_none=True))

    def delete_season(self, season_id: str) -> Json:
        """Delete a season (409 while records reference it)."""
        return self._json("DELETE", f"/api/seasons/id/{season_id}")

    def sites(self) -> list[Json]:
        """Every site."""
        return self._list("/api/sites")

    def site(self, site_id: str) -> Json:
        """One site."""
        return self._json("GET", f"/api/sites/id/{site_id}")

    def create_site(self, site_name: str, **fields: Any) -> Json:
        """Create a site (``site_city``, ``site_state``, ``site_country``, ``site_info``)."""
        return self._json("POST", "/api/sites", json=_body({"site_name": site_name, **fields}))

    def update_site(self, site_id: str, **fields: Any) -> Json:
        """Change the given fields of a site."""
        return self._json("PATCH", f"/api/sites/id/{site_id}", json=_body(fields, keep_none=True))

    def delete_site(self, site_id: str) -> Json:
        """Delete a site (409 while records reference it)."""
        return self._json("DELETE", f"/api/sites/id/{site_id}")

    # -- records

    def add_record(
        self,
        script_id: str,
        *,
        timestamp: dt.datetime | str,
        experiment_name: str,
        season_name: str,
        site_name: str,
        script_data: Mapping[str, Any] | None = None,
        file: PathLike | BinaryIO | None = None,
        **fields: Any,
    ) -> Json:
        """Store one record, with an optional file (a path or a binary file object), and return it.

        ``fields``: ``collection_date``, ``dataset_name``, ``script_run_id``, ``record_info``. A record POST is
        not repeated on 503: it may have been stored.
        """
        form = {
            "timestamp": timestamp,
            "experiment_name": experiment_name,
            "season_name": season_name,
            "site_name": site_name,
            "script_data": script_data,
            **fields,
        }
        values = {name: _form_value(value) for name, value in form.items() if value is not None}
        path = f"/api/scripts/id/{script_id}/records"
        if file is None:
            # Each field as a part without a file name: the API takes records as multipart forms only.
            return self._json("POST", path, files={name: (None, value) for name, value in values.items()}, safe=False)
        body: MultipartStream
        if isinstance(file, str | os.PathLike) or seekable(file):
            body = MultipartFile(file, values, "record_file")
        else:
            name = Path(getattr(file, "name", "") or "upload").name
            body = MultipartStream(iter(lambda: file.read(CHUNK), b""), values, "record_file", name)
        headers = {"Content-Type": body.content_type}
        return self._json("POST", path, data=body, headers=headers, safe=False)

    def record(self, record_id: str) -> Json:
        """One record."""
        return self._json("GET", f"/api/scripts/records/id/{record_id}")

    def update_record(
        self,
        record_id: str,
        *,
        script_data: Mapping[str, Any] | None = None,
        record_info: Mapping[str, Any] | None = None,
    ) -> Json:
        """Replace a record's ``script_data`` and/or ``record_info``."""
        body = _body({"script_data": script_data, "record_info": record_info})
        return self._json("PATCH", f"/api/scripts/records/id/{record_id}", json=body)

    def delete_record(self, record_id: str) -> Json:
        """Delete a record and its stored file."""
        return self._json("DELETE", f"/api/scripts/records/id/{record_id}")

    def records(self, script_id: str, **filters: Any) -> Iterator[Json]:
        """The script's records, oldest timestamp first, as dicts read one at a time from the NDJSON stream.

        Exact filters (``experiment_name``, ``season_name``, ``site_name``, ``dataset_name``, ``collection_date``)
        or lists and bounds (``experiment_names``, ``season_names``, ``site_names``, ``dataset_names`` as lists
        or comma-separated strings, ``start_timestamp``, ``end_timestamp`` as datetimes or ISO strings, both
        inclusive). The request is sent at once (an unknown script raises here); a stream that breaks off
        raises :class:`APIError` where it ends.
        """
        path, params = _records_query(script_id, filters)
        response = self._send("GET", path, params=params, stream=True)
        return _stream_lines(response)

    def export(
        self,
        script_id: str,
        dest: PathLike,
        *,
        format: Literal["parquet", "csv"] = "parquet",
        progress: bool | ExportProgress = False,
        **filters: Any,
    ) -> Path:
        """Write the script's records as one table (``format`` ``parquet`` or ``csv``) to ``dest`` (a file, or a
        folder to write ``records-<script id>.<format>`` into), streamed; returns the path written.

        Takes every filter of :meth:`records` but ``collection_date``. ``progress``: True prints the bytes
        received to stderr; a callable is called with (bytes received, rows in the table) as chunks arrive.
        """
        target = Path(dest)
        if target.is_dir():
            target = target / f"records-{script_id}.{format}"
        report = _export_printer() if progress is True else progress or None
        _write_atomically(target, self._export_chunks(script_id, format, report, filters))
        if progress is True:
            print(file=sys.stderr)
        return target

    def records_frame(self, script_id: str, **filters: Any) -> pandas.DataFrame:
        """The script's records as a pandas DataFrame, read from the Parquet export (needs the ``frames`` extra:
        ``pip install 'scriptorium-client[frames]'``); takes the filters of :meth:`export`."""
        try:
            import pandas  # noqa: F401  (imported for the clear message; to_pandas needs it)
            import pyarrow as pa  # type: ignore[import-untyped]
            import pyarrow.dataset as ds  # type: ignore[import-untyped]
        except ImportError as exc:
            raise ImportError(
                "records_frame needs pandas and pyarrow: pip install 'scriptorium-client[frames]'"
            ) from exc
        # Read from memory: the frame holds more than the file anyway, and a file on disk was written and read again.
        data = bytearray()
        for chunk in self._export_chunks(script_id, "parquet", None, filters):
            data += chunk
        # The system allocator rather than pyarrow's default pool (mimalloc): measured on a 1M-record export, a
        # process's first read took 6.7 s of CPU through mimalloc and 2.5 s through malloc (later reads ~1.2 s both).
        # A fragment's scan takes a pool; pq.read_table does not.
        pool = pa.system_memory_pool()
        table = ds.ParquetFileFormat().make_fragment(pa.BufferReader(data)).to_table(memory_pool=pool)
        del data
        # self_destruct frees each column's Arrow memory once converted; split_blocks skips copying the columns of
        # one type into one block.
        frame: pandas.DataFrame = table.to_pandas(self_destruct=True, split_blocks=True, memory_pool=pool)
        return frame

    def _export_chunks(
        self, script_id: str, format: str, report: ExportProgress | None, filters: Mapping[str, Any]
    ) -> Iterator[bytes]:
        """The bytes of an export as they arrive; raises at the end if the export failed midway."""
        params = _params(_range_filters(filters))
        params["format"] = format
        with self._send("GET", f"/api/scripts/id/{script_id}/records/export", params=params, stream=True) as response:
            count = response.headers.get("X-Total-Count")
            rows = int(count) if count is not None and count.isdigit() else None
            received = 0
            tail = b""
            for chunk in _body_chunks(response):
                received += len(chunk)
                tail = (tail + chunk)[-TAIL:]
                if report:
                    report(received, rows)
                yield chunk
            _check_export_end(format, tail)

    def download(self, record_id: str, dest: PathLike) -> Path:
        """Download a record's file to ``dest``: a folder (the file keeps its original name) or a file path.

        Follows the API's redirect itself, without sending the token to the file's URL (the URL is the
        credential), waits while the file is pending (409 with Retry-After), and returns the path written.
        """
        redirect = self._send("GET", f"/api/scripts/records/id/{record_id}/download", allow_redirects=False)
        redirect.close()
        location = redirect.headers.get("Location")
        if redirect.status_code not in (301, 302, 303, 307, 308) or not location:
            raise APIError(redirect.status_code, "No redirect", "The download answered without a file URL.")
        file_url = urljoin(redirect.url, location)
        with self._send("GET", file_url, stream=True, session=self._files) as response:
            target = Path(dest)
            if target.is_dir():
                name = _attachment_name(response.headers.get("Content-Disposition", ""))
                if name is None:
                    name = self.record(record_id).get("file_name") or ""
                target = target / (safe_file_name(name) or record_id)
            _write_atomically(target, _body_chunks(response))
        return target

    # -- bulk uploads and jobs

    def bulk_upload(
        self,
        script_id: str,
        path_or_rows: PathLike | Iterable[Mapping[str, Any]],
        *,
        wait: bool = True,
        progress: bool | JobProgress = False,
        key: str | None = None,
        interval: float = 1.0,
        **defaults: Any,
    ) -> Json:
        """Queue a bulk upload of records and return its job (polled until it ends when ``wait``).

        ``path_or_rows``: a file (NDJSON, CSV or a JSON array, ``.gz`` allowed) streamed from disk, whose
        SHA-256 is the Idempotency-Key unless ``key`` is given (so a rerun finds the same job and is retried
        safely); or an iterable of dicts, streamed as NDJSON without being held (a fresh key; not retried).
        ``defaults`` fill in rows that lack them: ``experiment_name``, ``season_name``, ``site_name``,
        ``dataset_name``, ``collection_date``. The job has ``replayed`` true when the server found an earlier
        upload with that key. ``progress``: True prints the job's state to stderr; a callable gets each job read.
        """
        unknown = set(defaults) - set(BULK_DEFAULTS)
        if unknown:
            allowed = ", ".join(BULK_DEFAULTS)
            raise TypeError(f"bulk_upload takes no {', '.join(sorted(unknown))}; its defaults are {allowed}")
        fields = {name: _form_value(value) for name, value in defaults.items() if value is not None}
        body: MultipartStream
        if isinstance(path_or_rows, str | os.PathLike):
            body = MultipartFile(path_or_rows, fields, "file")
            key = key or file_sha256(path_or_rows)
            safe = True
        else:
            body = MultipartStream(_ndjson_chunks(path_or_rows), fields, "file", "rows.ndjson")
            key = key or uuid.uuid4().hex
            safe = False  # a generator cannot be sent twice
        headers = {"Content-Type": body.content_type, "Idempotency-Key": key}
        response = self._send(
            "POST", f"/api/scripts/id/{script_id}/records/bulk", data=body, headers=headers, safe=safe
        )
        job: Json = response.json()
        replayed = response.headers.get("Idempotent-Replayed") == "true"
        if wait:
            job = self.wait_job(job["id"], interval=interval, progress=progress, first=job)
        job["replayed"] = replayed
        return job

    def job(self, job_id: str) -> Json:
        """One job."""
        return self._json("GET", f"/api/jobs/{job_id}")

    def jobs(self, *, state: str | None = None, kind: str | None = None, script_id: str | None = None) -> list[Json]:
        """Every job matching the filters, oldest first."""
        return self._list("/api/jobs", {"state": state, "kind": kind, "script_id": script_id})

    def recent_jobs(
        self, limit: int = 20, *, state: str | None = None, kind: str | None = None, script_id: str | None = None
    ) -> list[Json]:
        """The ``limit`` newest jobs matching the filters, newest first."""
        params = _params({"state": state, "kind": kind, "script_id": script_id})
        total = int(self._send("GET", "/api/jobs", params={**params, "limit": 0}).headers["X-Total-Count"])
        limit = min(limit, PAGE)
        query = {**params, "limit": limit, "offset": max(total - limit, 0)}
        page: list[Json] = self._send("GET", "/api/jobs", params=query).json()
        return page[::-1]

    def cancel_job(self, job_id: str) -> Json:
        """Cancel a job (rows it stored stay)."""
        return self._json("POST", f"/api/jobs/{job_id}/cancel")

    def wait_job(
        self,
        job_id: str,
        *,
        interval: float = 1.0,
        timeout: float | None = None,
        progress: bool | JobProgress = False,
        first: Json | None = None,
    ) -> Json:
        """Poll a job every ``interval`` seconds until it ends (``succeeded``, ``failed`` or ``cancelled``) and
        return it; TimeoutError after ``timeout`` seconds. ``progress`` as in :meth:`bulk_upload`; ``first``, the
        job as just read, saves the first poll."""
        report = _job_printer if progress is True else progress or None
        deadline = None if timeout is None else time.monotonic() + timeout
        job = first or self.job(job_id)
        while True:
            if report:
                report(job)
            if job["state"] in ENDED:
                if progress is True:
                    print(file=sys.stderr)
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job['state']} after {timeout} s")
            time.sleep(interval)
            job = self.job(job_id)


def _form_value(value: Any) -> str:
    """A value as a multipart form or query carries it: JSON for objects, ISO 8601 for dates and times."""
    if isinstance(value, Mapping | list):
        return json.dumps(value, default=_json_default)
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _body(fields: Mapping[str, Any], keep_none: bool = False) -> Json:
    """A JSON body of ``fields`` (dates as ISO 8601), without the ``None`` ones unless they clear a field."""
    body: Json = json.loads(
        json.dumps({k: v for k, v in fields.items() if keep_none or v is not None}, default=_json_default)
    )
    return body


def _params(filters: Mapping[str, Any]) -> dict[str, Any]:
    """Query parameters: ``None`` dropped, lists repeated, dates and times in ISO 8601, dicts as JSON."""
    params: dict[str, Any] = {}
    for name, value in filters.items():
        if value is None:
            continue
        if isinstance(value, list | tuple | set | frozenset):
            params[name] = [_form_value(item) for item in value]
        else:
            params[name] = _form_value(value)
    return params


def _range_filters(filters: Mapping[str, Any]) -> dict[str, Any]:
    """``filters`` as /records/filter takes them: an exact name becomes a list of one, which matches the same."""
    unknown = set(filters) - set(EXACT_FILTERS) - set(RANGE_FILTERS)
    if unknown:
        raise TypeError(f"unknown record filter {', '.join(sorted(unknown))}")
    if filters.get("collection_date") is not None:
        raise TypeError("collection_date cannot combine with time bounds or name lists; use start/end_timestamp")
    converted = {name: value for name, value in filters.items() if name in RANGE_FILTERS}
    for name in ("experiment_name", "season_name", "site_name", "dataset_name"):
        if filters.get(name) is not None:
            plural = name + "s"
            if converted.get(plural) is not None:
                raise TypeError(f"give {name} or {plural}, not both")
            converted[plural] = [filters[name]]
    return converted


def _records_query(script_id: str, filters: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The stream a search goes to (exact names: /records; lists and bounds: /records/filter) and its query."""
    given = {name: value for name, value in filters.items() if value is not None}
    if set(given) <= set(EXACT_FILTERS):
        return f"/api/scripts/id/{script_id}/records", _params(given)
    return f"/api/scripts/id/{script_id}/records/filter", _params(_range_filters(given))


def _body_chunks(response: requests.Response) -> Iterator[bytes]:
    """The chunks of a streamed answer; a connection that breaks off before its end is an APIError."""
    try:
        yield from response.iter_content(CHUNK)
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError) as exc:
        raise APIError(500, "Incomplete answer", f"The answer broke off before its end ({exc}); retry.") from exc


def _check_export_end(table_format: str, tail: bytes) -> None:
    """Raise when an export's last bytes say it failed midway: a CSV's error line, a Parquet file without footer."""
    if table_format == "parquet" and not tail.endswith(PARQUET_MAGIC):
        raise APIError(500, "Incomplete export", "The Parquet export ended without its footer; retry.")
    if table_format == "csv":
        last = tail.rstrip(b"\r\n").rsplit(b"\n", 1)[-1]
        if last.startswith(b'{"error"'):
            try:
                line = json.loads(last)
            except ValueError:
                return  # a row of the table that happens to look like one
            if isinstance(line, dict) and "error_description" in line:
                raise APIError.from_line(line)


def _stream_lines(response: requests.Response) -> Iterator[Json]:
    """The records of an NDJSON stream; its error line raises."""
    with response:
        for line in _lines(_body_chunks(response)):
            if not line:
                continue
            item = json.loads(line)
            if "error" in item and "id" not in item:
                raise APIError.from_line(item)
            yield item


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of a byte stream, without their line ends."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from complete
    if pending:
        yield pending


def _ndjson_chunks(rows: Iterable[Mapping[str, Any]], size: int = 256 * 1024) -> Iterator[bytes]:
    """``rows`` as NDJSON lines, gathered into chunks of about ``size`` bytes."""
    buffer: list[bytes] = []
    held = 0
    for row in rows:
        line = json.dumps(row, default=_json_default, separators=(",", ":")).encode() + b"\n"
        buffer.append(line)
        held += len(line)
        if held >= size:
            yield b"".join(buffer)
            buffer, held = [], 0
    if buffer:
        yield b"".join(buffer)


def _write_atomically(target: Path, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to ``target`` through a temporary file beside it: a broken transfer leaves no half file."""
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name[:50]}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _attachment_name(disposition: str) -> str | None:
    """The file name a Content-Disposition header gives (RFC 6266: ``filename*`` first), or None."""
    extended = re.search(r"filename\*\s*=\s*([^']*)'[^']*'([^;]+)", disposition, re.I)
    if extended:
        return unquote(extended.group(2).strip(), encoding=extended.group(1) or "utf-8", errors="replace")
    plain = re.search(r'filename\s*=\s*"([^"]*)"|filename\s*=\s*([^;]+)', disposition, re.I)
    if plain:
        return (plain.group(1) if plain.group(1) is not None else plain.group(2)).strip()
    return None


def safe_file_name(name: str) -> str:
    """``name`` made safe to write in a folder: its last path component, without control characters or leading
    dots, at most 200 bytes; "" when nothing is left."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip().lstrip(".").strip()
    while len(name.encode()) > NAME_BYTES:
        name = name[:-1]
    return name


def _export_printer() -> ExportProgress:
    def report(received: int, rows: int | None) -> None:
        of = f" ({rows:,} rows)" if rows is not None else ""
        print(f"\r{received / 1e6:,.1f} MB received{of}", end="", file=sys.stderr, flush=True)

    return report


def _job_printer(job: Json) -> None:
    total = job.get("total")
    print(
        f"\r{job['state']}: {job['processed']:,}" + (f" of {total:,}" if total is not None else "") + " rows",
        end="",
        file=sys.stderr,
        flush=True,
    )
