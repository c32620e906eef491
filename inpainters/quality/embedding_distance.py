"""Embedding distance: how far the forgery's region is from the real photo's, as 1 - cosine similarity.

This is the measure DreamSim (Fu et al. 2023) computes, on a single pretrained backbone and without
DreamSim's ensemble (DINO ViT-B/16, CLIP and OpenCLIP ViT-B/32) and its fine-tuning on human similarity
judgements. DreamSim itself needs open_clip, timm and torchvision, which do not install beside brgen's
torch, so brgen runs the backbone through transformers. Values run from 0 (same embedding) to 2; a
localized forgery usually lands between 0.01 and 0.5. By default both images are the bounding box of the
mask. Neither direction is better: a threshold can reject forgeries that barely changed the region (min)
and forgeries that no longer resemble the photo (max).

Weights: a transformers vision backbone folder. CLIP folders use the projected image embedding, other
ViTs (DINO `facebook/dino-vitb16`, the DINO branch of DreamSim; DINOv2) the last layer's CLS token.
"""

from __future__ import annotations

from pathlib import Path

import torch

from inpainters.quality.base import Scorer, ScoreSample
from inpainters.quality.vision import ImageEmbedder
from inpainters.quality.weights import locate_weight_folder

WEIGHTS_ORIGIN = (
    "the Hugging Face Hub repository facebook/dino-vitb16 (or another CLIP, DINO or DINOv2 model); "
    "`hf download facebook/dino-vitb16 --local-dir FOLDER` copies it"
)


class EmbeddingDistance(Scorer):
    name = "embedding-distance"
    higher_is_better = None
    default_crop = "mask-box"
    parameters = {"weights": None}

    def __init__(self, params=None, device="auto"):
        super().__init__(params, device)
        self.folder: Path | None = None
        self.embedder: ImageEmbedder | None = None

    def check(self) -> None:
        self.folder = locate_weight_folder(self.name, self.params["weights"], "BRGEN_EMBEDDING_DISTANCE_WEIGHTS", ("config.json",), WEIGHTS_ORIGIN)

    def load(self) -> None:
        if self.folder is None:
            self.check()
        self.embedder = ImageEmbedder(self.folder, self.device)

    def checkpoint(self) -> dict:
        config = self.embedder.model.config
        return {"folder": str(self.folder), "name_or_path": config.name_or_path, "model_type": config.model_type}

    def score(self, samples: list[ScoreSample]) -> list[float | None]:
        forgeries = self.embedder.embed([sample.forgery for sample in samples])
        reals = self.embedder.embed([sample.real for sample in samples])
        distances = 1 - torch.sum(forgeries * reals, dim=-1)
        return [float(value) for value in distances.clamp(min=0).cpu()]
