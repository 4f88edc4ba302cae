"""N records into a pandas DataFrame through the Python client: ``records_frame`` (the Parquet export) against the
same client's NDJSON stream turned into a DataFrame the way a user would, from the same gunicorn in the same run."""

import tempfile
import time
from pathlib import Path

import pandas as pd
from scriptorium_client import Client

from bench import support
from bench.stream_records import seed

DEFAULT_N = 1_000_000
RATIO_TARGET = 3.0


def frame_by_parquet(client: Client, script_id: str) -> tuple[pd.DataFrame, float]:
    """The records through ``records_frame``, and its seconds."""
    started = time.perf_counter()
    frame = client.records_frame(script_id)
    return frame, time.perf_counter() - started


def frame_by_ndjson(client: Client, script_id: str) -> tuple[pd.DataFrame, pd.DataFrame, float, float, float]:
    """The records read from the NDJSON stream, as ``pd.DataFrame(list(...))`` and as ``pd.json_normalize`` (which
    flattens script_data into columns as the export does); the seconds of the stream, of each frame."""
    started = time.perf_counter()
    records = list(client.records(script_id))
    streamed = time.perf_counter() - started
    started = time.perf_counter()
    plain = pd.DataFrame(records)
    built = time.perf_counter() - started
    started = time.perf_counter()
    flat = pd.json_normalize(records, max_level=1)
    normalised = time.perf_counter() - started
    return plain, flat, streamed, built, normalised


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its numbers."""
    parser = support.arg_parser("client_frames", __doc__, DEFAULT_N, "records to read into a DataFrame")
    args = parser.parse_args(argv)
    support.print_header("client_frames", argv, args.n, "records, PostgreSQL")
    with support.scratch_database() as url, tempfile.TemporaryDirectory(prefix="scriptorium-bench-") as tmp:
        started = time.perf_counter()
        script_id = seed(url, args.n)
        print(f"seeded:   {args.n:,} records in {time.perf_counter() - started:.1f} s")
        env = support.app_env(url, Path(tmp))
        token = support.api_token(url, Path(tmp))
        with support.gunicorn(env, Path(tmp) / "gunicorn.log") as server, Client(server.url, token) as client:
            # Warm the worker (imports, connection pool, both code paths) on an empty match.
            list(client.records(script_id, site_name="none"))
            client.records_frame(script_id, site_names=["none"])

            plain, flat, streamed, built, normalised = frame_by_ndjson(client, script_id)
            baseline_seconds = streamed + built
            baseline = len(plain) / baseline_seconds
            flat_rate = len(flat) / (streamed + normalised)
            print(
                f"baseline: list(client.records(id)) {streamed:.2f} s + pd.DataFrame(list) {built:.2f} s "
                f"= {baseline:,.0f} rows/s ({len(plain.columns)} columns; script_data left as dicts)"
            )
            print(
                f"          with pd.json_normalize(max_level=1) instead: {normalised:.2f} s, "
                f"{flat_rate:,.0f} rows/s ({len(flat.columns)} columns)"
            )
            first, last = plain["id"].iloc[0], plain["id"].iloc[-1]
            del plain, flat

            frame, seconds = frame_by_parquet(client, script_id)
            result = len(frame) / seconds
            print(
                f"result:   client.records_frame(id) (GET …/records/export?format=parquet, pyarrow): {seconds:.2f} s "
                f"= {result:,.0f} rows/s ({len(frame.columns)} columns; script_data.<key> typed)"
            )
        if len(frame) != args.n or (frame["id"].iloc[0], frame["id"].iloc[-1]) != (first, last):
            raise RuntimeError(
                f"records_frame returned {len(frame):,} rows from {frame['id'].iloc[0]} to {frame['id'].iloc[-1]}; "
                f"expected {args.n:,} from {first} to {last}"
            )
        print("check:    both frames hold N rows; first and last record ids match")
        support.print_ratio("ratio", result / baseline, RATIO_TARGET)
        # json_normalize gives the columns records_frame gives (script_data's keys); pd.DataFrame is the cheaper way.
        support.print_ratio("ratio against json_normalize", result / flat_rate, RATIO_TARGET)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
