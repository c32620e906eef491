"""NFA-ViT in IMDLBenCo's model registry, for IMDLBenCo's own training and test scripts.

IMDLBenCo (PyPI `imdlbenco`, imported as `IMDLBenCo`) depends on torchvision, so brgen does not depend on
it. When it is installed, importing this module registers brgen's NFA-ViT as `NFA_ViT` (or
`brgen_NFA_ViT` if that name is taken): add `import detector.imdlbenco` to the IMDLBenCo script, then run
it with `--model NFA_ViT --np_pretrain_weights ... --seg_b0_pretrain_weights ... --seg_b2_pretrain_weights ...`,
the arguments of the published NFA-ViT.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from detector.model import nfa_vit_loss
from detector.pretrained import build_pretrained_model

logger = logging.getLogger(__name__)

try:
    from IMDLBenCo.registry import MODELS
except ImportError:
    MODELS = None

NAME = "NFA_ViT"
FALLBACK_NAME = "brgen_NFA_ViT"


class IMDLBenCoNFAViT(nn.Module):
    """NFA-ViT with IMDLBenCo's model interface: `forward(image, mask, label)` returns its output dict.

    Args:
        np_pretrain_weights: Noiseprint++ weight file.
        seg_b0_pretrain_weights: MiT-b0 folder (nvidia/mit-b0) or original weight file.
        seg_b2_pretrain_weights: MiT-b2 folder (nvidia/mit-b2) or original weight file.
        image_size: side of IMDLBenCo's resized input, 512 in the published run.
    """

    def __init__(self, np_pretrain_weights: str = None, seg_b0_pretrain_weights: str = None, seg_b2_pretrain_weights: str = None, image_size: int = 512):
        super().__init__()
        self.model, self.sources = build_pretrained_model(seg_b0_pretrain_weights, seg_b2_pretrain_weights, np_pretrain_weights, image_size=image_size)

    def forward(self, image: torch.Tensor, mask: torch.Tensor, label: torch.Tensor, *args, **kwargs) -> dict:
        output = self.model(image)
        loss = nfa_vit_loss(output, mask, label)
        pred_mask = torch.sigmoid(output.segmentation.float())
        return {
            "backward_loss": loss.total,
            "pred_mask": pred_mask,
            "pred_label": torch.sigmoid(output.classification.float()),
            "visual_loss": {"predict_loss": loss.total, "predict_mask_loss": loss.segmentation, "predict_label_loss": loss.classification},
            "visual_image": {"pred_mask": pred_mask},
        }


def register(registry=None) -> str | None:
    """Register IMDLBenCoNFAViT in `registry` (IMDLBenCo's MODELS by default); return the name used, or None
    when IMDLBenCo is not installed."""
    registry = MODELS if registry is None else registry
    if registry is None:
        return None
    name = NAME
    if registry.has(NAME):
        name = FALLBACK_NAME
        logger.warning("IMDLBenCo already has a model named %s; brgen's NFA-ViT is registered as %s", NAME, FALLBACK_NAME)
    registry.register_module(name=name, module=IMDLBenCoNFAViT)
    return name


REGISTERED_NAME = register()
