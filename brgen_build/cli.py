"""The `brgen` command line."""

from __future__ import annotations

import copy
import logging
import os
import sys

import click
import yaml

from brgen_build import __version__, dataset_cli
from brgen_build.detector_commands import eval_detector, train_detector
from brgen_build.engine import StageSummary, run_stage
from brgen_build.errors import BrgenError
from brgen_build.layout import DatasetRoot
from brgen_build.recipe import FailureBudget, Recipe, load_recipe, parse_recipe
from brgen_build.seeding import Shard, detect_shard, parse_shard
from brgen_build.shards import wait_for_stage
from brgen_build.stages.inpaint import InpaintStage, build_inpainter
from brgen_build.stages.masks import MasksStage
from brgen_build.stages.reals import RealsStage
from brgen_build.verify import verify
from brgen_build.weights_cli import weights_group
from brgen_build.workers import usable_cpus
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
    help="Run shard I of N (0-based). Default: from torchrun/accelerate (RANK, WORLD_SIZE), a Slurm array "
    "(SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT) or both, else 0/1.",
)
progress_option = click.option("--no-progress", is_flag=True, help="Hide progress bars (logs still show counts).")


def _shard(text: str | None) -> Shard:
    if text:
        return parse_shard(text)
    shard, source = detect_shard()
    if shard.count > 1:
        logger.info("shard %s, from %s", shard, source)
    return shard


def _open(root_path: str, recipe_path: str | None) -> tuple[DatasetRoot, Recipe]:
    root = DatasetRoot(root_path)
    logger.info("dataset root: %s", root.path)
    return root, root.load_recipe(recipe_path, update=True)


def _report(summary: StageSummary, budget: FailureBudget) -> bool:
    """Print a stage's counts and failures, and return whether its failures fit the recipe's failure_budget."""
    click.echo(summary.line())
    for line in summary.notes:
        click.echo(f"  {line}")
    for line in summary.failures[:20]:
        click.echo(f"  failed: {line}", err=True)
    if len(summary.failures) > 20:
        click.echo(f"  ... and {len(summary.failures) - 20} more; see the stage's manifest", err=True)
    if not summary.failed:
        return True
    if budget.allows(summary.failed, summary.planned):
        click.echo(f"{summary.stage}: {summary.failed} failed item(s) within the recipe's failure_budget ({budget}). Re-run to retry them", err=True)
        return True
    click.echo(f"{summary.stage}: {summary.failed} failed item(s) exceed the recipe's failure_budget ({budget})", err=True)
    return False


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
@click.option(
    "--method", "methods", multiple=True,
    help="For `inpaint`, `filter` and `verify`: a method to run; repeat the option for several. Default: every method in the recipe.",
)
@root_option
@recipe_option
@shard_option
@click.option(
    "--wait-timeout", type=click.FloatRange(min=0), default=7200.0, show_default=True, metavar="SECONDS",
    help="For `--stage all` with several shards: seconds to wait for the other shards to finish a stage before "
    "this process starts the next one.",
)
@progress_option
def build(stage: str, methods: tuple[str, ...], root_path: str, recipe_path: str | None, shard_text: str | None,
          wait_timeout: float, no_progress: bool) -> None:
    """Run one stage of the build, or all of them.

    Finished items are skipped and failed ones redone, so a stage can be re-run at any time. With `--stage all`
    and several shards, each process waits until every shard has finished a stage before it starts the next,
    and shard 0 runs verify at the end. The exit code is 1 when a stage's failed items exceed the recipe's
    `failure_budget` or verify finds a problem.

    The commands `brgen inpaint`, `brgen filter` and `brgen verify` run one stage with more options
    (weights, device, batch size, JSON output).

    \b
    Examples:
      brgen build --stage masks --root /data/br-gen
      torchrun --nproc_per_node 8 -m brgen_build build --stage all --root /data/br-gen
    """
    root, recipe = _open(root_path, recipe_path)
    shard = _shard(shard_text)
    for name in methods:
        registry.get(name)
    selected = list(dict.fromkeys(methods)) or list(recipe.methods)
    inpainters = []
    if stage in ("inpaint", "all"):
        inpainters = [build_inpainter(recipe, method) for method in selected]
        for inpainter in inpainters:
            inpainter.check()  # missing weights fail now, not after hours of earlier stages
    in_sequence = stage == "all" and shard.count > 1
    progress = not no_progress
    within_budget = True

    for name, stage_class in (("reals", RealsStage), ("masks", MasksStage)):
        if stage in (name, "all"):
            summary = run_stage(stage_class(root, recipe), shard, progress=progress)
            within_budget &= _report(summary, recipe.failure_budget)
            if in_sequence:
                wait_for_stage(root, summary.stage, summary.item_ids, shard, wait_timeout)
    inpaint_summaries = []
    for inpainter in inpainters:
        summary = run_stage(InpaintStage(root, recipe, inpainter), shard, progress=progress)
        within_budget &= _report(summary, recipe.failure_budget)
        inpaint_summaries.append(summary)
    if stage == "filter" or (stage == "all" and recipe.filter is not None):
        from brgen_build.filter_cli import run_filter

        for summary in run_filter(root, recipe, selected, shard, progress=progress):
            within_budget &= _report(summary, recipe.failure_budget)
            inpaint_summaries.append(summary)

    problems = 0
    if stage in ("verify", "all"):
        if in_sequence and shard.index != 0:
            click.echo(f"verify: left to shard 0/{shard.count}")
        else:
            for summary in inpaint_summaries if in_sequence else []:
                wait_for_stage(root, summary.stage, summary.item_ids, shard, wait_timeout)
            report = verify(root, recipe, selected, workers=usable_cpus(), progress=progress)
            click.echo(report.summary())
            problems = len(report.problems)
    if problems or not within_budget:
        sys.exit(1)


@cli.command()
@click.option("--method", required=True, help=f"Method to run: {', '.join(registry.names())}.")
@click.option("--weights", type=click.Path(), default=None, help="Weight file or folder; overrides the recipe.")
@click.option(
    "--device", default=None,
    help="Torch device: auto, cpu, cuda, cuda:1. Default: the recipe's, else auto. Under torchrun or accelerate, "
    "auto and cuda mean cuda:$LOCAL_RANK.",
)
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
    inpainter = build_inpainter(recipe, method, overrides)
    inpainter.check()
    summary = run_stage(InpaintStage(root, recipe, inpainter), _shard(shard_text), progress=not no_progress)
    if not _report(summary, recipe.failure_budget):
        sys.exit(1)


@cli.command()
@click.option("--out", "out", type=click.Path(file_okay=False), default="brgen-sample", show_default=True, help="Folder for the sample dataset.")
@progress_option
def quickstart(out: str, no_progress: bool) -> None:
    """Build the bundled sample (two real COCO photos) end to end and verify it.

    Runs reals, masks, every sample method whose weights are present (opencv-telea always), then verify.
    The recipe frozen into OUT lists only those methods, so `brgen verify OUT` passes too. After fetching more
    weights, run the same command again to add their methods.

    \b
    Example:
      brgen quickstart --out brgen-sample
    """
    from manifests import data_path

    root = DatasetRoot(out)
    sample = load_recipe(data_path("sample", "recipe.yaml"))
    runnable, not_run = {}, []
    for method in sample.methods:
        inpainter = build_inpainter(sample, method)
        try:
            inpainter.check()
        except MethodError as error:
            logger.info("quickstart: %s not run: %s", method, error)
            not_run.append(method)
            continue
        runnable[method] = inpainter
    try:
        recipe = root.load_recipe(given=sample_with_methods(sample, root, list(runnable)), update=True)
    except BrgenError as error:
        raise BrgenError(f"{root.path} contains a dataset of another recipe; choose another --out ({error})") from None

    progress = not no_progress
    _report(run_stage(RealsStage(root, recipe), progress=progress), recipe.failure_budget)
    _report(run_stage(MasksStage(root, recipe), progress=progress), recipe.failure_budget)
    ran = []
    for method, inpainter in runnable.items():
        _report(run_stage(InpaintStage(root, recipe, inpainter), progress=progress), recipe.failure_budget)
        ran.append(method)
    report = verify(root, recipe, ran)
    click.echo(report.summary())
    click.echo(f"dataset: {root.path} (methods run: {', '.join(ran)})")
    if not_run:
        click.echo(
            f"not run, weights not found: {', '.join(not_run)}. `brgen weights list` shows where each file is "
            "expected and `brgen weights fetch METHOD` downloads it; then run this command again"
        )
    if not report.ok:
        sys.exit(1)


def sample_with_methods(sample: Recipe, root: DatasetRoot, methods: list[str]) -> Recipe:
    """Return the sample recipe with only `methods`, plus any method already frozen into `root`."""
    frozen = yaml.safe_load(root.recipe_path.read_text(encoding="utf-8")) if root.recipe_path.is_file() else {}
    keep = set(methods) | set((frozen or {}).get("methods") or {})
    raw = copy.deepcopy(sample.raw)
    raw["methods"] = {name: params for name, params in raw["methods"].items() if name in keep}
    return Recipe(**{**parse_recipe(raw, str(sample.path), sample.path.parent).__dict__, "path": sample.path})


from brgen_build.filter_cli import filter_command, filter_report_command  # noqa: E402 (the module imports the options above)
from brgen_build.mask_report_cli import masks_report  # noqa: E402 (registered after the core commands)

cli.add_command(filter_command)
dataset_cli.report_group.add_command(filter_report_command)
dataset_cli.report_group.add_command(masks_report)
cli.add_command(weights_group)
cli.add_command(dataset_cli.verify_command)
cli.add_command(dataset_cli.export_command)
cli.add_command(dataset_cli.report_group)
cli.add_command(dataset_cli.status_command)
cli.add_command(train_detector)
cli.add_command(eval_detector)


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
