"""Loading transformers vision backbones from a local folder and turning image crops into embeddings."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import transformers

from inpainters.quality.base import ScorerError

logger = logging.getLogger(__name__)


def load_image_processor(folder: Path):
    """Load the folder's image processor with the PIL backend, which needs no torchvision.

    transformers 5 picks a torchvision backend by default and warns when it falls back to PIL; version 4
    has only the PIL processors and no `backend` argument.
    """
    options = {"backend": "pil"} if int(transformers.__version__.split(".")[0]) >= 5 else {}
    try:
        return transformers.AutoImageProcessor.from_pretrained(folder, local_files_only=True, **options)
    except (OSError, ValueError) as error:
        raise ScorerError(f"{folder}: no loadable image processor ({error}); the folder needs preprocessor_config.json or processor_config.json") from None


def pooled(output) -> torch.Tensor:
    """Return the projected embedding of `get_text_features` / `get_image_features` in transformers 4 and 5.

    Version 4 returns the tensor, version 5 a model output whose `pooler_output` is that tensor.
    """
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ImageEmbedder:
    """Unit-length image embeddings from CLIP (its projected image embedding) or another ViT (its CLS token).

    CLIP folders (`model_type: clip`) load as `CLIPModel`; any other vision transformer (DINO `vit`,
    `dinov2`) loads with `AutoModel` and gives the last layer's normalised CLS token.
    """

    def __init__(self, folder: Path, device: str):
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
        self.model_type = config.model_type
        if self.model_type == "clip":
            self.model = transformers.CLIPModel.from_pretrained(folder, local_files_only=True)
        elif self.model_type == "vit":
            # DINO checkpoints have no weights for ViTModel's pooler, which brgen does not use; transformers 5
            # ignores `add_pooling_layer=False` in from_pretrained and logs the pooler as missing.
            verbosity = transformers.logging.get_verbosity()
            transformers.logging.set_verbosity_error()
            try:
                self.model = transformers.AutoModel.from_pretrained(folder, local_files_only=True)
            finally:
                transformers.logging.set_verbosity(verbosity)
        else:
            self.model = transformers.AutoModel.from_pretrained(folder, local_files_only=True)
        self.model.to(device).eval()
        self.processor = load_image_processor(folder)
        self.device = device

    @torch.inference_mode()
    def embed(self, images: list[np.ndarray]) -> torch.Tensor:
        """Embed HxWx3 uint8 RGB images; returns a float32 [N, D] tensor of unit rows on the model's device."""
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        if self.model_type == "clip":
            embeddings = pooled(self.model.get_image_features(pixel_values=pixels))
        else:
            embeddings = self.model(pixel_values=pixels).last_hidden_state[:, 0]
        return torch.nn.functional.normalize(embeddings.float(), dim=-1)
