"""The token grant cache: it saves the lookup on repeated calls, and a revocation reaches every process within
GRANT_CACHE_SECONDS (webapp/services/tokens.py)."""

import requests
from sqlalchemy import event, select

from tests.conftest import make_app, make_token
from tests.servers import gunicorn_app, wait_until
from webapp.extensions import db
from webapp.models import ApiToken
from webapp.services import tokens


def _statements(app, calls):
    """The SQL statements the app runs while ``calls()`` runs."""
    seen: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        seen.append(statement)

    engine = app.extensions["database"]
    event.listen(engine, "before_cursor_execute", record)
    try:
        calls()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return seen


def _token_id(secret: str):
    """The id of the token with that secret."""
    return db.session.scalars(select(ApiToken.id).where(ApiToken.token_hash == tokens.hash_token(secret))).one()


def test_a_repeated_call_does_not_look_its_token_up_again(app):
    """The second call with a token reads no api_tokens row; another token is still looked up."""
    first, second = make_token(app, "reader"), make_token(app, "reader")
    client = app.test_client()

    def get(secret: str):
        return lambda: client.get("/api/sites", headers={"Authorization": f"Bearer {secret}"})

    assert any("api_tokens" in s for s in _statements(app, get(first)))
    assert not any("api_tokens" in s for s in _statements(app, get(first)))
    assert any("api_tokens" in s for s in _statements(app, get(second)))


def test_a_revocation_in_the_process_is_immediate_after_caching(app):
    """A token revoked by the process that cached it stops working on the next call."""
    secret = make_token(app, "reader")
    headers = {"Authorization": f"Bearer {secret}"}
    client = app.test_client()
    assert client.get("/api/sites", headers=headers).status_code == 200
    tokens.revoke_token(_token_id(secret))
    assert client.get("/api/sites", headers=headers).status_code == 401


def test_a_revocation_by_another_process_reaches_the_server_within_the_bound(postgresql_url, tmp_path):
    """A token revoked here (another process than gunicorn's) is refused by the server within the bound."""
    here = make_app(tmp_path / "here", postgresql_url)
    secret = make_token(here, "reader")
    headers = {"Authorization": f"Bearer {secret}"}
    with gunicorn_app(postgresql_url, tmp_path) as base:
        # Several calls, so every thread of the worker has seen (and cached) the token.
        assert all(requests.get(f"{base}/api/sites", headers=headers, timeout=10).status_code == 200 for _ in range(8))
        with here.app_context():
            tokens.revoke_token(_token_id(secret))
        # The bound, plus a second for the requests themselves: a bounded wait, not a speed threshold.
        answer = wait_until(
            lambda: requests.get(f"{base}/api/sites", headers=headers, timeout=10).status_code,
            lambda status: status == 401,
            timeout=tokens.GRANT_CACHE_SECONDS + 1,
        )
        assert answer == 401
