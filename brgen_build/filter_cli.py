"""The `brgen filter` and `brgen report filter` commands, and the filter step of `brgen build`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from brgen_build import dataset_cli
from brgen_build.cli import _open, _report, _shard, progress_option, recipe_option, root_option, shard_option
from brgen_build.engine import StageSummary, run_stage
from brgen_build.errors import BrgenError
from brgen_build.files import atomic_write_bytes
from brgen_build.filter_report import render_filter_page
from brgen_build.layout import DatasetRoot
from brgen_build.recipe import Recipe
from brgen_build.seeding import Shard
from brgen_build.stages.filter import FilterStage, build_scorers
from brgen_build.stages.inpaint import build_inpainter
from inpainters import registry


def run_filter(root: DatasetRoot, recipe: Recipe, methods: list[str], shard: Shard, progress: bool,
               device: str | None = None, batch_size: int | None = None, weights: str | None = None) -> list[StageSummary]:
    """Run the filter stage for each method and return the summaries, one per method.

    `device` applies to the scorers and the inpainter, `weights` to the inpainter (one method only).
    """
    if recipe.filter is None:
        raise BrgenError(f"{recipe.path or 'the recipe'} has no `filter` section; add `filter: {{scorers: ...}}` to score forgeries (see docs/filter.md)")
    if weights is not None and len(methods) != 1:
        raise BrgenError(f"--weights names one method's weights, but {len(methods)} methods are selected; pass one --method")
    scorers = build_scorers(recipe, device)
    summaries = []
    for method in methods:
        inpainter = build_inpainter(recipe, method, {"weights": weights, "device": device})
        summaries.append(run_stage(FilterStage(root, recipe, inpainter, scorers, shard, batch_size), shard, progress=progress))
    return summaries


@click.command(name="filter")
@click.option("--method", "methods", multiple=True, help="Method(s) whose forgeries to score. Default: every method in the recipe.")
@click.option("--device", default=None, help="Torch device of the scorers and of regenerations: auto, cpu, cuda, cuda:1. Default: the recipe's `filter.device`.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Forgeries scored per batch. Default: the recipe's `filter.batch_size` (8).")
@click.option("--weights", type=click.Path(), default=None, help="The method's weight file or folder for regenerations; overrides the recipe. Needs one --method.")
@root_option
@recipe_option
@shard_option
@progress_option
def filter_command(methods: tuple[str, ...], device: str | None, batch_size: int | None, weights: str | None, root_path: str,
                   recipe_path: str | None, shard_text: str | None, no_progress: bool) -> None:
    """Score forgeries; regenerate or drop those outside the recipe's thresholds.

    Every scorer under the recipe's `filter.scorers` scores every forgery of each selected method.
    A forgery outside the method's thresholds is made again with the next derived seed, up to
    `filter.max_attempts` attempts in all, and the first attempt within the thresholds is kept.
    Only when every attempt misses the thresholds are its Tp and Gt files deleted; its record then gives the reason.
    Every attempt's scores are recorded in manifests/filter/METHOD/.

    \b
    Example:
      brgen filter --method lama --root /data/br-gen
    """
    for name in methods:
        registry.get(name)
    root, recipe = _open(root_path, recipe_path)
    summaries = run_filter(root, recipe, list(methods) or list(recipe.methods), _shard(shard_text), not no_progress, device, batch_size, weights)
    within_budget = [_report(summary, recipe.failure_budget) for summary in summaries]
    if not all(within_budget):
        sys.exit(1)


@click.command(name="filter")
@dataset_cli.root_argument
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="HTML file to write. Default: ROOT/reports/filter.html.")
@click.option("--examples", type=click.IntRange(min=0), default=4, show_default=True,
              help="Attempts shown on each side of each threshold.")
@dataset_cli.root_option
def filter_report_command(root_argument: str | None, out: str | None, examples: int, root_option: str | None) -> None:
    """Write an HTML page of the quality-filter scores.

    The page shows, per method, the outcomes, the distribution of every scorer's values with the
    thresholds marked, and the attempts just inside and just outside each threshold. Nothing but the page
    is written.

    \b
    Example:
      brgen report filter /data/br-gen --out filter.html
    """
    root = dataset_cli.open_root(root_argument, root_option)
    path = Path(out) if out else root.path / "reports" / "filter.html"
    atomic_write_bytes(path, render_filter_page(root, examples).encode("utf-8"))
    click.echo(f"filter report: {path}")
