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
from brgen_build.errors import BrgenError

logger = logging.getLogger(__name__)

OK = "ok"
SKIPPED = "skipped"
FAILED = "failed"
STATUSES = (OK, SKIPPED, FAILED)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class ManifestWriter:
    """Append-only writer of one shard's manifest file."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(path, "a", encoding="utf-8")

    def append(self, record: dict, sync: bool = True) -> None:
        """Append one record; with `sync=False` it reaches the disk at the next `sync()` or `close()`."""
        record.setdefault("finished_at", utc_now())
        record.setdefault("brgen_version", __version__)
        line = json.dumps(record, ensure_ascii=False, sort_keys=False) + "\n"
        try:
            self._handle.write(line)
            self._handle.flush()
            if sync:
                os.fsync(self._handle.fileno())
        except OSError as error:
            raise BrgenError(f"cannot append to {self.path}: {error.strerror or error}; free disk space or fix permissions") from error

    def sync(self) -> None:
        """fsync every line appended so far."""
        try:
            os.fsync(self._handle.fileno())
        except OSError as error:
            raise BrgenError(f"cannot write {self.path}: {error.strerror or error}; free disk space or fix permissions") from error

    def close(self) -> None:
        if not self._handle.closed:
            self.sync()
        self._handle.close()

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
    """The latest record of every item in a stage, merged over all shard files.

    Within a file the last line wins; across files the later `finished_at` wins, so a stage re-run with
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
