"""`brgen export`: write a dataset root in the formats people train with.

- `imdlbenco`: IMDLBenCo JSON lists named as the release's (see `imdlbenco`);
- `hf`: a Hugging Face image folder per split with `metadata.jsonl` (see `huggingface`);
- `webdataset`: tar shards per split with image, mask and JSON per sample (see `webdataset_shards`).

Only items with an ok record are exported, and every file they list must exist with its recorded size;
run `brgen verify` first for the full checks. Output goes to `<root>/exports/<format>/` unless `out` is given.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from brgen_build.catalog import Catalog, FileRef
from brgen_build.errors import BrgenError
from brgen_build.layout import DatasetRoot
from brgen_build.manifest import OK
from brgen_build.recipe import SPLITS, Recipe

logger = logging.getLogger(__name__)

FORMATS = ("imdlbenco", "hf", "webdataset")
# Missing files named in the error message before "and N more".
MISSING_EXAMPLES = 5


@dataclass(frozen=True)
class Sample:
    """One exported image: a real photo (label 0, no mask) or a forgery (label 1) with its mask and real photo.

    Paths are relative to the dataset root.
    """

    id: str
    split: str
    label: int
    image: str
    mask: str | None
    real_image: str | None
    real: str
    source: str
    method: str | None = None
    kind: str | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    text_guided: bool = False

    def metadata(self) -> dict:
        """Return the sample's facts as exported in metadata.jsonl and WebDataset JSON."""
        return {
            "id": self.id,
            "label": self.label,
            "split": self.split,
            "real_id": self.real,
            "source": self.source,
            "method": self.method,
            "kind": self.kind,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
        }


def _is_text_guided(method: str, records_have_prompts: bool) -> bool:
    """Whether a method is text-guided (diffusion); methods no longer registered are judged by their prompts."""
    from inpainters import registry
    from inpainters.base import MethodError

    try:
        return bool(registry.get(method).text_guided)
    except MethodError:
        return records_have_prompts


def collect_samples(root: DatasetRoot, catalog: Catalog) -> dict[str, list[Sample]]:
    """Samples per split: ok real photos and ok forgeries, sorted by id, after checking their files exist."""
    samples: dict[str, list[Sample]] = {split: [] for split in SPLITS}
    missing: list[str] = []

    def present(*refs: FileRef | None) -> bool:
        absent = [ref.path for ref in refs if ref is None or not _has_size(root.absolute(ref.path), ref.bytes)]
        missing.extend(absent)
        return not absent

    for real in sorted(catalog.ok_reals(), key=lambda item: item.id):
        if present(real.au):
            samples.setdefault(real.split, []).append(
                Sample(real.id, real.split, 0, real.au.path, None, None, real.id, real.source)
            )
    for method, items in sorted(catalog.forgeries.items()):
        text_guided = _is_text_guided(method, any(item.prompt for item in items.values()))
        for item in sorted(items.values(), key=lambda item: item.id):
            real = catalog.reals.get(item.real)
            if item.status != OK or real is None or real.status != OK:
                continue
            if present(item.tp, item.gt, real.au):
                samples.setdefault(item.split, []).append(
                    Sample(item.id, item.split, 1, item.tp.path, item.gt.path, real.au.path, item.real, item.source,
                           item.method, item.kind, item.prompt, item.negative_prompt, item.seed, text_guided)
                )
    missing = list(dict.fromkeys(missing))
    if missing:
        more = f" and {len(missing) - MISSING_EXAMPLES} more" if len(missing) > MISSING_EXAMPLES else ""
        raise BrgenError(
            f"{len(missing)} file(s) listed in {root.path / 'manifests'} are missing or have another size than recorded: "
            f"{', '.join(missing[:MISSING_EXAMPLES])}{more}; run `brgen verify {root.path}` and re-run the stages that made them"
        )
    return samples


def _has_size(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def export(root: DatasetRoot, recipe: Recipe, format: str, out: str | os.PathLike | None = None, seed: int | None = None,
           link: str = "hard", shard_samples: int = 1000) -> list[Path]:
    """Export the dataset in `format`; returns the files written (IMDLBenCo) or the folders per split.

    Args:
        seed: seed of the seeded downsampling and shuffling (default: the recipe's).
        link: for `hf`, how images get into the image folder: `hard` links (copies across file systems),
            `symlink` or `copy`.
        shard_samples: for `webdataset`, samples per tar shard.
    """
    if format not in FORMATS:
        raise BrgenError(f"unknown export format {format!r}; available: {', '.join(FORMATS)}")
    out_dir = Path(out) if out is not None else root.path / "exports" / format
    seed = recipe.seed if seed is None else seed
    samples = collect_samples(root, Catalog.load(root))
    if format == "imdlbenco":
        from brgen_build.export.imdlbenco import write_imdlbenco

        return write_imdlbenco(root, samples, out_dir, seed)
    if format == "hf":
        from brgen_build.export.huggingface import write_image_folder

        return write_image_folder(root, samples, out_dir, link)
    from brgen_build.export.webdataset_shards import write_shards

    return write_shards(root, samples, out_dir, seed, shard_samples)
