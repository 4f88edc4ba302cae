"""Schemas of experiments and seasons."""

import marshmallow as ma

from webapp.common.api import Schema
from webapp.fields import JSONObject, Text

NAME = ma.validate.Length(min=1, max=255)


class ExperimentSchema(Schema):
    id = ma.fields.UUID(dump_only=True)
    experiment_name = Text(required=True, validate=NAME)
    experiment_info = JSONObject(load_default=dict)
    experiment_start_date = ma.fields.Date(allow_none=True)
    experiment_end_date = ma.fields.Date(allow_none=True)


class ExperimentUpdateSchema(ExperimentSchema):
    """An experiment's changeable fields (use with ``partial=True``)."""


class SeasonSchema(Schema):
    id = ma.fields.UUID(dump_only=True)
    experiment_id = ma.fields.UUID(dump_only=True)
    experiment_name = Text(dump_only=True)
    season_name = Text(required=True, validate=NAME)
    season_info = JSONObject(load_default=dict)
    season_start_date = ma.fields.Date(allow_none=True)
    season_end_date = ma.fields.Date(allow_none=True)


class SeasonUpdateSchema(SeasonSchema):
    """A season's changeable fields (use with ``partial=True``)."""
