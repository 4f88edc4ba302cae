"""Server-rendered admin pages for the people who curate the data (Jinja, same app, same services)."""
