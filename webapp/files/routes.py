"""Serve files of the local-folder store to holders of a valid signed URL."""

from flask import Blueprint, send_file

from webapp.auth import public
from webapp.errors import NotFoundError
from webapp.extensions import store
from webapp.storage import LocalBackend, content_disposition

blp = Blueprint("files", __name__, url_prefix="/files")


@blp.get("/<token>")
@public
def download(token: str):
    """Send the file a signed token names; a forged, tampered or expired token is a 404."""
    backend = store.backend
    payload = backend.read_token(token) if isinstance(backend, LocalBackend) else None
    if payload is None:
        raise NotFoundError("This download link is invalid or has expired; ask the API for a new one.")
    path = backend.path_of(payload["key"])
    if not path.is_file():
        raise NotFoundError("The file of this download link no longer exists.")
    response = send_file(path, mimetype=payload["type"], conditional=True, max_age=0)
    response.headers["Content-Disposition"] = content_disposition(payload["name"])
    return response
