"""Thin project subclasses of flask-smorest's Api, Blueprint and marshmallow's Schema.

Project-wide behaviour has exactly one home here: the error shape, the media-type check of request bodies,
the unknown-field policy (bodies reject unknown fields, query strings ignore them), limit/offset paging, and
the error responses every operation documents (credentials, rights, bodies, collisions, a lost database).
"""

import json
from collections.abc import Callable
from functools import wraps

import flask_smorest
import marshmallow as ma
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.ext.marshmallow.common import resolve_schema_instance
from apispec.ext.marshmallow.openapi import OpenAPIConverter
from flask import Response, request
from webargs.flaskparser import FlaskParser
from webargs.multidictproxy import MultiDictProxy
from werkzeug.datastructures import CombinedMultiDict

from webapp import errors
from webapp.common.pagination import database_json, fetch_json_page, fetch_page, json_page
from webapp.extensions import db
from webapp.fields import JSONObject, Text

SAFE_METHODS = ("get", "head", "options")
# Errors an operation may answer besides its own, by status: flask-smorest's response of that status name, in
# the error shape. Which operations each applies to is in Blueprint._prepare_common_errors_doc.
COMMON_ERRORS = {
    "400": "BAD_REQUEST",  # any request: a malformed request line or header (nginx); bodies: malformed JSON or form
    "414": "REQUEST_URI_TOO_LONG",  # any request: a request line over 4 KB (nginx)
    "431": "REQUEST_HEADER_FIELDS_TOO_LARGE",  # any request: a header line over 4 KB, or 16 KB of them (nginx)
    "401": "UNAUTHORIZED",  # operations that need credentials
    "403": "FORBIDDEN",  # writes: the writer role, or a session's CSRF token
    "409": "CONFLICT",  # writes: concurrent requests collided in the database (with Retry-After)
    "413": "REQUEST_ENTITY_TOO_LARGE",  # bodies over the configured maximum
    "415": "UNSUPPORTED_MEDIA_TYPE",  # bodies of another media type
    "503": "SERVICE_UNAVAILABLE",  # the database (or the object store) could not be reached (with Retry-After)
}
# What nginx, in front in production (deploy/nginx), may answer to any request before the app sees it.
REQUEST_ERRORS = ("400", "414", "431")
JSON_TYPES = ("application/json",)
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
BODY_MEDIA_TYPES = {"json": JSON_TYPES, "form": FORM_TYPES, "files": FORM_TYPES, "multipart": FORM_TYPES}


class Parser(FlaskParser):
    """webargs parser with a ``multipart`` location: form fields and files parsed as one body."""

    __location_map__ = {**FlaskParser.__location_map__, "multipart": "load_multipart"}
    DEFAULT_UNKNOWN_BY_LOCATION = {**FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION, "multipart": None}

    def _raw_load_json(self, req):
        # The standard library's decoder raises RecursionError for absurd nesting and ValueError for integers
        # of over 4300 digits: both are a malformed body (400), not a server error.
        try:
            return super()._raw_load_json(req)
        except (RecursionError, ValueError) as exc:
            return self._handle_invalid_json_error(json.JSONDecodeError(str(exc), "", 0), req)

    def load_multipart(self, req, schema):
        """Form fields and uploaded files together, so one schema (and one OpenAPI body) covers both."""
        return MultiDictProxy(CombinedMultiDict([req.form, req.files]), schema)


class Schema(ma.Schema):
    """Base schema of request and response bodies: unknown fields are an error.

    Dumping reads each field's value and formats it directly when nothing of marshmallow's generic path would
    change the result (no custom accessors, defaults or dotted attributes), which makes a list several times faster.
    """

    class Meta:
        unknown = ma.RAISE

    def _serialize(self, obj, *, many: bool = False):
        plan = self.__dict__.get("_dump_plan", False)
        if plan is False:
            plan = self.__dict__["_dump_plan"] = self._make_dump_plan()
        if plan is None:
            return super()._serialize(obj, many=many)
        if many and obj is not None:
            return [self._dump_one(plan, item) for item in obj]
        return self._dump_one(plan, obj)

    def _make_dump_plan(self) -> list | None:
        """(key, attribute, formatter) for each dumped field; None when one needs marshmallow's generic path."""
        if type(self).get_attribute is not ma.Schema.get_attribute:
            return None
        plan = []
        for name, field in self.dump_fields.items():
            attribute = field.attribute if field.attribute is not None else name
            generic = (
                type(field).serialize is not ma.fields.Field.serialize
                or type(field).get_value is not ma.fields.Field.get_value
                or not field._CHECK_ATTRIBUTE
                or field.dump_default is not ma.missing
                or "." in attribute
            )
            if generic:
                return None
            plan.append((field.data_key if field.data_key is not None else name, attribute, field._serialize))
        return plan

    def _dump_one(self, plan: list, obj) -> dict:
        result = self.dict_class()
        # marshmallow.utils.get_value without the dotted paths: an item first, else an attribute.
        if hasattr(obj, "__getitem__"):
            for key, attribute, formatter in plan:
                try:
                    value = obj[attribute]
                except (KeyError, IndexError, TypeError, AttributeError):
                    value = getattr(obj, attribute, ma.missing)
                if value is not ma.missing:
                    result[key] = formatter(value, attribute, obj)
        else:
            for key, attribute, formatter in plan:
                value = getattr(obj, attribute, ma.missing)
                if value is not ma.missing:
                    result[key] = formatter(value, attribute, obj)
        return result


class ResponseSchema(Schema):
    """Base of schemas that are only ever sent: every field is in every response, null where empty."""


class QueryArgsSchema(ma.Schema):
    """Base schema of query strings: unknown parameters are ignored."""

    class Meta:
        unknown = ma.EXCLUDE


class PageArgsSchema(QueryArgsSchema):
    limit = ma.fields.Integer(
        load_default=100,
        validate=ma.validate.Range(min=0, max=1000),
        metadata={"description": "How many items to return (0–1000)."},
    )
    offset = ma.fields.Integer(
        load_default=0,
        validate=ma.validate.Range(min=0),
        metadata={"description": "How many items to skip; past the end gives an empty list."},
    )


class ErrorSchema(ResponseSchema):
    """The one error shape of every endpoint."""

    code = ma.fields.Integer(metadata={"description": "The HTTP status."})
    error = ma.fields.String(metadata={"description": "Short title of the status."})
    error_description = ma.fields.String(metadata={"description": "What went wrong and how to fix it."})
    errors = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.List(ma.fields.String()),
        metadata={"description": "Field validation messages, by field (validation errors only)."},
    )

    class Meta(ResponseSchema.Meta):
        optional = ("errors",)


class Converter(OpenAPIConverter):
    """apispec's converter, listing as required the fields every response carries: all of a ResponseSchema's
    (but those its ``Meta.optional`` names), and the read-only ones of the others (read-only fields are never
    sent, so this binds responses only); text fields say they hold no NUL."""

    def init_attribute_functions(self):
        super().init_attribute_functions()
        self.attribute_functions.append(self.storable_text)

    def storable_text(self, field, ret, **kwargs) -> dict:
        """Text fields refuse NUL characters (422), which no UTF-8 database column stores: say so."""
        return {"pattern": "^[^\\u0000]*$"} if isinstance(field, Text) and "pattern" not in ret else {}

    def schema2jsonschema(self, schema):
        jsonschema = super().schema2jsonschema(schema)
        instance = resolve_schema_instance(schema)
        complete = isinstance(instance, ResponseSchema)
        optional = getattr(instance.Meta, "optional", ())
        required = list(jsonschema.get("required", []))
        for name, field in instance.fields.items():
            key = field.data_key or name
            if (field.dump_only or complete) and not field.load_only and name not in optional and key not in required:
                required.append(key)
        if required:
            jsonschema["required"] = required
        return jsonschema


class Plugin(MarshmallowPlugin):
    Converter = Converter


def _require_media_type(accepted: tuple[str, ...]) -> None:
    has_body = bool(request.content_length) or request.headers.get("Transfer-Encoding") == "chunked"
    if has_body and request.mimetype not in accepted:
        raise errors.UnsupportedMediaTypeError(
            f"The body must be sent as {' or '.join(accepted)}, not {request.mimetype or 'an untyped body'}."
        )


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest Blueprint that checks body media types, pages ``select()`` results and documents the
    errors every operation may answer. ``public=True``: its operations need no credentials (see webapp/auth.py)."""

    ARGUMENTS_PARSER = Parser()
    DEFAULT_LOCATION_CONTENT_TYPE_MAPPING = {
        **flask_smorest.Blueprint.DEFAULT_LOCATION_CONTENT_TYPE_MAPPING,
        "multipart": "multipart/form-data",
    }

    def __init__(self, *args, public: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.public = public
        self._prepare_doc_cbks.append(self._prepare_common_errors_doc)

    def _prepare_common_errors_doc(self, doc, doc_info, *, method, **kwargs):
        """Document the errors that come from outside the view: the proxy, credentials, bodies, the database."""
        responses = doc.setdefault("responses", {})
        if self.public:
            doc["security"] = []
        applies = {
            **dict.fromkeys(REQUEST_ERRORS, True),
            **dict.fromkeys(("401", "503"), not self.public),
            **dict.fromkeys(("403", "409"), not self.public and method not in SAFE_METHODS),
            **dict.fromkeys(("413", "415"), "requestBody" in doc),
        }
        for status, component in COMMON_ERRORS.items():
            if applies[status]:
                responses.setdefault(status, component)
        return doc

    def alt_response(self, status_code, response=None, *, schema=None, **kwargs):
        """Document another response; an error response without a schema has the error shape."""
        if response is None and schema is None and int(status_code) >= 400:
            schema = ErrorSchema
        return super().alt_response(status_code, response, schema=schema, **kwargs)

    def arguments(self, schema, *, location="json", **kwargs):
        """Parse ``schema`` from ``location``; a body of the wrong media type is 415, not a 422."""
        # One instance for every request: given a class, webargs would build (and deep-copy the fields of)
        # a new schema on each one.
        schema = schema() if isinstance(schema, type) else schema
        parse = super().arguments(schema, location=location, **kwargs)
        accepted = BODY_MEDIA_TYPES.get(location)
        if accepted is None:
            return parse

        def decorator(func):
            parsed = parse(func)

            @wraps(parsed)
            def checked(*args, **kw):
                _require_media_type(accepted)
                return parsed(*args, **kw)

            return checked

        return decorator

    def paginate(self, *, not_found: str | None = None, rows_as: type[ma.Schema] | None = None, constant: bool = False):
        """Page a view returning a ``select()``: ``limit``/``offset`` arguments, ``X-Total-Count`` header.

        With ``not_found``, a query matching nothing at all is a 404 with that description. ``rows_as``, the
        response schema when all its fields are table columns: the page is read as rows, not ORM objects, and
        on PostgreSQL written as JSON by the database when it can (see ``fetch_page`` and ``fetch_json_page``).
        ``constant``: the view always returns the same statement object, whose page SQL is then built once.
        """
        schema = rows_as() if rows_as is not None else None
        documents = {}  # by the columns a statement selects and the dialect: built once, not on every request
        pages = {}  # of a constant statement, by dialect: its JSON page, or None when the database writes no JSON

        def json_page_of(stmt, dialect: str):
            """``stmt``'s page as JSON written by the database, or None when it cannot write it."""
            key = (dialect, *stmt.selected_columns)
            if key not in documents:
                documents[key] = database_json(schema, stmt)
            return None if documents[key] is None else json_page(stmt, documents[key])

        def decorator(func):
            @wraps(func)
            def paged(*args, limit, offset, **kwargs):
                stmt = func(*args, **kwargs)
                page = None
                if schema is not None:
                    dialect = db.engine.dialect.name
                    if not constant:
                        page = json_page_of(stmt, dialect)
                    elif dialect in pages:
                        page = pages[dialect]
                    else:
                        page = pages[dialect] = json_page_of(stmt, dialect)
                if page is not None:
                    body, total = fetch_json_page(stmt, page, limit=limit, offset=offset, constant=constant)
                    if total == 0 and not_found:
                        raise errors.NotFoundError(not_found)
                    return Response(body, mimetype="application/json"), 200, {"X-Total-Count": str(total)}
                items, total = fetch_page(stmt, limit=limit, offset=offset, plain_rows=schema is not None)
                if total == 0 and not_found:
                    raise errors.NotFoundError(not_found)
                return items, 200, {"X-Total-Count": str(total)}

            parsed = self.arguments(PageArgsSchema, location="query", as_kwargs=True)(paged)
            first_page = PageArgsSchema().load({})

            @wraps(parsed)
            def paged_as_asked(*args, **kwargs):
                # Most calls send neither parameter: their defaults need no parsing of the query string.
                if "limit" in request.args or "offset" in request.args:
                    return parsed(*args, **kwargs)
                return paged(*args, **first_page, **kwargs)

            return paged_as_asked

        return decorator

    def row(self, *, rows_as: type[ma.Schema], not_found: Callable[..., Exception]):
        """Answer the one row a view's ``(statement, parameters)`` reads, or raise what ``not_found`` makes of the
        view's arguments. The statement is a module-level constant whose columns are ``rows_as``'s
        fields; it is read outside the request's transaction (``db.rows``), and on PostgreSQL the database writes
        the JSON (see ``database_json``)."""
        schema = rows_as()
        plans = {}  # by dialect and statement: (the statement to run, whether it selects the JSON)

        def decorator(func):
            @wraps(func)
            def read(*args, **kwargs):
                stmt, params = func(*args, **kwargs)
                key = (db.engine.dialect.name, stmt)
                if key not in plans:
                    document = database_json(schema, stmt)
                    plans[key] = (stmt, False) if document is None else (stmt.with_only_columns(document), True)
                query, as_json = plans[key]
                rows = db.rows(query, params)
                if not rows:
                    raise not_found(**kwargs)
                if as_json:
                    return Response(rows[0][0] + "\n", mimetype="application/json")
                return dict(zip(query.selected_columns.keys(), rows[0], strict=True))

            return read

        return decorator


class Api(flask_smorest.Api):
    """flask-smorest Api rendering every error in the contract's shape."""

    ERROR_SCHEMA = ErrorSchema
    # Every status an operation answers is documented (COMMON_ERRORS, and each view's own): no catch-all.
    DEFAULT_ERROR_RESPONSE_NAME = None

    def init_app(self, app, *, spec_kwargs=None):
        """Bind to ``app`` and teach the OpenAPI generator the project's conventions and custom fields."""
        super().init_app(app, spec_kwargs={"marshmallow_plugin": Plugin(), **(spec_kwargs or {})})
        self.register_field(JSONObject, "object", None)

    def _register_error_handlers(self):
        errors.register_error_handlers(self._app)

    def handle_http_exception(self, error):
        return errors.handle_http_exception(error)
