"""Paging edge cases of the one-query page (webapp/common/pagination.py): the total rides with the rows."""

import pytest


@pytest.mark.parametrize("path", ["/api/sites/all", "/api/scripts/all", "/api/scripts"])
def test_pages_past_the_end_and_empty_pages_still_count(client, reference, script, path):
    """An offset past the end (past a 32-bit integer, even past what the database takes), or a limit of 0, is an
    empty page with the total; a page inside the list carries it too."""
    for query in (
        {"offset": 10**30},
        {"offset": 2**40},
        {"offset": 5},
        {"limit": 0},
        {"limit": 0, "offset": 10**30},
        {"offset": 0},
    ):
        response = client.get(path, query_string=query)
        assert response.status_code == 200, (query, response.json)
        assert response.headers["X-Total-Count"] == "1"
        assert len(response.json) == (1 if query == {"offset": 0} else 0)
