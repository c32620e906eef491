"""NFA-ViT (BR-Gen, clpbc/BR-Gen): a noise-guided two-branch SegFormer for forgery localisation and detection.

Data flow for an ImageNet-normalised RGB batch [B,3,H,W]:

1. The frozen DnCNN extractor turns the image into a noise map [B,1,H,W].
2. The noise branch, a MiT-b0 encoder on the noise map, returns one mask per stage: in the stage's last
   block, each query's k least-attended keys ([B, heads, queries, keys], True = attend).
3. The image branch, a MiT-b2 encoder on the image, uses fixed sparse attention in every block but the
   last of a stage, and in the last block attends only to the keys the noise mask of that stage allows.
4. The decoder maps each image-branch stage by a 1x1 convolution to 512 channels at 1/4 resolution and
   sums them with learnable per-channel weights. LayerNorm, a 1x1 convolution to one channel and bilinear
   upsampling to H x W give the localisation logits [B,1,H,W].
5. The classifier averages stage 4 over space and maps it by a linear layer to one detection logit [B].

The noise branch and the extractor get no gradient: the masks are binary and detached, and no head reads
the noise features. They run under `torch.no_grad()` and their parameters are frozen.

The MiT parts are transformers `SegformerModel` encoders whose stages this module runs block by block, so
their parameters keep transformers' names and load from `nvidia/mit-b0` and `nvidia/mit-b2` folders.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import SegformerModel
from transformers.models.segformer.modeling_segformer import SegformerLayer

from detector.attention import attention_with_least_attended_mask, dense_attention, fixed_sparse_attention, noise_guided_attention
from detector.config import NFAViTConfig
from detector.noise_extractor import DnCNN

# Weight of the image-level loss against the pixel-level loss.
CLASSIFICATION_LOSS_WEIGHT = 0.5


class NFAViTOutput(NamedTuple):
    """Logits of one batch: `segmentation` [B,1,H,W] per pixel, `classification` [B] per image."""

    segmentation: torch.Tensor
    classification: torch.Tensor


class WeightedDecoder(nn.Module):
    """Per-stage 1x1 convolutions to `dim` channels at the first stage's resolution, summed with learnable
    per-channel weights, then LayerNorm (eps 1e-6) and a 1x1 convolution to one channel."""

    def __init__(self, in_channels: list[int], dim: int = 512, init_value: float = 1e-6):
        super().__init__()
        self.projections = nn.ModuleList(nn.Conv2d(channels, dim, kernel_size=1) for channels in in_channels)
        self.stage_weights = nn.Parameter(torch.full((len(in_channels), dim), init_value))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Conv2d(dim, 1, kernel_size=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        fused = None
        for index, (feature, projection) in enumerate(zip(features, self.projections)):
            projected = projection(feature)
            if projected.shape[-2:] != size:
                projected = F.interpolate(projected, size=size, mode="bilinear", align_corners=False)
            weighted = projected * self.stage_weights[index].view(1, -1, 1, 1)
            fused = weighted if fused is None else fused + weighted
        fused = self.norm(fused.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.head(fused)


class NFAViT(nn.Module):
    """NFA-ViT. `forward(image)` takes an ImageNet-normalised RGB batch [B,3,H,W] and returns NFAViTOutput."""

    def __init__(self, config: NFAViTConfig | None = None):
        super().__init__()
        self.config = config or NFAViTConfig()
        self.noise_extractor = DnCNN(self.config.extractor_depth, self.config.extractor_features)
        self.noise_branch = SegformerModel(self.config.noise_branch)
        self.noise_branch.requires_grad_(False)
        self.image_branch = SegformerModel(self.config.image_branch)
        hidden_sizes = list(self.config.image_branch.hidden_sizes)
        self.decoder = WeightedDecoder(hidden_sizes, self.config.decoder_dim, self.config.decoder_init)
        self.classifier = nn.Linear(hidden_sizes[-1], 1)
        nn.init.trunc_normal_(self.classifier.weight, std=0.02)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, image: torch.Tensor) -> NFAViTOutput:
        height, width = image.shape[-2:]
        if height != width:
            raise ValueError(f"NFA-ViT takes square inputs, got {height}x{width}")
        self.config.check_image_size(height)

        with torch.no_grad():
            noise = self.noise_extractor(image)
            masks = self.noise_masks(noise)
        features = self.image_features(image, masks)

        segmentation = self.decoder(features)
        segmentation = F.interpolate(segmentation, size=(height, width), mode="bilinear", align_corners=False)
        classification = self.classifier(features[-1].mean(dim=(2, 3))).squeeze(1)
        return NFAViTOutput(segmentation, classification)

    def noise_masks(self, noise: torch.Tensor) -> list[torch.Tensor]:
        """Run the noise branch on a noise map [B,1,H,W] and return one noise-guided mask per stage."""
        masks = []
        hidden = noise
        for stage in self.noise_branch.stages:
            hidden, height, width = stage.patch_embeddings(hidden)
            last = len(stage.blocks) - 1
            for index, block in enumerate(stage.blocks):
                if index == last:
                    def attend(states, block=block):
                        output, mask = attention_with_least_attended_mask(block.attention, states, height, width, self.config.topk_ratio)
                        masks.append(mask)
                        return output
                else:
                    def attend(states, block=block):
                        return dense_attention(block.attention, states, height, width)
                hidden = self._run_block(block, hidden, height, width, attend, published=self.config.noise_block == "published")
            hidden = self._to_feature_map(stage.layer_norm(hidden), height, width)
        return masks

    def image_features(self, image: torch.Tensor, masks: list[torch.Tensor]) -> list[torch.Tensor]:
        """Run the image branch on the image [B,3,H,W] and return each stage's feature map [B,C,h,w]."""
        features = []
        hidden = image
        for stage, mask in zip(self.image_branch.stages, masks):
            hidden, height, width = stage.patch_embeddings(hidden)
            last = len(stage.blocks) - 1
            for index, block in enumerate(stage.blocks):
                if index == last:
                    def attend(states, block=block, mask=mask):
                        return noise_guided_attention(block.attention, states, height, width, mask)
                else:
                    def attend(states, block=block):
                        return fixed_sparse_attention(block.attention, states, height, width, self.config.sparse_groups)
                hidden = self._run_block(block, hidden, height, width, attend)
            hidden = self._to_feature_map(stage.layer_norm(hidden), height, width)
            features.append(hidden)
        return features

    @staticmethod
    def _run_block(block: SegformerLayer, hidden: torch.Tensor, height: int, width: int, attend, published: bool = False) -> torch.Tensor:
        if published:
            # The published noise branch skips the pre-norm and the skip connection of the attention.
            attended = attend(hidden)
            hidden = attended + block.drop_path(attended)
        else:
            attended = block.hidden_dropout(attend(block.layernorm_before(hidden)))
            hidden = hidden + block.drop_path(attended)
        return hidden + block.drop_path(block.mlp(block.layernorm_after(hidden), height, width))

    @staticmethod
    def _to_feature_map(hidden: torch.Tensor, height: int, width: int) -> torch.Tensor:
        batch = hidden.shape[0]
        return hidden.reshape(batch, height, width, -1).permute(0, 3, 1, 2).contiguous()

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(name, parameter) for name, parameter in self.named_parameters() if parameter.requires_grad]


class NFAViTLoss(NamedTuple):
    total: torch.Tensor
    segmentation: torch.Tensor
    classification: torch.Tensor


def nfa_vit_loss(output: NFAViTOutput, mask: torch.Tensor, label: torch.Tensor) -> NFAViTLoss:
    """BCE of the localisation logits against the mask plus 0.5 x BCE of the detection logit against the label.

    Args:
        mask: [B,1,H,W] in {0, 1}, 1 = forged.
        label: [B] in {0, 1}, 1 = the image contains a forged region.
    """
    segmentation = F.binary_cross_entropy_with_logits(output.segmentation.float(), mask.float())
    classification = F.binary_cross_entropy_with_logits(output.classification.float(), label.float())
    return NFAViTLoss(segmentation + CLASSIFICATION_LOSS_WEIGHT * classification, segmentation, classification)
