"""The record contract: what a record is, what makes one valid, and how its names become ids.

A record is one time-stamped observation of a script, sent as a multipart form (``POST …/records``) or as a row of a
bulk upload. Its fields (``RecordFields``):

- ``timestamp`` (required): ISO 8601; without an offset it is UTC. It is stored in UTC.
- ``experiment_name``, ``season_name``, ``site_name`` (required), ``dataset_name``: names of 1–255 characters.
- ``collection_date``: defaults to the timestamp's date in the timestamp's own offset.
- ``dataset_name`` defaults to ``<script_name> Dataset <collection_date>`` (the script name shortened to keep it
  within 255 characters).
- ``script_run_id``: optional, a run that produced the record.
- ``script_data``, ``record_info``: JSON objects (or strings holding one), default ``{}``.
- Text holds no NUL or unpaired surrogate, JSON no NaN and at most 64 levels (``webapp/fields.py``); a field the
  contract does not name is refused.
- Rules across fields are the schema's ``@validates_schema`` methods; ``record_rule`` adds one without a subclass
  (``follow_the_record_rules`` runs them).

``RecordFields.load_record`` is the one validation of those fields: the single POST reaches it through
``RecordFields.load`` (which webargs calls to parse the form), bulk rows call it directly, with the upload's
defaults for the fields a row lacks. It runs each field, then the schema's field and schema-level validators, as
``Schema.load`` does (a test holds them equal), without its per-call machinery: 1.7 times as fast, and bulk rows
pass through it by the million.

What must exist (``REFERENCES``, ``OWN_RUN``): the script (else 404); the experiment, the season in that
experiment and the site (else 422 naming each missing one, messages by ``services/names.py``); the run, when given,
must be one of the script's (else 422). A missing dataset is created. A stored record associates its script,
dataset and experiment pairwise (``ASSOCIATIONS``).

A duplicate is a second record with the same script, dataset, experiment, season, site and timestamp (the table's
unique key): a single POST answers 409 (``duplicate_error``), a bulk row counts as a duplicate; the stored record
stays as it was.

Two ways of resolving the names into ids derive from ``REFERENCES``: ``RECORD_BY_NAMES``, the single statement
that stores the usual record, joins each reference on its ``match`` and checks the run with ``OWN_RUN`` and the
associations with ``ASSOCIATIONS``; ``RecordReferences``, the step-by-step resolution, looks the places up with the
same ``match`` conditions (``PLACES_BY_NAME``), checks the run with the same ``OWN_RUN``, and creates what is
missing (the dataset; the caller adds the associations). The statement selects nothing whenever the step-by-step
path would refuse the record or have anything to create; then that path runs, and it alone says what is wrong. So
the fast statement only ever stores what the step-by-step path would store.
"""

import functools
import math
import operator
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date
from typing import NamedTuple

import marshmallow as ma
from marshmallow.decorators import POST_LOAD, PRE_LOAD, VALIDATES, VALIDATES_SCHEMA
from marshmallow.exceptions import SCHEMA
from sqlalchemy import Uuid, bindparam, exists, select
from sqlalchemy.sql import ColumnElement

from webapp.errors import ConflictError, ValidationError
from webapp.extensions import db
from webapp.fields import JSONObject, Text, Timestamp, unstorable_text
from webapp.models import (
    Dataset,
    Experiment,
    Record,
    Script,
    ScriptRun,
    Season,
    Site,
    dataset_experiments,
    script_datasets,
    script_experiments,
)
from webapp.services.names import missing_names
from webapp.services.scripts import find_or_create_dataset

NAME = ma.validate.Length(min=1, max=255)
# Functions of a record's loaded values that raise ma.ValidationError: rules across its fields (see record_rule).
RECORD_RULES: list[Callable[[dict], None]] = []


def record_rule(rule: Callable[[dict], None]) -> Callable[[dict], None]:
    """Make ``rule`` (a function of a record's loaded values raising ``ma.ValidationError``) a rule every record
    must pass, single or bulk; returns it, so it can decorate the function."""
    RECORD_RULES.append(rule)
    return rule


class RecordFields(ma.Schema):
    """The fields of one record as a client sends them: a form, or a row of a bulk upload."""

    class Meta:
        unknown = ma.RAISE

    timestamp = Timestamp(required=True, metadata={"description": "ISO 8601; without an offset, UTC."})
    collection_date = ma.fields.Date(metadata={"description": "Default: the timestamp's date in its offset."})
    script_data = JSONObject(load_default=dict)
    dataset_name = Text(
        validate=NAME,
        metadata={"description": "Default '<script_name> Dataset <collection_date>'; created when missing."},
    )
    experiment_name = Text(required=True, validate=NAME)
    season_name = Text(required=True, validate=NAME)
    site_name = Text(required=True, validate=NAME)
    script_run_id = ma.fields.UUID(metadata={"description": "A run of this script that produced the record."})
    record_info = JSONObject(load_default=dict)

    @ma.validates_schema
    def follow_the_record_rules(self, values: dict, **kwargs) -> None:
        """The rules registered with ``record_rule``."""
        for rule in RECORD_RULES:
            rule(values)

    def load(self, data, *, many=None, partial=None, unknown=None):
        """One record through ``load_record``; 422 (``ma.ValidationError``) naming every problem. A record is
        loaded alone and whole, refusing unknown fields: marshmallow's options to do otherwise are refused."""
        if many or partial or unknown not in (None, ma.RAISE):
            raise TypeError("A record is loaded alone and whole, refusing unknown fields.")
        values, errors = self.load_record(data)
        if errors:
            raise ma.ValidationError(errors, data=data, valid_data=values)
        return values

    def load_record(self, raw: Mapping, defaults: dict | None = None) -> tuple[dict, dict]:
        """The one validation of a record: ``raw``'s fields, then the schema's validators; ``defaults`` are
        values loaded already (``load_defaults``) for fields ``raw`` lacks. Returns (values, errors by field)."""
        if not isinstance(raw, dict) and not isinstance(raw, Mapping):
            return {}, {SCHEMA: ["Invalid input type."]}
        return self._loader.load(raw, defaults or {})

    def load_defaults(self, raw: Mapping) -> tuple[dict, dict]:
        """Values for the fields rows may lack, loaded once for all of them: each field alone (the rules across
        fields apply to each whole row, in ``load_record``). Returns (values, errors by field)."""
        return _Loader(self, only=raw.keys(), validate=False).load(raw, {})

    @functools.cached_property
    def _loader(self) -> "_Loader":
        return _Loader(self)


class _Loader:
    """``Schema.load`` for one flat record without its per-call machinery (1.7 times as fast): each field,
    then the field validators (``@validates``) and schema validators (``@validates_schema``) the schema declares,
    found in marshmallow's own list of its hooks and run as ``Schema.load`` runs them. What to do for each field
    and validator is worked out once, here. A schema transforming what it loads (pre_load, post_load), which this
    does not run, is refused."""

    def __init__(self, schema: ma.Schema, only=None, validate: bool = True):
        hooks = type(schema).resolve_hooks()
        if hooks[PRE_LOAD] or hooks[POST_LOAD]:
            raise TypeError(f"{type(schema).__name__} may not transform what it loads (pre_load, post_load).")
        self.fields = {name: f for name, f in schema.load_fields.items() if only is None or name in only}
        self.quick = {name: quick for name, f in self.fields.items() if (quick := _quick_deserializer(f)) is not None}
        # For a field the data lacks: its message when it is required, else what it defaults to (or ma.missing).
        self.absent = tuple(
            (name, field.error_messages["required"] if field.required else None, field.load_default)
            for name, field in self.fields.items()
        )
        self.field_validators = tuple(
            (getattr(schema, name), options["field_names"]) for name, _, options in hooks[VALIDATES] if validate
        )
        self.schema_validators = tuple(
            (getattr(schema, name), options["pass_original"], options["skip_on_field_errors"])
            for name, _, options in hooks[VALIDATES_SCHEMA]
            if validate
        )

    def load(self, raw: Mapping, defaults: dict) -> tuple[dict, dict]:
        """(values, errors by field) of ``raw``, ``defaults`` filling in fields it lacks."""
        values, errors = {}, {}
        for name, value in raw.items():
            field = self.fields.get(name)
            if field is None:
                errors[name] = ["Unknown field."]
                continue
            quick = self.quick.get(name)
            if quick is not None and (loaded := quick(value)) is not UNSURE:
                values[name] = loaded
                continue
            try:
                values[name] = field.deserialize(value, name, raw)
            except ma.ValidationError as exc:
                errors[name] = exc.messages
        for name, required, default in self.absent:
            if name not in raw:
                if name in defaults:
                    values[name] = defaults[name]
                elif required:
                    errors[name] = [required]
                elif default is not ma.missing:
                    values[name] = default() if callable(default) else default
        for validator, field_names in self.field_validators:
            for name in field_names:
                if name in values:
                    try:
                        validator(values[name], data_key=name)
                    except ma.ValidationError as exc:
                        del values[name]
                        _add_errors(errors, exc.messages, name)
        field_errors = bool(errors)
        for validator, pass_original, skip_on_field_errors in self.schema_validators:
            if field_errors and skip_on_field_errors:
                continue
            try:
                if pass_original:
                    validator(values, raw, partial=None, many=False, unknown=ma.RAISE)
                else:
                    validator(values, partial=None, many=False, unknown=ma.RAISE)
            except ma.ValidationError as exc:
                _add_errors(errors, exc.messages, exc.field_name)
        return values, errors


# What a quick deserializer returns for a value it cannot vouch for: the field's own ``deserialize`` then decides.
UNSURE = object()
_JSON_SCALARS = (int, bool, type(None))


def _quick_deserializer(field: ma.fields.Field) -> Callable | None:
    """A shortcut for ``field.deserialize`` on the common values: it returns what ``deserialize`` would return
    for a value it knows to be valid, else ``UNSURE``. Derived from the field's class and validators (the
    field's own rules); None for a field without one. Only ever accepting, it never words an error itself."""
    if field.pre_load or field.post_load:
        return None
    if type(field) is JSONObject and not field.validators:
        return _quick_json_object
    if type(field) is Timestamp and not field.validators:

        def quick_timestamp(value):
            # For a value that is not None, ``deserialize`` is ``_deserialize`` then the (here no) validators.
            if type(value) is not str:
                return UNSURE
            try:
                return field._deserialize(value, None, None)
            except ma.ValidationError:
                return UNSURE

        return quick_timestamp
    if type(field) is Text and all(type(v) is ma.validate.Length and v.equal is None for v in field.validators):
        bounds = [(v.min or 0, math.inf if v.max is None else v.max) for v in field.validators]

        def quick_text(value):
            if type(value) is str and all(low <= len(value) <= high for low, high in bounds):
                return UNSURE if unstorable_text(value) else value
            return UNSURE

        return quick_text
    return None


def _quick_json_object(value):
    """A flat JSON object (text, finite numbers, booleans and nulls as values) as ``JSONObject`` loads it; nested
    ones, and strings holding JSON, are left to the field."""
    if type(value) is not dict:
        return UNSURE
    texts = []
    for key, item in value.items():
        kind = type(item)
        if kind is str:
            texts.append(item)
        elif kind is float:
            if not math.isfinite(item):
                return UNSURE
        elif kind not in _JSON_SCALARS:
            return UNSURE
        if type(key) is not str:
            return UNSURE
    texts.extend(value)
    return UNSURE if unstorable_text("".join(texts)) else value


def _add_errors(errors: dict, messages, field_name: str) -> None:
    """Merge a validator's ``messages`` about ``field_name`` into ``errors``, as marshmallow files them (a dict
    about the whole schema names its fields)."""
    if field_name != SCHEMA or not isinstance(messages, dict):
        messages = {field_name: messages}
    for name, message in messages.items():
        errors.setdefault(name, []).extend(message if isinstance(message, list) else [message])


RECORD_FIELDS = RecordFields()


def record_values(values: dict) -> dict:
    """The columns of a record that need no lookup, with their defaults, from validated ``values``."""
    timestamp = values["timestamp"]
    return {
        "timestamp": timestamp.astimezone(UTC),
        # The default collection date is the timestamp's date where it was taken, i.e. in its own offset.
        "collection_date": values.get("collection_date") or timestamp.date(),
        "script_run_id": values.get("script_run_id"),
        "script_data": values.get("script_data") or {},
        "record_info": values.get("record_info") or {},
    }


def default_dataset_name(script_name: str, collection_date) -> str:
    """``<script_name> Dataset <collection_date>``, the script name shortened to keep within 255 characters."""
    suffix = f" Dataset {collection_date.isoformat()}"
    return script_name[: 255 - len(suffix)] + suffix


def record_dataset_name(values: dict, script_name: str, collection_date) -> str:
    """A record's dataset: the one named in its ``values``, else the script's default for the date."""
    return values.get("dataset_name") or default_dataset_name(script_name, collection_date)


def duplicate_error() -> ConflictError:
    """The 409 of a record whose identity is taken."""
    return ConflictError(
        "A record with the same script, dataset, experiment, season, site and timestamp exists already; "
        "the stored record and its file are unchanged."
    )


@dataclass(frozen=True)
class Reference:
    """Something a record names: the ``field`` naming it, the record's ``column`` holding its id, and ``match``,
    the condition finding its ``model`` row by that name (a bound parameter named after the field)."""

    field: str
    column: str
    model: type
    match: ColumnElement


EXPERIMENT = Reference(
    "experiment_name", "experiment_id", Experiment, Experiment.experiment_name == bindparam("experiment_name")
)
SEASON = Reference(
    "season_name",
    "season_id",
    Season,
    (Season.experiment_id == Experiment.id) & (Season.season_name == bindparam("season_name")),
)
SITE = Reference("site_name", "site_id", Site, Site.site_name == bindparam("site_name"))
DATASET = Reference("dataset_name", "dataset_id", Dataset, Dataset.dataset_name == bindparam("dataset_name"))
PLACES = (EXPERIMENT, SEASON, SITE)  # must exist: 422 naming each missing one
REFERENCES = (*PLACES, DATASET)  # the dataset is created when missing
# The run, when given, is one of the record's script's.
OWN_RUN = (ScriptRun.id == bindparam("script_run_id")) & (ScriptRun.script_id == bindparam("script_id"))
# The pairs a stored record associates: (table, column, column), each column one of the record's.
ASSOCIATIONS = (
    (script_datasets, "script_id", "dataset_id"),
    (script_experiments, "script_id", "experiment_id"),
    (dataset_experiments, "dataset_id", "experiment_id"),
)

# The places of a record in one query: the experiment's id, and the season's and site's (null when missing).
PLACES_BY_NAME = (
    select(*(place.model.id for place in PLACES))
    .select_from(EXPERIMENT.model)
    .outerjoin(SEASON.model, SEASON.match)
    .outerjoin(SITE.model, SITE.match)
    .where(EXPERIMENT.match)
)

_RESOLVED = {"script_id": Script.id, **{reference.column: reference.model.id for reference in REFERENCES}}


def _record_by_names():
    """Every column of a new record, the ids looked up by name in the same statement. It selects nothing when a
    name is unknown, the script has another name than the one given, the run belongs to another script, or the
    script, dataset and experiment are not associated yet (the first record of each combination associates them)."""
    stmt = select(*(_RESOLVED.get(c.key, bindparam(c.key, type_=c.type)) for c in Record.__table__.columns))
    stmt = stmt.select_from(Script)
    for reference in REFERENCES:
        stmt = stmt.join(reference.model, reference.match)
    return stmt.where(
        Script.id == bindparam("script_id"),
        Script.script_name == bindparam("script_name"),
        bindparam("script_run_id", type_=Uuid()).is_(None) | exists().where(OWN_RUN),
        *(exists().where(table.c[a] == _RESOLVED[a], table.c[b] == _RESOLVED[b]) for table, a, b in ASSOCIATIONS),
    )


# Built once: constructing the statement cost more than running it, on every record POST.
RECORD_BY_NAMES = _record_by_names()
RESOLVED_IDS = tuple(_RESOLVED)  # what its insert returns
PLACE_NAMES = tuple(place.field for place in PLACES)
_place_names = operator.itemgetter(*PLACE_NAMES)  # a record's place names, as a tuple


class RecordNames(NamedTuple):
    """What a record refers to: its places' names (in ``PLACE_NAMES`` order), its dataset's name, its run, and
    the date a new dataset gets; the first three say which ids it has."""

    places: tuple[str, str, str]
    dataset: str
    run_id: uuid.UUID | None
    collection_date: date


class RecordReferences:
    """Turns a record's names (experiment, season, site, dataset) and run into ids for one script, step by step.

    Both the single-record endpoint (when its one statement stores nothing) and bulk ingest go through here. It
    remembers what it resolved: a bulk upload looks up each distinct name once. Missing datasets are created in
    the caller's transaction. ``names`` needs no database, so a bulk upload's reader thread runs it; ``ids``
    runs where the transaction is.
    """

    def __init__(self, script: Script):
        # Plain values, not the script object: another thread reads them, and a commit would expire its attributes.
        self.script_id = script.id
        self.script_name = script.script_name
        self._places: dict[tuple[str, str, str], tuple] = {}
        self._datasets: dict[str, uuid.UUID] = {}
        self._runs: dict[uuid.UUID, bool] = {}

    def row(self, values: dict) -> dict:
        """The record's column values from validated ``values``; 422 naming every unknown reference."""
        row = record_values(values)
        row.update(self.ids(self.names(values, row["collection_date"])))
        return row

    def names(self, values: dict, collection_date) -> RecordNames:
        """What the record refers to by name, from validated ``values`` and its ``collection_date``."""
        return RecordNames(
            _place_names(values),
            record_dataset_name(values, self.script_name, collection_date),
            values.get("script_run_id"),
            collection_date,
        )

    def ids(self, names: RecordNames) -> dict:
        """The id columns of a record naming ``names`` (the script's too); 422 naming every unknown reference."""
        found = self._places.get(names.places)
        if found is None:
            found = self._places[names.places] = self._find_places(names.places)
        place_ids, missing = found
        if names.run_id is not None and not self._is_own_run(names.run_id):
            missing = {**missing, "script_run_id": f"Script {self.script_id} has no run with the id {names.run_id}."}
        if missing:
            raise ValidationError(missing)
        dataset_id = self._datasets.get(names.dataset)
        if dataset_id is None:
            dataset = find_or_create_dataset(names.dataset, collection_date=names.collection_date, dataset_info={})
            dataset_id = self._datasets[names.dataset] = dataset.id
        return {"script_id": self.script_id, DATASET.column: dataset_id, **place_ids}

    @staticmethod
    def _find_places(names: tuple[str, str, str]) -> tuple[dict, dict]:
        """({column: id} of the places, messages for the missing ones), in one query when all exist."""
        named = dict(zip(PLACE_NAMES, names, strict=True))
        found = db.session.execute(PLACES_BY_NAME, named).first()
        if found is not None and None not in found:
            return {place.column: place_id for place, place_id in zip(PLACES, found, strict=True)}, {}
        return {}, missing_names(**named)

    def _is_own_run(self, run_id: uuid.UUID) -> bool:
        if run_id not in self._runs:
            found = db.session.scalar(
                select(ScriptRun.id).where(OWN_RUN), {"script_run_id": run_id, "script_id": self.script_id}
            )
            self._runs[run_id] = found is not None
        return self._runs[run_id]
