"""API tokens: create (with a password or a token), list, revoke."""

import uuid

from flask.views import MethodView

from webapp.auth import current_account, requires
from webapp.common.api import Blueprint
from webapp.models import Role
from webapp.services import tokens
from webapp.tokens.schemas import NewTokenSchema, TokenCreateSchema, TokenSchema

blp = Blueprint(
    "tokens",
    __name__,
    url_prefix="/api/tokens",
    description="API tokens of the calling account. POST also accepts HTTP Basic (email and password).",
)


@blp.route("")
class Tokens(MethodView):
    @blp.response(200, TokenSchema(many=True))
    @blp.paginate()
    def get(self):
        """List your tokens, without their secrets."""
        return tokens.list_tokens(current_account())

    @blp.arguments(TokenCreateSchema, required=False)
    @blp.response(200, NewTokenSchema)
    @blp.alt_response(403, description="The role asked for exceeds the account's.")
    @blp.alt_response(
        429,
        description="Too many failed password sign-ins for this email or client address; see Retry-After.",
        headers={"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
    )
    @blp.doc(security=[{"bearerToken": []}, {"apiKey": []}, {"emailPassword": []}])
    @requires(Role.READER, accepts_password=True)
    def post(self, values):
        """Create a token; its secret is in the answer this once."""
        token, secret = tokens.create_token(current_account(), **values)
        return {"id": token.id, "name": token.name, "role": token.role, "token": secret, "expires_at": token.expires_at}


@blp.route("/id/<uuid:token_id>")
class TokenById(MethodView):
    @blp.response(200, TokenSchema)
    @blp.alt_response(404, description="No token of yours has that id.")
    @requires(Role.READER)
    def delete(self, token_id: uuid.UUID):
        """Revoke a token (admins may revoke anyone's)."""
        return tokens.revoke_token(token_id, current_account())
