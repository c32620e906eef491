"""Exclusive file locks that name their holder.

A lock is an advisory `flock` on a small file that also stores the holder's host, pid, start time and command
line. The kernel releases a `flock` when its process ends, even by SIGKILL, so a lock left by a dead process
is simply taken over by the next one and its stale holder line is overwritten. On NFSv4 `flock` works
across hosts, and the server releases the lock of a crashed client after its lease time.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from brgen_build.errors import BrgenError
from brgen_build.files import make_folders, write_error
from brgen_build.manifest import format_timestamp, utc_now

logger = logging.getLogger(__name__)

# errno values of file systems that do not support flock (NFSv3 without lockd, Lustre without `-o flock`).
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}


class LockHeld(BrgenError):
    """Another live process holds the lock. The message names its host and pid."""


class FileLock:
    """An exclusive lock on `path`. `purpose` names the locked work in messages (`stage reals, shard 0/2`).

    Acquiring retries for about a second, because `holder_of` (used by status displays) takes a shared lock
    for a moment and must not make a starting process fail.
    """

    def __init__(self, path: str | os.PathLike, purpose: str):
        self.path = Path(path)
        self.purpose = purpose
        self._descriptor: int | None = None

    def acquire(self, attempts: int = 6, delay: float = 0.2) -> None:
        try:
            make_folders(self.path.parent)
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise write_error(self.path, error) from error
        for attempt in range(attempts):
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt + 1 < attempts:
                    time.sleep(delay)
            except OSError as error:
                if error.errno not in _UNSUPPORTED:
                    os.close(descriptor)
                    raise write_error(self.path, error) from error
                # NOTE: without flock two processes started on the same shard are not detected.
                logger.warning("%s: the file system does not support file locks (%s), so %s runs without a lock", self.path, error.strerror, self.purpose)
                break
        else:
            holder = _read_holder(descriptor)
            os.close(descriptor)
            raise LockHeld(
                f"{self.purpose} is already running: {describe_holder(holder)} holds {self.path}. "
                "Two processes must not work on the same shard; wait for that process to finish or stop it. "
                "A lock of a process that ended is released by the system and taken over automatically"
            )
        self._descriptor = descriptor
        self._write_holder()

    def _write_holder(self) -> None:
        holder = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": utc_now(),
            "command": " ".join(sys.argv)[:300],
        }
        data = (json.dumps(holder) + "\n").encode("utf-8")
        try:
            os.ftruncate(self._descriptor, 0)
            os.pwrite(self._descriptor, data, 0)
            os.fsync(self._descriptor)
        except OSError as error:
            self.release()
            raise write_error(self.path, error) from error

    def release(self) -> None:
        if self._descriptor is None:
            return
        try:
            fcntl.flock(self._descriptor, fcntl.LOCK_UN)
        except OSError:
            pass  # closing the descriptor releases it as well
        os.close(self._descriptor)
        self._descriptor = None

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def holder_of(path: Path) -> dict | None:
    """Return the holder line of a lock that a live process holds now, or None when no process holds it.

    Takes a shared lock for a moment to find out, and `FileLock.acquire` retries past that moment.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(descriptor)
        os.close(descriptor)
        return holder
    except OSError as error:
        os.close(descriptor)
        if error.errno in _UNSUPPORTED:
            return None
        raise
    fcntl.flock(descriptor, fcntl.LOCK_UN)
    os.close(descriptor)
    return None


def describe_holder(holder: dict) -> str:
    if not holder:
        return "another process (it has not written its host and pid yet)"
    return f"host {holder.get('host', '?')} pid {holder.get('pid', '?')}, started {format_timestamp(holder.get('started_at', '?'))} ({holder.get('command', '')})"


def _read_holder(descriptor: int) -> dict:
    try:
        return json.loads(os.pread(descriptor, 4096, 0).decode("utf-8"))
    except (OSError, ValueError):
        return {}
