"""Sites: where a record's data was collected."""

import uuid

from sqlalchemy import select

from webapp.extensions import db
from webapp.models import Site
from webapp.services.common import commit, delete, get_or_404, update_fields


def list_sites():
    """All sites, oldest first."""
    return select(Site).order_by(Site.created_at, Site.id)


def create_site(values: dict) -> Site:
    """Create a site; its name must be new (409)."""
    site = Site(**values)
    db.session.add(site)
    commit(f"A site named {values['site_name']!r} exists already.")
    return site


def get_site(site_id: uuid.UUID) -> Site:
    """The site with that id (404)."""
    return get_or_404(Site, site_id, "site")


def update_site(site_id: uuid.UUID, values: dict) -> Site:
    """Change the given fields of a site."""
    site = get_site(site_id)
    update_fields(site, values)
    commit(f"A site named {values.get('site_name')!r} exists already.")
    return site


def delete_site(site_id: uuid.UUID):
    """Delete a site; 409 while records reference it."""
    return delete(get_site(site_id), "Records still reference this site.")
