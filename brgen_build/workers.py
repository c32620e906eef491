"""Process pools for file checks that are CPU-bound (hashing, PNG decoding)."""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.pool import Pool


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def worker_pool(workers: int) -> Pool:
    """Start a pool of `workers` processes with forkserver (spawn where forkserver is missing).

    A forked copy of a parent that holds threads (torch's OpenMP pool, tqdm's monitor) can deadlock, so
    the pool never forks the caller. The server preloads the check module, so each worker starts in
    milliseconds.
    """
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(["brgen_build.photo_checks"])
    return context.Pool(workers)
