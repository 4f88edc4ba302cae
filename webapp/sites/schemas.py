"""Schemas of sites."""

import marshmallow as ma

from webapp.common.api import Schema
from webapp.fields import JSONObject, Text


class SiteSchema(Schema):
    id = ma.fields.UUID(dump_only=True)
    site_name = Text(required=True, validate=ma.validate.Length(min=1, max=255))
    site_city = Text(allow_none=True, validate=ma.validate.Length(max=255))
    site_state = Text(allow_none=True, validate=ma.validate.Length(max=255))
    site_country = Text(allow_none=True, validate=ma.validate.Length(max=255))
    site_info = JSONObject(load_default=dict)


class SiteUpdateSchema(SiteSchema):
    """A site's changeable fields (use with ``partial=True``)."""
