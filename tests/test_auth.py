"""Credentials and rights: tokens (Bearer and X-API-Key), HTTP Basic for POST /api/tokens, roles, revocation,
expiry, anonymous reads, and the operator's CLI."""

import base64
import hashlib
import uuid
from datetime import timedelta

import pytest
from click.testing import CliRunner

from tests.conftest import PASSWORD, make_app, make_token, token_client


def basic(email: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{email}:{password}".encode()).decode()}


@pytest.fixture
def account(app):
    """A writer account with a password."""
    from webapp.services import accounts

    return accounts.create_account("Lab.Manager@example.org", PASSWORD, "writer")


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
        "/api/tokens", json={"name": "pipeline"}, headers=basic("lab.manager@example.org", PASSWORD)
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

    secret = anonymous.post("/api/tokens", json={"name": "t"}, headers=basic("lab.manager@example.org", PASSWORD)).json[
        "token"
    ]
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
    response = anonymous.get("/api/sites", headers=basic("lab.manager@example.org", PASSWORD))
    assert response.status_code == 401


def test_token_role_is_at_most_the_accounts(anonymous, account):
    """Asking for more than the account's role is 403; less is fine and enforced."""
    creds = basic("lab.manager@example.org", PASSWORD)
    assert anonymous.post("/api/tokens", json={"name": "t", "role": "admin"}, headers=creds).status_code == 403
    reader = anonymous.post("/api/tokens", json={"name": "t", "role": "reader"}, headers=creds).json
    assert (
        anonymous.post("/api/sites", json={"site_name": "x"}, headers={"X-API-Key": reader["token"]}).status_code == 403
    )


def test_revoked_and_expired_tokens_are_401(anonymous, account):
    """A revoked token stops working at once; an expired one after its expiry."""
    from webapp.extensions import db
    from webapp.models import ApiToken

    creds = basic("lab.manager@example.org", PASSWORD)
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
    creds = basic("lab.manager@example.org", PASSWORD)
    victim = anonymous.post("/api/tokens", json={"name": "v"}, headers=creds).json
    other_writer = token_client(app, make_token(app, "writer"))
    assert other_writer.delete(f"/api/tokens/id/{victim['id']}").status_code == 404
    admin = token_client(app, make_token(app, "admin"))
    assert admin.delete(f"/api/tokens/id/{victim['id']}").status_code == 200
    assert anonymous.get("/api/sites", headers={"X-API-Key": victim["token"]}).status_code == 401


def test_a_token_loses_rights_its_account_loses(app, anonymous, account):
    """Demoting an account demotes its existing tokens."""
    from webapp.extensions import db

    token = anonymous.post("/api/tokens", json={"name": "t"}, headers=basic("lab.manager@example.org", PASSWORD)).json
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
    created = runner.invoke(
        main, ["users", "create", "cli@example.org", "--role", "writer"], input=f"{PASSWORD}\n{PASSWORD}\n"
    )
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


def cli_environment(app, monkeypatch, tmp_path):
    """The CLI works against the test app's database."""
    monkeypatch.setenv("SCRIPTORIUM_DATABASE_URL", app.config["DATABASE_URL"])
    monkeypatch.setenv("SCRIPTORIUM_SECRET_KEY", "cli-test")
    monkeypatch.setenv("SCRIPTORIUM_INSTANCE_PATH", str(tmp_path))


@pytest.mark.parametrize(
    ("password", "reason"),
    [("x", "at least 12 characters"), ("iloveyou2024", "too common"), ("cli@example.org", "email")],
)
def test_cli_refuses_a_password_the_policy_refuses(app, monkeypatch, tmp_path, password, reason):
    """`scriptorium users create` applies the one password policy (it once took a 1-character password)."""
    from webapp.cli import main
    from webapp.services import accounts

    cli_environment(app, monkeypatch, tmp_path)
    created = CliRunner().invoke(main, ["users", "create", "cli@example.org"], input=f"{password}\n{password}\n")
    assert created.exit_code == 1
    assert reason in created.output
    assert accounts.account_by_email("cli@example.org") is None


def test_cli_sets_a_new_password_under_the_policy(app, monkeypatch, tmp_path, account):
    """`scriptorium users set-password` refuses a weak password, and a good one replaces the old."""
    from webapp.cli import main
    from webapp.extensions import db

    cli_environment(app, monkeypatch, tmp_path)
    runner = CliRunner()
    weak = runner.invoke(main, ["users", "set-password", "lab.manager@example.org"], input="short\nshort\n")
    assert weak.exit_code == 1 and "at least 12 characters" in weak.output
    new = "barley under glass 9"
    changed = runner.invoke(main, ["users", "set-password", "lab.manager@example.org"], input=f"{new}\n{new}\n")
    assert changed.exit_code == 0, changed.output
    db.session.expire_all()  # the test's session (which requests share) still holds the account as it was
    anonymous = app.test_client()
    for password, status in ((PASSWORD, 401), (new, 200)):
        response = anonymous.post("/api/tokens", json={"name": "t"}, headers=basic("lab.manager@example.org", password))
        assert response.status_code == status
    unknown = runner.invoke(main, ["users", "set-password", "nobody@example.org"], input=f"{new}\n{new}\n")
    assert unknown.exit_code == 1


def test_the_bootstrap_admin_password_meets_the_policy(tmp_path, monkeypatch):
    """`scriptorium init` (what `make run` does) generates an admin password the policy accepts, and refuses a
    configured SCRIPTORIUM_ADMIN_PASSWORD it does not."""
    from webapp.cli import main
    from webapp.services.accounts import password_problem

    monkeypatch.setenv("SCRIPTORIUM_INSTANCE_PATH", str(tmp_path / "generated"))
    generated = CliRunner().invoke(main, ["init"])
    assert generated.exit_code == 0, generated.output
    password = (tmp_path / "generated" / "admin_password").read_text().strip()
    assert password_problem("admin@localhost", password) is None

    monkeypatch.setenv("SCRIPTORIUM_INSTANCE_PATH", str(tmp_path / "configured"))
    monkeypatch.setenv("SCRIPTORIUM_ADMIN_EMAIL", "boss@example.org")
    monkeypatch.setenv("SCRIPTORIUM_ADMIN_PASSWORD", "admin")
    refused = CliRunner().invoke(main, ["init"])
    assert refused.exit_code == 1
    assert "SCRIPTORIUM_ADMIN_PASSWORD" in refused.output and "at least 12 characters" in refused.output


def test_password_policy_of_the_accounts_service(app):
    """At least 12 characters, not the email nor containing its name, not a common password (any case or
    spacing); a violation is a 422 naming the password."""
    from webapp.errors import ValidationError
    from webapp.services import accounts

    for email, password in [
        ("a@example.org", "elevenchars"),
        ("ada@example.org", "ADA@example.org"),
        ("lovelace@example.org", "my name is Lovelace"),
        ("b@example.org", "Password1234"),
        ("b@example.org", "1qaz2wsx3edc"),
        ("b@example.org", "I Love You 2024"),
        ("b@example.org", "correct horse battery staple"),
    ]:
        with pytest.raises(ValidationError) as refused:
            accounts.create_account(email, password, "reader")
        assert refused.value.status_code == 422 and set(refused.value.errors) == {"password"}, password
    assert accounts.create_account("ops@example.org", "ops team keeps plots dry", "reader").password_hash
    assert accounts.create_account("pipeline@example.org", None, "writer").password_hash is None


def test_a_token_posted_with_only_http_basic_gets_a_default_name(anonymous, account):
    """POST /api/tokens with HTTP Basic and no body (as the README says) creates a token named 'token <date>'."""
    from webapp.models import utcnow

    response = anonymous.post("/api/tokens", headers=basic("lab.manager@example.org", PASSWORD))
    assert response.status_code == 200, response.json
    assert response.json["name"] == f"token {utcnow().date().isoformat()}"
    named = anonymous.post("/api/tokens", json={"name": "pipeline"}, headers=basic("lab.manager@example.org", PASSWORD))
    assert named.json["name"] == "pipeline"
