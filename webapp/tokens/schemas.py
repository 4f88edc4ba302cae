"""Schemas of API tokens."""

import marshmallow as ma

from webapp.common.api import ResponseSchema, Schema
from webapp.fields import Text, Timestamp
from webapp.models import Role


class TokenCreateSchema(Schema):
    name = Text(
        validate=ma.validate.Length(min=1, max=255), metadata={"description": "Default: 'token <UTC date>'."}
    )
    role = Text(validate=ma.validate.OneOf(Role.ORDER), metadata={"description": "At most the account's role."})
    expires_in_days = ma.fields.Integer(validate=ma.validate.Range(min=1, max=3650), allow_none=True)


class TokenSchema(ResponseSchema):
    id = ma.fields.UUID()
    name = ma.fields.String()
    role = ma.fields.String()
    created_at = Timestamp()
    expires_at = Timestamp(allow_none=True)
    revoked_at = Timestamp(allow_none=True)
    last_used_at = Timestamp(allow_none=True)


class NewTokenSchema(ResponseSchema):
    id = ma.fields.UUID()
    name = ma.fields.String()
    role = ma.fields.String()
    token = ma.fields.String(metadata={"description": "The secret: shown this once, stored only hashed."})
    expires_at = Timestamp(allow_none=True)
