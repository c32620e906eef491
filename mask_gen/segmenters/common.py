"""Device, dtype and checkpoint identity shared by the segmenter backends."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from brgen_build.errors import BrgenError
from brgen_build.model_checks import check_device
from mask_gen.coco import ImageAnnotations, Segment
from mask_gen.panoptic import encode
from mask_gen.segmenters.spec import SegmenterSpec

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(spec: SegmenterSpec) -> tuple[torch.device, torch.dtype]:
    """Turn the spec's device (`auto` picks CUDA when visible) and dtype into torch objects.

    float16 and bfloat16 apply on CUDA only: on CPU the model runs in float32.

    Raises:
        BrgenError: the device is invalid or not available to this process.
    """
    device = torch.device(check_device(spec.device, BrgenError, "masks"))
    dtype = DTYPES[spec.dtype] if device.type == "cuda" else torch.float32
    return device, dtype


def reduced_precision(device: torch.device, dtype: torch.dtype):
    """Return the autocast context for the forward passes: float16 or bfloat16 on CUDA, else a no-op.

    Weights stay in float32 and autocast picks the precision per operation, as the SAM 2 README runs
    its models, so box coordinates and post-processing keep float32.
    """
    # NOTE: only the disabled (CPU, float32) path runs in the tests; the CUDA autocast path is unmeasured.
    return torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda" and dtype != torch.float32)


def weight_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every weight file in a `save_pretrained` folder, by file name, for the records."""
    hashes = {}
    for path in sorted(Path(folder).iterdir()):
        if path.suffix in (".safetensors", ".bin", ".pt", ".pth"):
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                while chunk := handle.read(1 << 24):
                    digest.update(chunk)
            hashes[path.name] = digest.hexdigest()
    return hashes


def to_annotations(name: str, shape: tuple[int, int], masks: list[tuple[int, int, np.ndarray]]) -> ImageAnnotations:
    """Wrap a segmenter's (segment id, category id, HxW bool mask) triples as one image's annotations."""
    height, width = shape
    result = ImageAnnotations(name, name, height, width)
    for segment_id, category_id, mask in masks:
        if mask.any():
            result.segments.append(Segment(segment_id, category_id, False, encode(mask)))
    return result
