"""Builders of small photo containers shaped like COCO's zip, ImageNet's tar of tars and Places' folders."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def photo_bytes(seed: int, size: tuple[int, int] = (12, 8), format: str = "JPEG") -> bytes:
    """Encode a small random RGB photo (width, height) in the given format."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=format, **({"quality": 95} if format == "JPEG" else {}))
    return buffer.getvalue()


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_tar(path: Path, members: dict[str, bytes], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def write_nested_tar(path: Path, synsets: dict[str, dict[str, bytes]], mode: str = "w") -> Path:
    """Write an ImageNet-style tar: one inner tar `<synset>.tar` per synset, holding that synset's photos."""
    return write_tar(path, {f"{synset}.tar": tar_bytes(photos) for synset, photos in synsets.items()}, mode)


def imagenet_photos(synsets: int, per_synset: int) -> dict[str, dict[str, bytes]]:
    """Photos named like ImageNet's (`n00000001_3.JPEG`), each one distinct."""
    return {
        f"n{s:08d}": {f"n{s:08d}_{k}.JPEG": photo_bytes(100 * s + k) for k in range(per_synset)}
        for s in range(1, synsets + 1)
    }


def write_folder(root: Path, members: dict[str, bytes]) -> Path:
    for name, data in members.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def write_list(path: Path, entries: list[str]) -> Path:
    path.write_text("\n".join(entries) + "\n", encoding="utf-8")
    return path
