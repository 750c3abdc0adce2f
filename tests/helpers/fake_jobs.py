"""Workers for the tests of the build's scheduler (``bookbuild.jobs.schedule``): with
``--jobs`` they run in spawned worker processes, so they live in an importable module."""

import os
import time


def sleep_and_report(task: tuple[str, float]) -> dict:
    """Sleep ``task[1]`` seconds; say who ran it, when, and with which thread settings."""
    name, seconds = task
    start = time.time()
    time.sleep(seconds)
    if name.startswith("raise"):
        raise RuntimeError(f"{name} failed on purpose")
    return {"name": name, "pid": os.getpid(), "start": start, "end": time.time(),
            "omp": os.environ.get("OMP_NUM_THREADS")}
