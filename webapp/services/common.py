"""Helpers every service uses: lookups that 404 and commits that turn constraint violations into 409s."""

import uuid

from sqlalchemy.exc import IntegrityError

from webapp.errors import ConflictError, NotFoundError
from webapp.extensions import db


def get_or_404(model, object_id: uuid.UUID, label: str | None = None):
    """The ``model`` row with ``object_id``, or a 404 naming what was not found."""
    obj = db.session.get(model, object_id)
    if obj is None:
        raise NotFoundError(f"No {label or model.__tablename__.rstrip('s')} has the id {object_id}.")
    return obj


def commit(conflict: str) -> None:
    """Commit the session; a unique or foreign-key violation rolls back and becomes a 409 ``conflict``."""
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        raise ConflictError(conflict) from exc


def update_fields(obj, values: dict) -> None:
    """Set the given attributes of ``obj`` (``None`` clears an optional field)."""
    for name, value in values.items():
        setattr(obj, name, value)


def delete(obj, conflict: str):
    """Delete ``obj`` and return it; when other rows still reference it, nothing changes (409)."""
    db.session.delete(obj)
    commit(conflict)
    return obj


def new_id() -> uuid.UUID:
    """A fresh random id, for rows whose id is needed before they are stored."""
    return uuid.uuid4()
