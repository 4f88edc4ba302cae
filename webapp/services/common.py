"""Helpers every service uses: lookups that 404 and commits that turn constraint violations into 409s."""

import uuid

from sqlalchemy import delete as sa_delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from webapp.errors import ConflictError, NotFoundError
from webapp.extensions import db

# Re-exported for the services that take their new ids from here; webapp.fields is its one home.


def get_or_404(model, object_id: uuid.UUID, label: str | None = None):
    """The ``model`` row with ``object_id``, or a 404 naming what was not found."""
    obj = db.session.get(model, object_id)
    if obj is None:
        raise not_found(label or model.__tablename__.rstrip("s"), object_id)
    return obj


def not_found(label: str, object_id: uuid.UUID) -> NotFoundError:
    """The 404 for an id that names no ``label``."""
    return NotFoundError(f"No {label} has the id {object_id}.")


def commit(conflict: str) -> None:
    """Commit the session; a unique or foreign-key violation rolls back and becomes a 409 ``conflict``, and
    a row deleted by a concurrent request meanwhile becomes a 404."""
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        raise ConflictError(conflict) from exc
    except StaleDataError as exc:
        db.session.rollback()
        raise NotFoundError("It was deleted by another request meanwhile.") from exc


def update_fields(obj, values: dict) -> None:
    """Set the given attributes of ``obj`` (``None`` clears an optional field)."""
    for name, value in values.items():
        setattr(obj, name, value)


def delete(obj, conflict: str):
    """Delete ``obj`` (the database cascades to what it owns) and return it; 409 while other rows still
    reference it, 404 when a concurrent request deleted it first."""
    model, object_id = type(obj), obj.id
    try:
        result = db.session.execute(sa_delete(model).where(model.id == object_id))
    except IntegrityError as exc:
        db.session.rollback()
        raise ConflictError(conflict) from exc
    if result.rowcount != 1:
        db.session.rollback()
        raise NotFoundError(f"No {model.__tablename__.rstrip('s')} has the id {object_id}.")
    commit(conflict)
    db.session.expunge(obj)
    return obj
