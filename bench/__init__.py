"""Benchmarks of Scriptorium against baselines measured in the same run; ``python -m bench [name] [--n N]``."""

BENCHMARKS = (
    "stream_records",
    "export_records",
    "client_frames",
    "post_record",
    "read_paths",
    "record_file",
    "bulk_ingest",
    "worker_files",
    "slow_clients",
    "hostile_uploads",
    "scale",
)
