"""`brgen shards`: progress of every stage shard, and the process that works on each one now."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from brgen_build.layout import DatasetRoot
from brgen_build.shards import shard_progress


@click.command(name="shards")
@click.argument("root_path", metavar="[ROOT]", required=False, type=click.Path(file_okay=False), envvar="BRGEN_ROOT", default=".")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per stage shard instead of the table.")
def shards_command(root_path: str, as_json: bool) -> None:
    """Show each stage shard of a dataset: records by status, items left, and the process working on it.

    Read-only. A shard is `running` while a process holds its lock, or else `finished`, `stopped` (an error
    such as a full disk ended the run) or `interrupted` (the process was killed). Re-run the same command to
    continue a stopped or interrupted shard. ROOT defaults to $BRGEN_ROOT, else the current folder.

    \b
    Example:
      brgen shards /data/br-gen
    """
    root = DatasetRoot(root_path)
    rows = shard_progress(root)
    if as_json:
        for row in rows:
            click.echo(json.dumps(asdict(row)))
        return
    if not rows:
        click.echo(f"{root.path}: no stage has run yet")
        return
    header = f"{'stage':<22} {'shard':<7} {'status':<12} {'planned':>7} {'ok':>7} {'skipped':>7} {'failed':>7} {'left':>7}  detail"
    click.echo(header)
    for row in rows:
        planned = "-" if row.planned is None else row.planned
        left = "-" if row.pending is None else row.pending
        click.echo(
            f"{row.stage:<22} {row.shard:<7} {row.status:<12} {planned:>7} {row.counts['ok']:>7} "
            f"{row.counts['skipped']:>7} {row.counts['failed']:>7} {left:>7}  {row.detail}"
        )
