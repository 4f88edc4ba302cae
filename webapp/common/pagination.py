"""Limit/offset paging of a SQLAlchemy ``select()``."""

from sqlalchemy import Select, func, select

from webapp.extensions import db


def fetch_page(stmt: Select, *, limit: int, offset: int) -> tuple[list, int]:
    """Return one page of ``stmt``'s rows and the total count (counted through a subquery)."""
    session = db.session
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    if limit == 0 or offset >= total:
        return [], total
    items = session.scalars(stmt.limit(limit).offset(offset)).unique().all()
    return list(items), total
