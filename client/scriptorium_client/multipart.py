"""Streamed multipart/form-data bodies: text fields and one file part, never held in memory whole."""

from __future__ import annotations

import hashlib
import io
import mimetypes
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

CHUNK = 1024 * 1024

# Types the API recognises without looking at a name; anything else is guessed from the extension.
TYPES_BY_SUFFIX = {
    ".ndjson": "application/x-ndjson",
    ".jsonl": "application/x-ndjson",
    ".csv": "text/csv",
    ".json": "application/json",
}


def content_type_of(file_name: str) -> str:
    """The media type to send a file under, from its name (a ``.gz`` file is ``application/gzip``)."""
    suffix = Path(file_name).suffix.lower()
    if suffix == ".gz":
        return "application/gzip"
    return TYPES_BY_SUFFIX.get(suffix) or mimetypes.guess_type(file_name)[0] or "application/octet-stream"


def _quoted(value: str) -> str:
    # A quote, CR or LF would end the header parameter early; the server sanitises names anyway.
    return value.replace('"', "_").replace("\r", "_").replace("\n", "_")


class MultipartStream:
    """A multipart/form-data body of text ``fields`` and one file part whose bytes come from ``chunks``.

    Its length is unknown, so requests sends it chunked; it can be sent once.
    """

    def __init__(
        self,
        chunks: Iterable[bytes],
        fields: Mapping[str, str],
        part: str,
        file_name: str,
        content_type: str | None = None,
    ) -> None:
        self.boundary = uuid.uuid4().hex
        self._chunks = chunks
        content_type = content_type or content_type_of(file_name)
        head = "".join(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"\r\n\r\n{value}\r\n'
            for name, value in fields.items()
        )
        head += (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quoted(part)}"; '
            f'filename="{_quoted(file_name)}"\r\nContent-Type: {content_type}\r\n\r\n'
        )
        self.head = head.encode()
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()

    @property
    def content_type(self) -> str:
        """The Content-Type header of the body, boundary included."""
        return f"multipart/form-data; boundary={self.boundary}"

    def _content(self) -> Iterator[bytes]:
        yield from self._chunks

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        for chunk in self._content():
            if chunk:  # an empty chunk would end a chunked body early
                yield chunk
        yield self.tail


class MultipartFile(MultipartStream):
    """A multipart/form-data body of text ``fields`` and one file part read from ``source`` (a path, or a seekable
    binary file from its current position) in chunks, with a known length: requests sends a Content-Length, and
    the body can be sent again (a retry reads the file again)."""

    def __init__(
        self,
        source: str | os.PathLike[str] | BinaryIO,
        fields: Mapping[str, str],
        part: str = "file",
        content_type: str | None = None,
        file_name: str | None = None,
    ) -> None:
        if isinstance(source, str | os.PathLike):
            self.path: Path | None = Path(source)
            self._file: BinaryIO | None = None
            self._start = 0
            name = file_name or self.path.name
        else:
            self.path = None
            self._file = source
            self._start = source.tell()
            name = file_name or Path(getattr(source, "name", "") or "upload").name
        super().__init__((), fields, part, name, content_type)

    def _size(self) -> int:
        if self.path is not None:
            return self.path.stat().st_size
        assert self._file is not None
        return self._file.seek(0, io.SEEK_END) - self._start

    def __len__(self) -> int:
        return len(self.head) + self._size() + len(self.tail)

    def _content(self) -> Iterator[bytes]:
        if self.path is not None:
            with open(self.path, "rb") as file:
                while chunk := file.read(CHUNK):
                    yield chunk
            return
        assert self._file is not None
        self._file.seek(self._start)
        while chunk := self._file.read(CHUNK):
            yield chunk


def seekable(file: BinaryIO) -> bool:
    """Whether ``file`` can be measured and read again (a pipe or a socket cannot)."""
    try:
        return file.seekable()
    except (AttributeError, ValueError, OSError):
        return False


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
