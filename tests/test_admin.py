"""Admin pages: sign-in, sessions, CSRF, who may do what, and the pages' content, through the test client.

tests/test_browser.py drives the same pages in a real browser.
"""

import io
import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import PASSWORD, make_app, record_form
from tests.servers import wait_until


def sign_in(app, role: str = "writer"):
    """A client signed in to the admin pages as a new account with ``role``."""
    from webapp.services import accounts

    email = f"{role}@example.org"
    if accounts.account_by_email(email) is None:
        accounts.create_account(email, PASSWORD, role)
    browser = app.test_client()
    page = browser.get("/admin/login")
    response = browser.post("/admin/login", data={"email": email, "password": PASSWORD, "csrf_token": csrf_of(page)})
    assert response.status_code == 302, response.data
    return browser


def csrf_of(response) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', response.get_data(as_text=True))
    assert match, "no CSRF token on the page"
    return match.group(1)


def post_form(browser, page_url: str, action: str, data: dict, **kwargs):
    """Open ``page_url`` for its CSRF token, then post ``data`` to ``action``."""
    token = csrf_of(browser.get(page_url))
    return browser.post(action, data={**data, "csrf_token": token}, **kwargs)


@pytest.fixture
def writer(app):
    return sign_in(app, "writer")


def test_pages_redirect_to_sign_in_without_a_session(anonymous):
    """Every admin page but the sign-in page needs a session."""
    response = anonymous.get("/admin/scripts")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/admin/login?next=")


def test_wrong_email_and_wrong_password_get_the_same_answer(app, anonymous):
    """One message for either mistake."""
    from webapp.services import accounts

    accounts.create_account("known@example.org", PASSWORD, "reader")
    token = csrf_of(anonymous.get("/admin/login"))
    wrong_password = anonymous.post(
        "/admin/login", data={"email": "known@example.org", "password": "x", "csrf_token": token}
    )
    unknown_email = anonymous.post(
        "/admin/login", data={"email": "nobody@example.org", "password": "x", "csrf_token": token}
    )
    assert wrong_password.status_code == unknown_email.status_code == 401
    assert "Wrong email or password." in wrong_password.get_data(as_text=True)
    assert "Wrong email or password." in unknown_email.get_data(as_text=True)


def test_session_cookie_is_httponly_and_samesite(app):
    """The session cookie cannot be read by scripts nor sent by other sites' forms."""
    from webapp.services import accounts

    accounts.create_account("c@example.org", PASSWORD, "reader")
    browser = app.test_client()
    token = csrf_of(browser.get("/admin/login"))
    response = browser.post("/admin/login", data={"email": "c@example.org", "password": PASSWORD, "csrf_token": token})
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_forms_without_or_with_a_forged_csrf_token_are_refused(writer):
    """A form post needs the session's CSRF token."""
    assert writer.post("/admin/scripts/new", data={"script_name": "x"}).status_code == 400
    assert writer.post("/admin/scripts/new", data={"script_name": "x", "csrf_token": "forged"}).status_code == 400
    assert "No script matches" in writer.get("/admin/scripts").get_data(as_text=True)


def test_expired_session_goes_back_to_sign_in(writer):
    """A session older than its lifetime is ended."""
    with writer.session_transaction() as session:
        session["signed_in_at"] = (datetime.now(UTC) - timedelta(hours=9)).isoformat()
    assert writer.get("/admin/").status_code == 302


def test_reader_browses_but_cannot_change(app, client):
    """A reader sees the pages but not the forms; posting them is 403."""
    script = client.post("/api/scripts", json={"script_name": "ndvi"}).json
    reader = sign_in(app, "reader")
    page = reader.get(f"/admin/scripts/{script['id']}")
    assert page.status_code == 200
    assert "Upload records" not in page.get_data(as_text=True)
    assert reader.get("/admin/scripts/new").status_code == 403
    token = csrf_of(page)
    assert reader.post(f"/admin/scripts/{script['id']}/delete", data={"csrf_token": token}).status_code == 403
    assert reader.get("/admin/accounts").status_code == 403


def test_writer_creates_edits_and_deletes_a_script(writer):
    """The script forms reuse the API's rules and services."""
    created = post_form(
        writer, "/admin/scripts/new", "/admin/scripts/new", {"script_name": "canopy", "script_info": '{"v": 1}'}
    )
    assert created.status_code == 302
    detail_url = created.headers["Location"]
    assert "canopy" in writer.get(detail_url).get_data(as_text=True)
    invalid = post_form(writer, "/admin/scripts/new", "/admin/scripts/new", {"script_name": "x", "script_info": "[1]"})
    assert (
        invalid.status_code == 422 and "script_info" in invalid.get_data(as_text=True)
    ) or "JSON" in invalid.get_data(as_text=True)
    edited = post_form(
        writer,
        detail_url + "/edit",
        detail_url + "/edit",
        {"script_name": "canopy-2", "script_url": "", "script_extension": "py", "script_info": "{}"},
    )
    assert edited.status_code == 302
    assert "canopy-2" in writer.get(detail_url).get_data(as_text=True)
    deleted = post_form(writer, detail_url, detail_url + "/delete", {})
    assert deleted.status_code == 302
    assert writer.get(detail_url).status_code == 404


def test_experiments_seasons_and_sites_forms(writer):
    """Reference data is created, listed and deleted from the pages."""
    created = post_form(
        writer,
        "/admin/experiments/new",
        "/admin/experiments/new",
        {"experiment_name": "E1", "experiment_start_date": "2024-01-01"},
    )
    assert created.status_code == 302
    experiment_url = created.headers["Location"]
    experiment_id = experiment_url.rsplit("/", 1)[1]
    edit_url = f"/admin/experiments/{experiment_id}/edit"
    cleared = post_form(writer, edit_url, edit_url, {"experiment_name": "E1", "experiment_start_date": ""})
    assert cleared.status_code == 302
    assert writer.get(f"/api/experiments/id/{experiment_id}").json["experiment_start_date"] is None
    season = post_form(writer, experiment_url, f"/admin/experiments/{experiment_id}/seasons", {"season_name": "Summer"})
    assert season.status_code == 302
    assert "Summer" in writer.get(experiment_url).get_data(as_text=True)
    season_edit = re.search(
        r'href="(/admin/seasons/[0-9a-f-]+/edit)"', writer.get(experiment_url).get_data(as_text=True)
    ).group(1)
    edited = post_form(writer, season_edit, season_edit, {"season_name": "Monsoon", "season_info": '{"rain": true}'})
    assert edited.status_code == 302
    assert "Monsoon" in writer.get(experiment_url).get_data(as_text=True)
    duplicate = post_form(writer, "/admin/experiments/new", "/admin/experiments/new", {"experiment_name": "E1"})
    assert duplicate.status_code == 422
    site = post_form(writer, "/admin/sites/new", "/admin/sites/new", {"site_name": "Ames", "site_state": "IA"})
    assert site.status_code == 302
    assert "Ames" in writer.get("/admin/sites").get_data(as_text=True)


def test_script_page_shows_records_filters_chart_and_file_links(app, client, reference, script, writer):
    """The script page lists records (filtered), draws one bar per collection day and links files."""
    url = f"/api/scripts/id/{script['id']}/records"
    client.post(url, data=record_form(timestamp="2024-05-01T10:00:00Z", record_file=(io.BytesIO(b"x"), "a.png")))
    client.post(url, data=record_form(timestamp="2024-05-01T11:00:00Z"))
    client.post("/api/sites", json={"site_name": "Ames"})
    client.post(url, data=record_form(timestamp="2024-05-03T10:00:00Z", site_name="Ames"))
    from webapp.extensions import queue

    queue.dispatcher.drain()
    page = writer.get(f"/admin/scripts/{script['id']}").get_data(as_text=True)
    assert page.count('class="bar"') == 2
    assert "2024-05-01: 2" in page
    assert page.count("<time>2024-05-0") == 3
    assert 'class="download"' in page
    filtered = writer.get(f"/admin/scripts/{script['id']}", query_string={"site_name": "Ames"}).get_data(as_text=True)
    assert filtered.count("<time>2024-05-0") == 1


def test_bulk_upload_form_leads_to_the_job_page(app, reference, script, writer):
    """Uploading from the script page queues a job and shows its page, which polls the jobs API."""
    rows = json.dumps(
        {
            "timestamp": "2024-05-01T00:00:00Z",
            "experiment_name": "Drought 2024",
            "season_name": "Summer",
            "site_name": "Maricopa",
        }
    )
    page_url = f"/admin/scripts/{script['id']}"
    response = post_form(
        writer, page_url, page_url + "/upload", {"file": (io.BytesIO(rows.encode() + b"\n"), "rows.ndjson")}
    )
    assert response.status_code == 302 and "/admin/jobs/" in response.headers["Location"]
    job_page = writer.get(response.headers["Location"]).get_data(as_text=True)
    job_url = re.search(r'data-url="([^"]+)"', job_page).group(1)
    job = wait_until(lambda: writer.get(job_url).json, lambda j: j["state"] == "succeeded")
    assert job["inserted"] == 1


def test_bulk_upload_form_defaults_are_the_apis_collection_date_included(app, client, reference, script, writer):
    """The upload form's defaults are read as the API's upload form reads them: a default collection date fills in
    the rows without one, and a date that is no date is shown on the script page with no job queued."""
    rows = json.dumps({"timestamp": "2024-05-01T00:00:00Z"}).encode() + b"\n"
    names = {"experiment_name": "Drought 2024", "season_name": "Summer", "site_name": "Maricopa"}
    page_url = f"/admin/scripts/{script['id']}"
    bad = post_form(
        writer,
        page_url,
        page_url + "/upload",
        {**names, "collection_date": "someday", "file": (io.BytesIO(rows), "rows.ndjson")},
        follow_redirects=True,
    )
    assert "collection_date: Not a valid date." in bad.get_data(as_text=True)
    assert client.get("/api/jobs").json == []
    response = post_form(
        writer,
        page_url,
        page_url + "/upload",
        {**names, "collection_date": "2024-04-30", "file": (io.BytesIO(rows), "rows.ndjson")},
    )
    job_url = "/api/jobs/" + response.headers["Location"].rsplit("/", 1)[1]
    wait_until(lambda: client.get(job_url).json, lambda j: j["state"] == "succeeded")
    [record] = [json.loads(line) for line in client.get(f"/api/scripts/id/{script['id']}/records").data.splitlines()]
    assert record["collection_date"] == "2024-04-30"


def test_names_and_searches_are_rendered_escaped(writer, client):
    """HTML in names is shown as text; SQL-looking searches are just text that matches nothing."""
    client.post("/api/scripts", json={"script_name": "<script>alert(1)</script>"})
    listing = writer.get("/admin/scripts").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in listing
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in listing
    search = writer.get("/admin/scripts", query_string={"q": "' OR 1=1 --"})
    assert search.status_code == 200
    assert "No script matches" in search.get_data(as_text=True)
    assert "&#39; OR 1=1 --" in search.get_data(as_text=True)


def test_api_calls_with_the_session_need_the_csrf_header_to_change_anything(writer):
    """The session reads the API; unsafe calls must echo the CSRF token in X-CSRF-Token."""
    assert writer.get("/api/sites").status_code == 200
    assert writer.post("/api/sites", json={"site_name": "s"}).status_code == 403
    token = csrf_of(writer.get("/admin/"))
    assert writer.post("/api/sites", json={"site_name": "s"}, headers={"X-CSRF-Token": token}).status_code == 200


def test_admin_manages_accounts_and_revokes_others_tokens(app):
    """Only admins reach the accounts page; they create accounts and revoke anyone's token."""
    from tests.conftest import make_token

    victim = make_token(app, "writer", email="victim@example.org")
    admin = sign_in(app, "admin")
    created = post_form(
        admin,
        "/admin/accounts",
        "/admin/accounts",
        {"email": "new@example.org", "password": PASSWORD, "role": "reader"},
    )
    assert created.status_code == 302
    page = admin.get("/admin/accounts").get_data(as_text=True)
    assert "new@example.org" in page and "victim@example.org" in page
    token_id = re.search(r"/admin/tokens/([0-9a-f-]+)/revoke", page).group(1)
    assert post_form(admin, "/admin/accounts", f"/admin/tokens/{token_id}/revoke", {}).status_code == 302
    assert app.test_client().get("/api/sites", headers={"X-API-Key": victim}).status_code == 401


def test_sign_out_ends_the_session(writer):
    """After signing out, pages ask to sign in again."""
    assert post_form(writer, "/admin/", "/admin/logout", {}).status_code == 302
    assert writer.get("/admin/").status_code == 302


def test_script_url_is_a_link_only_when_it_is_http_or_https(writer, client):
    """A stored javascript: or data: URL is shown as text; http(s) URLs are links."""
    hostile = ("javascript:alert(document.cookie)", " JaVaScRiPt:alert(1)", "java\tscript:alert(1)", "data:text/html,x")
    for url in hostile:
        script = client.post("/api/scripts", json={"script_name": "s", "script_url": url}).json
        page = writer.get(f"/admin/scripts/{script['id']}").get_data(as_text=True)
        assert "noopener" not in page, url
        assert re.search(r'href="\s*(java|data)', page, re.IGNORECASE) is None, url
    script = client.post("/api/scripts", json={"script_name": "s", "script_url": "https://git.example.org/a"}).json
    page = writer.get(f"/admin/scripts/{script['id']}").get_data(as_text=True)
    assert '<a href="https://git.example.org/a" rel="noopener noreferrer">' in page


def test_every_response_sends_a_strict_content_security_policy_and_no_sniffing(app, writer, anonymous):
    """Pages, the docs page and API answers forbid inline script and style, framing and type sniffing."""
    responses = {
        "sign-in page": anonymous.get("/admin/login"),
        "dashboard": writer.get("/admin/"),
        "API docs": anonymous.get("/api/docs"),
        "API list": writer.get("/api/sites"),
        "API error": anonymous.get("/api/sites"),
    }
    for name, response in responses.items():
        policy = response.headers.get("Content-Security-Policy", "")
        directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
        assert directives.get("script-src") == "'self'" and directives.get("style-src") == "'self'", name
        assert directives.get("frame-ancestors") == "'none'" and directives.get("object-src") == "'none'", name
        assert "unsafe" not in policy, name
        assert response.headers.get("X-Content-Type-Options") == "nosniff", name
        assert response.headers.get("X-Frame-Options") == "DENY", name
        assert response.headers.get("Referrer-Policy") in ("same-origin", "no-referrer"), name


INLINE_CODE = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=|\son[a-z]+=|javascript:", re.IGNORECASE)


def test_pages_hold_no_inline_script_style_or_event_handlers(app, client, reference, script, writer):
    """What the policy would block is not on any page: scripts and styles come from static files."""
    client.post(f"/api/scripts/id/{script['id']}/records", data=record_form())
    admin = sign_in(app, "admin")
    experiment_id = reference["experiment"]["id"]
    pages = [
        "/admin/login",
        "/admin/",
        "/admin/scripts",
        f"/admin/scripts/{script['id']}",
        "/admin/scripts/new",
        "/admin/experiments",
        f"/admin/experiments/{experiment_id}",
        "/admin/sites",
        "/admin/jobs",
        "/api/docs",
    ]
    for url in pages:
        page = writer.get(url).get_data(as_text=True)
        assert INLINE_CODE.search(page) is None, (url, INLINE_CODE.search(page))
    assert INLINE_CODE.search(admin.get("/admin/accounts").get_data(as_text=True)) is None
    assert 'src="/static/swagger-init.js"' in writer.get("/api/docs").get_data(as_text=True)
    assert writer.get("/static/swagger-init.js").status_code == 200


def test_delete_confirmation_names_its_object_as_data_not_code(writer, client):
    """A name holding quotes cannot break out of the confirmation: it is an escaped data attribute."""
    client.post("/api/sites", json={"site_name": "x');alert(1);('"})
    page = writer.get("/admin/sites").get_data(as_text=True)
    assert "onsubmit" not in page
    assert 'data-confirm="Delete site x&#39;);alert(1);(&#39;?"' in page


def test_a_copied_session_cookie_stops_working_after_sign_out(app, writer):
    """Signing out ends the session on the server: a copy of the cookie taken before is refused after."""
    copy = app.test_client()
    copy.set_cookie("session", writer.get_cookie("session").value)
    assert copy.get("/admin/").status_code == 200
    assert copy.get("/api/sites").status_code == 200
    assert post_form(writer, "/admin/", "/admin/logout", {}).status_code == 302
    after = copy.get("/admin/")
    assert after.status_code == 302 and after.headers["Location"].startswith("/admin/login")
    assert copy.get("/api/sites").status_code == 401


def test_a_new_password_ends_every_session_of_the_account(app, writer):
    """A password change signs the account out everywhere; signing in again with the new password works."""
    from webapp.services import accounts

    accounts.set_password(accounts.account_by_email("writer@example.org"), "a fresh passphrase 7")
    assert writer.get("/admin/").status_code == 302
    token = csrf_of(writer.get("/admin/login"))
    again = writer.post(
        "/admin/login", data={"email": "writer@example.org", "password": "a fresh passphrase 7", "csrf_token": token}
    )
    assert again.status_code == 302
    assert writer.get("/admin/").status_code == 200


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/admin",
        "/\\evil.example",
        "/\\/evil.example",
        "https://evil.example/admin",
        "javascript:alert(1)",
        "/admin\r\nSet-Cookie: stolen=1",
        "/\t/evil.example",
        "/admin/\x00",
        "",
    ],
)
def test_sign_in_goes_only_to_paths_of_this_site(app, target):
    """`next` is followed only when it is a same-site path; anything else (or CR/LF, once a 500) leads to the
    dashboard."""
    from webapp.services import accounts

    accounts.create_account("next@example.org", PASSWORD, "reader")
    browser = app.test_client()
    token = csrf_of(browser.get("/admin/login"))
    response = browser.post(
        "/admin/login",
        query_string={"next": target},
        data={"email": "next@example.org", "password": PASSWORD, "csrf_token": token},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/"


def test_sign_in_follows_a_local_next(app):
    """A same-site path in `next`, query included, is where signing in leads."""
    from webapp.services import accounts

    accounts.create_account("next@example.org", PASSWORD, "reader")
    browser = app.test_client()
    token = csrf_of(browser.get("/admin/login"))
    response = browser.post(
        "/admin/login",
        query_string={"next": "/admin/scripts?q=ndvi"},
        data={"email": "next@example.org", "password": PASSWORD, "csrf_token": token},
    )
    assert response.headers["Location"] == "/admin/scripts?q=ndvi"


def test_session_cookie_is_secure_over_https(app, tmp_path, database_url):
    """Served over HTTPS the cookie is Secure; over plain HTTP only when SESSION_COOKIE_SECURE forces it."""
    from webapp.services import accounts

    accounts.create_account("secure@example.org", PASSWORD, "reader")
    form = {"email": "secure@example.org", "password": PASSWORD}

    def cookie_of(client, base_url):
        token = csrf_of(client.get("/admin/login", base_url=base_url))
        response = client.post("/admin/login", data={**form, "csrf_token": token}, base_url=base_url)
        assert response.status_code == 302
        return response.headers["Set-Cookie"]

    assert "Secure" in cookie_of(app.test_client(), "https://localhost")
    assert "Secure" not in cookie_of(app.test_client(), "http://localhost")
    forced = make_app(tmp_path, database_url, session_cookie_secure=True)
    with forced.app_context():
        assert "Secure" in cookie_of(forced.test_client(), "http://localhost")


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short pw", "at least 12 characters"),
        ("elevenchars", "at least 12 characters"),
        ("Password1234", "too common"),
        ("qwertyuiop123", "too common"),
        ("newcomer@example.org", "email"),
        ("i am newcomer 2024", "email"),
    ],
)
def test_accounts_page_applies_the_password_policy(app, password, message):
    """The accounts form refuses what the service's policy refuses, with the reason (422)."""
    admin = sign_in(app, "admin")
    refused = post_form(
        admin,
        "/admin/accounts",
        "/admin/accounts",
        {"email": "newcomer@example.org", "password": password, "role": "reader"},
    )
    assert refused.status_code == 422
    assert message in refused.get_data(as_text=True)
    assert "newcomer@example.org" not in admin.get("/admin/accounts").get_data(as_text=True)
