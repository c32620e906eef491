"""`brgen status`: how far each stage of a dataset root has come, from its manifests alone.

Expected items per stage: the recipe's real photos (or the reals records, when the recipe's counts depend
on the archives), one mask per ok real photo and kind, one forgery per ok mask and method. Files are not
opened; `brgen verify` checks them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from brgen_build.catalog import INPAINT_STAGE_PREFIX, Catalog, expected_split_sizes
from brgen_build.manifest import FAILED, OK, SKIPPED
from brgen_build.recipe import Recipe

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
        share = stage.done / stage.expected if stage.expected else 1.0
        filled = round(share * BAR_WIDTH)
        bar = "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "]"
        done = f"{stage.done}/{stage.expected}"
        line = f"{stage.stage:<26} {bar} {done:>13} {stage.skipped:>8} {stage.failed:>7} {stage.pending:>8}  {stage.last_finished[:19] or '-'}"
        if stage.pending and stage.median_seconds is not None:
            line += f"  ~{stage.pending * stage.median_seconds / 3600:.1f} h left in one process"
        lines.append(line)
    return "\n".join(lines)
