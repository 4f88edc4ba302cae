"""End to end in a real browser: headless Chromium (Debian's package) driven by Playwright, against gunicorn.

Screenshots go to test-artifacts/screenshots/ (not committed).
"""

import json
from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect, sync_playwright

from tests.conftest import PASSWORD, empty_tables, make_app
from tests.servers import gunicorn_app, wait_until

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
# As the machine's own probe runs it: no sandbox as root, and no background calls to the outside.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is needed (Debian's chromium package; `make test` installs it)")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def site(tmp_path, postgresql_url):
    """gunicorn serving the app (embedded queue, local store) with an admin account and a writer token."""
    from webapp.services import accounts, tokens

    app = make_app(tmp_path, postgresql_url)
    with app.app_context():
        admin = accounts.create_account("curator@example.org", PASSWORD, "admin")
        token = tokens.create_token(admin, "e2e")[1]
    with gunicorn_app(postgresql_url, tmp_path) as base:
        yield base, token
    empty_tables(app)


def csp_violations(page) -> list[str]:
    """What the page reports blocking under its Content-Security-Policy, filled in as it happens."""
    violations = []
    page.on("console", lambda message: "Content Security Policy" in message.text and violations.append(message.text))
    return violations


def test_curator_journey(browser, site, tmp_path):
    """Sign in, create a script, upload a bulk file and watch its job succeed, read the records and their
    chart, download a file, decline to delete the script, sign out — with nothing blocked by the pages' policy."""
    base, token = site
    SHOTS.mkdir(parents=True, exist_ok=True)
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {token}"
    experiment = api.post(f"{base}/api/experiments", json={"experiment_name": "Drought 2024"}).json()
    api.post(f"{base}/api/experiments/id/{experiment['id']}/seasons", json={"season_name": "Summer"})
    api.post(f"{base}/api/sites", json={"site_name": "Maricopa"})

    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    violations = csp_violations(page)
    page.goto(f"{base}/admin/")
    expect(page).to_have_url(f"{base}/admin/login?next=/admin/?")
    page.get_by_label("Email").fill("curator@example.org")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    page.screenshot(path=SHOTS / "01-dashboard.png", full_page=True)

    page.get_by_role("link", name="Scripts").click()
    page.get_by_role("link", name="New script").click()
    page.get_by_label("Name").fill("canopy-height")
    page.get_by_label("Extension").fill("py")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", name="canopy-height")).to_be_visible()
    script_url = page.url
    page.screenshot(path=SHOTS / "02-script-created.png", full_page=True)

    rows = tmp_path / "plots.ndjson"
    rows.write_text(
        "".join(
            json.dumps({"timestamp": f"2024-05-{day:02d}T{hour:02d}:00:00Z", "script_data": {"height_cm": 30 + day}})
            + "\n"
            for day in range(1, 8)
            for hour in range(day)
        )
        + "{not json}\n"
    )
    page.get_by_label("File (NDJSON, CSV or a JSON array)").set_input_files(str(rows))
    page.get_by_label("Default experiment").fill("Drought 2024")
    page.get_by_label("Default season").fill("Summer")
    page.get_by_label("Default site").fill("Maricopa")
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=30_000)
    expect(page.locator("#job-inserted")).to_have_text("28")
    expect(page.locator("#job-failed")).to_have_text("1")
    expect(page.locator("#job-errors li")).to_have_count(1)
    page.screenshot(path=SHOTS / "03-job-succeeded.png", full_page=True)

    script_id = script_url.rsplit("/", 1)[1]
    record = api.post(
        f"{base}/api/scripts/id/{script_id}/records",
        data={
            "timestamp": "2024-05-09T12:00:00Z",
            "experiment_name": "Drought 2024",
            "season_name": "Summer",
            "site_name": "Maricopa",
        },
        files={"record_file": ("leaf scan.png", b"\x89PNG fake image bytes", "image/png")},
    ).json()
    wait_until(
        lambda: api.get(f"{base}/api/scripts/records/id/{record['id']}").json(), lambda r: r["file_status"] == "ready"
    )

    page.goto(script_url)
    expect(page.locator("#records-chart rect.bar")).to_have_count(8)
    expect(page.locator("#records tbody tr")).to_have_count(29)
    page.screenshot(path=SHOTS / "04-script-records-chart.png", full_page=True)
    page.get_by_label("Collected").fill("2024-05-03")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#records tbody tr")).to_have_count(3)

    page.goto(script_url)
    with page.expect_download() as download_info:
        page.get_by_role("link", name="leaf scan.png").click()
    download = download_info.value
    assert download.suggested_filename == "leaf scan.png"
    assert Path(download.path()).read_bytes() == b"\x89PNG fake image bytes"

    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("heading", name="canopy-height")).to_be_visible()
    assert asked == ["Delete this script with all its records?"]
    assert api.get(f"{base}/api/scripts/id/{script_id}").status_code == 200

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.screenshot(path=SHOTS / "05-signed-out.png", full_page=True)
    page.goto(f"{base}/admin/")
    expect(page).to_have_url(f"{base}/admin/login?next=/admin/?")
    assert violations == []


def test_api_docs_render_under_the_policy(browser, site):
    """Swagger UI starts from a static initializer: the docs page lists the operations with nothing blocked."""
    base, _ = site
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    violations = csp_violations(page)
    response = page.goto(f"{base}/api/docs")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    expect(page.locator(".opblock-summary-path", has_text="/api/scripts/all")).to_be_visible()
    page.locator(".opblock-summary-path", has_text="/api/tokens").first.click()
    expect(page.get_by_role("button", name="Try it out").first).to_be_visible()
    page.screenshot(path=SHOTS / "06-api-docs.png", full_page=False)
    assert violations == []
