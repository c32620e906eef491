"""A Hugging Face image folder: `<out>/<split>/` with the images and a `metadata.jsonl` per split.

`datasets.load_dataset("imagefolder", data_dir=out)` loads it with splits train, validation (from `val/`)
and test, and these columns: `image` (the real photo or the forgery), `mask` (the Gt mask; None for a
real photo), `real` (a forgery's real photo; None for a real photo), `label` (0 real, 1 forged), `id`,
`real_id`, `split`, `source`, `method`, `kind`, `prompt`, `negative_prompt` and `seed`.

The loader only reads files inside the folder of its metadata file, so images are hard-linked into it
(one copy on disk; copied where the export sits on another file system), symlinked, or copied. The folder
is built beside the old one and then swapped in, so an interrupted export leaves the previous one intact.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from pathlib import Path

from brgen_build.errors import BrgenError
from brgen_build.export import Sample
from brgen_build.files import atomic_write_bytes
from brgen_build.layout import DatasetRoot

logger = logging.getLogger(__name__)

LINK_MODES = ("hard", "symlink", "copy")


def place(source: Path, target: Path, link: str) -> None:
    """Put `source` at `target` as a hard link (copy across file systems), a symlink or a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if link == "symlink":
        os.symlink(source, target)
        return
    if link == "hard":
        try:
            os.link(source, target)
            return
        except OSError as error:
            if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
    shutil.copyfile(source, target)


def _in_folder(path: str) -> str:
    """Path inside a split folder: `<split>/Tp/x.png` becomes `Tp/x.png`."""
    return path.split("/", 1)[1]


def _row(sample: Sample) -> dict:
    return {
        "file_name": _in_folder(sample.image),
        "mask_file_name": _in_folder(sample.mask) if sample.mask else None,
        "real_file_name": _in_folder(sample.real_image) if sample.real_image else None,
        **sample.metadata(),
    }


def write_image_folder(root: DatasetRoot, samples: dict[str, list[Sample]], out_dir: Path, link: str = "hard") -> list[Path]:
    """Write one image folder per non-empty split; returns the split folders."""
    if link not in LINK_MODES:
        raise BrgenError(f"unknown link mode {link!r}; use one of {', '.join(LINK_MODES)}")
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    folders = []
    for split, items in samples.items():
        if not items:
            continue
        folder = partial / split
        files = {path for sample in items for path in (sample.image, sample.mask, sample.real_image) if path}
        for path in sorted(files):
            place(root.absolute(path), folder / _in_folder(path), link)
        # Forgeries first: the loader infers column types from the first rows, and a real photo's mask is None.
        rows = [_row(sample) for sample in sorted(items, key=lambda sample: (-sample.label, sample.id))]
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        atomic_write_bytes(folder / "metadata.jsonl", text.encode("utf-8"))
        folders.append(out_dir / split)
        logger.info("export: %s: %d samples, %d files", split, len(rows), len(files))
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.mkdir(parents=True, exist_ok=True)
    os.replace(partial, out_dir)
    return folders
