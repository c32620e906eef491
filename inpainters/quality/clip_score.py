"""CLIP score: how well the regenerated region matches its prompt, higher is better.

The score is 100 * max(cos(image embedding, text embedding), 0) of a CLIP model, the definition that
torchmetrics' `CLIPScore` uses (Hessel et al. 2021 scale the same cosine by 2.5 instead). By default the
image is the bounding box of the mask cut from the forgery. Prompts longer than CLIP's 77 tokens are
truncated.

Weights: a transformers CLIP folder (config, weights, tokenizer and image-processor files), such as
`openai/clip-vit-large-patch14`, the model torchmetrics uses by default.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers

from inpainters.quality.base import Scorer, ScoreSample
from inpainters.quality.vision import load_image_processor, pooled
from inpainters.quality.weights import locate_weight_folder

WEIGHTS_ORIGIN = (
    "the Hugging Face Hub repository openai/clip-vit-large-patch14 (or another CLIP model); "
    "`hf download openai/clip-vit-large-patch14 --local-dir FOLDER` copies it"
)


class ClipScore(Scorer):
    name = "clip-score"
    higher_is_better = True
    default_crop = "mask-box"
    parameters = {"weights": None}

    def __init__(self, params=None, device="auto"):
        super().__init__(params, device)
        self.folder: Path | None = None

    def check(self) -> None:
        self.folder = locate_weight_folder(self.name, self.params["weights"], "BRGEN_CLIP_SCORE_WEIGHTS", ("config.json",), WEIGHTS_ORIGIN)

    def load(self) -> None:
        if self.folder is None:
            self.check()
        self.model = transformers.CLIPModel.from_pretrained(self.folder, local_files_only=True).to(self.device).eval()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
        self.image_processor = load_image_processor(self.folder)

    def checkpoint(self) -> dict:
        return {"folder": str(self.folder), "name_or_path": self.model.config.name_or_path}

    @torch.inference_mode()
    def score(self, samples: list[ScoreSample]) -> list[float | None]:
        text = self.tokenizer([sample.prompt for sample in samples], padding=True, truncation=True, return_tensors="pt").to(self.device)
        pixels = self.image_processor(images=[sample.forgery for sample in samples], return_tensors="pt")["pixel_values"].to(self.device)
        text_embeddings = pooled(self.model.get_text_features(input_ids=text["input_ids"], attention_mask=text["attention_mask"]))
        image_embeddings = pooled(self.model.get_image_features(pixel_values=pixels))
        cosine = torch.nn.functional.cosine_similarity(image_embeddings.float(), text_embeddings.float(), dim=-1)
        return [float(value) for value in (100 * cosine.clamp(min=0)).cpu()]
