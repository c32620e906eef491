"""`brgen status`: how far each stage of a dataset root has come, from its manifests alone.

Expected items per stage: the recipe's real photos (or the reals records, when the recipe's counts depend
on the archives), one mask per ok real photo and kind, one forgery per ok mask and method. Files are not
opened; `brgen verify` checks them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from brgen_build.catalog import INPAINT_STAGE_PREFIX, Catalog, expected_split_sizes
from brgen_build.manifest import FAILED, OK, SKIPPED, format_timestamp
from brgen_build.recipe import Recipe
from brgen_build.shards import ShardProgress

BAR_WIDTH = 24


@dataclass
class StageProgress:
    stage: str
    expected: int
    ok: int
    skipped: int
    failed: int
    last_finished: str
    median_seconds: float | None

    @property
    def done(self) -> int:
        return self.ok + self.skipped

    @property
    def pending(self) -> int:
        return max(self.expected - self.done, 0)


def _progress(stage: str, expected: int, items, catalog: Catalog) -> StageProgress:
    statuses = [item.status for item in items]
    seconds = [item.seconds for item in items if item.status == OK and getattr(item, "seconds", None) is not None]
    return StageProgress(
        stage=stage,
        expected=max(expected, len(statuses)),
        ok=statuses.count(OK),
        skipped=statuses.count(SKIPPED),
        failed=statuses.count(FAILED),
        last_finished=catalog.last_finished.get(stage, ""),
        median_seconds=float(np.median(seconds)) if seconds else None,
    )


def stage_progress(catalog: Catalog, recipe: Recipe) -> list[StageProgress]:
    sizes = expected_split_sizes(recipe)
    reals = list(catalog.reals.values())
    progress = [_progress("reals", sum(sizes.values()) if sizes else len(reals), reals, catalog)]
    ok_reals = sum(item.status == OK for item in reals)
    masks = [item for item in catalog.masks.values() if item.kind in recipe.masks.kinds]
    progress.append(_progress("masks", ok_reals * len(recipe.masks.kinds), masks, catalog))
    ok_masks = sum(item.status == OK for item in masks)
    for method in list(recipe.methods) + sorted(set(catalog.forgeries) - set(recipe.methods)):
        items = list(catalog.forgeries.get(method, {}).values())
        expected = ok_masks if method in recipe.methods else len(items)
        progress.append(_progress(INPAINT_STAGE_PREFIX + method, expected, items, catalog))
    return progress


def format_status(progress: list[StageProgress]) -> str:
    lines = [f"{'stage':<26} {'progress':<{BAR_WIDTH + 2}} {'done':>13} {'skipped':>8} {'failed':>7} {'pending':>8}  last finished"]
    for stage in progress:
        # A stage with nothing expected yet (an inpaint method before any mask exists) shows an empty bar and `-`.
        share = stage.done / stage.expected if stage.expected else 0.0
        filled = round(share * BAR_WIDTH)
        bar = "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "]"
        done = f"{stage.done}/{stage.expected}" if stage.expected else "-"
        last_finished = format_timestamp(stage.last_finished) if stage.last_finished else "-"
        line = f"{stage.stage:<26} {bar} {done:>13} {stage.skipped:>8} {stage.failed:>7} {stage.pending:>8}  {last_finished}"
        time_left = format_time_left(stage.pending * stage.median_seconds) if stage.median_seconds is not None else None
        if time_left is not None:
            line += f"  {time_left} left in one process"
        lines.append(line)
    return "\n".join(lines)


def format_time_left(seconds: float) -> str | None:
    """Format an estimate in hours, minutes or seconds (`~1.5 h`, `~5 min`, `~6 s`), or return None under one second."""
    if seconds < 1:
        return None
    if seconds < 60:
        return f"~{seconds:.0f} s"
    if seconds < 3600:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


def format_shard_table(rows: list[ShardProgress]) -> str:
    """Format one line per stage shard: its state, records by status, items left and the process on it."""
    lines = [f"{'stage':<22} {'shard':<7} {'status':<12} {'planned':>7} {'ok':>7} {'skipped':>7} {'failed':>7} {'left':>7}  detail"]
    for row in rows:
        planned = "-" if row.planned is None else row.planned
        left = "-" if row.pending is None else row.pending
        lines.append(
            f"{row.stage:<22} {row.shard:<7} {row.status:<12} {planned:>7} {row.counts['ok']:>7} "
            f"{row.counts['skipped']:>7} {row.counts['failed']:>7} {left:>7}  {row.detail}"
        )
    return "\n".join(lines)
