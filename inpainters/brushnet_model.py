"""BrushNet (Ju et al., 2024): a dual-branch inpainting model on top of a frozen Stable Diffusion UNet.

BrushNet is a copy of the UNet's down, mid and up blocks that reads the noisy latents together with the
masked photo's latents and the downsampled mask (4 + 4 + 1 input channels). After every resnet (with its
attention, if any) and every resampler, a zero-initialised 1x1 convolution maps the features to an
addition for the matching layer of the base UNet. The BrushNet of SD 1.5 and SDXL has no cross-attention
(DownBlock2D, UpBlock2D and a mid block of two resnets). PowerPaint v2 keeps the cross-attention blocks
to read its task prompts.

This module follows the official code of TencentARC/BrushNet (`src/diffusers/models/brushnet.py`,
`unets/unet_2d_condition.py`) and open-mmlab/PowerPaint (`powerpaint/models/BrushNet_CA.py`). The
config.json keys and parameter names are theirs, so the official state dicts load unchanged. The blocks
are diffusers' own, and `unet_forward` runs diffusers' UNet2DConditionModel with the BrushNet additions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.unets.unet_2d_blocks import get_down_block, get_mid_block, get_up_block
from safetensors.torch import load_file
from torch import nn

from brgen_build.model_checks import describe_state_dict_mismatch
from inpainters.base import MethodError

WEIGHT_FILE = "diffusion_pytorch_model.safetensors"


class BrushNetMidBlock(nn.Module):
    """The mid block of the SD 1.5 and SDXL BrushNet ("MidBlock2D"): two resnets and no attention."""

    def __init__(self, channels: int, temb_channels: int, eps: float, groups: int, act_fn: str, time_scale_shift: str, output_scale_factor: float):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock2D(
                in_channels=channels,
                out_channels=channels,
                temb_channels=temb_channels,
                eps=eps,
                groups=groups,
                time_embedding_norm=time_scale_shift,
                non_linearity=act_fn,
                output_scale_factor=output_scale_factor,
            )
            for _ in range(2)
        )
        self.has_cross_attention = False

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            hidden_states = resnet(hidden_states, temb)
        return hidden_states


class BrushNetModel(ModelMixin, ConfigMixin):
    """The BrushNet branch: `forward` returns the additions for the base UNet's down, mid and up layers.

    The config keys are those of the official config.json files. As in the official code,
    `conditioning_embedding_out_channels` and `addition_embed_type_num_heads` are read but unused.
    Values that no official checkpoint uses and brgen does not implement raise ValueError.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        conditioning_channels: int = 5,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        down_block_types: tuple[str, ...] = ("DownBlock2D",) * 4,
        mid_block_type: str = "MidBlock2D",
        up_block_types: tuple[str, ...] = ("UpBlock2D",) * 4,
        only_cross_attention: bool | tuple[bool, ...] = False,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 1280,
        transformer_layers_per_block: int | tuple[int, ...] = 1,
        encoder_hid_dim: int | None = None,
        encoder_hid_dim_type: str | None = None,
        attention_head_dim: int | tuple[int, ...] = 8,
        num_attention_heads: int | tuple[int, ...] | None = None,
        use_linear_projection: bool = False,
        class_embed_type: str | None = None,
        addition_embed_type: str | None = None,
        addition_time_embed_dim: int | None = None,
        num_class_embeds: int | None = None,
        upcast_attention: bool | None = False,
        resnet_time_scale_shift: str = "default",
        projection_class_embeddings_input_dim: int | None = None,
        brushnet_conditioning_channel_order: str = "rgb",
        conditioning_embedding_out_channels: tuple[int, ...] | None = (16, 32, 96, 256),
        global_pool_conditions: bool = False,
        addition_embed_type_num_heads: int = 64,
    ):
        super().__init__()
        _check_supported(encoder_hid_dim, encoder_hid_dim_type, class_embed_type, num_class_embeds, addition_embed_type, brushnet_conditioning_channel_order, global_pool_conditions)
        blocks = len(down_block_types)
        if len(up_block_types) != blocks or len(block_out_channels) != blocks:
            raise ValueError(f"BrushNet config: down_block_types, up_block_types and block_out_channels must have one entry per block, got {down_block_types}, {up_block_types}, {block_out_channels}")
        # diffusers' configs name the head count `attention_head_dim`; `num_attention_heads` overrides it when set.
        heads = _per_block(num_attention_heads or attention_head_dim, blocks)
        head_dims = _per_block(attention_head_dim, blocks)
        layers = _per_block(transformer_layers_per_block, blocks)
        cross_only = _per_block(only_cross_attention, blocks)
        time_dim = block_out_channels[0] * 4

        self.conv_in_condition = nn.Conv2d(in_channels + conditioning_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(block_out_channels[0], flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], time_dim, act_fn=act_fn)
        if addition_embed_type == "text_time":
            # SDXL: the pooled text embedding and the size conditioning (6 numbers) join the time embedding.
            self.add_time_proj = Timesteps(addition_time_embed_dim, flip_sin_to_cos, freq_shift)
            self.add_embedding = TimestepEmbedding(projection_class_embeddings_input_dim, time_dim)

        common = dict(temb_channels=time_dim, resnet_eps=norm_eps, resnet_act_fn=act_fn, resnet_groups=norm_num_groups,
                      cross_attention_dim=cross_attention_dim, use_linear_projection=use_linear_projection,
                      upcast_attention=upcast_attention, resnet_time_scale_shift=resnet_time_scale_shift)

        self.down_blocks = nn.ModuleList()
        self.brushnet_down_blocks = nn.ModuleList([_zero_conv(block_out_channels[0])])
        output_channels = block_out_channels[0]
        for index, block_type in enumerate(down_block_types):
            input_channels, output_channels = output_channels, block_out_channels[index]
            last = index == blocks - 1
            self.down_blocks.append(
                get_down_block(block_type, num_layers=layers_per_block, transformer_layers_per_block=layers[index],
                               in_channels=input_channels, out_channels=output_channels, add_downsample=not last,
                               num_attention_heads=heads[index], attention_head_dim=head_dims[index] or output_channels,
                               downsample_padding=downsample_padding, only_cross_attention=cross_only[index], **common)
            )
            # One addition per resnet (after its attention, if any) and one for the downsampler.
            for _ in range(layers_per_block + (0 if last else 1)):
                self.brushnet_down_blocks.append(_zero_conv(output_channels))

        mid_channels = block_out_channels[-1]
        if mid_block_type == "MidBlock2D":
            self.mid_block = BrushNetMidBlock(mid_channels, time_dim, norm_eps, norm_num_groups, act_fn, resnet_time_scale_shift, mid_block_scale_factor)
        else:
            self.mid_block = get_mid_block(mid_block_type, in_channels=mid_channels, transformer_layers_per_block=layers[-1],
                                           output_scale_factor=mid_block_scale_factor, num_attention_heads=heads[-1], **common)
        self.brushnet_mid_block = _zero_conv(mid_channels)

        self.up_blocks = nn.ModuleList()
        self.brushnet_up_blocks = nn.ModuleList()
        reversed_channels = list(reversed(block_out_channels))
        output_channels = reversed_channels[0]
        for index, block_type in enumerate(up_block_types):
            previous_channels, output_channels = output_channels, reversed_channels[index]
            input_channels = reversed_channels[min(index + 1, blocks - 1)]
            last = index == blocks - 1
            self.up_blocks.append(
                get_up_block(block_type, num_layers=layers_per_block + 1, transformer_layers_per_block=list(reversed(layers))[index],
                             in_channels=input_channels, out_channels=output_channels, prev_output_channel=previous_channels,
                             add_upsample=not last, resolution_idx=index, num_attention_heads=list(reversed(heads))[index],
                             only_cross_attention=list(reversed(cross_only))[index],
                             # As in the official code, the head dimension is read in down-block order.
                             attention_head_dim=head_dims[index] or output_channels, **common)
            )
            for _ in range(layers_per_block + 1 + (0 if last else 1)):
                self.brushnet_up_blocks.append(_zero_conv(output_channels))

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        brushnet_cond: torch.Tensor,
        conditioning_scale: float = 1.0,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
        """Return the additions for the base UNet: (down additions, mid addition, up additions).

        Args:
            sample: noisy latents [B,4,h,w].
            timestep: the scheduler's timestep.
            encoder_hidden_states: text embeddings [B,77,D], read only by cross-attention blocks (PowerPaint).
            brushnet_cond: masked-photo latents and the downsampled mask, 1 = keep [B,5,h,w].
            conditioning_scale: factor applied to every addition (BrushNet's `brushnet_conditioning_scale`).
            added_cond_kwargs: SDXL's `text_embeds` [B,1280] and `time_ids` [B,6].
        """
        emb = self.time_embedding(_timestep_embedding(self.time_proj, sample, timestep))
        if self.config.addition_embed_type == "text_time":
            text_embeds = added_cond_kwargs["text_embeds"]
            time_embeds = self.add_time_proj(added_cond_kwargs["time_ids"].flatten()).reshape(text_embeds.shape[0], -1)
            emb = emb + self.add_embedding(torch.cat([text_embeds, time_embeds], dim=-1).to(emb.dtype))

        hidden = self.conv_in_condition(torch.cat([sample, brushnet_cond], dim=1))
        states = [hidden]
        for block in self.down_blocks:
            hidden, block_states = run_down_block(block, hidden, emb, encoder_hidden_states)
            states.extend(block_states)
        down = [conv(state) * conditioning_scale for state, conv in zip(states, self.brushnet_down_blocks)]

        hidden = run_mid_block(self.mid_block, hidden, emb, encoder_hidden_states)
        mid = self.brushnet_mid_block(hidden) * conditioning_scale

        up_states = []
        for index, block in enumerate(self.up_blocks):
            skips = states[-len(block.resnets) :]
            del states[-len(block.resnets) :]
            upsample_size = states[-1].shape[2:] if index < len(self.up_blocks) - 1 else None
            hidden, block_states = run_up_block(block, hidden, skips, emb, encoder_hidden_states, upsample_size, collect=True)
            up_states.extend(block_states)
        up = [conv(state) * conditioning_scale for state, conv in zip(up_states, self.brushnet_up_blocks)]
        return down, mid, up


def load_brushnet(folder: Path, dtype: torch.dtype, config: dict | None = None) -> BrushNetModel:
    """Load a BrushNet checkpoint folder (config.json and diffusion_pytorch_model.safetensors).

    The model is built on the meta device and takes the checkpoint's tensors, so no random weights are
    made. A missing, unexpected or differently shaped parameter raises MethodError, so a checkpoint that
    does not fit its config is never loaded half-way. `config` replaces the folder's config.json
    (PowerPaint's folder has none).
    """
    weights = folder / WEIGHT_FILE
    if not weights.is_file():
        raise MethodError(f"BrushNet checkpoint {folder} has no {WEIGHT_FILE}; copy the whole checkpoint folder")
    if config is None:
        config = BrushNetModel.load_config(folder)
    try:
        with torch.device("meta"):
            model = BrushNetModel.from_config(config)
    except ValueError as error:
        raise MethodError(f"BrushNet checkpoint {folder}: {error}") from None
    state = load_file(weights)
    mismatch = describe_state_dict_mismatch(model.state_dict(), state)
    if mismatch:
        raise MethodError(
            f"BrushNet checkpoint {weights} does not match its config: {mismatch}. "
            "Check that config.json belongs to this checkpoint (SD 1.5 and SDXL checkpoints differ)"
        )
    model.load_state_dict({name: tensor.to(dtype) for name, tensor in state.items()}, assign=True)
    return model.eval()


def config_from_unet(unet_config: Any, cross_attention: bool) -> dict:
    """Return the BrushNet config that the official `BrushNetModel.from_unet` derives from a base UNet's config.

    With `cross_attention` (PowerPaint v2), the blocks keep SD 1.5's cross-attention layout. Without it
    (BrushNet), every block is a plain resnet block and the mid block has no attention.
    """
    blocks = len(unet_config["down_block_types"])
    if cross_attention:
        down = ["CrossAttnDownBlock2D"] * (blocks - 1) + ["DownBlock2D"]
        up = ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (blocks - 1)
        mid = "UNetMidBlock2DCrossAttn"
    else:
        down, up, mid = ["DownBlock2D"] * blocks, ["UpBlock2D"] * blocks, "MidBlock2D"
    keys = ("in_channels", "flip_sin_to_cos", "freq_shift", "only_cross_attention", "block_out_channels", "layers_per_block",
            "downsample_padding", "mid_block_scale_factor", "act_fn", "norm_num_groups", "norm_eps", "cross_attention_dim",
            "transformer_layers_per_block", "encoder_hid_dim", "encoder_hid_dim_type", "attention_head_dim", "num_attention_heads",
            "use_linear_projection", "class_embed_type", "addition_embed_type", "addition_time_embed_dim", "num_class_embeds",
            "upcast_attention", "resnet_time_scale_shift", "projection_class_embeddings_input_dim")
    config = {key: unet_config[key] for key in keys if key in unet_config}
    return {**config, "conditioning_channels": 5, "down_block_types": down, "up_block_types": up, "mid_block_type": mid}


def unet_forward(
    unet: Any,
    sample: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    additions: tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]],
    added_cond_kwargs: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run a diffusers UNet2DConditionModel with BrushNet's additions and return the noise prediction.

    The first down addition goes to conv_in's output after that output was stored as the first skip
    connection. Every other addition goes to the output of a resnet (after its attention) or of a
    resampler, before that output is stored. This is the order of the official BrushNet UNet.
    """
    down, mid, up = list(additions[0]), additions[1], list(additions[2])
    upsample_factor = 2**unet.num_upsamplers
    forward_upsample_size = any(dim % upsample_factor != 0 for dim in sample.shape[-2:])

    emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=timestep), None)
    aug_emb = unet.get_aug_embed(emb=emb, encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=added_cond_kwargs)
    if aug_emb is not None:
        emb = emb + aug_emb
    if unet.time_embed_act is not None:
        emb = unet.time_embed_act(emb)
    encoder_hidden_states = unet.process_encoder_hidden_states(encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=added_cond_kwargs)

    hidden = unet.conv_in(sample)
    states = [hidden]
    hidden = hidden + down.pop(0)
    for block in unet.down_blocks:
        hidden, block_states = run_down_block(block, hidden, emb, encoder_hidden_states, down)
        states.extend(block_states)

    hidden = run_mid_block(unet.mid_block, hidden, emb, encoder_hidden_states) + mid

    for index, block in enumerate(unet.up_blocks):
        skips = states[-len(block.resnets) :]
        del states[-len(block.resnets) :]
        last = index == len(unet.up_blocks) - 1
        upsample_size = states[-1].shape[2:] if not last and forward_upsample_size else None
        hidden, _ = run_up_block(block, hidden, skips, emb, encoder_hidden_states, upsample_size, additions=up)

    if unet.conv_norm_out is not None:
        hidden = unet.conv_act(unet.conv_norm_out(hidden))
    return unet.conv_out(hidden)


def run_down_block(block: nn.Module, hidden: torch.Tensor, emb: torch.Tensor, context: torch.Tensor,
                   additions: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run a diffusers down block layer by layer and return its output and the states it stores as skips.

    With `additions`, each layer's output gets the next addition (taken from the front of the list).
    """
    states = []
    attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
    for resnet, attention in zip(block.resnets, attentions):
        hidden = resnet(hidden, emb)
        if attention is not None:
            hidden = attention(hidden, encoder_hidden_states=context, return_dict=False)[0]
        if additions:
            hidden = hidden + additions.pop(0)
        states.append(hidden)
    if block.downsamplers is not None:
        for downsampler in block.downsamplers:
            hidden = downsampler(hidden)
        if additions:
            hidden = hidden + additions.pop(0)
        states.append(hidden)
    return hidden, states


def run_up_block(block: nn.Module, hidden: torch.Tensor, skips: list[torch.Tensor], emb: torch.Tensor, context: torch.Tensor,
                 upsample_size: Any, additions: list[torch.Tensor] | None = None, collect: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run a diffusers up block layer by layer, consuming `skips` from the end.

    With `collect`, the second return value lists each layer's output (BrushNet's up states). With
    `additions`, each layer's output gets the next addition after it was collected.
    """
    outputs = []
    skips = list(skips)
    attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
    for resnet, attention in zip(block.resnets, attentions):
        hidden = resnet(torch.cat([hidden, skips.pop()], dim=1), emb)
        if attention is not None:
            hidden = attention(hidden, encoder_hidden_states=context, return_dict=False)[0]
        if collect:
            outputs.append(hidden)
        if additions:
            hidden = hidden + additions.pop(0)
    if block.upsamplers is not None:
        for upsampler in block.upsamplers:
            hidden = upsampler(hidden, upsample_size)
        if collect:
            outputs.append(hidden)
        if additions:
            hidden = hidden + additions.pop(0)
    return hidden, outputs


def run_mid_block(block: nn.Module, hidden: torch.Tensor, emb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    if getattr(block, "has_cross_attention", False):
        return block(hidden, emb, encoder_hidden_states=context)
    return block(hidden, emb)


def _timestep_embedding(time_proj: Timesteps, sample: torch.Tensor, timestep: torch.Tensor | float | int) -> torch.Tensor:
    """Return the sinusoidal embedding of the timestep, broadcast to the batch, in the sample's dtype."""
    if not torch.is_tensor(timestep):
        timestep = torch.tensor([timestep], dtype=torch.float64 if isinstance(timestep, float) else torch.int64, device=sample.device)
    elif timestep.ndim == 0:
        timestep = timestep[None].to(sample.device)
    return time_proj(timestep.expand(sample.shape[0])).to(dtype=sample.dtype)


def _zero_conv(channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _per_block(value: Any, blocks: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * blocks


def _check_supported(encoder_hid_dim, encoder_hid_dim_type, class_embed_type, num_class_embeds, addition_embed_type, channel_order, global_pool) -> None:
    """Reject config values that no official BrushNet or PowerPaint checkpoint uses and brgen does not implement."""
    unsupported = {
        "encoder_hid_dim": encoder_hid_dim,
        "encoder_hid_dim_type": encoder_hid_dim_type,
        "class_embed_type": class_embed_type,
        "num_class_embeds": num_class_embeds,
    }
    for key, value in unsupported.items():
        if value is not None:
            raise ValueError(f"BrushNet config: `{key}` = {value!r} is not supported by brgen (official checkpoints use null)")
    if addition_embed_type not in (None, "text_time"):
        raise ValueError(f"BrushNet config: `addition_embed_type` must be null or 'text_time', got {addition_embed_type!r}")
    if channel_order != "rgb":
        raise ValueError(f"BrushNet config: `brushnet_conditioning_channel_order` must be 'rgb', got {channel_order!r}")
    if global_pool:
        raise ValueError("BrushNet config: `global_pool_conditions` = true is not supported by brgen (official checkpoints use false)")
