"""Mask2Former panoptic segmentation through transformers.

Reads a `save_pretrained` folder of `Mask2FormerForUniversalSegmentation` and its image processor, such as
`facebook/mask2former-swin-large-coco-panoptic`. The model's `id2label` must use COCO panoptic category
names: each label is looked up by name in `manifests/categories/coco_panoptic.json` for its id and `isthing`.
Stuff labels are fused, so each stuff class is one segment and each thing detection one instance.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from transformers import AutoImageProcessor, Mask2FormerForUniversalSegmentation

from brgen_build.errors import BrgenError
from mask_gen.categories import CategoryTable
from mask_gen.coco import ImageAnnotations
from mask_gen.segmenters.common import reduced_precision, resolve_device, to_annotations, weight_hashes
from mask_gen.segmenters.spec import OFFICIAL_WEIGHTS, SegmenterSpec

logger = logging.getLogger(__name__)


class Mask2FormerSegmenter:
    """A COCO panoptic Mask2Former; `segment` returns segments with COCO panoptic category ids."""

    def __init__(self, spec: SegmenterSpec):
        self.spec = spec
        self.folder = spec.weights["model"]
        self.device, self.dtype = resolve_device(spec)
        self.processor = AutoImageProcessor.from_pretrained(self.folder, local_files_only=True)
        model = Mask2FormerForUniversalSegmentation.from_pretrained(self.folder, local_files_only=True)
        self.model = model.to(self.device).eval()
        self.categories = CategoryTable.bundled("coco_panoptic")
        self.category_of_label = self._map_labels(self.model.config.id2label)
        self.stuff_labels = [label for label, category_id in self.category_of_label.items() if not self.categories.is_thing(category_id)]
        self.hashes = weight_hashes(self.folder)
        logger.info("masks: loaded mask2former from %s on %s (%s)", self.folder, self.device, self.dtype)

    def _map_labels(self, id2label: dict) -> dict[int, int]:
        mapping, unknown = {}, []
        for label, name in id2label.items():
            category = self.categories.by_name(name)
            if category is None:
                unknown.append(name)
            else:
                mapping[int(label)] = category.id
        if unknown:
            raise BrgenError(
                f"masks: the mask2former model in {self.folder} has labels that are not COCO panoptic categories "
                f"({', '.join(repr(name) for name in unknown[:5])}); use a model trained on COCO panoptic such as "
                f"{OFFICIAL_WEIGHTS[('mask2former', 'model')]}"
            )
        return mapping

    def describe(self) -> dict:
        return {"backend": "mask2former", "weights": str(self.folder), "sha256": self.hashes, "threshold": self.spec.threshold}

    @torch.inference_mode()
    def segment(self, photos: list[np.ndarray], names: list[str]) -> list[ImageAnnotations]:
        """Segment HxWx3 uint8 RGB photos; return one ImageAnnotations per photo, named by `names`."""
        inputs = self.processor(images=photos, return_tensors="pt")
        inputs = {key: value.to(self.device) for key, value in inputs.items()}
        with reduced_precision(self.device, self.dtype):
            outputs = self.model(**inputs)
        sizes = [photo.shape[:2] for photo in photos]
        results = self.processor.post_process_panoptic_segmentation(
            outputs, threshold=self.spec.threshold, label_ids_to_fuse=set(self.stuff_labels), target_sizes=sizes
        )
        annotations = []
        for name, size, result in zip(names, sizes, results):
            segmentation = result["segmentation"].cpu().numpy()
            masks = [
                (int(info["id"]), self.category_of_label[int(info["label_id"])], segmentation == info["id"])
                for info in result["segments_info"]
            ]
            annotations.append(to_annotations(name, size, masks))
        return annotations
