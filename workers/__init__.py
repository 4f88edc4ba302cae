"""The Celery worker process: its entry point (``worker.py``) and its tasks (``tasks.py``), which call the services."""
