"""Scripts, their runs and their datasets."""
