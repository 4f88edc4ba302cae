"""Every error the service returns, in the contract's one shape.

``{"code": <status>, "error": "<short title>", "error_description": "<what and how to fix>",
"errors": {<field>: [<messages>]}}`` — ``errors`` only for field validation. Services raise the exceptions
below; ``register_error_handlers`` maps them, werkzeug's HTTP errors and anything unexpected to that shape.
"""

import logging

from flask import Flask, jsonify
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException, InternalServerError

from webapp.database import Database

log = logging.getLogger(__name__)


class APIError(Exception):
    """Base of the errors a service raises on purpose; carries the status and description."""

    status_code = 400

    def __init__(self, description: str, errors: dict | None = None, headers: dict | None = None):
        super().__init__(description)
        self.description = description
        self.errors = errors
        self.headers = headers or {}


class NotFoundError(APIError):
    status_code = 404


class ConflictError(APIError):
    status_code = 409


class ValidationError(APIError):
    """A request that is well-formed but whose values cannot be accepted (422)."""

    status_code = 422

    def __init__(self, errors: dict[str, str]):
        super().__init__(
            "; ".join(f"{field}: {message}" for field, message in errors.items()),
            errors={field: [message] for field, message in errors.items()},
        )


class UnauthorizedError(APIError):
    """Missing or bad credentials (401)."""

    status_code = 401

    def __init__(self, description: str):
        super().__init__(description, headers={"WWW-Authenticate": 'Bearer realm="scriptorium"'})


class ForbiddenError(APIError):
    """Valid credentials without the rights the request needs (403)."""

    status_code = 403


class UnsupportedMediaTypeError(APIError):
    status_code = 415


class StorageError(APIError):
    """The object store failed; the client may retry, after ``Retry-After`` seconds."""

    status_code = 503

    def __init__(self, description: str):
        super().__init__(description, headers={"Retry-After": "5"})


TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def error_response(code: int, description: str, errors: dict | None = None, headers: dict | None = None):
    """Build a response in the one error shape."""
    body = {"code": code, "error": TITLES.get(code, "Error"), "error_description": description}
    if errors:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = code
    response.headers.update(headers or {})
    return response


def flatten_validation_messages(messages: dict) -> dict:
    """Merge webargs' per-location messages (``{"json": {...}, "query": {...}}``) into one field map."""
    flat: dict[str, list] = {}
    for location_messages in messages.values():
        if not isinstance(location_messages, dict):
            flat.setdefault("_body", []).extend(_as_list(location_messages))
            continue
        for field, field_messages in location_messages.items():
            name = "_body" if field == "_schema" else field
            flat.setdefault(name, []).extend(_as_list(field_messages))
    return flat


def _as_list(messages) -> list:
    if isinstance(messages, list):
        return [m if isinstance(m, str) else str(m) for m in messages]
    if isinstance(messages, dict):  # per-item messages of a list field, keyed by index
        return [
            f"item {int(key) + 1 if str(key).isdigit() else key}: {' '.join(_as_list(value))}"
            for key, value in messages.items()
        ]
    return [str(messages)]


def handle_http_exception(error: HTTPException):
    """Render werkzeug HTTP errors, including webargs' validation aborts, in the one shape."""
    if isinstance(error, InternalServerError):
        return handle_unexpected(error.original_exception or error)
    data = getattr(error, "data", None) or {}
    errors = flatten_validation_messages(data["messages"]) if "messages" in data else data.get("errors")
    description = data.get("message") or error.description
    if errors:
        description = "The request has invalid fields: " + "; ".join(
            f"{field}: {' '.join(msgs)}" for field, msgs in errors.items()
        )
    response = error_response(error.code or 500, description, errors, data.get("headers"))
    if error.code == 405 and hasattr(error, "valid_methods") and error.valid_methods:
        response.headers["Allow"] = ", ".join(error.valid_methods)
    return response


def handle_api_error(error: APIError):
    """Render the errors services raise on purpose."""
    return error_response(error.status_code, error.description, error.errors, error.headers)


def handle_database_error(error: DBAPIError):
    """Concurrent requests that collided in the database are a 409 to retry, a connection the database
    dropped is a 503 to retry (the pool replaces it); anything else is a bug."""
    if error.connection_invalidated:
        log.warning("The database dropped a connection: %s", error.orig)
        return error_response(503, "The database connection was lost; retry the request.", headers={"Retry-After": "1"})
    if Database.is_collision(error):
        return error_response(
            409, "A concurrent change collided with this request; retry it.", headers={"Retry-After": "1"}
        )
    return handle_unexpected(error)


def handle_unexpected(error: BaseException):
    """Log a bug and answer 500 without leaking internals."""
    log.exception("Unhandled error", exc_info=error)
    return error_response(500, "The server hit an unexpected error; it has been logged.")


def register_error_handlers(app: Flask) -> None:
    """Route every exception family to the one error shape."""
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(APIError, handle_api_error)
    app.register_error_handler(DBAPIError, handle_database_error)
    app.register_error_handler(Exception, handle_unexpected)
