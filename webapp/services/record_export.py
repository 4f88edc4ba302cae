"""Table exports of a script's records (CSV, Parquet): the record fields, then one column per ``script_data`` key.

An export is one read-only snapshot on one connection. Narrow statements on ``script_records`` alone first count
the matching records and list the top-level keys of their ``script_data`` (for Parquet, with the JSON types each
key takes), so the header or the schema is settled before the first byte; on PostgreSQL the keys of a few records
are a guess that one scan checks while it counts. Then one statement produces the rows, in the order of the NDJSON
stream. On PostgreSQL a CSV export is a ``COPY … TO STDOUT (FORMAT csv)`` as it comes, and a Parquet export selects
every column already typed (``(script_data->>'k')::bigint`` …) through ADBC, which reads PostgreSQL's binary COPY
into Arrow batches on a second connection that shares the first one's snapshot: no CSV is rendered or parsed. On
SQLite Python renders the CSV text, which a Parquet export parses with pyarrow's CSV reader, told every column's
type, into row groups.
"""

import io
import logging
import re
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import adbc_driver_postgresql.dbapi as adbc
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from psycopg import ClientCursor
from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Float,
    Numeric,
    String,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    literal_column,
    select,
    text,
    true,
)
from sqlalchemy import column as sql_column
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from webapp import bulk_sql
from webapp.errors import ValidationError
from webapp.extensions import db
from webapp.fields import iso_utc
from webapp.models import Record
from webapp.services.record_search import MIDWAY_ERROR_LINE, record_conditions, record_rows
from webapp.services.scripts import get_script

log = logging.getLogger(__name__)

FORMATS = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}
# A table of more columns than this is no longer a table anyone reads; the keys stay whole in `script_data`.
MAX_KEY_COLUMNS = 2000
KEY_PREFIX = "script_data."
# The records whose keys are taken as the guess of every matching record's keys (PostgreSQL).
SAMPLE_RECORDS = 1000
# More keys than this in the sample are checked by listing every key of every record: one aggregate per guessed key
# must stay well within PostgreSQL's 1,664 columns of a statement.
MAX_GUESSED_KEYS = 400
# Long keys are cut in their column name (the key itself stays whole in `script_data`).
MAX_KEY_NAME = 100
# CSV text parsed into one Parquet row group (~4,500 records of 12 keys): bounds the export's memory. Measured on
# 170k records: 4 MiB grew the process by 34 MB, 8 MiB by 83 MB, 16 MiB by 103 MB.
ROW_GROUP_TEXT_BYTES = 4 * 1024 * 1024
# The blocks pyarrow reads a row group's text in (grown to hold a longer line).
CSV_BLOCK_BYTES = 1024 * 1024
# CSV lines joined into one chunk of a CSV response.
CHUNK_BYTES = 256 * 1024
# The size ADBC aims its Arrow batches (each one row group) at; like ROW_GROUP_TEXT_BYTES, it bounds the memory.
BATCH_BYTES = 4 * 1024 * 1024

RECORD_FIELD_TYPES = {
    "timestamp": pa.timestamp("us", tz="UTC"),
    "collection_date": pa.date32(),
    "file_size": pa.int64(),
}
# The JSON types a key's values may take, and the column type each set gives; any other mix is text.
KIND_TYPES = (
    ({"integer"}, pa.int64()),
    ({"integer", "float"}, pa.float64()),
    ({"boolean"}, pa.bool_()),
)


@dataclass(frozen=True)
class Column:
    """One column of the table: its name, its Arrow type, and the ``script_data`` key it holds (if any)."""

    name: str
    type: pa.DataType
    key: str | None = None


@dataclass
class TableExport:
    """An export ready to stream: its media type, a file name, the number of records and the bytes."""

    content_type: str
    filename: str
    total: int
    columns: list[Column]
    chunks: "ExportStream"


class ExportStream:
    """The bytes of an export; holds the export's connection until the last byte is read or the stream is closed
    (a client that goes away closes it, which cancels a running COPY).

    A CSV export that fails midway ends with the error line of the NDJSON streams; a Parquet export is cut short
    instead (a binary file cannot carry a line, and a Parquet file without its footer is refused by every reader).
    """

    def __init__(self, connection: Connection, chunks: Iterator[bytes], error_line: bytes | None):
        self._connection: Connection | None = connection
        self._chunks = chunks
        self._error_line = error_line

    def __iter__(self) -> "ExportStream":
        return self

    def __next__(self) -> bytes:
        if self._connection is None:
            raise StopIteration
        try:
            return next(self._chunks)
        except StopIteration:
            self.close()
            raise
        except Exception:
            log.exception("Record export failed midway")
            self.close()
            if self._error_line is None:
                raise
            return self._error_line
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop producing rows and give the connection back."""
        self._chunks.close()
        if self._connection is not None:
            self._connection.close()
            self._connection = None
            # pyarrow's pool (mimalloc) keeps what a Parquet export freed for later (glibc's share is given back
            # by releasing_memory): measured, a 200k-record export left the worker 45 MB larger, and the next one
            # in another thread 23 MB more.
            pa.default_memory_pool().release_unused()


def export_records(script_id: uuid.UUID, filters: dict, format: str) -> TableExport:
    """The table of a script's records matching ``filters`` as ``format`` (csv or parquet), ready to stream; the
    header (or schema) is settled before this returns, so a bad script or too many keys is an error, not a stream."""
    stmt = record_rows(script_id, filters)
    filename = f"{re.sub(r'[^A-Za-z0-9._-]+', '-', get_script(script_id).script_name).strip('-.') or 'script'}"
    connection = db.engine.connect()
    try:
        total, columns = _table_shape(connection, stmt, script_id, filters, typed=format == "parquet")
        if not _on_postgresql(connection):
            lines = _python_lines(connection, stmt, columns)
            chunks = _csv(columns, lines) if format == "csv" else _parquet(columns, _csv_tables(columns, lines))
        elif format == "csv":
            chunks = _csv(columns, _copy_lines(connection, stmt, columns))
        else:
            chunks = _parquet(columns, _adbc_tables(connection, stmt, columns))
        chunks = bulk_sql.releasing_memory(chunks)
    except BaseException:
        connection.close()
        raise
    stream = ExportStream(connection, chunks, MIDWAY_ERROR_LINE if format == "csv" else None)
    return TableExport(FORMATS[format], f"{filename}-records.{format}", total, columns, stream)


def _on_postgresql(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"


def _table_shape(
    connection: Connection, stmt, script_id: uuid.UUID, filters: dict, typed: bool
) -> tuple[int, list[Column]]:
    """Begin the export's transaction; count the matching records and settle the table's columns (with the
    types of the key columns when ``typed``: a CSV has no use for them)."""
    on_postgresql = _on_postgresql(connection)
    if on_postgresql:
        connection.execution_options(isolation_level="REPEATABLE READ")
        connection.exec_driver_sql("SET TRANSACTION READ ONLY")
        # The planner's JIT compiles these one-off scans for longer than it saves.
        connection.exec_driver_sql("SET LOCAL jit = off")
    else:
        # pysqlite begins a transaction only before a write; both reads must see one snapshot.
        connection.exec_driver_sql("BEGIN")
    conditions = record_conditions(script_id, filters)
    if on_postgresql:
        total, kinds = _postgresql_shape(connection, conditions, typed)
    else:
        total = connection.execute(select(func.count()).where(*conditions)).scalar_one()
        documents = select(Record.script_data).where(*conditions).subquery()
        kinds = _sqlite_kinds(connection, documents.c.script_data)
    _check_key_count(len(kinds))
    columns = [Column(c.key, RECORD_FIELD_TYPES.get(c.key, pa.string())) for c in stmt.selected_columns]
    names = {c.name for c in columns}
    for key in sorted(kinds):
        name = _unique(KEY_PREFIX + _readable(key), names)
        names.add(name)
        columns.append(Column(name, _column_type(kinds[key]), key))
    return total, columns


def _check_key_count(count: int) -> None:
    if count > MAX_KEY_COLUMNS:
        raise ValidationError(
            {
                "script_data": f"The matching records hold {count} different script_data keys; a table splits "
                f"at most {MAX_KEY_COLUMNS} into columns. Narrow the search, or read the NDJSON stream."
            }
        )


# The JSON types of a key's values, as bits OR-ed over the matching records (PostgreSQL).
KIND_BITS = {"integer": 1, "float": 2, "string": 4, "boolean": 8, "object": 16, "array": 32}


def _postgresql_shape(connection: Connection, conditions: list, typed: bool) -> tuple[int, dict[str, set[str]]]:
    """The number of matching records and their keys with (when ``typed``) the JSON types each takes.

    The keys of a few records are a guess that one scan checks while it counts and ORs each guessed key's type
    bits: looking a known key up is cheaper than listing every pair (measured on 1M records of 12 keys, CPU of one
    backend: 4.2 s, of which 0.5 s is the check, against 5.4 s for the ``jsonb_each`` scan and its count). Keys the
    guess missed are then found in the records that hold them."""
    sample = select(Record.script_data).where(*conditions).limit(SAMPLE_RECORDS).subquery()
    names = func.jsonb_object_keys(sample.c.script_data).table_valued("key").render_derived("names")
    guessed = sorted(connection.execute(select(names.c.key).select_from(sample).join(names, true()).distinct()))
    keys = [key for (key,) in guessed]
    if len(keys) > MAX_GUESSED_KEYS:
        total = connection.execute(select(func.count()).where(*conditions)).scalar_one()
        documents = select(Record.script_data).where(*conditions).subquery()
        return total, _postgresql_kinds(connection, documents.c.script_data, typed)
    rest = Record.script_data.op("-", return_type=JSONB())(bindparam("guessed", keys, type_=ARRAY(Text)))
    others = rest != literal_column("'{}'::jsonb")
    aggregates = [func.count(), func.count().filter(others)]
    if typed:
        key_value = Record.script_data.op("->", return_type=JSONB())
        aggregates.extend(func.bit_or(_kind_bit(key_value(literal(key, String())))) for key in keys)
    total, unguessed, *bits = connection.execute(select(*aggregates).where(*conditions)).one()
    kinds = dict(zip(keys, map(_kinds, bits), strict=True)) if typed else {key: set() for key in keys}
    if unguessed:
        documents = select(rest.label("script_data")).where(*conditions, others).subquery()
        kinds.update(_postgresql_kinds(connection, documents.c.script_data, typed))
    return total, kinds


def _postgresql_kinds(connection: Connection, documents, typed: bool) -> dict[str, set[str]]:
    """The keys of the documents, with (when ``typed``) the JSON types each takes. Numbers are "integer" when whole
    and within 64 bits, else "float" (JSON that reaches the database holds no number beyond a double's range)."""
    # GROUP BY lets parallel workers reduce the keys before they reach the leader (DISTINCT gathers every key).
    if not typed:
        names = func.jsonb_object_keys(documents).table_valued("key").render_derived("names")
        grouped = select(names.c.key).select_from(documents.table).join(names, true()).group_by(names.c.key)
        return {key: set() for (key,) in connection.execute(grouped)}
    # One scan of keys and values together: measured on 1M records of 12 keys, 6.2 s against 7.9 s for a scan of
    # the keys, then one of each key's types.
    pairs = func.jsonb_each(documents).table_valued("key", sql_column("value", JSONB())).render_derived("pairs")
    grouped = (
        select(pairs.c.key, func.bit_or(_kind_bit(pairs.c.value)))
        .select_from(documents.table)
        .join(pairs, true())
        .group_by(pairs.c.key)
    )
    return {key: _kinds(bits) for key, bits in connection.execute(grouped)}


def _kinds(bits: int) -> set[str]:
    """The JSON types whose ``KIND_BITS`` are set in ``bits``."""
    return {kind for kind, bit in KIND_BITS.items() if bits & bit}


def _kind_bit(value):
    """The bit of a JSON value's type, as a simple CASE: a searched one looked the key up once per branch."""
    number = cast(value, Numeric)
    whole = and_(func.scale(number) == 0, func.abs(number) < literal(Decimal(2**63), Numeric))
    bits = {"number": case((whole, KIND_BITS["integer"]), else_=KIND_BITS["float"])}
    bits.update((kind, KIND_BITS[kind]) for kind in ("string", "boolean", "object", "array"))
    return case(bits, value=func.jsonb_typeof(value), else_=0)


def _sqlite_kinds(connection: Connection, documents) -> dict[str, set[str]]:
    """Each (key, JSON type) pair of the documents, in one grouped scan."""
    pairs = func.json_each(documents).table_valued("key", "type", "atom")
    kind = case(
        (pairs.c.type.in_(("true", "false")), "boolean"),
        # SQLite calls a whole number beyond 64 bits "integer" but holds it as a real.
        (pairs.c.type == "real", "float"),
        (func.typeof(pairs.c.atom) == "real", "float"),
        (pairs.c.type == "text", "string"),
        else_=pairs.c.type,
    ).label("kind")
    query = select(pairs.c.key, kind).select_from(documents.table).join(pairs, true()).group_by(pairs.c.key, kind)
    kinds: dict[str, set[str]] = {}
    for key, found in connection.execute(query):
        kinds.setdefault(key, set()).add(found)
    return kinds


def _column_type(kinds: set[str]) -> pa.DataType:
    """The column type of a key whose values took these JSON types: text when they disagree."""
    kinds = kinds - {"null"}
    for accepted, column_type in KIND_TYPES:
        if kinds and kinds <= accepted:
            return column_type
    return pa.string()


def _readable(key: str) -> str:
    """``key`` as a column name: control characters spelled out, cut to ``MAX_KEY_NAME`` characters."""
    spelled = "".join(
        {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch, f"\\u{ord(ch):04x}")
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")
        else ch
        for ch in key
    )
    return spelled if len(spelled) <= MAX_KEY_NAME else spelled[: MAX_KEY_NAME - 1] + "…"


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name~2``, ``name~3``… when another column has it (two keys alike once made readable)."""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}~{n}"
    return candidate


def _key_text(key: str):
    return Record.script_data.op("->>", return_type=String())(literal(key, String()))


def _copy_lines(connection: Connection, stmt, columns: list[Column]) -> Iterator[bytes]:
    """PostgreSQL renders the rows as CSV lines (no header), one line each: one COPY, cancelled if the stream is
    closed."""
    fields = {c.key: c for c in stmt.selected_columns}
    selected = []
    for column in columns:
        if column.key is not None:
            value = _key_text(column.key)
        elif column.name == "timestamp":
            # The spelling of the NDJSON stream (ISO 8601, "T", an explicit offset).
            value = func.to_json(fields["timestamp"]).op("#>>")(text("'{}'"))
        else:
            value = fields[column.name]
        selected.append(value.label(f"c{len(selected)}"))
    query = stmt.with_only_columns(*selected, maintain_column_froms=True)
    compiled = query.compile(dialect=connection.dialect, compile_kwargs={"render_postcompile": True})
    raw = connection.connection.driver_connection

    def lines():
        with raw.cursor() as cursor, cursor.copy(f"COPY ({compiled}) TO STDOUT (FORMAT csv)", compiled.params) as copy:
            yield from copy

    return lines()


# The SQL type each Arrow type of a column is selected as (ADBC reads each PostgreSQL type as its Arrow match).
SQL_TYPES = {pa.int64(): BigInteger, pa.float64(): Float(53), pa.bool_(): Boolean, pa.string(): Text}


def _adbc_tables(connection: Connection, stmt, columns: list[Column]) -> Iterator[pa.Table]:
    """The rows as Arrow tables of about ``BATCH_BYTES``, every column selected as its type, read by ADBC on a
    second connection in the snapshot of ``connection`` (whose transaction must stay open meanwhile). Closing the
    iterator cancels the query."""
    fields = {c.key: c for c in stmt.selected_columns}
    selected = []
    for column in columns:
        # The kinds gathered in this snapshot make every cast safe (a JSON null is an SQL null).
        value = _key_text(column.key) if column.key is not None else fields[column.name]
        if column.type in SQL_TYPES:
            value = cast(value, SQL_TYPES[column.type])
        selected.append(value.label(f"c{len(selected)}"))
    query = stmt.with_only_columns(*selected, maintain_column_froms=True)
    compiled = query.compile(dialect=connection.dialect, compile_kwargs={"render_postcompile": True})
    raw = connection.connection.driver_connection
    # psycopg quotes the parameters into the statement: ADBC would bind strings as text, which uuid columns refuse.
    sql = ClientCursor(raw).mogrify(str(compiled), compiled.params)
    snapshot = connection.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
    uri = connection.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    schema = _arrow_schema(columns)

    def tables():
        with adbc.connect(uri, autocommit=True) as second, second.cursor() as cursor:
            cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cursor.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            cursor.execute("SET LOCAL jit = off")
            cursor.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(BATCH_BYTES)})
            try:
                cursor.execute(sql)
                for batch in cursor.fetch_record_batch():
                    yield pa.Table.from_batches([batch]).rename_columns(schema.names).cast(schema)
            finally:
                cursor.adbc_cancel()

    return tables()


def _arrow_schema(columns: list[Column]) -> pa.Schema:
    """The export's columns as an Arrow schema."""
    return pa.schema([pa.field(c.name, c.type) for c in columns])


def _python_lines(connection: Connection, stmt, columns: list[Column]) -> Iterator[bytes]:
    """The same CSV lines as PostgreSQL's COPY, rendered in Python (SQLite; timestamps always spelled as in the
    NDJSON stream, which costs nothing more here)."""
    keys = [c.key for c in columns if c.key is not None]
    result = connection.execution_options(stream_results=True, yield_per=2000).execute(stmt)
    for row in result:
        values = [_csv_value(value) for value in row]
        data = row.script_data or {}
        values.extend(_csv_value(data.get(key), in_json=True) for key in keys)
        yield (",".join(values) + "\n").encode()


def _csv_value(value, in_json: bool = False) -> str:
    """One CSV field as COPY writes it: nothing for null, quotes only where needed (and for the empty string).
    Python's csv module (before 3.12) cannot tell an empty string from a null, which a Parquet export relies on."""
    if value is None:
        return ""
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, datetime):
        value = iso_utc(value)
    elif isinstance(value, date):
        value = value.isoformat()
    elif isinstance(value, dict | list) or (in_json and not isinstance(value, str)):
        value = bulk_sql.dump_json(value)
    else:
        value = str(value)
    if value == "" or re.search(r'[",\r\n]', value) or value == "\\.":
        return '"' + value.replace('"', '""') + '"'
    return value


def _joined(lines: Iterator[bytes], size: int) -> Iterator[tuple[bytes, int]]:
    """Lines gathered into chunks of about ``size`` bytes, each with the length of its longest line."""
    buffer = bytearray()
    longest = 0
    for line in lines:
        buffer += line
        longest = max(longest, len(line))
        if len(buffer) >= size:
            yield bytes(buffer), longest
            buffer.clear()
            longest = 0
    if buffer:
        yield bytes(buffer), longest


def _csv(columns: list[Column], lines: Iterator[bytes]) -> Iterator[bytes]:
    yield (",".join(_csv_value(c.name) for c in columns) + "\n").encode()
    for chunk, _ in _joined(lines, CHUNK_BYTES):
        yield chunk


class _Sink(io.RawIOBase):
    """A writable file whose written bytes are taken out as they come (the Parquet writer writes into it)."""

    def __init__(self):
        self._parts: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._parts.append(bytes(data))
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def _csv_tables(columns: list[Column], lines: Iterator[bytes]) -> Iterator[pa.Table]:
    """One table per ``ROW_GROUP_TEXT_BYTES`` of CSV lines, parsed by pyarrow with every column's type.

    Each piece is parsed from memory whole: pyarrow's streaming reader over a Python file held several times
    its blocks in memory."""
    schema = _arrow_schema(columns)
    positional = [f"c{i}" for i in range(len(columns))]
    convert = pa_csv.ConvertOptions(
        column_types=dict(zip(positional, schema.types, strict=True)),
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        true_values=["true"],
        false_values=["false"],
    )
    parse = pa_csv.ParseOptions(newlines_in_values=True)
    for piece, longest in _joined(lines, ROW_GROUP_TEXT_BYTES):
        # A block must hold a whole line. One thread: parsing on pyarrow's pool grew the process's memory by half
        # again (each thread keeps a heap).
        read = pa_csv.ReadOptions(
            column_names=positional, block_size=max(CSV_BLOCK_BYTES, 2 * longest), use_threads=False
        )
        table = pa_csv.read_csv(pa.py_buffer(piece), read_options=read, parse_options=parse, convert_options=convert)
        yield table.rename_columns(schema.names)


def _parquet(columns: list[Column], tables: Iterator[pa.Table]) -> Iterator[bytes]:
    """A Parquet file of one row group per table, written out as each comes."""
    schema = _arrow_schema(columns)
    sink = _Sink()
    with pq.ParquetWriter(sink, schema) as writer:
        try:
            for table in tables:
                writer.write_table(table)
                yield sink.take()
        finally:
            tables.close()
    yield sink.take()
