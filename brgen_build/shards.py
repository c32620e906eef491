"""Coordination of shards that run side by side: locks, progress files and waits between stages.

Files per stage and shard, next to the shard's manifest in `manifests/<stage>/`:

- `shard-<i>-of-<n>.lock`: held (flock) by the one process working on the shard; it names the holder.
- `shard-<i>-of-<n>.state.json`: the shard's latest run: holder, items planned, pending and done, start and
  end time, written when the run starts and when it ends.

Nothing here needs torch.distributed: shards coordinate through these files and the manifests, so the same
code works under torchrun, accelerate, Slurm arrays or shells started by hand, on any shared file system.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from brgen_build.errors import BrgenError
from brgen_build.files import atomic_write_bytes, remove_stale_temporaries
from brgen_build.layout import DatasetRoot
from brgen_build.locks import FileLock, describe_holder, holder_of
from brgen_build.manifest import FAILED, OK, SKIPPED, format_timestamp, read_manifest_file, read_records, utc_now
from brgen_build.seeding import Shard, shard_index

logger = logging.getLogger(__name__)

_SHARD_FILE = re.compile(r"^shard-(?P<index>\d+)-of-(?P<count>\d+)\.(?P<kind>lock|state\.json|jsonl)$")

# The wait between stages polls the manifests with growing pauses, up to this many seconds.
MAX_POLL_SECONDS = 10.0


class ShardRun:
    """One process's run of one stage shard: holds the shard's lock and keeps its state file.

    Entering takes the lock or raises LockHeld, which names the holder. It rejects a shard count that differs
    from the count of processes running the same stage now. It also deletes temporary files that killed runs
    of this host left in the dataset folders.
    """

    def __init__(self, root: DatasetRoot, stage: str, shard: Shard):
        self.root = root
        self.stage = stage
        self.shard = shard
        self.folder = root.manifest_dir(stage)
        self.lock = FileLock(self.folder / f"{shard.label}.lock", f"stage {stage}, shard {shard}")
        self.state: dict = {}

    def __enter__(self) -> "ShardRun":
        self.lock.acquire()
        try:
            self._reject_other_shard_counts()
            remove_stale_temporaries([*self.root.data_folders(), self.folder, self.root.path])
        except BaseException:
            self.lock.release()
            raise
        return self

    def _reject_other_shard_counts(self) -> None:
        for path in sorted(self.folder.glob("shard-*-of-*.lock")):
            match = _SHARD_FILE.match(path.name)
            if match is None or int(match["count"]) == self.shard.count:
                continue
            holder = holder_of(path)
            if holder is not None:
                other = f"{match['index']}/{match['count']}"
                raise BrgenError(
                    f"stage {self.stage} is running with {match['count']} shards ({describe_holder(holder)} works on shard {other}), "
                    f"but this process was started as shard {self.shard}. Shards of different counts overlap: start every "
                    f"process of a stage with the same count (--shard I/{match['count']}) or wait until those processes finish"
                )

    def started(self, planned: int, already_done: int) -> None:
        """Record the start of the run: items of this shard in the plan, already done, left to do."""
        self.state = {
            "stage": self.stage,
            "shard": str(self.shard),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": utc_now(),
            "finished_at": None,
            "planned": planned,
            "already_done": already_done,
            "pending": planned - already_done,
            "counts": {},
            "error": None,
        }
        self._write_state()

    def finished(self, counts: dict, error: str | None = None) -> None:
        """Record the end of the run with the outcome counts, or the error that stopped it."""
        if not self.state:
            return
        self.state.update(finished_at=utc_now(), counts=dict(counts), error=error)
        self._write_state()

    def _write_state(self) -> None:
        path = self.folder / f"{self.shard.label}.state.json"
        atomic_write_bytes(path, (json.dumps(self.state, indent=1) + "\n").encode("utf-8"))

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.lock.release()


def unfinished_items(root: DatasetRoot, stage: str, item_ids: list[str]) -> list[str]:
    """Return the ids among `item_ids` whose stage outcome is not final yet.

    Final: a `skipped` or `failed` record, or an `ok` record whose files all exist with the recorded size.
    Sizes, not hashes, are checked, because this runs every few seconds while other shards work.
    """
    records = read_records(root.manifest_dir(stage))
    unfinished = []
    for item_id in item_ids:
        record = records.get(item_id)
        if record is None:
            unfinished.append(item_id)
        elif record["status"] == OK and not _files_present(root, record):
            unfinished.append(item_id)
    return unfinished


def _files_present(root: DatasetRoot, record: dict) -> bool:
    for entry in (record.get("files") or {}).values():
        try:
            if root.absolute(entry["path"]).stat().st_size != entry["bytes"]:
                return False
        except FileNotFoundError:
            return False
    return True


def wait_for_stage(root: DatasetRoot, stage: str, item_ids: list[str], shard: Shard, timeout: float) -> None:
    """Block until every item of `stage` (all shards) has a final outcome, so the next stage can plan.

    Raises:
        BrgenError: `timeout` seconds passed first; the message names the shards that have not finished.
    """
    if shard.count == 1:
        return
    started = time.monotonic()
    pause = 0.2
    last_log = None
    while True:
        unfinished = unfinished_items(root, stage, item_ids)
        if not unfinished:
            if time.monotonic() - started > 1:
                logger.info("%s: every shard has finished after %.0f s of waiting", stage, time.monotonic() - started)
            return
        waited = time.monotonic() - started
        owners = sorted({shard_index(item, shard.count) for item in unfinished[:1000]})
        shards = ", ".join(f"{index}/{shard.count}" for index in owners)
        if waited >= timeout:
            raise BrgenError(
                f"timed out after {waited:.0f} s waiting for stage {stage} to finish in the other shards: "
                f"{len(unfinished)} item(s) have no final record yet (e.g. {unfinished[0]}), owned by shard(s) {shards}. "
                f"Check those processes with `brgen status {root.path}`, start the missing ones (--shard I/{shard.count}), "
                "or raise --wait-timeout. Then re-run this command, which keeps finished items"
            )
        if last_log is None or time.monotonic() - last_log > 300:
            logger.info("%s: waiting for shard(s) %s to finish %d item(s) before the next stage", stage, shards, len(unfinished))
            last_log = time.monotonic()
        time.sleep(min(pause, max(timeout - waited, 0.0)))
        pause = min(pause * 2, MAX_POLL_SECONDS)


@dataclass
class ShardProgress:
    """Progress of one shard of one stage, as `brgen status` shows it."""

    stage: str
    shard: str
    status: str  # running, finished, stopped (an error ended the run), interrupted (killed) or unknown
    counts: dict[str, int] = field(default_factory=dict)
    planned: int | None = None
    pending: int | None = None
    holder: dict | None = None
    detail: str = ""


def stage_folders(root: DatasetRoot) -> list[tuple[str, Path]]:
    """Return (stage name, manifest folder) of every stage that has written anything in `root`."""
    base = root.path / "manifests"
    if not base.is_dir():
        return []
    folders = {path.parent for path in base.rglob("shard-*-of-*.*") if _SHARD_FILE.match(path.name)}
    stages = [(folder.relative_to(base).as_posix(), folder) for folder in folders]
    build_order = {"reals": 0, "masks": 1}
    return sorted(stages, key=lambda stage: (build_order.get(stage[0], 2), stage[0]))


def shard_progress(root: DatasetRoot) -> list[ShardProgress]:
    """Return, per stage and shard, its records by status, its state file and the process that holds its lock now."""
    rows = []
    for stage, folder in stage_folders(root):
        labels = sorted(
            {(int(m["count"]), int(m["index"])) for m in (_SHARD_FILE.match(p.name) for p in folder.iterdir()) if m},
        )
        for count, index in labels:
            rows.append(_progress_of(stage, folder, Shard(index, count)))
    return rows


def _progress_of(stage: str, folder: Path, shard: Shard) -> ShardProgress:
    counts = {OK: 0, SKIPPED: 0, FAILED: 0}
    manifest = folder / f"{shard.label}.jsonl"
    run_counts = dict(counts)
    state = _read_state(folder / f"{shard.label}.state.json")
    if manifest.is_file():
        latest = {record["id"]: record for record in read_manifest_file(manifest)}
        for record in latest.values():
            counts[record["status"]] += 1
            if state and record.get("finished_at", "") >= state.get("started_at", ""):
                run_counts[record["status"]] += 1
    holder = holder_of(folder / f"{shard.label}.lock")
    progress = ShardProgress(stage, str(shard), "unknown", counts, holder=holder)
    if state:
        progress.planned = state.get("planned")
        done_now = sum(run_counts.values())
        progress.pending = max(state.get("pending", 0) - done_now, 0)
    if holder is not None:
        progress.status = "running"
        progress.detail = describe_holder(holder)
    elif state and state.get("error"):
        progress.status = "stopped"
        progress.detail = state["error"]
    elif state and state.get("finished_at"):
        progress.status = "finished"
        progress.pending = 0
        progress.detail = f"finished {format_timestamp(state['finished_at'])}"
    elif state:
        progress.status = "interrupted"
        progress.detail = f"started {format_timestamp(state.get('started_at'))} on {state.get('host')} (pid {state.get('pid')}); re-run it to continue"
    return progress


def _read_state(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
