"""The `brgen` command line."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from brgen_build import __version__
from brgen_build.engine import StageSummary, run_stage
from brgen_build.errors import BrgenError
from brgen_build.layout import DatasetRoot
from brgen_build.recipe import Recipe
from brgen_build.seeding import Shard, parse_shard, shard_from_environment
from brgen_build.stages.inpaint import InpaintStage, build_inpainter
from brgen_build.stages.masks import MasksStage
from brgen_build.stages.reals import RealsStage
from brgen_build.verify import report_json, verify
from inpainters import registry
from inpainters.base import MethodError

logger = logging.getLogger("brgen_build")

STAGES = ("reals", "masks", "inpaint", "filter", "verify", "all")


def _default_root() -> str:
    return os.environ.get("BRGEN_ROOT", ".")


root_option = click.option(
    "--root", "-r", "root_path", type=click.Path(file_okay=False), default=_default_root,
    help="Dataset root folder. Default: $BRGEN_ROOT, else the current folder.",
)
recipe_option = click.option(
    "--recipe", "recipe_path", type=click.Path(dir_okay=False), default=None,
    help="Recipe YAML; required on the first run of a root, which freezes it into ROOT/recipe.yaml.",
)
shard_option = click.option(
    "--shard", "shard_text", default=None, metavar="I/N",
    help="Run shard I of N (0-based). Default: from torchrun/accelerate (RANK, WORLD_SIZE) or a Slurm array, else 0/1.",
)
progress_option = click.option("--no-progress", is_flag=True, help="Hide progress bars (logs still show counts).")


def _shard(text: str | None) -> Shard:
    return parse_shard(text) if text else shard_from_environment()


def _open(root_path: str, recipe_path: str | None) -> tuple[DatasetRoot, Recipe]:
    root = DatasetRoot(root_path)
    return root, root.load_recipe(recipe_path)


def _report(summary: StageSummary) -> None:
    click.echo(summary.line())
    for line in summary.notes:
        click.echo(f"  {line}")
    for line in summary.failures[:20]:
        click.echo(f"  failed: {line}", err=True)
    if len(summary.failures) > 20:
        click.echo(f"  ... and {len(summary.failures) - 20} more; see the stage's manifest", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="brgen")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def cli(verbose: int, quiet: bool) -> None:
    """Rebuild BR-Gen and other localized-forgery datasets: real photos, region masks, inpainted forgeries.

    \b
    Example, the bundled sample end to end:
      brgen quickstart --out brgen-sample
    """
    level = logging.INFO
    if quiet:
        level = logging.WARNING
    elif verbose > 1:
        level = logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@cli.command()
@click.option("--stage", "stage", type=click.Choice(STAGES), required=True, help="Stage to run; `all` runs every stage in order.")
@click.option("--method", "methods", multiple=True, help="For `inpaint`, `filter` and `verify`: method(s) to run. Default: every method in the recipe.")
@root_option
@recipe_option
@shard_option
@progress_option
def build(stage: str, methods: tuple[str, ...], root_path: str, recipe_path: str | None, shard_text: str | None, no_progress: bool) -> None:
    """Run one stage of the build, or all of them.

    Finished items are skipped and failed ones redone, so a stage can be re-run at any time.

    \b
    Example:
      brgen build --stage masks --root /data/br-gen
    """
    root, recipe = _open(root_path, recipe_path)
    shard = _shard(shard_text)
    for name in methods:
        registry.get(name)
    selected = list(methods) or list(recipe.methods)
    failed = 0
    if stage in ("reals", "all"):
        summary = run_stage(RealsStage(root, recipe), shard, progress=not no_progress)
        _report(summary)
        failed += summary.failed
    if stage in ("masks", "all"):
        summary = run_stage(MasksStage(root, recipe), shard, progress=not no_progress)
        _report(summary)
        failed += summary.failed
    if stage in ("inpaint", "all"):
        for method in selected:
            summary = run_stage(InpaintStage(root, recipe, build_inpainter(recipe, method)), shard, progress=not no_progress)
            _report(summary)
            failed += summary.failed
    if stage == "filter" or (stage == "all" and recipe.filter is not None):
        from brgen_build.filter_cli import run_filter

        failed += run_filter(root, recipe, selected, shard, progress=not no_progress)
    if stage in ("verify", "all"):
        report = verify(root, recipe, selected)
        click.echo(report.summary())
        failed += len(report.problems)
    if failed:
        sys.exit(1)


@cli.command()
@click.option("--method", required=True, help=f"Method to run: {', '.join(registry.names())}.")
@click.option("--weights", type=click.Path(), default=None, help="Weight file or folder; overrides the recipe.")
@click.option("--device", default=None, help="Torch device: auto, cpu, cuda, cuda:1. Default: the recipe's, else auto.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Images per forward pass. Default: the recipe's, else the method's.")
@root_option
@recipe_option
@shard_option
@progress_option
def inpaint(method: str, weights: str | None, device: str | None, batch_size: int | None, root_path: str,
            recipe_path: str | None, shard_text: str | None, no_progress: bool) -> None:
    """Make the forgeries of one method for every mask of the dataset.

    \b
    Example:
      brgen inpaint --method lama --weights ~/weights/big-lama.pt --root /data/br-gen
    """
    registry.get(method)
    root, recipe = _open(root_path, recipe_path)
    overrides = {"weights": weights, "device": device, "batch_size": batch_size}
    summary = run_stage(InpaintStage(root, recipe, build_inpainter(recipe, method, overrides)), _shard(shard_text), progress=not no_progress)
    _report(summary)
    if summary.failed:
        sys.exit(1)


@cli.command(name="verify")
@click.argument("root_argument", required=False, type=click.Path(file_okay=False))
@click.option("--method", "methods", multiple=True, help="Method(s) whose forgeries must be complete. Default: every method in the recipe.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable JSON report instead of the summary.")
@root_option
def verify_command(root_argument: str | None, methods: tuple[str, ...], as_json: bool, root_path: str) -> None:
    """Check a dataset: files present, hashes, decoding, sizes, mask values, pixels outside masks.

    Read-only. Exits with 0 only when every check holds.

    \b
    Example:
      brgen verify /data/br-gen --json > verify.json
    """
    root = DatasetRoot(root_argument or root_path)
    recipe = root.load_recipe(None)
    for name in methods:
        registry.get(name)
    report = verify(root, recipe, list(methods) or None)
    click.echo(report_json(report) if as_json else report.summary())
    if not report.ok:
        sys.exit(1)


@cli.command()
@click.option("--out", "out", type=click.Path(file_okay=False), default="brgen-sample", show_default=True, help="Folder for the sample dataset.")
@progress_option
def quickstart(out: str, no_progress: bool) -> None:
    """Build the bundled sample (two real COCO photos) end to end and verify it.

    Runs reals, masks, every sample method whose weights are present (opencv-telea always), then verify.

    \b
    Example:
      brgen quickstart --out brgen-sample
    """
    from manifests import data_path

    root = DatasetRoot(out)
    recipe = root.load_recipe(data_path("sample", "recipe.yaml"))
    progress = not no_progress
    _report(run_stage(RealsStage(root, recipe), progress=progress))
    _report(run_stage(MasksStage(root, recipe), progress=progress))
    ran = []
    for method in recipe.methods:
        inpainter = build_inpainter(recipe, method)
        try:
            inpainter.check()
        except MethodError as error:
            click.echo(f"{method}: not run, {error}")
            continue
        _report(run_stage(InpaintStage(root, recipe, inpainter), progress=progress))
        ran.append(method)
    report = verify(root, recipe, ran)
    click.echo(report.summary())
    click.echo(f"dataset: {root.path} (methods run: {', '.join(ran)})")
    if not report.ok:
        sys.exit(1)


from brgen_build.filter_cli import filter_command, filter_report_command  # noqa: E402 (the module imports the options above)
from brgen_build.report_cli import report_group  # noqa: E402 (registered after the core commands)

cli.add_command(filter_command)
cli.add_command(filter_report_command)
cli.add_command(report_group)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; user errors print a message and exit with 2 instead of a traceback."""
    try:
        cli.main(args=argv, prog_name="brgen", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except BrgenError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted; finished items are recorded, re-run the same command to continue", err=True)
        sys.exit(130)
