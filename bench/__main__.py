"""Run every benchmark at its default N, or one by name with its own options: ``python -m bench [name] [opts]``."""

import importlib
import sys
import traceback

from bench import BENCHMARKS


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark named first in ``argv`` with the rest of ``argv``, or all of them without options."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(f"usage: python -m bench [{'|'.join(BENCHMARKS)}] [options of that benchmark]")
        return 0
    if argv and not argv[0].startswith("-"):
        name, options = argv[0], argv[1:]
        if name not in BENCHMARKS:
            print(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}", file=sys.stderr)
            return 2
        return importlib.import_module(f"bench.{name}").main(options)
    if argv:
        print("options apply to one benchmark: python -m bench NAME [options]", file=sys.stderr)
        return 2
    status = 0
    for name in BENCHMARKS:
        # One failing benchmark should not hide the numbers of the others.
        try:
            status = importlib.import_module(f"bench.{name}").main([]) or status
        except Exception:
            traceback.print_exc()
            status = 1
        print()
    return status


if __name__ == "__main__":
    sys.exit(main())
