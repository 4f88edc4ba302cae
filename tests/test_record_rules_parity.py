"""The quick path of the one record validation (``record_rules``' quick deserializers) loads and refuses exactly
what marshmallow's own ``Schema.load`` of the record's fields does, messages included, over generated rows."""

import json
from datetime import UTC, timedelta, timezone

import marshmallow as ma
from hypothesis import given, settings
from hypothesis import strategies as st

from webapp.services.record_rules import RECORD_FIELDS, UNSURE, RecordFields, _quick_deserializer

# Text the database refuses, next to ordinary text of every length around the name limit.
UNSTORABLE = st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfff", "\udbff\udc00"])
TEXT = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=8),
    st.text(st.characters(min_codepoint=32, max_codepoint=0x24F), min_size=250, max_size=260),
    UNSTORABLE,
)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**64), st.floats(allow_nan=True), TEXT
)
JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=8
)
OBJECTS = st.dictionaries(TEXT, JSON, max_size=5)
FLAT_OBJECTS = st.dictionaries(TEXT, SCALARS, max_size=6)
OFFSETS = st.builds(lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-23 * 60, 23 * 60))
TIMESTAMPS = st.one_of(
    st.datetimes(timezones=st.none() | st.just(UTC) | OFFSETS).map(lambda moment: moment.isoformat()),
    st.sampled_from(["", "yesterday", "2024-13-01T00:00:00Z", "0001-01-01T00:00:00+01:00", " 2024-05-01 "]),
)
VALUES = st.one_of(
    TEXT,
    SCALARS,
    OBJECTS,
    FLAT_OBJECTS,
    st.lists(SCALARS, max_size=2),
    OBJECTS.map(lambda value: json.dumps(value, allow_nan=True)),
    TIMESTAMPS,
    st.uuids().map(str),
    st.dates().map(lambda day: day.isoformat()),
    st.builds(lambda: "not json {"),
)
NAMES = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), min_size=1, max_size=20)
VALID = st.fixed_dictionaries(
    {
        "timestamp": TIMESTAMPS,
        "experiment_name": NAMES,
        "season_name": NAMES,
        "site_name": NAMES,
        "script_data": FLAT_OBJECTS,
    },
    optional={
        "dataset_name": NAMES,
        "record_info": FLAT_OBJECTS,
        "collection_date": st.dates().map(lambda day: day.isoformat()),
        "script_run_id": st.uuids().map(str),
    },
)
CHANGES = st.dictionaries(st.sampled_from([*RECORD_FIELDS.load_fields, "colour"]), VALUES, max_size=3)
ROWS = st.builds(lambda row, changes: {**row, **changes}, VALID, CHANGES)


def marshmallow_load(raw: dict) -> tuple[dict, dict]:
    """(values, errors) from marshmallow's own ``Schema.load`` of the record's fields."""
    try:
        return ma.Schema.load(RecordFields(), raw), {}
    except ma.ValidationError as exc:
        return exc.valid_data, exc.messages


@settings(max_examples=600, deadline=None)
@given(ROWS)
def test_load_record_matches_marshmallow_on_generated_rows(raw):
    """Every generated row: the same values when valid, the same errors by field and message when not."""
    assert RECORD_FIELDS.load_record(raw) == marshmallow_load(raw)


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(sorted(RECORD_FIELDS.load_fields)), VALUES)
def test_a_quick_deserializer_only_vouches_for_what_the_field_accepts_as_it_would(name, value):
    """What a quick deserializer returns, the field's own ``deserialize`` returns too, for the same value."""
    field = RECORD_FIELDS.load_fields[name]
    quick = _quick_deserializer(field)
    if quick is None or (loaded := quick(value)) is UNSURE:
        return
    assert loaded == field.deserialize(value, name, {name: value})


def test_the_usual_values_take_the_quick_path():
    """Flat JSON objects and names within their limits are vouched for (else the quick path would never run);
    refused ones are left to the fields."""
    fields = RECORD_FIELDS.load_fields
    script_data, site_name = _quick_deserializer(fields["script_data"]), _quick_deserializer(fields["site_name"])
    flat = {"plot": 3, "height_cm": 41.5, "genotype": "G-7", "ok": True, "note": None}
    assert script_data(flat) is flat
    assert site_name("Maricopa") == "Maricopa"
    for refused in ({"a": float("nan")}, {"a": "\x00"}, {"\ud800": 1}, {"a": {"b": 1}}, '{"a": 1}', [1]):
        assert script_data(refused) is UNSURE
    for refused in ("", "x" * 256, "a\x00", None, 5):
        assert site_name(refused) is UNSURE
