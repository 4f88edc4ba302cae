"""Credentials and rights: tokens (Bearer and X-API-Key), HTTP Basic for POST /api/tokens, roles, revocation,
expiry, anonymous reads, and the operator's CLI."""

import base64
import hashlib
import uuid
from datetime import timedelta

import pytest
from click.testing import CliRunner

from tests.conftest import make_app, make_token, token_client


def basic(email: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{email}:{password}".encode()).decode()}


@pytest.fixture
def account(app):
    """A writer account with a password."""
    from webapp.services import accounts

    return accounts.create_account("Lab.Manager@example.org", "correct horse", "writer")


def test_requests_without_credentials_are_401_in_the_error_shape(anonymous):
    """Reads and writes both need credentials by default."""
    for response in (anonymous.get("/api/sites"), anonymous.post("/api/sites", json={"site_name": "x"})):
        assert response.status_code == 401
        assert response.json["code"] == 401
        assert "Bearer" in response.headers["WWW-Authenticate"]


def test_public_endpoints_need_no_credentials(anonymous):
    """Health, the OpenAPI document and the docs page are public."""
    for path in ("/api/health", "/api/openapi.json", "/api/docs"):
        assert anonymous.get(path).status_code == 200, path


def test_reader_may_read_but_not_write(app):
    """A reader token reads; its writes are 403."""
    reader = token_client(app, make_token(app, "reader"))
    assert reader.get("/api/sites").status_code == 200
    response = reader.post("/api/sites", json={"site_name": "x"})
    assert response.status_code == 403
    assert "writer" in response.json["error_description"]


def test_writer_may_write(app):
    """A writer token creates resources."""
    writer = token_client(app, make_token(app, "writer"))
    assert writer.post("/api/sites", json={"site_name": "x"}).status_code == 200


def test_x_api_key_is_accepted_and_authorization_wins(app, anonymous):
    """X-API-Key works alone; when both headers are sent, Authorization decides."""
    good = make_token(app, "writer")
    assert anonymous.get("/api/sites", headers={"X-API-Key": good}).status_code == 200
    both_bad_auth = {"Authorization": "Bearer scr_wrong", "X-API-Key": good}
    assert anonymous.get("/api/sites", headers=both_bad_auth).status_code == 401
    both_good_auth = {"Authorization": f"Bearer {good}", "X-API-Key": "scr_wrong"}
    assert anonymous.get("/api/sites", headers=both_good_auth).status_code == 200


def test_unknown_token_and_unknown_scheme_are_401(anonymous):
    """A made-up token, or a scheme other than Bearer/Basic, is refused."""
    assert anonymous.get("/api/sites", headers={"Authorization": "Bearer scr_made_up"}).status_code == 401
    assert anonymous.get("/api/sites", headers={"Authorization": "Digest abc"}).status_code == 401


def test_create_token_with_email_and_password(anonymous, account):
    """POST /api/tokens with HTTP Basic returns the secret once; the token then works."""
    response = anonymous.post(
        "/api/tokens", json={"name": "pipeline"}, headers=basic("lab.manager@example.org", "correct horse")
    )
    assert response.status_code == 200
    body = response.json
    assert set(body) == {"id", "name", "role", "token", "expires_at"}
    assert body["role"] == "writer" and body["expires_at"] is None
    assert (
        anonymous.post("/api/sites", json={"site_name": "x"}, headers={"X-API-Key": body["token"]}).status_code == 200
    )


def test_tokens_are_stored_hashed_and_never_listed(anonymous, account):
    """Only the SHA-256 of a token is stored; the list shows no secret."""
    from sqlalchemy import select

    from webapp.extensions import db
    from webapp.models import ApiToken

    secret = anonymous.post(
        "/api/tokens", json={"name": "t"}, headers=basic("lab.manager@example.org", "correct horse")
    ).json["token"]
    stored = db.session.scalars(select(ApiToken)).one()
    assert stored.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in stored.token_hash
    listed = anonymous.get("/api/tokens", headers={"Authorization": f"Bearer {secret}"})
    assert listed.status_code == 200
    assert secret not in listed.get_data(as_text=True)
    assert "token" not in listed.json[0] and "token_hash" not in listed.json[0]


def test_wrong_password_and_unknown_email_get_one_answer_and_one_hash(anonymous, account, monkeypatch):
    """A wrong password and an unknown email answer alike and both cost one password-hash check."""
    from webapp.services import accounts

    calls = []
    real = accounts.check_password_hash
    monkeypatch.setattr(accounts, "check_password_hash", lambda h, p: calls.append(1) or real(h, p))
    wrong = anonymous.post("/api/tokens", json={"name": "t"}, headers=basic("lab.manager@example.org", "nope"))
    unknown = anonymous.post("/api/tokens", json={"name": "t"}, headers=basic("nobody@example.org", "nope"))
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json == unknown.json
    assert calls == [1, 1]


def test_basic_credentials_only_create_tokens(anonymous, account):
    """Email and password are not accepted by other endpoints."""
    response = anonymous.get("/api/sites", headers=basic("lab.manager@example.org", "correct horse"))
    assert response.status_code == 401


def test_token_role_is_at_most_the_accounts(anonymous, account):
    """Asking for more than the account's role is 403; less is fine and enforced."""
    creds = basic("lab.manager@example.org", "correct horse")
    assert anonymous.post("/api/tokens", json={"name": "t", "role": "admin"}, headers=creds).status_code == 403
    reader = anonymous.post("/api/tokens", json={"name": "t", "role": "reader"}, headers=creds).json
    assert (
        anonymous.post("/api/sites", json={"site_name": "x"}, headers={"X-API-Key": reader["token"]}).status_code == 403
    )


def test_revoked_and_expired_tokens_are_401(anonymous, account):
    """A revoked token stops working at once; an expired one after its expiry."""
    from webapp.extensions import db
    from webapp.models import ApiToken

    creds = basic("lab.manager@example.org", "correct horse")
    first = anonymous.post("/api/tokens", json={"name": "a"}, headers=creds).json
    second = anonymous.post("/api/tokens", json={"name": "b", "expires_in_days": 1}, headers=creds).json
    assert second["expires_at"]
    headers = {"Authorization": f"Bearer {first['token']}"}
    assert anonymous.delete(f"/api/tokens/id/{first['id']}", headers=headers).status_code == 200
    assert anonymous.get("/api/sites", headers=headers).status_code == 401
    expiring = db.session.get(ApiToken, uuid.UUID(second["id"]))
    expiring.expires_at = expiring.expires_at - timedelta(days=2)
    db.session.commit()
    assert anonymous.get("/api/sites", headers={"X-API-Key": second["token"]}).status_code == 401


def test_only_admins_revoke_tokens_of_others(app, anonymous, account):
    """Another account's token is invisible to a writer (404) and revocable by an admin."""
    creds = basic("lab.manager@example.org", "correct horse")
    victim = anonymous.post("/api/tokens", json={"name": "v"}, headers=creds).json
    other_writer = token_client(app, make_token(app, "writer"))
    assert other_writer.delete(f"/api/tokens/id/{victim['id']}").status_code == 404
    admin = token_client(app, make_token(app, "admin"))
    assert admin.delete(f"/api/tokens/id/{victim['id']}").status_code == 200
    assert anonymous.get("/api/sites", headers={"X-API-Key": victim["token"]}).status_code == 401


def test_a_token_loses_rights_its_account_loses(app, anonymous, account):
    """Demoting an account demotes its existing tokens."""
    from webapp.extensions import db

    token = anonymous.post(
        "/api/tokens", json={"name": "t"}, headers=basic("lab.manager@example.org", "correct horse")
    ).json
    account.role = "reader"
    db.session.commit()
    response = anonymous.post("/api/sites", json={"site_name": "x"}, headers={"X-API-Key": token["token"]})
    assert response.status_code == 403


def test_anonymous_read_opens_reads_only(tmp_path, database_url):
    """With ANONYMOUS_READ, reads need no credentials and writes still do."""
    anonymous = make_app(tmp_path, database_url, anonymous_read=True).test_client()
    assert anonymous.get("/api/sites").status_code == 200
    assert anonymous.post("/api/sites", json={"site_name": "x"}).status_code == 401


def test_operator_cli_creates_users_and_tokens_and_revokes(app, monkeypatch, tmp_path):
    """`scriptorium users create`, `tokens create` and `tokens revoke` work against the configured database."""
    from webapp.cli import main

    monkeypatch.setenv("SCRIPTORIUM_DATABASE_URL", app.config["DATABASE_URL"])
    monkeypatch.setenv("SCRIPTORIUM_SECRET_KEY", "cli-test")
    monkeypatch.setenv("SCRIPTORIUM_INSTANCE_PATH", str(tmp_path))
    runner = CliRunner()
    created = runner.invoke(main, ["users", "create", "cli@example.org", "--role", "writer"], input="pw\npw\n")
    assert created.exit_code == 0, created.output
    issued = runner.invoke(main, ["tokens", "create", "cli@example.org", "--expires-in-days", "7"])
    assert issued.exit_code == 0, issued.output
    secret = issued.stdout.strip().splitlines()[-1]
    client = app.test_client()
    assert client.post("/api/sites", json={"site_name": "x"}, headers={"X-API-Key": secret}).status_code == 200
    token_id = client.get("/api/tokens", headers={"X-API-Key": secret}).json[0]["id"]
    assert runner.invoke(main, ["tokens", "revoke", token_id]).exit_code == 0
    assert client.get("/api/sites", headers={"X-API-Key": secret}).status_code == 401
    too_much = runner.invoke(main, ["tokens", "create", "cli@example.org", "--role", "admin"])
    assert too_much.exit_code == 1
