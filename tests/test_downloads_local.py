"""Downloads from the local-folder store: signed, expiring URLs served by the app."""

import io
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import record_form, wait_for_file
from webapp import storage


@pytest.fixture
def stored_record(client, reference, script):
    form = record_form(record_file=(io.BytesIO(b"pixels"), "Plot №7 (north).png"))
    response = client.post(f"/api/scripts/id/{script['id']}/records", data=form)
    assert response.status_code == 200
    return wait_for_file(client, response.json)


def download_location(client, record) -> str:
    response = client.get(f"/api/scripts/records/id/{record['id']}/download")
    assert response.status_code == 307
    return response.headers["Location"]


def test_download_redirects_to_a_url_serving_the_file_under_its_name(client, stored_record):
    """The 307 target serves the bytes with the original name, without any credentials."""
    location = download_location(client, stored_record)
    response = client.get(urlsplit(location).path)
    assert response.status_code == 200
    assert response.data == b"pixels"
    assert response.mimetype == "image/png"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert "filename*=UTF-8''Plot%20%E2%84%967%20%28north%29.png" in disposition


def test_tampered_download_url_is_404(client, stored_record):
    """Changing any character of the signed token makes it invalid."""
    path = urlsplit(download_location(client, stored_record)).path
    token = path.rsplit("/", 1)[1]
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    response = client.get(f"/files/{flipped}")
    assert response.status_code == 404
    assert response.json["code"] == 404


def test_expired_download_url_is_404(client, stored_record, monkeypatch):
    """A signed URL stops working once its expiry has passed."""
    path = urlsplit(download_location(client, stored_record)).path
    expires_in = client.application.config["DOWNLOAD_URL_EXPIRES"]
    now = time.time()
    monkeypatch.setattr(storage.time, "time", lambda: now + expires_in - 5)
    assert client.get(path).status_code == 200
    monkeypatch.setattr(storage.time, "time", lambda: now + expires_in + 5)
    assert client.get(path).status_code == 404


def test_download_url_of_a_deleted_record_stops_working(client, stored_record):
    """Once the record and its file are deleted, an earlier URL is 404."""
    path = urlsplit(download_location(client, stored_record)).path
    client.delete(f"/api/scripts/records/id/{stored_record['id']}")
    assert client.get(path).status_code == 404


def test_local_keys_cannot_escape_the_store(app):
    """A key that climbs out of the store folder is refused."""
    from webapp.extensions import store

    with pytest.raises(ValueError):
        store.backend.path_of("../outside.txt")


def test_deleting_files_leaves_no_empty_folders_behind(client, app, stored_record):
    """The local store removes the folders a record's file left empty."""
    root = Path(app.config["STORAGE_LOCAL_DIR"])
    assert client.delete(f"/api/scripts/records/id/{stored_record['id']}").status_code == 200
    assert list(root.rglob("*")) == []
