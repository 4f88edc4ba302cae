"""Background jobs: bulk uploads and record files, with their progress."""
