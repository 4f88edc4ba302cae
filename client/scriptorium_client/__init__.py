"""Python client of the Scriptorium Scripts API.

from scriptorium_client import Client

with Client() as api:  # $SCRIPTORIUM_URL and $SCRIPTORIUM_TOKEN
    job = api.bulk_upload(script_id, "rows.ndjson", experiment_name="Drought 2024")
    frame = api.records_frame(script_id, site_names=["Maricopa"])
"""

from scriptorium_client.client import DEFAULT_URL, ENDED, Client
from scriptorium_client.errors import APIError

__all__ = ["DEFAULT_URL", "ENDED", "APIError", "Client"]
__version__ = "0.1.0"
