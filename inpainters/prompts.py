"""Prompts for the text-guided methods: templates filled from the mask's classes, a seeded semantic
perturbation, and an optional captioner.

A mask record lists the classes of its region (`classes: [{id, name, pixels}]`, the regenerated stuff
classes of a Stuff mask, the kept main object of a Background mask). A template of the mask's kind turns
their names into a prompt ("a photo of sky and grass"). With probability `perturbation`, one class phrase
is swapped for a related one ("grass" becomes "snow"), so that the forgery's content need not match the
photo's semantics, as BR-Gen did. Templates and the related-class table are data in
`manifests/prompts/`. Every random choice comes from the item's seed, so a prompt is reproducible.

A captioner, a transformers vision-language model in a local folder, can write the prompt from the
region's crop instead. The perturbation then swaps a class phrase that appears in the caption.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from inpainters.base import MethodError
from manifests import data_path

logger = logging.getLogger(__name__)

PROMPT_PARAMETERS = {
    "prompt": None,
    "negative_prompt": None,
    "perturbation": 0.3,
    "captioner": None,
    "captioner_prompt": "Describe the {classes} in this photo in one short phrase.",
    "captioner_max_tokens": 40,
}
"""Recipe parameters shared by every text-guided method, with their defaults.

prompt: one template for every kind, or a mapping of kind to a list of templates. None reads
    `manifests/prompts/templates.yaml`.
negative_prompt: None reads the one in `templates.yaml`, and "" disables it.
perturbation: probability (0..1) that one class phrase is swapped for a related one.
captioner: folder of a transformers vision-language model. None fills templates instead.
captioner_prompt: the instruction given to the captioner with the region's crop; it may use {classes}.
captioner_max_tokens: the maximum number of tokens the captioner generates.
"""

_SUFFIXES = ("-merged", "-other", "-stuff")


@dataclass(frozen=True)
class Prompt:
    """A prompt, its negative prompt and how it was made, as recorded with the forgery."""

    text: str
    negative: str
    perturbation: dict | None
    source: str

    def record(self) -> dict:
        return {
            "prompt": self.text,
            "negative_prompt": self.negative,
            "perturbation": self.perturbation,
            "prompt_source": self.source,
        }


class ClassTable:
    """Category names to prompt phrases, and phrases to the related phrases they may be swapped for."""

    def __init__(self, phrases: dict[str, str], groups: list[list[str]]):
        self.phrases = dict(phrases)
        self.related: dict[str, list[str]] = {}
        for group in groups:
            for phrase in group:
                others = [other for other in group if other != phrase]
                known = self.related.setdefault(phrase, [])
                known.extend(other for other in others if other not in known)

    @classmethod
    def from_file(cls, path: Path) -> "ClassTable":
        data = _read_yaml(path)
        phrases = data.get("phrases") or {}
        groups = data.get("groups") or []
        if not isinstance(phrases, dict) or not isinstance(groups, list) or not all(isinstance(group, list) for group in groups):
            raise MethodError(f"{path}: expected `phrases` (a mapping) and `groups` (a list of lists of phrases)")
        return cls({str(name): str(phrase) for name, phrase in phrases.items()}, [[str(p) for p in group] for group in groups])

    def phrase(self, name: str) -> str:
        """Return the phrase of a category name: the table's, else the name without COCO's suffixes."""
        if name in self.phrases:
            return self.phrases[name]
        for suffix in _SUFFIXES:
            name = name.replace(suffix, "")
        return name.replace("-", " ").replace("_", " ").strip()


class PromptBuilder:
    """Write the prompt of each forgery from its mask record, its seed and, with a captioner, its photo."""

    def __init__(self, params: dict[str, Any], device: str = "cpu", table: ClassTable | None = None):
        defaults = _read_yaml(data_path("prompts", "templates.yaml"))
        self.templates = _parse_templates(params.get("prompt"), defaults)
        negative = params.get("negative_prompt")
        self.negative = defaults.get("negative_prompt", "") if negative is None else str(negative)
        self.rate = _probability(params.get("perturbation", PROMPT_PARAMETERS["perturbation"]))
        self.table = table or ClassTable.from_file(data_path("prompts", "related_classes.yaml"))
        self.captioner = None
        if params.get("captioner"):
            self.captioner = Captioner(
                Path(params["captioner"]),
                device,
                str(params.get("captioner_prompt") or PROMPT_PARAMETERS["captioner_prompt"]),
                int(params.get("captioner_max_tokens") or PROMPT_PARAMETERS["captioner_max_tokens"]),
            )

    def check(self) -> None:
        if self.captioner is not None:
            self.captioner.check()

    def build(self, regions: list[dict], seeds: list[int], images: list[np.ndarray] | None = None) -> list[Prompt]:
        """Return one prompt per item; `images` (HxWx3 uint8 RGB photos) are read only by the captioner."""
        phrases = [self._phrases(region) for region in regions]
        if self.captioner is not None:
            if images is None:
                raise ValueError("a captioner needs the photos of the items")
            crops = [_crop(image, region.get("bbox")) for image, region in zip(images, regions)]
            texts = self.captioner.caption(crops, [_join(names) for names in phrases])
            return [self._perturb_caption(text, names, seed) for text, names, seed in zip(texts, phrases, seeds)]
        return [self._from_template(region.get("kind"), names, seed) for region, names, seed in zip(regions, phrases, seeds)]

    def _phrases(self, region: dict) -> list[str]:
        names = [self.table.phrase(str(entry["name"])) for entry in region.get("classes") or [] if entry.get("name")]
        return list(dict.fromkeys(names))

    def _from_template(self, kind: str | None, phrases: list[str], seed: int) -> Prompt:
        rng = np.random.default_rng([seed, 0x70726F6D])
        templates = self.templates.get(kind) if phrases else None
        templates = templates or self.templates["default"]
        template = templates[int(rng.integers(len(templates)))]
        phrases, perturbation = self._swap(phrases, rng)
        text = template.format(classes=_join(phrases), object=phrases[0] if phrases else "scene")
        return Prompt(text, self.negative, perturbation, "template")

    def _perturb_caption(self, caption: str, phrases: list[str], seed: int) -> Prompt:
        rng = np.random.default_rng([seed, 0x70726F6D])
        present = [phrase for phrase in phrases if re.search(rf"\b{re.escape(phrase)}\b", caption, re.IGNORECASE)]
        _, perturbation = self._swap(present, rng)
        if perturbation is not None:
            pattern = rf"\b{re.escape(perturbation['from'])}\b"
            caption = re.sub(pattern, perturbation["to"], caption, count=1, flags=re.IGNORECASE)
        return Prompt(caption.strip(), self.negative, perturbation, "captioner")

    def _swap(self, phrases: list[str], rng: np.random.Generator) -> tuple[list[str], dict | None]:
        """Swap one phrase that has related phrases, with probability `rate`.

        The random draws always happen in the same order, so a seed gives the same prompt in every run.
        """
        hit = rng.random() < self.rate
        swappable = [index for index, phrase in enumerate(phrases) if self.table.related.get(phrase)]
        if not hit or not swappable:
            return phrases, None
        index = swappable[int(rng.integers(len(swappable)))]
        choices = [phrase for phrase in self.table.related[phrases[index]] if phrase not in phrases]
        if not choices:
            return phrases, None
        replacement = choices[int(rng.integers(len(choices)))]
        swapped = list(phrases)
        swapped[index] = replacement
        return swapped, {"from": phrases[index], "to": replacement}


class Captioner:
    """A transformers vision-language model, loaded from a local folder, that describes image crops.

    Any model that `AutoModelForImageTextToText` and `AutoProcessor` load works (BLIP, Qwen2.5-VL,
    LLaVA, ...). A processor with a chat template gets the instruction as a user message; otherwise the
    instruction is the text prefix the model continues (BLIP). Decoding is greedy, so captions are
    reproducible without a seed.
    """

    def __init__(self, folder: Path, device: str, instruction: str, max_new_tokens: int):
        self.folder = folder
        self.device = device
        self.instruction = instruction
        self.max_new_tokens = max_new_tokens
        self.model = None
        self.processor = None

    def check(self) -> None:
        if not (self.folder / "config.json").is_file():
            raise MethodError(
                f"captioner: {self.folder} has no config.json; set `captioner` to the folder of a transformers "
                "vision-language model saved with save_pretrained (for example a local copy of Qwen/Qwen2.5-VL-7B-Instruct)"
            )

    def load(self) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.check()
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.processor = AutoProcessor.from_pretrained(self.folder, local_files_only=True)
        self.model = AutoModelForImageTextToText.from_pretrained(self.folder, local_files_only=True, dtype=dtype)
        self.model.to(self.device).eval()
        # Batched generation appends after the prompt, so prompts of different lengths are padded on the left.
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.padding_side = "left"
        logger.info("captioner: loaded %s from %s", type(self.model).__name__, self.folder)

    def caption(self, crops: list[np.ndarray], classes: list[str]) -> list[str]:
        """Return one caption per crop (HxWx3 uint8 RGB); `classes` fills {classes} in the instruction."""
        import torch

        if self.model is None:
            self.load()
        texts = [self._instruction_text(self.instruction.format(classes=names or "scene")) for names in classes]
        inputs = self.processor(images=list(crops), text=texts, return_tensors="pt", padding=True)
        # Floating-point inputs (pixel values) take the model's dtype; token ids only move to the device.
        inputs = inputs.to(self.device, dtype=self.model.dtype)
        with torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        captions = []
        for row, prompt_ids in zip(output, inputs["input_ids"]):
            new_tokens = row[_common_prefix(row, prompt_ids) :]
            captions.append(self.processor.decode(new_tokens, skip_special_tokens=True).strip())
        return captions

    def _instruction_text(self, instruction: str) -> str:
        if getattr(self.processor, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
            return self.processor.apply_chat_template(messages, add_generation_prompt=True)
        return instruction


def _common_prefix(row, prompt_ids) -> int:
    """Count the leading tokens that generation copied from the prompt (all of them for decoder-only models)."""
    length = 0
    for generated, prompt_token in zip(row.tolist(), prompt_ids.tolist()):
        if generated != prompt_token:
            break
        length += 1
    return length


def _join(phrases: list[str]) -> str:
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _crop(image: np.ndarray, bbox: list[int] | None) -> np.ndarray:
    """Crop the photo to the region's bounding box [x, y, width, height]; without a box, return the whole photo."""
    if not bbox:
        return image
    x, y, width, height = (int(value) for value in bbox)
    crop = image[max(y, 0) : y + height, max(x, 0) : x + width]
    return crop if crop.size else image


def _probability(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise MethodError(f"perturbation must be a probability between 0 and 1, got {value!r}")
    return float(value)


def _parse_templates(value: Any, defaults: dict) -> dict[str, list[str]]:
    """Return the templates per kind from the recipe's `prompt` (a string or a mapping), else the defaults."""
    if value is None:
        templates = {kind: list(entries) for kind, entries in defaults.items() if kind != "negative_prompt"}
    elif isinstance(value, str):
        templates = {"default": [value]}
    elif isinstance(value, dict):
        templates = {str(kind): [entries] if isinstance(entries, str) else list(entries) for kind, entries in value.items()}
    else:
        raise MethodError(f"prompt must be a template string or a mapping of mask kind to templates, got {value!r}")
    templates.setdefault("default", [template for entries in templates.values() for template in entries][:1] or ["a realistic photo"])
    for kind, entries in templates.items():
        if not entries or not all(isinstance(entry, str) and entry for entry in entries):
            raise MethodError(f"prompt templates of kind {kind!r} must be non-empty strings, got {entries!r}")
        for entry in entries:
            try:
                entry.format(classes="x", object="x")
            except (KeyError, IndexError, ValueError) as error:
                raise MethodError(f"prompt template {entry!r} is invalid ({error}); use only the placeholders {{classes}} and {{object}}") from None
    return templates


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise MethodError(f"failed to read {path}: {error}") from None
    if not isinstance(data, dict):
        raise MethodError(f"{path}: expected a mapping at the top level")
    return data
