"""The README's tour, run as a saved script against gunicorn, as a newcomer would run it after `make run`."""

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import PASSWORD, empty_tables, make_app
from tests.servers import gunicorn_app

README = Path(__file__).resolve().parent.parent / "README.md"


def tour_script() -> str:
    """The shell block of the README's "A short tour" section."""
    section = README.read_text().split("## A short tour", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


def test_the_readme_tour_runs_as_a_script(tmp_path, postgresql_url):
    """Every step of the tour succeeds (bash -e), the downloaded file equals the uploaded one, the upload is stored."""
    from webapp.services import accounts

    app = make_app(tmp_path / "instance", postgresql_url)
    with app.app_context():
        accounts.create_account("admin@localhost", PASSWORD, "admin")  # what `make run` creates
    work = tmp_path / "project"
    (work / ".venv" / "bin").mkdir(parents=True)
    (work / ".venv" / "bin" / "scriptorium").symlink_to(Path(sys.executable).parent / "scriptorium")
    (work / "README.md").write_bytes(README.read_bytes())
    try:
        with gunicorn_app(postgresql_url, tmp_path) as base:
            env = {
                **os.environ,
                "SCRIPTORIUM_URL": base,
                "SCRIPTORIUM_DATABASE_URL": postgresql_url,
                "SCRIPTORIUM_SECRET_KEY": "server-test-key",
                "SCRIPTORIUM_INSTANCE_PATH": str(tmp_path),
            }
            env.pop("SCRIPTORIUM_TOKEN", None)
            ran = subprocess.run(
                ["bash", "-e", "-c", tour_script()], cwd=work, env=env, capture_output=True, text=True, timeout=300
            )
        assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
        assert (work / "downloaded-README.md").read_bytes() == README.read_bytes()
        assert "succeeded: 1 inserted, 0 duplicates, 0 failed of 1 rows." in ran.stdout
        assert '"height_cm":41.5' in ran.stdout
    finally:
        empty_tables(app)
