"""Segmentation models that find stuff and thing regions in photos without annotations.

Each backend turns RGB photos into `ImageAnnotations` (segments as compressed RLE) in a category table of
its own, so the Stuff and Background rules apply to them unchanged:

- `mask2former`: a Mask2Former trained on COCO panoptic (`facebook/mask2former-swin-large-coco-panoptic`);
  its `id2label` names are looked up in the COCO panoptic table for ids and `isthing`.
- `grounded-sam2`: GroundingDINO boxes for phrases that name stuff and thing classes
  (`IDEA-Research/grounding-dino-base`), then SAM 2 masks inside those boxes (`facebook/sam2.1-hiera-large`);
  the phrases map to COCO-Stuff categories.

Weights are `save_pretrained` folders loaded with `from_pretrained(folder, local_files_only=True)`: brgen
never downloads them.
"""

from __future__ import annotations

from pathlib import Path

from brgen_build.errors import BrgenError
from mask_gen.segmenters.spec import OFFICIAL_WEIGHTS, SEGMENTER_BACKENDS, SegmenterSpec


def check_weights(spec: SegmenterSpec) -> None:
    """Raise a BrgenError naming each weight folder of `spec` that is missing, and where it comes from."""
    for role in SEGMENTER_BACKENDS[spec.backend]:
        folder = Path(spec.weights[role])
        if not (folder / "config.json").is_file():
            official = OFFICIAL_WEIGHTS[(spec.backend, role)]
            state = "has no config.json" if folder.is_dir() else "not found"
            raise BrgenError(
                f"masks: {spec.backend} weights folder {folder} ({role}) {state}. It is the Hugging Face repository "
                f"{official}; on a machine with internet run `hf download {official} --local-dir {folder}` "
                f"and set `masks.segmenter.weights` in the recipe to that folder"
            )


def load_segmenter(spec: SegmenterSpec):
    """Check the weight folders, then load the backend that `spec.backend` names."""
    check_weights(spec)
    if spec.backend == "mask2former":
        from mask_gen.segmenters.mask2former import Mask2FormerSegmenter

        return Mask2FormerSegmenter(spec)
    from mask_gen.segmenters.grounded_sam2 import GroundedSam2Segmenter

    return GroundedSam2Segmenter(spec)
