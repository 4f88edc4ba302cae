"""Signed, expiring download URLs of the local-folder store, served by the app itself."""
