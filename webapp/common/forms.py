"""Form bodies: small multipart forms split in one pass, everything else parsed by werkzeug.

werkzeug's multipart parser streams, which large files need, but it compiles two regular expressions for
each body's boundary, and clients pick a new boundary for every request. For a small form (a record posted
without a large file) that compilation cost more than the rest of the parsing together. A small body that is
a plain, complete form with CRLF line breaks is split here; any other body, including every one that breaks
a limit, goes to werkzeug, so its rules and errors stay the only ones.
"""

import functools
import io

from flask import Request as FlaskRequest
from flask import request
from werkzeug import formparser
from werkzeug.datastructures import FileStorage, Headers
from werkzeug.http import parse_options_header

from webapp.errors import UnsupportedMediaTypeError, ValidationError

# Bodies up to this size are read whole; werkzeug's own stream factory also keeps those in memory.
SMALL_FORM_BYTES = 64 * 1024
PADDING = b" \t\x0b\x0c"  # what may follow a boundary on its line
_CHARSETS = formparser.MultiPartParser()  # for its rule of which charsets a part may declare
NOT_UTF8_HEADER = "A part's headers are not UTF-8 text: send file names in UTF-8."


class FormDataParser(formparser.FormDataParser):
    """werkzeug's form parser, splitting small plain multipart bodies itself."""

    def parse(self, stream, mimetype, content_length, options=None):
        boundary = (options or {}).get("boundary", "")
        # werkzeug refuses (413) a body part over the memory limit: such bodies are left to it.
        limit = min(SMALL_FORM_BYTES, self.max_form_memory_size or SMALL_FORM_BYTES)
        small = bool(content_length) and content_length <= limit
        if mimetype != "multipart/form-data" or not small or not boundary or not boundary.isascii():
            return self._parse_by_werkzeug(stream, mimetype, content_length, options)
        body = stream.read()
        parts = self._split(body, boundary.encode())
        if parts is None:
            return self._parse_by_werkzeug(io.BytesIO(body), mimetype, content_length, options)
        return stream, self.cls(parts[0]), self.cls(parts[1])

    def _parse_by_werkzeug(self, stream, mimetype, content_length, options):
        """werkzeug's parse; a part header it cannot decode (werkzeug would answer an empty form, so every field
        seemed missing) is a 422 that says so."""
        silent, self.silent = self.silent, False
        try:
            return super().parse(stream, mimetype, content_length, options)
        except ValueError as exc:
            if isinstance(exc, UnicodeDecodeError) or isinstance(exc.__context__, UnicodeDecodeError):
                raise ValidationError({"_body": NOT_UTF8_HEADER}) from exc
            if not silent:
                raise
            return stream, self.cls(), self.cls()
        finally:
            self.silent = silent

    def _split(self, body: bytes, boundary: bytes) -> tuple[list, list] | None:
        """(fields, files) of a plain complete form, or None for werkzeug to parse."""
        delimiter = b"\r\n--" + boundary
        segments = (b"\r\n" + body).split(delimiter)
        # Every boundary must start a line; the last one closes the form.
        if len(segments) < 3 or body.count(delimiter[2:]) != len(segments) - 1 or segments[-1][:2] != b"--":
            return None
        if self.max_form_parts is not None and len(segments) - 2 > self.max_form_parts:
            return None
        fields, files = [], []
        for segment in segments[1:-1]:
            head, blank, data = segment.partition(b"\r\n\r\n")
            padding, *lines = head.split(b"\r\n")
            if not blank or padding.strip(PADDING) or not lines:
                return None
            headers = _headers(lines)
            if headers is None or "content-disposition" not in headers:
                return None
            name, filename = _names(headers["content-disposition"])
            if name is None:
                return None
            if filename is not None:
                files.append((name, FileStorage(io.BytesIO(data), filename, name, headers=headers)))
            else:
                # werkzeug's rule, asked only of a part with a Content-Type: without one it is UTF-8.
                charset = _CHARSETS.get_part_charset(headers) if "content-type" in headers else "utf-8"
                fields.append((name, data.decode(charset, "replace")))
        return fields, files


@functools.lru_cache(maxsize=512)
def _names(disposition: str) -> tuple[str | None, str | None]:
    """The field name and file name of a part's Content-Disposition. Kept: a client's forms repeat the same few
    headers, and werkzeug's parsing of one cost more than splitting the rest of the form."""
    _, extra = parse_options_header(disposition)
    return extra.get("name"), extra.get("filename")


def _headers(lines: list[bytes]) -> Headers | None:
    """The part's headers, or None when a line is folded or broken by a bare CR or LF."""
    pairs = []
    for line in lines:
        if line[:1] in (b" ", b"\t") or b"\r" in line or b"\n" in line:
            return None
        line = line.strip(b" \t")
        if line:
            # Bytes that are not UTF-8 (a file name in a legacy encoding) stay as surrogates, for the rule that
            # reads the header to refuse by name.
            name, _, value = line.decode(errors="surrogateescape").partition(":")
            pairs.append((name.strip(" \t"), value.strip(" \t")))
    return Headers(pairs)


def refuse_encoded_bodies() -> None:
    """A body sent with a ``Content-Encoding`` is 415: the app decodes none, and must never parse one raw."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaTypeError(
            f"Content-Encoding {encoding[:40]!r} is not decoded here: send the body uncompressed. A bulk upload may "
            "be a gzip file itself (e.g. rows.ndjson.gz)."
        )


class Request(FlaskRequest):
    """The app's request class: Flask's, with the form parser above."""

    form_data_parser_class = FormDataParser
