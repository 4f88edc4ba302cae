"""New ids are UUIDv7: time-ordered, so a table's primary-key index grows at its right edge."""

import uuid

from tests.conftest import record_form
from webapp.extensions import db
from webapp.fields import new_id, new_raw_id
from webapp.models import JobKind
from webapp.services import jobs


def test_new_ids_are_version_7_and_increase():
    """Each id is a plain uuid.UUID of version 7, later ones sort after earlier ones (even within a millisecond)."""
    ids = [new_id() for _ in range(10_000)]
    assert {type(i) for i in ids} == {uuid.UUID}
    assert {i.version for i in ids} == {7}
    assert {i.variant for i in ids} == {uuid.RFC_4122}
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_raw_ids_come_from_the_same_sequence_as_new_ids():
    """``new_raw_id`` (a bulk row's id) is ``new_id``'s kind of id: version 7, increasing across both, unique."""
    mixed = [make() for _ in range(5_000) for make in (new_id, new_raw_id)]
    ids = [uuid.UUID(bytes=made.bytes) for made in mixed]
    assert {i.version for i in ids} == {7}
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_stored_records_datasets_and_jobs_take_time_ordered_ids(client, reference, script):
    """Records and the dataset a record creates are stored with version-7 ids, records in the order made."""
    url = f"/api/scripts/id/{script['id']}/records"
    records = [
        client.post(url, data=record_form(timestamp=f"2024-05-01T12:00:{second:02d}Z", dataset_name="Ids")).json
        for second in range(5)
    ]
    record_ids = [uuid.UUID(record["id"]) for record in records]
    assert {i.version for i in record_ids} == {7}
    assert record_ids == sorted(record_ids)
    assert uuid.UUID(records[0]["dataset_id"]).version == 7


def test_a_new_job_takes_a_time_ordered_id(app):
    """A job made by the jobs service (a record file's check, say) has a version-7 id."""
    with app.app_context():
        job = jobs.new_job(JobKind.RECORD_FILE, None, {})
        assert job.id.version == 7
        db.session.rollback()
