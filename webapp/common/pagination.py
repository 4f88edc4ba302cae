"""Limit/offset paging of a SQLAlchemy ``select()``."""

from sqlalchemy import Select, func, select

from webapp.extensions import db


def fetch_page(stmt: Select, *, limit: int, offset: int) -> tuple[list, int]:
    """Return one page of ``stmt``'s rows and the total count.

    The count rides along with the page as a window function (one round trip); only a page with no rows, where
    there is nothing to carry it, counts on its own.
    """
    session = db.session
    if limit > 0:
        total_column = func.count().over().label("page_total")
        rows = session.execute(stmt.add_columns(total_column).limit(limit).offset(offset)).unique().all()
        if rows:
            return [row[0] for row in rows], rows[0][-1]
        if offset == 0:
            return [], 0
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    return [], total
