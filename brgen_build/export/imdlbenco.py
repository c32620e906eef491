"""IMDLBenCo JSON lists, named as the BR-Gen release's.

IMDLBenCo's `JsonDataset` reads a JSON list of `[image_path, mask_path]` pairs, with the string
`"Negative"` in place of the mask for an authentic image (read as an all-black mask, label 0). Its
`test_datasets.json` is a dict from a dataset name to a list file. Paths here are absolute.

What each list contains (the release ships the same names; its README fixes the training rule, and the
validation lists follow their names):
- `br-gen_train.json`: every train real photo, plus train forgeries of every method and kind, randomly
  downsampled (seeded) to the number of train real photos, as the release balances real and forged;
- `br-gen_test.json`: the same rule on the test split (the release did not publish its test list);
- `real_val.json`: every validation real photo, as Negative;
- `stuff_val.json` / `background_val.json`: every validation forgery with a Stuff / Background mask;
- `diffusion_val.json`: every validation forgery of a text-guided method (SDXL, BrushNet, PowerPaint);
- `gan_val.json`: every validation forgery of the other methods (LaMa and MAT; also the opencv-telea baseline);
- `mani_val.json`: every validation forgery ("manipulated"), all methods and kinds;
- `test_datasets.json`: `{name: path}` of each non-empty list above except the training list.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

from brgen_build.export import Sample
from brgen_build.files import atomic_write_bytes
from brgen_build.layout import DatasetRoot
from brgen_build.seeding import stable_hash

logger = logging.getLogger(__name__)

NEGATIVE = "Negative"

# list name -> which validation forgeries it keeps
VALIDATION_LISTS: dict[str, Callable[[Sample], bool]] = {
    "stuff_val.json": lambda sample: sample.kind == "Stuff",
    "background_val.json": lambda sample: sample.kind == "Background",
    "diffusion_val.json": lambda sample: sample.text_guided,
    "gan_val.json": lambda sample: not sample.text_guided,
    "mani_val.json": lambda sample: True,
}


def balanced(reals: list[Sample], forgeries: list[Sample], seed: int, purpose: str) -> list[Sample]:
    """Return the real photos plus forgeries downsampled to their number, ranked by a hash of the seed and each id.

    The choice depends only on the seed and the set of ids, never on listing order. With fewer
    forgeries than real photos, every forgery is kept.
    """
    ranked = sorted(forgeries, key=lambda sample: (stable_hash(seed, purpose, sample.id), sample.id))
    chosen = sorted(ranked[: len(reals)], key=lambda sample: sample.id)
    return reals + chosen


def _pairs(root: DatasetRoot, samples: list[Sample]) -> list[list[str]]:
    return [
        [str(root.absolute(sample.image)), str(root.absolute(sample.mask)) if sample.mask else NEGATIVE]
        for sample in samples
    ]


def write_imdlbenco(root: DatasetRoot, samples: dict[str, list[Sample]], out_dir: Path, seed: int) -> list[Path]:
    """Write the lists described in this module's docstring into `out_dir`; returns their paths."""
    def split_parts(split: str) -> tuple[list[Sample], list[Sample]]:
        items = samples.get(split, [])
        return [s for s in items if s.label == 0], [s for s in items if s.label == 1]

    lists: dict[str, list[Sample]] = {}
    train_reals, train_forgeries = split_parts("train")
    lists["br-gen_train.json"] = balanced(train_reals, train_forgeries, seed, "imdlbenco-train")
    test_reals, test_forgeries = split_parts("test")
    lists["br-gen_test.json"] = balanced(test_reals, test_forgeries, seed, "imdlbenco-test")
    val_reals, val_forgeries = split_parts("val")
    lists["real_val.json"] = val_reals
    for name, keep in VALIDATION_LISTS.items():
        lists[name] = [sample for sample in val_forgeries if keep(sample)]

    written = []
    for name, items in lists.items():
        if not items:
            logger.warning("export: %s is empty (no matching item in the dataset)", name)
        path = out_dir / name
        atomic_write_bytes(path, json.dumps(_pairs(root, items), indent=1).encode("utf-8"))
        written.append(path)

    test_sets = {f"BR-Gen_{name.removesuffix('.json').replace('br-gen_', '')}": str(out_dir.resolve() / name)
                 for name, items in lists.items() if items and name != "br-gen_train.json"}
    index = out_dir / "test_datasets.json"
    atomic_write_bytes(index, json.dumps(test_sets, indent=1).encode("utf-8"))
    written.append(index)
    return written
