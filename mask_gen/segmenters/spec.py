"""The recipe's `masks.segmenter` block: which model finds regions in photos without annotations."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Backend name -> the weight folders it reads, each a `save_pretrained` folder of one transformers model.
SEGMENTER_BACKENDS = {
    "mask2former": ("model",),
    "grounded-sam2": ("grounding_dino", "sam2"),
}

# The official checkpoint of each weight folder on the Hugging Face Hub, named in missing-folder errors.
OFFICIAL_WEIGHTS = {
    ("mask2former", "model"): "facebook/mask2former-swin-large-coco-panoptic",
    ("grounded-sam2", "grounding_dino"): "IDEA-Research/grounding-dino-base",
    ("grounded-sam2", "sam2"): "facebook/sam2.1-hiera-large",
}


@dataclass(frozen=True)
class SegmenterSpec:
    """A segmenter and its settings.

    Attributes:
        backend: a key of SEGMENTER_BACKENDS.
        weights: weight role -> local folder, as SEGMENTER_BACKENDS lists the roles.
        device: `auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`.
        dtype: `float32`, `float16` or `bfloat16`, the autocast precision of forward passes on CUDA (CPU runs float32).
        batch_size: photos per forward pass; only photos of the same size share one.
        threshold: minimum score of a kept segment (mask2former) or box (grounded-sam2).
        text_threshold: grounded-sam2 only, minimum score of the phrase tokens that name a box.
        prompts: grounded-sam2 only, (phrase, COCO-Stuff category name) pairs; None uses the defaults.
    """

    backend: str
    weights: dict[str, Path]
    device: str = "auto"
    dtype: str = "float32"
    batch_size: int = 1
    threshold: float = 0.5
    text_threshold: float = 0.25
    prompts: tuple[tuple[str, str], ...] | None = None
