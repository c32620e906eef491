"""`brgen report masks`: the contact sheet of masks, a subcommand of the `brgen report` group."""

from __future__ import annotations

from pathlib import Path

import click

from brgen_build import dataset_cli
from brgen_build.mask_sheet import SheetSettings, build_contact_sheet
from brgen_build.recipe import MASK_KINDS, SPLITS


@click.command(name="masks")
@dataset_cli.root_argument
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="PNG file to write. Default: ROOT/reports/masks.png.")
@click.option("--count", type=click.IntRange(min=1), default=12, show_default=True, help="Photos on the sheet, one row each.")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(MASK_KINDS), help="Mask kind(s), one column each. Default: all.")
@click.option("--split", type=click.Choice(SPLITS), default=None, help="Only photos of this split. Default: any split.")
@click.option("--tile-width", type=click.IntRange(min=64), default=320, show_default=True, help="Width of one tile in pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the photo choice; the same seed gives the same sheet.")
@dataset_cli.root_option
def masks_report(root_argument: str | None, out: str | None, count: int, kinds: tuple[str, ...], split: str | None, tile_width: int, seed: int,
                 root_option: str | None) -> None:
    """Write a contact sheet PNG of real photos with their masks overlaid (red tint, yellow outline).

    Each row is one photo; each column one mask kind, captioned with the area ratio and the classes.

    \b
    Example:
      brgen report masks /data/br-gen --count 24 --split val --out masks.png
    """
    root = dataset_cli.open_root(root_argument, root_option)
    target = Path(out) if out else root.path / "reports" / "masks.png"
    settings = SheetSettings(count=count, tile_width=tile_width, seed=seed, split=split)
    path, photos = build_contact_sheet(root, kinds or MASK_KINDS, target, settings)
    click.echo(f"wrote {path} ({photos} photos)")
