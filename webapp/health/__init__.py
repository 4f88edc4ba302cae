"""Liveness of the web process."""
