"""The folder where the processes of one host keep their Prometheus values (prometheus-client's multiprocess
mode). prometheus-client reads ``PROMETHEUS_MULTIPROC_DIR`` when it is first imported, so the entry points
(gunicorn's config, the worker) call ``use_folder`` before anything imports the app."""

import os
import shutil
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def use_folder(folder: str) -> None:
    """Make this process, and those it starts, write their values into ``folder`` (created if missing)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = folder


def empty_folder(folder: str) -> None:
    """Delete the values files of processes that ran before (a restart starts its counters from zero)."""
    for path in Path(folder).glob("*.db"):
        path.unlink(missing_ok=True)


def worker_folder(metrics_dir: str, pid: int | None = None) -> str:
    """A folder of its own for one worker (``<metrics_dir>/worker-<pid>``), made empty; folders of workers
    that are gone are deleted. The web processes' files stay directly in ``metrics_dir``, out of its way."""
    root = Path(metrics_dir)
    for old in root.glob("worker-*"):
        if not _alive(old.name.removeprefix("worker-")):
            shutil.rmtree(old, ignore_errors=True)
    folder = root / f"worker-{pid or os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return str(folder)


def _alive(pid: str) -> bool:
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
