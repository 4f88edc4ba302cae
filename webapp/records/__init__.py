"""Script records and their attached files."""
