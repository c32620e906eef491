"""The stage engine: plan, skip finished items, run the rest in batches, record every outcome.

A stage lists all of its items (`plan`), the engine keeps those of this shard whose latest record is not
finished, and hands them to the stage in batches. A record with status `ok` counts as finished only if every
file it lists exists with the recorded sha256, so a file deleted or damaged after the run is redone.
Status `skipped` (bad input, no usable region) is finished too: the same input gives the same outcome.
Status `failed` (an exception while processing) is retried on the next run.
The records of a batch are fsynced together once the batch is done, so a power loss loses at most the
records of that batch, whose items are then redone.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from tqdm import tqdm

from brgen_build.errors import BrgenError
from brgen_build.files import sha256_file
from brgen_build.layout import DatasetRoot
from brgen_build.manifest import FAILED, OK, SKIPPED, ManifestWriter, read_records
from brgen_build.seeding import Shard
from brgen_build.shards import ShardRun

logger = logging.getLogger(__name__)


@dataclass
class Item:
    """One unit of work: `id` is unique within the stage and names the item in the manifest."""

    id: str
    split: str
    payload: Any = None


@dataclass
class StageSummary:
    """Outcome of one run of one stage shard.

    `planned` counts this shard's items. `item_ids` lists the items of every shard, for waits between stages.
    """

    stage: str
    planned: int = 0
    already_done: int = 0
    counts: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    item_ids: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return self.counts[FAILED]

    def line(self) -> str:
        return (
            f"{self.stage}: {self.planned} planned in this shard, {self.already_done} already done, "
            f"{self.counts[OK]} ok, {self.counts[SKIPPED]} skipped, {self.counts[FAILED]} failed"
        )


class Stage:
    """A stage: subclasses set `name`, and implement `plan` and `process`."""

    name: str = ""
    batch_size: int = 1

    def __init__(self, root: DatasetRoot):
        self.root = root

    def plan(self) -> list[Item]:
        raise NotImplementedError

    def is_finished(self, item: Item, record: dict | None) -> bool:
        """Return whether the item's latest record (None if it has none) means there is nothing to redo."""
        return is_finished(self.root, record)

    def prepare(self, pending: list[Item]) -> None:
        """Called once before processing when there is work to do (load models here, not in plan)."""

    def batches(self, pending: list[Item]) -> Iterable[list[Item]]:
        for start in range(0, len(pending), self.batch_size):
            yield pending[start : start + self.batch_size]

    def process(self, batch: list[Item]) -> list[dict]:
        """Process a batch and return one record per item (status, reason, files, facts)."""
        raise NotImplementedError

    def progress_counts(self, summary: StageSummary) -> dict[str, int]:
        """Return the counts shown next to the progress bar."""
        return {"ok": summary.counts[OK], "skipped": summary.counts[SKIPPED], "failed": summary.counts[FAILED]}

    def finish(self, summary: StageSummary) -> None:
        """Called at the end of every run, also when nothing was pending: add `summary.notes` or raise BrgenError."""


def files_intact(root: DatasetRoot, record: dict) -> bool:
    for entry in (record.get("files") or {}).values():
        path = root.absolute(entry["path"])
        if not path.is_file() or path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            return False
    return True


def is_finished(root: DatasetRoot, record: dict | None) -> bool:
    if record is None:
        return False
    if record["status"] == SKIPPED:
        return True
    return record["status"] == OK and files_intact(root, record)


def run_stage(stage: Stage, shard: Shard = Shard(), progress: bool = True) -> StageSummary:
    """Run the pending items of one shard of a stage and return counts of what happened.

    Only one process at a time works on a stage shard (see `ShardRun`). A BrgenError (a full disk, a
    read-only folder, a method that cannot load) stops the stage: items finished before it keep their records,
    and the item being written gets none, so the next run redoes it.
    """
    with ShardRun(stage.root, stage.name, shard) as shard_run:
        records = read_records(stage.root.manifest_dir(stage.name))
        plan = stage.plan()
        items = [item for item in plan if shard.owns(item.id)]
        pending = [item for item in items if not stage.is_finished(item, records.get(item.id))]
        summary = StageSummary(stage.name, planned=len(items), already_done=len(items) - len(pending), item_ids=[item.id for item in plan])
        shard_run.started(summary.planned, summary.already_done)
        if not pending:
            logger.info("%s: nothing to do, %d items already done", stage.name, len(items))
        else:
            try:
                _process_pending(stage, shard, pending, summary, progress)
            except BrgenError as error:
                _record_stop(shard_run, summary, error)
                raise BrgenError(f"{stage.name} stopped: {error}") from error
        stage.finish(summary)
        shard_run.finished(summary.counts)
    return summary


def _record_stop(shard_run: ShardRun, summary: StageSummary, error: BrgenError) -> None:
    """Note in the shard's state file why the run stopped, or log that a full disk prevented it too."""
    try:
        shard_run.finished(summary.counts, error=str(error))
    except BrgenError as state_error:
        logger.warning("%s: could not record the stop in the shard's state file: %s", summary.stage, state_error)


def _process_pending(stage: Stage, shard: Shard, pending: list[Item], summary: StageSummary, progress: bool) -> None:
    stage.prepare(pending)
    manifest_path = stage.root.manifest_dir(stage.name) / f"{shard.label}.jsonl"
    with ManifestWriter(manifest_path) as writer, tqdm(total=len(pending), desc=stage.name, unit="item", disable=not progress) as bar:
        for batch in stage.batches(pending):
            started = time.perf_counter()
            try:
                batch_records = stage.process(batch)
            except BrgenError:
                raise
            except Exception as error:
                logger.debug("%s: batch failed\n%s", stage.name, traceback.format_exc())
                reason = f"{type(error).__name__}: {error}"
                batch_records = [{"id": item.id, "split": item.split, "status": FAILED, "reason": reason} for item in batch]
            elapsed = time.perf_counter() - started
            for record in batch_records:
                record.setdefault("stage", stage.name)
                record.setdefault("reason", None)
                record.setdefault("shard", str(shard))
                record.setdefault("seconds", round(elapsed / len(batch_records), 4))
                writer.append(record, sync=False)
                summary.counts[record["status"]] += 1
                if record["status"] == FAILED:
                    summary.failures.append(f"{record['id']}: {record['reason']}")
                    logger.warning("%s: %s failed: %s", stage.name, record["id"], record["reason"])
                elif record["status"] == SKIPPED:
                    logger.info("%s: %s skipped: %s", stage.name, record["id"], record["reason"])
            writer.sync()
            bar.update(len(batch))
            bar.set_postfix(stage.progress_counts(summary))
