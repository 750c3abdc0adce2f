"""Running independent tasks, up to ``jobs`` at once: the scheduler behind ``--jobs``.

With one job every task runs in this process, one after the other (the build as it always
was). With more, each task runs in a worker process (started with ``spawn``: no fork of a
process that holds threads) and every worker's environment first gets
:func:`thread_environment`, so that the kernels it starts share the CPU instead of each
taking all of it. Results come back in the order of the tasks, whatever order they finish in.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: The variables that size the thread pools of PyTorch (OpenMP, MKL) and of numpy's BLAS.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                   "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity where the OS says, else all of them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def threads_per_job(jobs: int, cpus: int | None = None) -> int:
    """``max(1, cpus // jobs)``: the threads each of ``jobs`` concurrent kernels may use."""
    return max(1, (cpu_count() if cpus is None else cpus) // max(1, jobs))


def thread_environment(jobs: int, cpus: int | None = None) -> dict[str, str]:
    """The environment that limits a kernel to :func:`threads_per_job` threads when several
    run at once; empty for one job (a lone kernel keeps the libraries' own defaults)."""
    if jobs <= 1:
        return {}
    threads = str(threads_per_job(jobs, cpus))
    return {name: threads for name in THREAD_ENV_VARS}


def _init_worker(env: Mapping[str, str], log_level: int | None) -> None:
    os.environ.update(env)
    if log_level is not None:  # a spawned worker starts with logging unconfigured
        logging.basicConfig(level=log_level, format="%(message)s")


def schedule(
    tasks: Sequence[T],
    worker: Callable[[T], R],
    *,
    jobs: int = 1,
    env: Mapping[str, str] | None = None,
    on_start: Callable[[int, T], None] | None = None,
    on_done: Callable[[int, R], None] | None = None,
    on_error: Callable[[int, T, BaseException], R] | None = None,
    log_level: int | None = None,
) -> list[R]:
    """``[worker(task) for task in tasks]``, up to ``jobs`` at a time.

    ``on_start(i, task)`` is called (in this process) just before task ``i`` is handed to a
    worker, ``on_done(i, result)`` as soon as it is back: in the order the tasks finish,
    which with several jobs need not be theirs. The returned list is in the order of
    ``tasks``. With ``jobs > 1``, ``worker`` and the tasks must be picklable (a function of
    an importable module), ``env`` is set in every worker process before its first task and
    ``log_level`` configures its logging; an exception of a worker (or a worker process that
    died) becomes ``on_error(i, task, exc)``, or is raised when there is no ``on_error``.
    """
    results: list[R | None] = [None] * len(tasks)

    def finish(index: int, result: R) -> None:
        results[index] = result
        if on_done is not None:
            on_done(index, result)

    def fail(index: int, exc: BaseException) -> None:
        if on_error is None:
            raise exc
        finish(index, on_error(index, tasks[index], exc))

    if jobs <= 1 or len(tasks) <= 1:
        for index, task in enumerate(tasks):
            if on_start is not None:
                on_start(index, task)
            try:
                result = worker(task)
            except Exception as exc:  # noqa: BLE001 - reported through on_error
                fail(index, exc)
            else:
                finish(index, result)
        return results  # type: ignore[return-value]

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=context,
                             initializer=_init_worker, initargs=(dict(env or {}), log_level)) as pool:
        pending: dict[Future, int] = {}
        following = 0
        while following < len(tasks) or pending:
            while following < len(tasks) and len(pending) < jobs:
                if on_start is not None:
                    on_start(following, tasks[following])
                pending[pool.submit(worker, tasks[following])] = following
                following += 1
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=pending.__getitem__):
                index = pending.pop(future)
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - reported through on_error
                    fail(index, exc)
                else:
                    finish(index, result)
    return results  # type: ignore[return-value]
