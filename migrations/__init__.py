"""Alembic migrations; ``webapp.cli`` runs them (``scriptorium migrate``)."""
