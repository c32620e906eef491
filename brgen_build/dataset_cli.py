"""CLI commands that read a finished (or growing) dataset root: verify, export, report and status."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import click

from brgen_build.errors import BrgenError
from brgen_build.layout import DatasetRoot
from brgen_build.workers import usable_cpus


def open_root(root_argument: str | None, root_option: str | None = None) -> DatasetRoot:
    """Resolve the dataset root (ROOT, else --root, else $BRGEN_ROOT, else the current folder) and check its recipe.yaml.

    Raises:
        BrgenError: ROOT and --root name different folders, or the folder has no recipe.yaml.
    """
    if root_argument and root_option and Path(root_argument).resolve() != Path(root_option).resolve():
        raise BrgenError(f"ROOT is {root_argument} but --root is {root_option}, a different folder; give the dataset root once, as ROOT or as --root")
    root = DatasetRoot(root_argument or root_option or os.environ.get("BRGEN_ROOT", "."))
    if not root.recipe_path.is_file():
        raise BrgenError(f"{root.path} is not a brgen dataset root (no recipe.yaml); pass the folder given to `brgen build --root`")
    return root


root_argument = click.argument("root_argument", metavar="[ROOT]", required=False, type=click.Path(file_okay=False))
root_option = click.option("--root", "-r", "root_option", type=click.Path(file_okay=False), default=None,
                           help="Dataset root, as an alternative to ROOT. Default: $BRGEN_ROOT, else the current folder.")
progress_option = click.option("--no-progress", is_flag=True, help="Hide the progress bar.")


@click.command(name="verify")
@root_argument
@click.option("--method", "methods", multiple=True, help="Method(s) whose forgeries must be complete. Default: every method in the recipe.")
@click.option("--against", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of an unpacked official BR-Gen download: report which release names the rebuild covers and the mask IoU per kind.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable JSON report instead of the summary.")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
              help="Processes that read, hash and decode files. Default: the number of usable CPUs.")
@root_option
@progress_option
def verify_command(root_argument: str | None, methods: tuple[str, ...], against: str | None, as_json: bool,
                   workers: int | None, root_option: str | None, no_progress: bool) -> None:
    """Check a dataset: completeness against the recipe, file hashes and decoding, sizes, mask values, pixels outside masks.

    Read-only. Exits with 0 only when every check holds, 1 when a problem was found.

    \b
    Example:
      brgen verify /data/br-gen --against /data/BR-Gen-release --json > verify.json
    """
    from brgen_build.verify import report_json, verify
    from inpainters import registry

    root = open_root(root_argument, root_option)
    recipe = root.load_recipe(None)
    for name in methods:
        registry.get(name)
    report = verify(root, recipe, list(methods) or None, workers or usable_cpus(),
                    Path(against) if against else None, progress=not no_progress and not as_json)
    click.echo(report_json(report) if as_json else report.summary())
    if not report.ok:
        sys.exit(1)


@click.command(name="export")
@root_argument
@click.option("--format", "format_name", type=click.Choice(["imdlbenco", "hf", "webdataset"]), required=True,
              help="imdlbenco: IMDLBenCo JSON lists; hf: Hugging Face image folder; webdataset: tar shards.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Output folder. Default: ROOT/exports/FORMAT.")
@click.option("--seed", type=int, default=None, help="Seed of the balanced downsampling (imdlbenco) and the sample order (webdataset). Default: the recipe's seed.")
@click.option("--link", type=click.Choice(["hard", "symlink", "copy"]), default="hard", show_default=True,
              help="hf: how images get into the image folder (hard links fall back to copies across file systems).")
@click.option("--shard-samples", type=click.IntRange(min=1), default=1000, show_default=True, help="webdataset: samples per tar shard.")
@root_option
def export_command(root_argument: str | None, format_name: str, out: str | None, seed: int | None, link: str,
                   shard_samples: int, root_option: str | None) -> None:
    """Export the dataset for training: IMDLBenCo JSON lists, a Hugging Face image folder or WebDataset shards.

    Only items with an ok record are exported; run `brgen verify` first for the full checks.

    \b
    Examples:
      brgen export /data/br-gen --format imdlbenco
      brgen export /data/br-gen --format hf --out /data/br-gen-hf
    """
    from brgen_build.export import export

    root = open_root(root_argument, root_option)
    recipe = root.load_recipe(None)
    if format_name == "webdataset":
        _require("webdataset", "webdataset")
    written = export(root, recipe, format_name, out, seed, link, shard_samples)
    for path in written:
        click.echo(str(path))


def install_hint(extra: str) -> str:
    """Return the pip commands that install an extra of brgen, for an install from an index and from a clone."""
    return f"pip install 'brgen[{extra}]' (or pip install -e '.[{extra}]' in a clone of brgen)"


def _require(module: str, package: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise BrgenError(f"this export needs the `{package}` package; install it with {install_hint('export')}") from None


class DefaultGroup(click.Group):
    """A group that runs its `default` subcommand when the first argument names no subcommand.

    So `brgen report ROOT` runs `brgen report dataset ROOT`, while `brgen report OTHER ...` still reaches
    another subcommand registered on the group.
    """

    def __init__(self, *args, default: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.default = default

    def parse_args(self, context: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = [self.default, *args]
        return super().parse_args(context, args)


@click.group(name="report", cls=DefaultGroup, default="dataset")
def report_group() -> None:
    """Write HTML and PNG reports into ROOT/reports/.

    `dataset` (the default when no subcommand is given) writes reports/dataset/report.html, `filter` writes
    reports/filter.html and `masks` writes reports/masks.png.

    \b
    Example:
      brgen report /data/br-gen
    """


@report_group.command(name="dataset")
@root_argument
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Folder for report.html and its PNGs. Default: ROOT/reports/dataset.")
@click.option("--examples", type=click.IntRange(min=1), default=4, show_default=True, help="Forgeries per method and kind on the contact sheets.")
@click.option("--seed", type=int, default=None, help="Seed that picks the contact-sheet examples. Default: the recipe's seed.")
@root_option
def report_dataset(root_argument: str | None, out: str | None, examples: int, seed: int | None, root_option: str | None) -> None:
    """Write an HTML page with contact sheets, mask-area histograms, time per forgery and failures by reason.

    The page embeds its figures, so it opens anywhere without network; the PNGs are written next to it.

    \b
    Example:
      brgen report dataset /data/br-gen --out /tmp/br-gen-report
    """
    from brgen_build.dataset_report import build_report

    root = open_root(root_argument, root_option)
    click.echo(str(build_report(root, Path(out) if out else None, examples, seed)))


@click.command(name="status")
@root_argument
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per stage shard instead of the tables.")
@root_option
def status_command(root_argument: str | None, as_json: bool, root_option: str | None) -> None:
    """Print how far each stage has come, in all and per shard, from the manifests. Read-only.

    The first table counts done, skipped, failed and pending items per stage. The second has one line per
    stage shard. A shard is `running` while a process holds its lock (the line names the host and pid), else
    `finished`, `stopped` (an error such as a full disk ended the run) or `interrupted` (the process was
    killed). Re-run the same build command to continue a stopped or interrupted shard.

    \b
    Example:
      brgen status /data/br-gen
    """
    from brgen_build.catalog import Catalog
    from brgen_build.shards import shard_progress
    from brgen_build.status import format_shard_table, format_status, stage_progress

    root = open_root(root_argument, root_option)
    shards = shard_progress(root)
    if as_json:
        for row in shards:
            click.echo(json.dumps(asdict(row)))
        return
    click.echo(format_status(stage_progress(Catalog.load(root), root.load_recipe(None))))
    click.echo("")
    click.echo(format_shard_table(shards) if shards else "no stage shard has run yet")
