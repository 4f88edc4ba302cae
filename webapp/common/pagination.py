"""Limit/offset paging of a SQLAlchemy ``select()``."""

import marshmallow as ma
from sqlalchemy import BigInteger, Select, bindparam, cast, func, literal, select
from sqlalchemy.types import Text as TextType

from webapp.extensions import db
from webapp.fields import JSONObject, Text, Timestamp

# Fields whose JSON PostgreSQL writes exactly as their marshmallow formatting does (timestamps as iso_utc does,
# the connection's zone being UTC): a page of those is written by the database, not by Python.
DATABASE_JSON_FIELDS = (ma.fields.UUID, ma.fields.String, Text, Timestamp, JSONObject, ma.fields.Integer)
# No table holds this many rows; past it the page is empty without asking, as the databases take no larger offset.
MAX_OFFSET = 2**62


def fetch_page(stmt: Select, *, limit: int, offset: int, plain_rows: bool = False) -> tuple[list, int]:
    """Return one page of ``stmt``'s rows and the total count.

    The count rides along with the page as a window function (one round trip); only a page with no rows, where
    there is nothing to carry it, counts on its own. With ``plain_rows`` the page is read outside the request's
    transaction as column mappings, not ORM objects: no BEGIN and ROLLBACK around it, and no identity map to fill.
    """
    total_column = func.count().over().label("page_total")
    if offset > MAX_OFFSET:
        limit = 0
    if plain_rows:
        with db.autocommit() as connection:
            if limit > 0:
                rows = connection.execute(stmt.add_columns(total_column).limit(limit).offset(offset)).all()
                if rows:
                    return [row._mapping for row in rows], rows[0][-1]
                if offset == 0:
                    return [], 0
            return [], connection.scalar(_count(stmt))
    session = db.session
    if limit > 0:
        rows = session.execute(stmt.add_columns(total_column).limit(limit).offset(offset)).unique().all()
        if rows:
            return [row[0] for row in rows], rows[0][-1]
        if offset == 0:
            return [], 0
    return [], session.scalar(_count(stmt))


def database_json(schema: ma.Schema, stmt: Select):
    """The SQL of a JSON object of ``schema``'s fields for a row of ``stmt``, when the database may write it
    itself (PostgreSQL, every field a column of ``stmt`` of a kind in DATABASE_JSON_FIELDS); else None."""
    if not db.is_postgresql:
        return None
    columns = stmt.selected_columns
    parts = []
    for name, field in schema.dump_fields.items():
        attribute = field.attribute if field.attribute is not None else name
        if type(field) not in DATABASE_JSON_FIELDS or field.dump_default is not ma.missing or attribute not in columns:
            return None
        parts += [literal(field.data_key if field.data_key is not None else name), columns[attribute]]
    return cast(func.json_build_object(*parts), TextType)


def json_page(stmt: Select, document) -> Select:
    """A page of ``stmt``'s rows as the JSON ``document`` that ``database_json`` gives, each with the total count;
    ``page_limit`` and ``page_offset`` are its parameters."""
    page = stmt.with_only_columns(document, func.count().over())
    return page.limit(bindparam("page_limit", type_=BigInteger)).offset(bindparam("page_offset", type_=BigInteger))


def fetch_json_page(stmt: Select, page: Select, *, limit: int, offset: int, constant: bool) -> tuple[bytes, int]:
    """One page (``json_page`` of ``stmt``) as a JSON array the database wrote and the total count, in one round
    trip outside the request's transaction. A ``constant`` page (a statement built once) runs through
    ``db.rows``, its SQL compiled once."""
    limit = 0 if offset > MAX_OFFSET else limit
    params = {"page_limit": limit, "page_offset": offset}
    rows = []
    if limit > 0 and constant:
        rows = db.rows(page, params)
    elif limit > 0:
        with db.autocommit() as connection:
            rows = connection.execute(page, params).all()
    if rows or (offset == 0 and limit > 0):
        total = rows[0][1] if rows else 0
    else:
        with db.autocommit() as connection:
            total = connection.scalar(_count(stmt))
    return ("[" + ",".join(row[0] for row in rows) + "]\n").encode(), total


def _count(stmt: Select) -> Select:
    """How many rows ``stmt`` matches, counted through a subquery."""
    return select(func.count()).select_from(stmt.order_by(None).subquery())
