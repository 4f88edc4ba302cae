"""Schemas of sites."""

import marshmallow as ma

from webapp.common.api import Schema
from webapp.common.fields import JSONObject


class SiteSchema(Schema):
    id = ma.fields.UUID(dump_only=True)
    site_name = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=255))
    site_city = ma.fields.String(allow_none=True, validate=ma.validate.Length(max=255))
    site_state = ma.fields.String(allow_none=True, validate=ma.validate.Length(max=255))
    site_country = ma.fields.String(allow_none=True, validate=ma.validate.Length(max=255))
    site_info = JSONObject(load_default=dict)


class SiteUpdateSchema(SiteSchema):
    """A site's changeable fields (use with ``partial=True``)."""
