"""Background work (Celery on Redis): arrives with the worker issue; nothing runs here yet."""
