"""Manifests: JSON Lines files, one record per item and stage.

Each shard of a stage appends to its own file (`manifests/<stage>/shard-<i>-of-<n>.jsonl`), so shards never
write to the same file and their manifests merge by reading all of them. Every line is flushed at once and
fsynced before the next item starts, or, for lines appended with `sync=False`, at the next `sync()`. A line
cut short by a crash is ignored with a warning; its item has no valid record and is redone.

Record fields common to every stage: `id`, `stage`, `status` (`ok`, `skipped` or `failed`), `reason`
(why it was skipped or failed, else null), `split`, `files` (role -> {path, sha256, bytes}, paths relative
to the root), `finished_at` (UTC, ISO 8601), `shard` and `brgen_version`.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from brgen_build import __version__
from brgen_build.files import fsync_folder, make_folders, write_error

logger = logging.getLogger(__name__)

OK = "ok"
SKIPPED = "skipped"
FAILED = "failed"
STATUSES = (OK, SKIPPED, FAILED)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def format_timestamp(timestamp: str) -> str:
    """Format an ISO 8601 timestamp with a UTC offset for terminal output as `2026-01-31 21:53:34 UTC`.

    Text that is not such a timestamp is returned unchanged.
    """
    try:
        moment = datetime.fromisoformat(timestamp)
    except (TypeError, ValueError):
        return str(timestamp)
    if moment.tzinfo is None:
        return str(timestamp)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


class ManifestWriter:
    """Append-only writer of one shard's manifest file.

    Only the process that holds the shard's lock may write the file. On open, a last line that an interrupted
    run cut short is truncated, so the next record starts on a line of its own.
    """

    def __init__(self, path: Path):
        self.path = path
        try:
            make_folders(path.parent)
            created = not path.exists()
            self._handle = open(path, "a+b")
            self._remove_torn_tail()
            if created:
                fsync_folder(path.parent)
        except OSError as error:
            raise write_error(path, error) from error

    def _remove_torn_tail(self) -> None:
        size = self._handle.seek(0, os.SEEK_END)
        if size == 0:
            return
        self._handle.seek(size - 1)
        if self._handle.read(1) == b"\n":
            return
        keep = size - 1
        while keep > 0:
            start = max(0, keep - 65536)
            self._handle.seek(start)
            newline = self._handle.read(keep - start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            keep = start
        logger.warning("%s: removed a record cut short by an interrupted run (%d bytes), so its item will be redone", self.path, size - keep)
        self._handle.truncate(keep)
        os.fsync(self._handle.fileno())

    def append(self, record: dict, sync: bool = True) -> None:
        """Append one record; with `sync=False` it reaches the disk at the next `sync()` or `close()`."""
        record.setdefault("finished_at", utc_now())
        record.setdefault("brgen_version", __version__)
        line = json.dumps(record, ensure_ascii=False, sort_keys=False) + "\n"
        try:
            self._handle.write(line.encode("utf-8"))
            self._handle.flush()
            if sync:
                os.fsync(self._handle.fileno())
        except OSError as error:
            raise write_error(self.path, error) from error

    def sync(self) -> None:
        """fsync every line appended so far."""
        try:
            os.fsync(self._handle.fileno())
        except OSError as error:
            raise write_error(self.path, error) from error

    def close(self) -> None:
        if not self._handle.closed:
            try:
                os.fsync(self._handle.fileno())
            except OSError as error:
                logger.warning("%s: fsync failed (%s); a power loss now may drop the last records, whose items would be redone", self.path, error)
        try:
            self._handle.close()
        except OSError as error:
            logger.warning("%s: closing failed after an earlier error: %s", self.path, error)

    def __enter__(self) -> "ManifestWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def read_manifest_file(path: Path) -> Iterable[dict]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s:%d: unreadable manifest line ignored (a crash cut it short?); its item will be redone", path, number)
                continue
            if isinstance(record, dict) and "id" in record and record.get("status") in STATUSES:
                yield record
            else:
                logger.warning("%s:%d: manifest line without `id` and a valid `status` ignored", path, number)


def read_records(stage_dir: Path) -> dict[str, dict]:
    """Return the latest record of every item in a stage, merged over all shard files.

    Within a file the last line wins. Across files the later `finished_at` wins, so a stage re-run with
    another shard count still resolves to one record per item.
    """
    records: dict[str, dict] = {}
    if not stage_dir.is_dir():
        return records
    for path in sorted(stage_dir.glob("*.jsonl")):
        for record in read_manifest_file(path):
            previous = records.get(record["id"])
            if previous is None or record.get("finished_at", "") >= previous.get("finished_at", ""):
                records[record["id"]] = record
    return records
