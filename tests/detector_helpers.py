"""Tiny NFA-ViT parts for tests: MiT folders, a Noiseprint++ file and a dataset, all built in a temporary folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import SegformerConfig, SegformerForImageClassification

from detector.noise_extractor import DnCNN

TINY_SIZE = 64


def tiny_mit_config(hidden_sizes: list[int], depths: list[int]) -> SegformerConfig:
    """A 4-stage MiT with the real strides and reduction ratios but few channels; heads 1, 1, 2, 2."""
    return SegformerConfig(
        num_channels=3, hidden_sizes=hidden_sizes, depths=depths, num_attention_heads=[1, 1, 2, 2],
        sr_ratios=[8, 4, 2, 1], patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2], mlp_ratios=[2, 2, 2, 2], num_labels=10,
    )


def save_tiny_mit_folders(folder: Path) -> tuple[Path, Path]:
    """Save tiny ImageNet-classifier MiT checkpoints the way the hub's nvidia/mit-b0 and nvidia/mit-b2 are stored."""
    torch.manual_seed(0)
    noise = folder / "mit-b0"
    image = folder / "mit-b2"
    SegformerForImageClassification(tiny_mit_config([8, 8, 16, 16], [1, 1, 1, 1])).save_pretrained(noise)
    SegformerForImageClassification(tiny_mit_config([8, 16, 16, 32], [2, 2, 2, 2])).save_pretrained(image)
    return noise, image


def save_tiny_noiseprint(path: Path) -> Path:
    """Save a 3-layer, 8-channel DnCNN as TruFor's noiseprint++.th stores it: the layers under `network`."""
    torch.manual_seed(1)
    extractor = DnCNN(depth=3, features=8)
    for module in extractor.layers:
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    torch.save({"network": extractor.layers.state_dict()}, path)
    return path


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def make_release_folder(folder: Path, count: int = 4, size: tuple[int, int] = (72, 80), seed: int = 0) -> Path:
    """Write `count` authentic images and `count` forgeries with masks in the release layout (Au/Tp/Gt).

    Authentic images are smooth colour gradients with mild noise; each forgery replaces a rectangle by
    strong noise, and its mask is 255 there.
    """
    rng = np.random.default_rng(seed)
    height, width = size
    rows, columns = np.mgrid[0:height, 0:width]
    for index in range(count):
        base = np.stack([rows * 3 + index * 20, columns * 3, (rows + columns) * 2], axis=-1) % 256
        real = np.clip(base + rng.normal(0, 2, base.shape), 0, 255).astype(np.uint8)
        write_png(folder / "Au" / f"COCO_{index:012d}.png", real)

        top, left = rng.integers(4, height // 2), rng.integers(4, width // 2)
        mask = np.zeros((height, width), np.uint8)
        mask[top : top + height // 3, left : left + width // 3] = 255
        forgery = real.copy()
        forgery[mask == 255] = rng.integers(0, 256, (int((mask == 255).sum()), 3), dtype=np.uint8)
        name = f"LaMa_Stuff_COCO_{index:012d}"
        write_png(folder / "Tp" / f"{name}.png", forgery)
        write_png(folder / "Gt" / f"{name}_mask.png", mask)
    return folder


def write_json_list(folder: Path, path: Path) -> Path:
    """Write the IMDLBenCo JSON list of a release folder, with absolute paths."""
    entries = [[str(image), "Negative"] for image in sorted((folder / "Au").glob("*.png"))]
    entries += [[str(image), str(folder / "Gt" / f"{image.stem}_mask.png")] for image in sorted((folder / "Tp").glob("*.png"))]
    path.write_text(json.dumps(entries))
    return path
