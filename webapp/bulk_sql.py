"""SQL for many rows at once, per dialect: inserts that skip rows whose unique key is taken, and NDJSON lines.

Every insert here is ``ON CONFLICT DO NOTHING``: a row already stored is left as it is. They differ in what they
insert: ``insert_new_rows`` a list of rows into one table, ``insert_new_row_per_table`` one row into each of
several tables, ``insert_new_from_select`` (a statement, built once) what a SELECT selects, and ``copy_new_rows``
many rows, encoded beforehand in a ``RowFormat``, through COPY. ``stream_json_lines`` goes the other way: the rows
of a SELECT as NDJSON.
"""

import contextlib
import ctypes
import ctypes.util
import functools
import json
import struct
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta

import orjson
import psycopg
import uuid_utils
from sqlalchemy import JSON, Select, Text, bindparam, case, cast, func, literal_column
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from webapp.fields import iso_utc


def _on_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def insert_new_rows(session: Session, table, rows: list[dict]) -> None:
    """Insert ``rows`` into ``table`` in the session's transaction, skipping those whose key is taken."""
    insert = pg_insert if _on_postgresql(session) else sqlite_insert
    session.execute(insert(table).on_conflict_do_nothing(), rows)


def insert_new_row_per_table(session: Session, rows: list[tuple]) -> None:
    """Insert one row into each of several tables (``(table, row)`` pairs), skipping those whose key is taken;
    on PostgreSQL in a single statement (data-modifying CTEs), saving round trips on every record POST."""
    if not _on_postgresql(session):
        for table, row in rows:
            insert_new_rows(session, table, [row])
        return
    shape = tuple((table, tuple(row)) for table, row in rows)
    params = {f"p{index}_{name}": value for index, (_, row) in enumerate(rows) for name, value in row.items()}
    session.execute(_per_table_insert(shape), params)


@functools.cache
def _per_table_insert(shape: tuple):
    """One statement inserting a row into each table of ``shape`` ((table, columns) pairs), built once per
    shape: building and compiling it anew took longer than running it."""
    statements = [
        pg_insert(table).values({name: bindparam(f"p{index}_{name}") for name in columns}).on_conflict_do_nothing()
        for index, (table, columns) in enumerate(shape)
    ]
    ctes = [statement.cte(f"insert_{index}") for index, statement in enumerate(statements[:-1])]
    return statements[-1].add_cte(*ctes)


@functools.cache
def insert_new_from_select(dialect: str, table, source: Select, returning: tuple[str, ...]):
    """The statement ``INSERT INTO table SELECT … ON CONFLICT DO NOTHING RETURNING returning`` for ``dialect``,
    built once: ``source`` selects a value for every column of ``table``, in order."""
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(table).from_select([column.key for column in table.columns], source)
    return statement.on_conflict_do_nothing().returning(*(table.c[name] for name in returning))


class RowFormat:
    """How rows of some ``columns`` of ``table`` are written for ``copy_new_rows``: as binary COPY fields on
    PostgreSQL, as tuples of values on SQLite.

    Parts of a row may be encoded apart (``encoder``) and joined with ``+`` in column order (the first part
    carries the row's number of fields). Encoding touches no database, so any thread may do it.
    """

    def __init__(self, session: Session, table, columns: tuple[str, ...]):
        self.table = table
        self.columns = columns
        self._fields = None
        if _on_postgresql(session):
            with _driver_cursor(session, table) as cursor:
                types = _column_types(cursor, table.name, columns)
            self._fields = dict(zip(columns, (_FIELD_ENCODERS[oid] for oid in types), strict=True))
            self._row_start = struct.pack("!h", len(columns))  # a row's number of fields

    def encoder(self, columns: tuple[str, ...]) -> Callable[[Sequence], bytes | tuple]:
        """A function encoding the values of ``columns`` (some of this format's, in order) as part of a row."""
        if self._fields is None:
            return tuple
        encoders = [self._fields[name] for name in columns]
        start = self._row_start if columns[0] == self.columns[0] else b""

        # Written here rather than by psycopg's write_row: about half the Python time per row.
        def encode(values: Sequence) -> bytes:
            fields = [_NULL if value is None else field(value) for field, value in zip(encoders, values, strict=True)]
            return start + b"".join(fields)

        return encode


def copy_new_rows(session: Session, row_format: RowFormat, rows: list) -> int:
    """Insert ``rows`` (each whole, in ``row_format``) in the session's transaction, skipping those whose key is
    taken; returns how many were inserted.

    On PostgreSQL a binary COPY straight into the table inside a savepoint; only when that meets a taken key (a
    unique violation) is it rolled back and the rows go through a temporary staging table and one ``INSERT …
    SELECT … ON CONFLICT DO NOTHING``. On SQLite an executemany.
    """
    if not rows:
        return 0
    table, columns = row_format.table, row_format.columns
    if row_format._fields is None:
        values = [dict(zip(columns, row, strict=True)) for row in rows]
        return session.execute(sqlite_insert(table).on_conflict_do_nothing(), values).rowcount
    with _driver_cursor(session, table) as cursor:
        cursor.execute("SAVEPOINT copy_new_rows")
        try:
            _copy(cursor, table.name, columns, rows)
        except psycopg.errors.UniqueViolation:
            cursor.execute("ROLLBACK TO SAVEPOINT copy_new_rows")
            return _insert_through_staging(cursor, table.name, columns, rows)
        cursor.execute("RELEASE SAVEPOINT copy_new_rows")
        return len(rows)


@contextlib.contextmanager
def _driver_cursor(session: Session, table) -> Iterator[psycopg.Cursor]:
    """A cursor of the session's driver connection; the driver's errors come out as SQLAlchemy's."""
    try:
        with session.connection().connection.driver_connection.cursor() as cursor:
            yield cursor
    except psycopg.Error as exc:
        # Wrapped as SQLAlchemy would (IntegrityError for a deleted reference, DBAPIError for a lost
        # connection), so callers handle one family of errors.
        raise DBAPIError.instance(f'COPY "{table.name}"', None, exc, psycopg.Error) from exc


def _copy(cursor: psycopg.Cursor, table_name: str, columns: tuple[str, ...], rows: list[bytes]) -> None:
    """COPY ``rows`` (each its binary fields) into ``table_name``'s ``columns``."""
    names = ", ".join(f'"{name}"' for name in columns)
    with cursor.copy(f'COPY "{table_name}" ({names}) FROM STDIN (FORMAT BINARY)') as copy:
        copy.write(_HEADER)
        for start in range(0, len(rows), _ROWS_PER_BLOCK):
            copy.write(b"".join(rows[start : start + _ROWS_PER_BLOCK]))
        copy.write(_TRAILER)


# Rows per write: blocks of about 30 KB, psycopg's own buffer size.
_ROWS_PER_BLOCK = 100
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # binary COPY's zero for timestamps and dates
_EPOCH_DAY = _EPOCH.toordinal()
_MICROSECOND = timedelta(microseconds=1)
_NULL = b"\xff\xff\xff\xff"
_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_TRAILER = b"\xff\xff"
_LENGTH = struct.Struct("!i").pack
_INT4 = struct.Struct("!ii").pack
_INT8 = struct.Struct("!iq").pack


def _uuid_field(value: uuid.UUID | uuid_utils.UUID) -> bytes:
    return b"\x00\x00\x00\x10" + value.bytes


def _text_field(value: str) -> bytes:
    data = value.encode()
    return _LENGTH(len(data)) + data


def _jsonb_field(value) -> bytes:
    data = dump_json_bytes(value)
    return _LENGTH(len(data) + 1) + b"\x01" + data  # jsonb's binary form: version 1, then the text


def _json_field(value) -> bytes:
    data = dump_json_bytes(value)
    return _LENGTH(len(data)) + data


def _timestamptz_field(value: datetime) -> bytes:
    if value.tzinfo is None:
        raise TypeError(f"A timestamptz value must be aware: {value!r}")
    return _INT8(8, (value - _EPOCH) // _MICROSECOND)


def _date_field(value: date) -> bytes:
    if isinstance(value, datetime):
        raise TypeError(f"A date value must be a date: {value!r}")
    return _INT4(4, value.toordinal() - _EPOCH_DAY)


# Each gives a value's field in binary COPY (its length, then its bytes), by the column's type OID: the types the
# tables written through here use.
_FIELD_ENCODERS: dict[int, Callable] = {
    2950: _uuid_field,
    1184: _timestamptz_field,
    1082: _date_field,
    3802: _jsonb_field,
    114: _json_field,
    25: _text_field,  # text
    1043: _text_field,  # varchar
    20: lambda value: _INT8(8, value),  # bigint
    23: lambda value: _INT4(4, value),  # integer
}


def _insert_through_staging(cursor: psycopg.Cursor, table_name: str, columns: tuple[str, ...], data: list) -> int:
    """COPY ``data`` (as ``_copy`` takes it) into a temporary staging table, then insert those whose key is free;
    how many were."""
    names = ", ".join(f'"{name}"' for name in columns)
    staging = f"staging_{table_name}_{zlib.crc32(names.encode()):08x}"  # one per column set
    # CREATE TABLE AS copies the column types, and neither constraints nor indexes.
    cursor.execute(
        f'CREATE TEMP TABLE IF NOT EXISTS "{staging}" ON COMMIT DELETE ROWS AS '
        f'SELECT {names} FROM "{table_name}" WITH NO DATA'
    )
    _copy(cursor, staging, columns, data)
    cursor.execute(f'INSERT INTO "{table_name}" ({names}) SELECT {names} FROM "{staging}" ON CONFLICT DO NOTHING')
    inserted = cursor.rowcount
    cursor.execute(f'TRUNCATE "{staging}"')
    return inserted


# The type of each column, by table and column set: COPY's binary format must name them. Built-in types' OIDs are
# the same in every database, which is all the tables written through here use.
_COLUMN_TYPES: dict[tuple[str, tuple[str, ...]], list[int]] = {}


def _column_types(cursor: psycopg.Cursor, table_name: str, columns: tuple[str, ...]) -> list[int]:
    """The type OIDs of ``columns`` of ``table_name``, in order, looked up once per process."""
    key = (table_name, columns)
    if key not in _COLUMN_TYPES:
        found = dict(
            cursor.execute(
                "SELECT attname, atttypid::int FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (f'"{table_name}"',),
            ).fetchall()
        )
        _COLUMN_TYPES[key] = [found[name] for name in columns]
    return _COLUMN_TYPES[key]


def stream_json_lines(engine: Engine, stmt: Select, batch: int = 2000) -> Iterator[bytes]:
    """Run ``stmt`` on its own connection of ``engine`` with a server-side cursor; yield one JSON object per row,
    in batches.

    Null columns are left out; JSON-document columns are embedded whole (their own nulls kept).
    On PostgreSQL the server renders each line, which is several times faster than Python.
    """
    on_postgresql = engine.dialect.name == "postgresql"
    if on_postgresql:
        stmt = stmt.with_only_columns(_json_line_sql(stmt), maintain_column_froms=True)

    # The lines are produced after the request's app context has ended: nothing here may need it.
    def lines():
        with engine.connect() as connection:
            result = connection.execution_options(stream_results=True, yield_per=batch).execute(stmt)
            for rows in result.partitions():
                if on_postgresql:
                    yield "".join(line for (line,) in rows).encode()
                else:
                    yield b"".join(_json_line(row._mapping) for row in rows)

    return lines()


def release_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``; nothing elsewhere)."""
    # A stream's batches (the driver's results, the joined lines) are megabytes each, and glibc keeps what they
    # freed in the arena of the thread that ran it (past its dynamic mmap threshold, which big frees raise): each
    # gunicorn thread that had served a stream kept ~7 MB for good.
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def releasing_memory(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """``chunks``, then an empty one, then the process's free memory given back (also when the client leaves).

    The server holds the chunk it sent last until it gets the next one: the empty one lets it drop the last batch
    (megabytes) before the trim, which would otherwise leave that batch's memory in the thread's arena."""
    try:
        yield from chunks
        yield b""
    finally:
        release_free_memory()


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): its allocator gives memory back its own way
        return None


def _json_line_sql(stmt: Select):
    """SQL building ``stmt``'s row as a JSON text line: columns that are never null as one object, nullable
    ones appended only when set, JSON documents appended whole (their own nulls kept)."""
    columns = list(stmt.selected_columns)
    documents = [c for c in columns if isinstance(c.type, JSON)]
    required = [c for c in columns if c not in documents and getattr(c, "nullable", True) is False]
    optional = [c for c in columns if c not in documents and c not in required]
    pairs = [part for c in required for part in (literal_column(f"'{c.key}'"), c)]
    # Appending optional fields with CASE is cheaper than json_strip_nulls, which re-parses the whole line.
    line = func.left(cast(func.json_build_object(*pairs), Text), -1)
    for c in optional:
        line = line + case((c.is_(None), ""), else_=f',"{c.key}":' + cast(func.to_json(c), Text))
    for c in documents:
        line = line + f',"{c.key}":' + cast(c, Text)
    return line + "}\n"


def _json_line(row) -> bytes:
    line = {key: iso_utc(value) if isinstance(value, datetime) else value for key, value in row.items()}
    return dump_json_bytes({key: value for key, value in line.items() if value is not None}) + b"\n"


def dump_json_bytes(value) -> bytes:
    """JSON of ``value`` as UTF-8: orjson for speed, the standard library for what orjson refuses (integers
    beyond 64 bits, which JSON allows)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def dump_json(value) -> str:
    """``dump_json_bytes`` as text."""
    return dump_json_bytes(value).decode()
