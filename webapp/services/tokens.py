"""API tokens: stored as SHA-256, their secret shown once, at most the role of the account they belong to."""

import hashlib
import secrets
import uuid
from datetime import timedelta

from sqlalchemy import bindparam, select, update

from webapp.errors import ForbiddenError, NotFoundError
from webapp.extensions import db
from webapp.models import Account, ApiToken, Role, utcnow
from webapp.services.common import commit

TOKEN_PREFIX = "scr_"

# Built once: every API request looks its token up.
TOKEN_GRANT = (
    select(
        ApiToken.id,
        ApiToken.account_id,
        ApiToken.role,
        ApiToken.expires_at,
        ApiToken.revoked_at,
        ApiToken.last_used_at,
        Account.role.label("account_role"),
    )
    .join(Account, Account.id == ApiToken.account_id)
    .where(ApiToken.token_hash == bindparam("token_hash"))
)


def hash_token(secret: str) -> str:
    """The stored form of a token (tokens are long and random, so a plain SHA-256 suffices)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    account: Account, name: str | None = None, role: str | None = None, expires_in_days: int | None = None
):
    """A new token for ``account`` with at most its role, named ``token <UTC date>`` unless named; returns (token
    row, secret shown once)."""
    name = name or f"token {utcnow().date().isoformat()}"
    role = role or account.role
    if not Role.at_least(account.role, role):
        raise ForbiddenError(f"A token may have at most the account's role ({account.role}), not {role}.")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        account_id=account.id,
        name=name,
        role=role,
        token_hash=hash_token(secret),
        expires_at=utcnow() + timedelta(days=expires_in_days) if expires_in_days else None,
    )
    db.session.add(token)
    commit("The token could not be stored.")
    return token, secret


def token_grant(secret: str):
    """The live token with that secret (not revoked, not expired) with its account's current role, or None.

    Read outside the request's transaction: one round trip on every API call.
    """
    with db.autocommit() as connection:
        grant = connection.execute(TOKEN_GRANT, {"token_hash": hash_token(secret)}).first()
        now = utcnow()
        if grant is None or grant.revoked_at is not None or (grant.expires_at and grant.expires_at <= now):
            return None
        if grant.last_used_at is None or now - grant.last_used_at > timedelta(minutes=5):
            # At most one write every few minutes per token.
            connection.execute(update(ApiToken).where(ApiToken.id == grant.id).values(last_used_at=now))
    return grant


def list_tokens(account: Account):
    """The account's tokens, oldest first."""
    return select(ApiToken).where(ApiToken.account_id == account.id).order_by(ApiToken.created_at, ApiToken.id)


def revoke_token(token_id: uuid.UUID, caller: Account | None = None) -> ApiToken:
    """Revoke a token. A caller may revoke its own (an admin anyone's; others' are a 404); without a
    caller (the operator's CLI) any token."""
    token = db.session.get(ApiToken, token_id)
    if token is None or (caller and token.account_id != caller.id and caller.role != Role.ADMIN):
        raise NotFoundError(f"No token of yours has the id {token_id}.")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        db.session.commit()
    return token
