"""Reading bulk upload files row by row in bounded memory: NDJSON, CSV or a JSON array, optionally gzip-compressed.

Each reader yields ``(line, raw row, error)``: ``line`` is the row's physical line (the CSV header is line 1) or a
JSON array item's 1-based index; ``error`` says why a row cannot be read, and the reader goes on with the next one.
No row is ever held longer than ``max_row_bytes``: an over-long line is read past in pieces, a JSON item nested
deeper than the JSON fields allow is counted through, never built. Only a file that cannot be read on at all (a
CSV without a usable header, a JSON array whose brackets do not close, a broken gzip stream, more decompressed
data than an upload may hold) raises ``UnreadableFile``; the rows read before it count.
"""

import codecs
import csv
import io
import json
import re
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import orjson

from webapp.fields import MAX_JSON_DEPTH

GZIP_MAGIC = b"\x1f\x8b"
PIECE = 64 * 1024
# A row is one level more than the JSON fields it holds, each of which may nest MAX_JSON_DEPTH levels.
MAX_ROW_DEPTH = MAX_JSON_DEPTH + 1


# orjson reads an integer beyond 64 bits as a float and loses its digits (a single POST keeps them). Every such
# integer is written with at least 19 digits, so only text holding a run that long is read again by the standard
# library, which keeps them; other rows keep orjson's speed.
_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def _loads(text: bytes):
    """The JSON value of ``text``, integers of any size kept exactly; raises ``orjson.JSONDecodeError``."""
    item = orjson.loads(text)
    if _LONG_DIGITS.search(text) is not None:
        try:
            return json.loads(text)
        except RecursionError:
            pass  # nested far deeper than the JSON fields allow (MAX_JSON_DEPTH): they refuse it whatever its numbers
    return item


class UnreadableFile(Exception):
    """The file cannot be read on; the message says where and why."""


def is_gzip(stream: BinaryIO) -> bool:
    """True when the (peekable) stream starts with gzip's magic bytes, whatever the file is called."""
    return stream.peek(2)[:2] == GZIP_MAGIC


class _Inflated(io.RawIOBase):
    """The decompressed bytes of a gzip stream (of one or more members), at most ``limit`` of them.

    zlib itself rather than ``gzip.GzipFile``: GzipFile drops the bytes it inflated in the same read that finds
    the stream cut short, and the rows they hold are to be stored before the job fails.
    """

    def __init__(self, compressed: BinaryIO, limit: int):
        self.compressed = compressed
        self.limit = limit
        self.produced = 0
        self.over = False
        self.inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
        self.pending = b""  # compressed bytes read but not inflated yet

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.over:
            raise UnreadableFile(f"The file decompresses to more than {self.limit} bytes, the most an upload may hold.")
        while True:
            if self.inflater.eof and not self._next_member():
                return 0
            if not self.pending:
                self.pending = self.compressed.read(PIECE)
                if not self.pending:
                    raise UnreadableFile("The gzip stream is broken: it ends before its end marker (cut short?).")
            try:
                data = self.inflater.decompress(self.pending, min(len(buffer), self.limit - self.produced + 1))
            except zlib.error as exc:
                raise UnreadableFile(f"The gzip stream is broken ({exc}).") from exc
            self.pending = self.inflater.unconsumed_tail
            if data:
                if self.produced + len(data) > self.limit:
                    data, self.over = data[: self.limit - self.produced], True
                buffer[: len(data)] = data
                self.produced += len(data)
                return len(data)

    def _next_member(self) -> bool:
        """After a member's end: start the next one, if anything but zero padding follows."""
        rest = self.inflater.unused_data + self.pending
        while not (rest := rest.lstrip(b"\0")):
            if not (rest := self.compressed.read(PIECE)):
                return False
        self.inflater, self.pending = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16), rest
        return True


def decompressed(stream: BinaryIO, limit: int) -> BinaryIO:
    """The gzip ``stream`` decompressed as it is read, at most ``limit`` bytes of it."""
    return io.BufferedReader(_Inflated(stream, limit), PIECE)


def physical_lines(stream: BinaryIO, max_bytes: int, passed=None) -> Iterator[tuple[int, bytes | None]]:
    """(number, line) for each line of ``stream``; ``line`` is None for one longer than ``max_bytes``, which is
    read past in pieces and never held whole (each piece goes to ``passed``, when given)."""
    number = 0
    while line := stream.readline(max_bytes + 1):
        number += 1
        if len(line) <= max_bytes or line.endswith(b"\n"):
            yield number, line
            continue
        rest = line
        while True:
            if passed:
                passed(rest)
            if rest.endswith(b"\n") or not (rest := stream.readline(PIECE)):
                break
        yield number, None


def too_long(max_bytes: int) -> str:
    return f"The row is longer than {max_bytes} bytes (SCRIPTORIUM_BULK_MAX_ROW_BYTES)."


NOT_UTF8 = "The row is not UTF-8 text."


# --- NDJSON --------------------------------------------------------------------------------------------------


def read_ndjson(stream: BinaryIO, max_bytes: int) -> Iterator[tuple]:
    """NDJSON rows by physical line; blank lines are skipped."""
    for number, line in physical_lines(stream, max_bytes):
        if line is None:
            yield number, None, too_long(max_bytes)
            continue
        if not line.strip():
            continue
        try:
            item = _loads(line)
        except orjson.JSONDecodeError as exc:
            yield number, None, _json_error(line, exc)
            continue
        if isinstance(item, dict):
            yield number, item, None
        else:
            yield number, None, "Each line must hold a JSON object."


def _json_error(text: bytes, exc: orjson.JSONDecodeError) -> str:
    try:
        text.decode()
    except UnicodeDecodeError:
        return NOT_UTF8
    return f"Not valid JSON at column {exc.colno}: {exc.msg}."


# --- CSV -----------------------------------------------------------------------------------------------------


class _BadRow(Exception):
    """Raised through ``csv.reader`` so that it drops the row it was reading and starts afresh on the next line."""

    def __init__(self, reason: str, line: int | None = None):
        super().__init__(reason)
        self.reason, self.line = reason, line  # the line at fault, else the row's first


class _CsvLines:
    """Decoded lines for ``csv.reader``, refusing any row that grows past ``max_bytes`` or is not UTF-8.

    A refused row is read past to its end before ``csv.reader`` hears of it, so the next row starts where it
    should: a row goes on past a line break exactly while an odd number of quotes has been seen in it (RFC 4180
    doubles the quotes inside a quoted cell). An iterator object rather than a generator: ``csv.reader`` passes on
    what ``__next__`` raises and asks again for the next row, and a generator that raised once would be finished.
    """

    def __init__(self, stream: BinaryIO, max_bytes: int):
        self.lines = physical_lines(stream, max_bytes, passed=self._count_quotes)
        self.max_bytes = max_bytes
        self.number = 0  # lines handed out so far
        self.row_bytes = 0
        self.quotes = 0  # in the current row, modulo 2

    def _count_quotes(self, part: bytes) -> None:
        self.quotes ^= part.count(b'"') & 1

    def start_row(self) -> int:
        """Begin a new row; returns the line it starts on."""
        self.row_bytes = self.quotes = 0
        return self.number + 1

    def __iter__(self):
        return self

    def __next__(self) -> str:
        self.number, line = next(self.lines)
        if line is None:
            self._refuse(too_long(self.max_bytes))
        self._count_quotes(line)
        self.row_bytes += len(line)
        if self.row_bytes > self.max_bytes:
            self._refuse(too_long(self.max_bytes))
        if self.number == 1 and line.startswith(codecs.BOM_UTF8):
            line = line[len(codecs.BOM_UTF8) :]
        try:
            return line.decode()
        except UnicodeDecodeError:
            self._refuse(f"Line {self.number} is not UTF-8 text.", self.number)

    def _refuse(self, reason: str, line: int | None = None):
        """Read past the rest of the row, then raise ``_BadRow``."""
        while self.quotes:
            try:
                self.number, _ = next(self.lines)
            except StopIteration:
                break
            if _ is not None:
                self._count_quotes(_)
        raise _BadRow(reason, line)


def read_csv(stream: BinaryIO, max_bytes: int) -> Iterator[tuple]:
    """CSV rows by the physical line they start on (the header is line 1); empty cells are absent fields."""
    csv.field_size_limit(max_bytes)  # Python's default (128 KiB) would refuse cells the row limit allows
    lines = _CsvLines(stream, max_bytes)
    # Strict, so that a quote left open to the end of the file is an error on the row it opens, not a cell
    # that silently swallows every line after it.
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None)
    except (_BadRow, csv.Error) as exc:
        raise UnreadableFile(f"The CSV header (line 1) cannot be read: {exc}") from exc
    if header is None:
        return
    header = [name.strip() for name in header]
    if "" in header or len(set(header)) != len(header):
        raise UnreadableFile("The CSV header must name every column once.")
    while True:
        start = lines.start_row()
        try:
            cells = next(reader)
        except StopIteration:
            return
        except _BadRow as exc:
            yield exc.line or start, None, exc.reason
            continue
        except csv.Error as exc:
            yield start, None, f"The row cannot be read as CSV: {exc}."
            continue
        if not cells:
            continue
        if len(cells) > len(header):
            yield start, None, f"The row has {len(cells)} cells but the header names {len(header)} columns."
            continue
        yield start, {name: cell for name, cell in zip(header, cells, strict=False) if cell != ""}, None


# --- JSON array ----------------------------------------------------------------------------------------------

# Hand-written rather than ijson: ijson builds a path for every event, so its memory grows with the square of the
# nesting depth (an 8 KB file of '[' cost 160 MB), and its parser holds a whole string token however long. This
# scanner only finds where each item of the array starts and ends, counting brackets outside strings; orjson
# parses each item, which never exceeds the row limit.
_OUTSIDE = re.compile(rb'[\[\]{}",]')  # what matters between items and inside them
_INSIDE = re.compile(rb'[\[\]{}"]')  # inside an item, commas do not matter
_SPACE = b" \t\r\n"


class _ArrayItems:
    """Splits a JSON array's bytes into its items, holding at most one item of at most ``max_bytes``."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.depth = 0  # 1 inside the array, 2 and more inside an item
        self.in_string = False
        self.backslashes = 0  # trailing backslashes carried over from the last piece, inside a string
        self.ended = False
        self.index = 0
        self._reset_item()

    def _reset_item(self) -> None:
        self.pieces: list[bytes] = []
        self.size = 0
        self.problem: str | None = None
        self.max_depth_seen = 1

    def feed(self, piece: bytes) -> Iterator[tuple]:
        """The items that end in ``piece``."""
        position, start, length = 0, 0, len(piece)
        while position < length:
            if self.ended:
                if piece[position:].strip(_SPACE):
                    raise UnreadableFile(
                        f"Something follows the JSON array's closing bracket (after item {self.index})."
                    )
                return
            if self.in_string:
                position = self._end_of_string(piece, position)
                continue
            pattern = _INSIDE if self.depth > 1 else _OUTSIDE
            match = pattern.search(piece, position)
            if match is None:
                break
            char, position = piece[match.start()], match.end()
            if char == 0x22:  # "
                self.in_string = True
            elif char in (0x5B, 0x7B):  # [ {
                self.depth += 1
                self.max_depth_seen = max(self.max_depth_seen, self.depth)
                if self.depth == 1:
                    start = position
            elif self.depth > 1:  # ] } closing something inside an item
                self.depth -= 1
            elif char == 0x7D:
                raise UnreadableFile(f"The JSON array has a stray '}}' after item {self.index}.")
            else:  # a comma or the array's end: the item before it is complete
                self._keep(piece[start : match.start()])
                yield from self._item_done(closing=char == 0x5D)
                start = position
                if char == 0x5D:
                    self.depth, self.ended = 0, True
        if self.depth >= 1 and not self.ended:
            self._keep(piece[start:])

    def _end_of_string(self, piece: bytes, position: int) -> int:
        """Where scanning resumes after looking for the end of the string that ``position`` is inside."""
        while True:
            quote = piece.find(b'"', position)
            end = len(piece) if quote < 0 else quote
            run = _backslashes_before(piece, end)
            if run == end:  # backslashes all the way back to the piece's start
                run += self.backslashes
            if quote < 0:
                self.backslashes = run
                return len(piece)
            self.backslashes = 0
            if run % 2 == 0:
                self.in_string = False
                return quote + 1
            position = quote + 1

    def _keep(self, part: bytes) -> None:
        if self.problem is None:
            self.size += len(part)
            if self.size > self.max_bytes:
                self.problem = too_long(self.max_bytes)
                self.pieces = []
            else:
                self.pieces.append(part)

    def _item_done(self, closing: bool) -> Iterator[tuple]:
        text = b"".join(self.pieces)
        if closing and self.index == 0 and self.problem is None and not text.strip(_SPACE):
            return  # an empty array
        self.index += 1
        if self.problem is None and self.max_depth_seen - 1 > MAX_ROW_DEPTH:
            self.problem = f"The item nests deeper than {MAX_ROW_DEPTH} levels."
        if self.problem is not None:
            yield self.index, None, self.problem
        else:
            yield self._parsed(text)
        self._reset_item()

    def _parsed(self, text: bytes) -> tuple:
        try:
            item = _loads(text)
        except orjson.JSONDecodeError as exc:
            return self.index, None, _json_error(text, exc)
        if isinstance(item, dict):
            return self.index, item, None
        return self.index, None, "Each item must be a JSON object."


def _backslashes_before(piece: bytes, end: int) -> int:
    """How many backslashes stand right before ``end`` (an odd number escapes what follows)."""
    index = end - 1
    while index >= 0 and piece[index] == 0x5C:
        index -= 1
    return end - 1 - index


def read_json_array(stream: BinaryIO, max_bytes: int) -> Iterator[tuple]:
    """Items of a JSON array, numbered from 1, read incrementally."""
    if not stream.peek(64)[:64].lstrip(_SPACE).startswith(b"["):
        raise UnreadableFile("A .json upload must hold one JSON array of record objects.")
    items = _ArrayItems(max_bytes)
    while piece := stream.read(PIECE):
        yield from items.feed(piece)
    if not items.ended:
        if items.depth == 1 and not items.in_string and (items.problem or b"".join(items.pieces).strip(_SPACE)):
            yield from items._item_done(closing=False)  # the last item is whole; only the array's end is missing
        raise UnreadableFile(f"The JSON array ends before its closing bracket (after item {items.index}).")


READERS = {"ndjson": read_ndjson, "csv": read_csv, "json": read_json_array}


def read_rows(stream: BinaryIO, file_format: str, max_row_bytes: int, max_total_bytes: int) -> Iterator[tuple]:
    """The rows of a staged upload in ``file_format``, decompressed first when it is gzip."""
    if is_gzip(stream):
        stream = decompressed(stream, max_total_bytes)
    return READERS[file_format](stream, max_row_bytes)
