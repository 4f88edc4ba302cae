"""``GET /metrics``: the Prometheus scrape of this host's web processes."""
