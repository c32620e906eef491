"""NFA-ViT's configuration: the two MiT branches, the noise extractor and the heads.

The full-size model pairs a MiT-b0 noise branch with a MiT-b2 image branch. Both branches must have the
same stages, heads, spatial-reduction ratios, patch sizes and strides, because the image branch reuses the
noise branch's attention masks stage by stage, and a mask has the shape [batch, heads, queries, keys].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from transformers import SegformerConfig

from detector.errors import DetectorError

NOISE_BLOCKS = ("published", "standard")
# Starting weights of the MiT branches in training: ImageNet (the published run) or a random initialisation.
MIT_INITS = ("imagenet", "random")

# MiT encoder shapes as the published NFA-ViT code (clpbc/BR-Gen, MixVisionTransformer_b0 and _b2) defines
# them. Both variants share heads, spatial-reduction ratios, patch sizes, strides and the drop-path rate.
MIT_VARIANTS = {
    "b0": {"hidden_sizes": [32, 64, 160, 256], "depths": [2, 2, 2, 2]},
    "b2": {"hidden_sizes": [64, 128, 320, 512], "depths": [3, 4, 6, 3]},
}
MIT_SHARED = {
    "num_encoder_blocks": 4,
    "num_attention_heads": [1, 2, 5, 8],
    "sr_ratios": [8, 4, 2, 1],
    "patch_sizes": [7, 3, 3, 3],
    "strides": [4, 2, 2, 2],
    "mlp_ratios": [4, 4, 4, 4],
    "drop_path_rate": 0.1,
}
# The SegformerConfig fields that shape a MiT encoder; the rest (labels, decoder) do not matter here.
ENCODER_FIELDS = (
    "num_channels", "num_encoder_blocks", "depths", "sr_ratios", "hidden_sizes", "patch_sizes", "strides",
    "num_attention_heads", "mlp_ratios", "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob",
    "drop_path_rate", "layer_norm_eps", "initializer_range",
)
# Fields that must agree between the branches so that the noise masks fit the image branch's attention.
SHARED_FIELDS = ("num_encoder_blocks", "num_attention_heads", "sr_ratios", "patch_sizes", "strides")


def mit_config(variant: str, num_channels: int = 3) -> SegformerConfig:
    """Build the SegformerConfig of a full-size MiT encoder (`b0` or `b2`) with `num_channels` input channels."""
    if variant not in MIT_VARIANTS:
        raise DetectorError(f"unknown MiT variant {variant!r}; expected one of {', '.join(MIT_VARIANTS)}")
    return SegformerConfig(num_channels=num_channels, **MIT_SHARED, **MIT_VARIANTS[variant])


def published_config() -> NFAViTConfig:
    """Return the configuration of the published NFA-ViT checkpoints.

    It is the full-size default, except that the MiT blocks use the tanh approximation of GELU, as the
    published code does. The nvidia/mit-b* configs, and so models trained by brgen, use the exact GELU.
    """
    noise_branch = mit_config("b0", num_channels=1)
    image_branch = mit_config("b2", num_channels=3)
    noise_branch.hidden_act = image_branch.hidden_act = "gelu_pytorch_tanh"
    return NFAViTConfig(noise_branch=noise_branch, image_branch=image_branch)


def encoder_config(config: SegformerConfig, num_channels: int) -> SegformerConfig:
    """Return a copy of a MiT config with only the encoder fields and `num_channels` input channels."""
    values = {name: _as_list(getattr(config, name)) for name in ENCODER_FIELDS}
    values["num_channels"] = num_channels
    return SegformerConfig(**values)


@dataclass
class NFAViTConfig:
    """Shape and behaviour of an NFA-ViT model.

    Attributes:
        noise_branch: MiT config of the noise branch; `num_channels` is 1, the noise map.
        image_branch: MiT config of the image branch; `num_channels` is 3, RGB.
        extractor_depth: convolution layers of the DnCNN noise extractor (17 for Noiseprint++).
        extractor_features: channels of the extractor's hidden layers (64 for Noiseprint++).
        topk_ratio: share of keys that form each query's noise-guided mask: the k least-attended keys,
            k = max(1, int(topk_ratio * number of keys)).
        sparse_groups: tokens of a fixed sparse attention block attend only to tokens whose
            (row mod sparse_groups, column mod sparse_groups) matches their own.
        decoder_dim: channels of the segmentation decoder.
        decoder_init: initial value of the decoder's per-stage, per-channel weights.
        noise_block: `published` runs the noise branch's blocks as the published NFA-ViT code does
            (attention without the pre-norm and without the skip connection, doubled: x = a + drop_path(a));
            `standard` runs them as ordinary MiT blocks.
        image_size: side of the square network input in pixels.
    """

    noise_branch: SegformerConfig = field(default_factory=lambda: mit_config("b0", num_channels=1))
    image_branch: SegformerConfig = field(default_factory=lambda: mit_config("b2", num_channels=3))
    extractor_depth: int = 17
    extractor_features: int = 64
    topk_ratio: float = 0.25
    sparse_groups: int = 2
    decoder_dim: int = 512
    decoder_init: float = 1e-6
    noise_block: str = "published"
    image_size: int = 512

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise DetectorError if the branches do not line up or a value is out of range."""
        for name in SHARED_FIELDS:
            noise_value = _as_list(getattr(self.noise_branch, name))
            image_value = _as_list(getattr(self.image_branch, name))
            if noise_value != image_value:
                raise DetectorError(
                    f"the noise and image branches differ in {name} ({noise_value} and {image_value}); "
                    "NFA-ViT needs equal values so that the noise masks fit the image branch's attention"
                )
        if self.noise_branch.num_channels != 1:
            raise DetectorError(f"the noise branch reads the 1-channel noise map, but its config has num_channels={self.noise_branch.num_channels}")
        if self.image_branch.num_channels != 3:
            raise DetectorError(f"the image branch reads RGB, but its config has num_channels={self.image_branch.num_channels}")
        if not 0.0 < self.topk_ratio <= 1.0:
            raise DetectorError(f"topk_ratio must be in (0, 1], got {self.topk_ratio}")
        if self.noise_block not in NOISE_BLOCKS:
            raise DetectorError(f"noise_block must be one of {', '.join(NOISE_BLOCKS)}, got {self.noise_block!r}")
        if self.extractor_depth < 2:
            raise DetectorError(f"extractor_depth must be at least 2, got {self.extractor_depth}")
        self.check_image_size(self.image_size)

    def key_strides(self) -> list[int]:
        """Return, per stage, the input pixels per key token along one side (token stride times reduction ratio)."""
        strides = []
        token_stride = 1
        for step, ratio in zip(self.image_branch.strides, self.image_branch.sr_ratios):
            token_stride *= step
            strides.append(token_stride * ratio)
        return strides

    def check_image_size(self, size: int) -> None:
        """Raise DetectorError unless a size x size input gives whole token and key grids in every stage.

        Each stage's key grid must also have at least `sparse_groups` rows and columns, so that every query
        of a fixed sparse attention block has keys of its own group. For the MiT branches that means a
        multiple of 32 and at least 64.
        """
        key_strides = self.key_strides()
        multiple = math.lcm(*key_strides)
        smallest = max(key_strides) * self.sparse_groups
        if size % multiple or size < smallest:
            raise DetectorError(
                f"image size {size} does not fit this NFA-ViT: it must be a multiple of {multiple} and at least "
                f"{smallest}; the published model uses 512"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict; `from_dict` rebuilds the same config."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["noise_branch"] = {name: _as_list(getattr(self.noise_branch, name)) for name in ENCODER_FIELDS}
        data["image_branch"] = {name: _as_list(getattr(self.image_branch, name)) for name in ENCODER_FIELDS}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NFAViTConfig:
        values = dict(data)
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise DetectorError(f"unknown NFA-ViT config key(s) {', '.join(unknown)}; the checkpoint was written by a newer brgen")
        values["noise_branch"] = SegformerConfig(**values["noise_branch"])
        values["image_branch"] = SegformerConfig(**values["image_branch"])
        return cls(**values)


def _as_list(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value
