"""WebDataset tar shards: `<out>/<split>/brgen-<split>-000000.tar`, ... per split.

Each sample has three members under its key: `png` (the real photo or the forgery), `mask.png` (the Gt
mask) and `json` (label, ids, method, kind, source, prompt, seed). A real photo gets an all-zero mask, so
every sample has the same fields. Samples are written in a seeded random order, so every shard mixes real
photos and forgeries of all methods, as shard-level shuffling in a training loader expects.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import webdataset

from brgen_build.export import Sample
from brgen_build.files import encode_png
from brgen_build.layout import DatasetRoot
from brgen_build.seeding import stable_hash

logger = logging.getLogger(__name__)


def sample_key(sample: Sample) -> str:
    """Return the tar key of a sample. WebDataset splits member names at the first dot, so dots become `_`."""
    return sample.id.replace(".", "_")


def write_shards(root: DatasetRoot, samples: dict[str, list[Sample]], out_dir: Path, seed: int, shard_samples: int = 1000) -> list[Path]:
    """Write shards per non-empty split; returns the split folders."""
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    empty_masks: dict[tuple[int, int], bytes] = {}
    sample_counts: dict[str, int] = {}
    for split, items in samples.items():
        if not items:
            continue
        folder = partial / split
        folder.mkdir(parents=True)
        ordered = sorted(items, key=lambda sample: (stable_hash(seed, "webdataset", sample.id), sample.id))
        pattern = str(folder / f"brgen-{split}-%06d.tar")
        with webdataset.ShardWriter(pattern, maxcount=shard_samples, verbose=0) as writer:
            for sample in ordered:
                image = root.absolute(sample.image).read_bytes()
                if sample.mask:
                    mask = root.absolute(sample.mask).read_bytes()
                else:
                    mask = _empty_mask(root.absolute(sample.image), empty_masks)
                metadata = json.dumps(sample.metadata(), ensure_ascii=False).encode("utf-8")
                writer.write({"__key__": sample_key(sample), "png": image, "mask.png": mask, "json": metadata})
        sample_counts[split] = len(ordered)
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.mkdir(parents=True, exist_ok=True)
    partial.replace(out_dir)

    # Logged once the shards are in their final folders, because the `.partial` folder is gone by now.
    for split, count in sample_counts.items():
        logger.info("export: %s: %d samples in %s", split, count, out_dir / split)
    return [out_dir / split for split in sample_counts]


def _empty_mask(image_path: Path, cache: dict[tuple[int, int], bytes]) -> bytes:
    """Encode an all-zero 8-bit mask PNG of the image's size, once per size."""
    from PIL import Image

    with Image.open(image_path) as image:
        size = image.size
    if size not in cache:
        cache[size] = encode_png(np.zeros((size[1], size[0]), dtype=np.uint8), compress_level=9)
    return cache[size]
