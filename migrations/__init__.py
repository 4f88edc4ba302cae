"""Alembic migrations; ``webapp/cli/setup.py`` runs them (``scriptorium migrate``, ``scriptorium init``)."""
