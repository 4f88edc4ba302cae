"""The one exception of the client: the API's error shape as a Python exception."""

from __future__ import annotations

from typing import Any

import requests


class APIError(Exception):
    """The API answered with an error (or a stream ended with its error line).

    ``status`` is the HTTP status (for a stream's error line, its ``code``, else 500: the 200 was sent before the
    failure); ``error`` the short title; ``error_description`` what went wrong and how to fix it; ``errors`` the
    messages per field of a validation error (422), else ``{}``.
    """

    def __init__(
        self,
        status: int,
        error: str,
        error_description: str = "",
        errors: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.error = error
        self.error_description = error_description
        self.errors: dict[str, Any] = errors or {}
        self.headers: dict[str, str] = headers or {}
        super().__init__(status, error, error_description, self.errors)

    @classmethod
    def from_response(cls, response: requests.Response) -> APIError:
        """The error an error response carries; a body that is not the API's JSON shape is kept as text."""
        headers = dict(response.headers)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return cls(response.status_code, response.reason or "Error", response.text[:500].strip(), None, headers)
        errors = body.get("errors")
        return cls(
            response.status_code,
            str(body.get("error") or response.reason or "Error"),
            str(body.get("error_description") or ""),
            errors if isinstance(errors, dict) else None,
            headers,
        )

    @classmethod
    def from_line(cls, line: dict[str, Any]) -> APIError:
        """The error a stream's final error line reports."""
        code = line.get("code")
        return cls(
            code if isinstance(code, int) else 500,
            str(line.get("error") or "Error"),
            str(line.get("error_description") or "The stream ended with an error; it is incomplete."),
        )

    def __str__(self) -> str:
        text = f"{self.status} {self.error}"
        if self.error_description:
            text += f": {self.error_description}"
        if self.errors:
            text += " (" + "; ".join(f"{field}: {_messages(value)}" for field, value in self.errors.items()) + ")"
        return text


def _messages(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(_messages(item) for item in value)
    if isinstance(value, dict):
        return "; ".join(f"{key}: {_messages(item)}" for key, item in value.items())
    return str(value)
