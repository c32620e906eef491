"""Grounded SAM 2: GroundingDINO boxes for named stuff and thing classes, then SAM 2 masks inside them.

Reads two `save_pretrained` folders: a `GroundingDinoForObjectDetection` with its processor (such as
`IDEA-Research/grounding-dino-base`) and a `Sam2Model` (such as `facebook/sam2.1-hiera-large`).

Each prompt phrase (`sky`, `grass`, `person`, ...) maps to a COCO-Stuff category, so the masks land in the
COCO-Stuff table and the Stuff and Background rules apply unchanged. The phrases are joined into prompts of
at most the detector's `max_text_len` tokens (`sky. grass. tree.`), one forward pass per prompt. A box
belongs to the phrase whose tokens score highest for it.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoProcessor, GroundingDinoForObjectDetection, Sam2Model

from brgen_build.errors import BrgenError
from mask_gen.categories import CategoryTable
from mask_gen.coco import ImageAnnotations
from mask_gen.segmenters.common import reduced_precision, resolve_device, to_annotations, weight_hashes
from mask_gen.segmenters.spec import SegmenterSpec

logger = logging.getLogger(__name__)

# Broad stuff regions of the kind BR-Gen regenerates, as (phrase, COCO-Stuff category name).
DEFAULT_STUFF_PROMPTS = (
    ("sky", "sky-other"), ("clouds", "clouds"), ("grass", "grass"), ("tree", "tree"), ("bush", "bush"),
    ("wall", "wall-other"), ("building", "building-other"), ("house", "house"), ("road", "road"),
    ("pavement", "pavement"), ("floor", "floor-other"), ("ceiling", "ceiling-other"), ("ground", "ground-other"),
    ("dirt", "dirt"), ("sand", "sand"), ("snow", "snow"), ("sea", "sea"), ("river", "river"), ("water", "water-other"),
    ("mountain", "mountain"), ("hill", "hill"), ("rock", "rock"), ("field", "playingfield"), ("fence", "fence"),
    ("carpet", "carpet"),
)

# ImageNet mean and std, SAM 2's normalisation when the weight folder has no preprocessor_config.json.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class GroundedSam2Segmenter:
    """GroundingDINO + SAM 2; `segment` returns segments with COCO-Stuff category ids."""

    def __init__(self, spec: SegmenterSpec):
        self.spec = spec
        self.device, self.dtype = resolve_device(spec)
        detector_folder, sam_folder = spec.weights["grounding_dino"], spec.weights["sam2"]
        self.processor = AutoProcessor.from_pretrained(detector_folder, local_files_only=True)
        detector = GroundingDinoForObjectDetection.from_pretrained(detector_folder, local_files_only=True)
        self.detector = detector.to(self.device).eval()
        self.sam = Sam2Model.from_pretrained(sam_folder, local_files_only=True).to(self.device).eval()
        self.sam_size, self.sam_mean, self.sam_std = self._sam_input(sam_folder)
        self.categories = CategoryTable.bundled("coco_stuff")
        self.phrases, self.category_ids = self._phrases(spec.prompts)
        self.prompts = self._prompts()
        self.hashes = {role: weight_hashes(folder) for role, folder in spec.weights.items()}
        logger.info("masks: loaded grounded-sam2 (%d phrases in %d prompts) on %s", len(self.phrases), len(self.prompts), self.device)

    def _sam_input(self, folder) -> tuple[tuple[int, int], tuple, tuple]:
        """SAM 2's input size (from the model config) and normalisation (from preprocessor_config.json)."""
        size = self.sam.config.vision_config.backbone_config.image_size
        config_path = folder / "preprocessor_config.json"
        settings = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        return (int(size[0]), int(size[1])), tuple(settings.get("image_mean", IMAGENET_MEAN)), tuple(settings.get("image_std", IMAGENET_STD))

    def _phrases(self, prompts) -> tuple[list[str], list[int]]:
        pairs = list(prompts) if prompts is not None else list(DEFAULT_STUFF_PROMPTS) + [
            (category.name, category.name) for category in self.categories.categories.values() if category.isthing
        ]
        unknown = [name for _, name in pairs if self.categories.by_name(name) is None]
        if unknown:
            raise BrgenError(
                f"masks: `masks.segmenter.prompts` names categories that COCO-Stuff does not have: {', '.join(unknown)}; "
                "use names from manifests/categories/coco_stuff.json"
            )
        return [phrase.lower().strip() for phrase, _ in pairs], [self.categories.by_name(name).id for _, name in pairs]

    def _prompts(self) -> list[list[int]]:
        """Group phrase indices into prompts that fit the detector's `max_text_len` tokens."""
        limit = self.detector.config.max_text_len
        tokenizer = self.processor.tokenizer
        groups, current, used = [], [], 2
        for index, phrase in enumerate(self.phrases):
            length = len(tokenizer(phrase, add_special_tokens=False).input_ids) + 1
            if current and used + length > limit:
                groups.append(current)
                current, used = [], 2
            current.append(index)
            used += length
        return groups + [current] if current else groups

    def describe(self) -> dict:
        weights = {role: str(folder) for role, folder in self.spec.weights.items()}
        return {"backend": "grounded-sam2", "weights": weights, "sha256": self.hashes, "threshold": self.spec.threshold, "text_threshold": self.spec.text_threshold}

    @torch.inference_mode()
    def segment(self, photos: list[np.ndarray], names: list[str]) -> list[ImageAnnotations]:
        """Segment HxWx3 uint8 RGB photos; return one ImageAnnotations per photo, named by `names`."""
        # NOTE: duplicate boxes of one phrase are not merged (no NMS). The Stuff rule unions them and the
        # Background rule keeps the largest, so duplicates cost SAM 2 time but do not change a mask.
        boxes = [[] for _ in photos]
        for group in self.prompts:
            for index, found in enumerate(self._detect(photos, group)):
                boxes[index] += found
        masks = self._masks(photos, boxes)
        annotations = []
        for name, photo, found, found_masks in zip(names, photos, boxes, masks):
            segments = [(number + 1, category_id, mask) for number, ((_, category_id), mask) in enumerate(zip(found, found_masks))]
            annotations.append(to_annotations(name, photo.shape[:2], segments))
        return annotations

    def _detect(self, photos: list[np.ndarray], group: list[int]) -> list[list[tuple[np.ndarray, int]]]:
        """Boxes (x0, y0, x1, y1 in pixels) and category ids that GroundingDINO finds for one prompt."""
        text = " ".join(f"{self.phrases[index]}." for index in group)
        encoding = self.processor.tokenizer(text, return_offsets_mapping=True, return_tensors="pt")
        spans = phrase_token_spans(text, [self.phrases[index] for index in group], encoding["offset_mapping"][0].tolist())
        images = self.processor.image_processor(images=photos, return_tensors="pt")
        inputs = {key: value.expand(len(photos), -1).to(self.device) for key, value in encoding.items() if key != "offset_mapping"}
        inputs.update({key: value.to(self.device) for key, value in images.items()})
        with reduced_precision(self.device, self.dtype):
            outputs = self.detector(**inputs)

        probabilities = outputs.logits.float().sigmoid()
        phrase_scores = torch.stack([probabilities[..., start:end].max(-1).values for start, end in spans], dim=-1)
        best_score, best_phrase = phrase_scores.max(-1)
        keep = (probabilities.max(-1).values > self.spec.threshold) & (best_score > self.spec.text_threshold)
        found = []
        for index, photo in enumerate(photos):
            height, width = photo.shape[:2]
            center_x, center_y, box_width, box_height = outputs.pred_boxes[index].float().unbind(-1)
            corners = torch.stack([center_x - box_width / 2, center_y - box_height / 2, center_x + box_width / 2, center_y + box_height / 2], -1)
            corners = (corners * torch.tensor([width, height, width, height], device=corners.device)).cpu().numpy()
            kept = keep[index].nonzero().flatten().tolist()
            found.append([(corners[query], self.category_ids[group[int(best_phrase[index, query])]]) for query in kept])
        return found

    def _masks(self, photos: list[np.ndarray], boxes: list[list[tuple[np.ndarray, int]]]) -> list[list[np.ndarray]]:
        """SAM 2 masks (HxW bool) for each photo's boxes, one forward pass for the batch."""
        count = max((len(found) for found in boxes), default=0)
        if count == 0:
            return [[] for _ in photos]
        size_y, size_x = self.sam_size
        pixels, prompts = [], []
        for photo, found in zip(photos, boxes):
            height, width = photo.shape[:2]
            image = torch.from_numpy(np.array(photo)).permute(2, 0, 1)[None].float() / 255.0
            image = F.interpolate(image, size=(size_y, size_x), mode="bilinear", align_corners=False)[0]
            mean, std = torch.tensor(self.sam_mean)[:, None, None], torch.tensor(self.sam_std)[:, None, None]
            pixels.append((image - mean) / std)
            scale = np.array([size_x / width, size_y / height, size_x / width, size_y / height])
            scaled = [box * scale for box, _ in found] or [np.zeros(4)]
            prompts.append(scaled + [scaled[0]] * (count - len(scaled)))
        pixel_values = torch.stack(pixels).to(self.device)
        input_boxes = torch.tensor(np.array(prompts), dtype=torch.float32, device=self.device)
        with reduced_precision(self.device, self.dtype):
            low_resolution = self.sam(pixel_values=pixel_values, input_boxes=input_boxes, multimask_output=False).pred_masks
        masks = []
        for index, (photo, found) in enumerate(zip(photos, boxes)):
            logits = F.interpolate(low_resolution[index, : len(found), :1].float(), size=photo.shape[:2], mode="bilinear", align_corners=False)
            masks.append(list((logits[:, 0] > 0).cpu().numpy()))
        return masks


def phrase_token_spans(text: str, phrases: list[str], offsets: list[list[int]]) -> list[tuple[int, int]]:
    """Token index ranges [start, end) of each phrase in `text`, from the tokenizer's character offsets."""
    spans, position = [], 0
    for phrase in phrases:
        begin = text.index(phrase, position)
        finish = begin + len(phrase)
        position = finish
        tokens = [index for index, (start, end) in enumerate(offsets) if end > start and start >= begin and end <= finish]
        spans.append((tokens[0], tokens[-1] + 1))
    return spans
