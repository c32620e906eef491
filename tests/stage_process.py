"""Run a brgen command in a child process that a test can kill; see test_crash_safety.py.

Children are forked from a multiprocessing forkserver that imported brgen, OpenCV and torch once, so each
run costs only its own work. With `slow_fsync_seconds`, every fsync of an image or a manifest line first
appends one byte to `events_path` and then sleeps. The sleep widens the windows between writing, renaming
and recording a file, and the byte lets the parent kill the child inside the window of a chosen fsync.
"""

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import torch

import brgen_build.cli

_context = multiprocessing.get_context("forkserver")
# Installed modules only: the forkserver of Python 3.11 does not see the tests folder on its sys.path.
_context.set_forkserver_preload(["brgen_build.cli", "inpainters.lama", "inpainters.opencv_telea"])


def _run(argv: list[str], slow_fsync_seconds: float, events_path: str | None) -> None:
    torch.set_num_threads(1)  # a new thread pool per short child costs more than the tiny model's inference
    if slow_fsync_seconds:
        _slow_down_fsync(slow_fsync_seconds, events_path)
    brgen_build.cli.main(argv)


def _slow_down_fsync(seconds: float, events_path: str | None) -> None:
    """Make fsyncs of images and manifest lines announce themselves in `events_path`, then sleep."""
    fsync = os.fsync
    events = os.open(events_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT) if events_path else None

    def slow_fsync(descriptor: int) -> None:
        path = os.readlink(f"/proc/self/fd/{descriptor}")
        if "/manifests/" not in path or path.endswith(".jsonl"):  # lock and state files are not slowed
            if events is not None:
                os.write(events, b".")
            time.sleep(seconds)
        fsync(descriptor)

    os.fsync = slow_fsync


def start_server() -> None:
    """Start the forkserver (it imports torch, seconds) so that later run times measure only the command."""
    process = _context.Process(target=_run, args=(["--version"], 0.0, None))
    process.start()
    process.join()


def count_events(events_path: Path) -> int:
    return events_path.stat().st_size if events_path.exists() else 0


def start(argv: list[str], slow_fsync_seconds: float = 0.0, events_path: Path | None = None) -> multiprocessing.Process:
    """Start `brgen ARGV` in a child and return it without waiting."""
    if events_path is not None:
        events_path.unlink(missing_ok=True)
    process = _context.Process(target=_run, args=(argv, slow_fsync_seconds, str(events_path) if events_path else None))
    process.start()
    return process


def run(
    argv: list[str],
    kill_after: float | None = None,
    kill_at_event: int | None = None,
    slow_fsync_seconds: float = 0.0,
    events_path: Path | None = None,
    rng: random.Random | None = None,
) -> tuple[int, float, bool]:
    """Run `brgen ARGV` in a child and SIGKILL it if it still runs at the chosen point.

    The point is `kill_after` seconds after the start, or a random moment inside the sleep of fsync number
    `kill_at_event` (counted from 1 in `events_path`). Returns the exit code (-9 when killed), the seconds it
    ran and whether it was killed.
    """
    started = time.perf_counter()
    process = start(argv, slow_fsync_seconds, events_path)
    if kill_at_event is None:
        process.join(kill_after)
    else:
        while process.is_alive() and count_events(events_path) < kill_at_event:
            time.sleep(0.001)
        time.sleep((rng or random).uniform(0, 0.8 * slow_fsync_seconds))
    if process.is_alive():
        os.kill(process.pid, signal.SIGKILL)  # it may still end on its own first
    process.join()
    return process.exitcode, time.perf_counter() - started, process.exitcode == -signal.SIGKILL
