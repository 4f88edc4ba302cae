"""API tokens of the calling account."""
