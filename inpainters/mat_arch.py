"""MAT's generator: a mask-aware transformer (first stage) and a StyleGAN2-style encoder-decoder (second stage).

MAT (Li et al., CVPR 2022, "MAT: Mask-Aware Transformer for Large Hole Image Inpainting") fills a hole in two
stages. The first stage encodes the masked image with partial convolutions, runs Swin-style window attention
in which hole tokens are excluded as keys until a window contains a valid token, and decodes a coarse image
with style-modulated convolutions. The second stage encodes the coarse composite with plain convolutions and
decodes it with a style-modulated decoder whose style mixes the mapped latent w and a global code of the image.

Module and buffer names reproduce the authors' `networks/mat.py` (github.com/fenglinglwb/MAT, commit d273d89)
so that the released generator state dict loads with `strict=True`. Inputs: images [B, 3, H, W] in -1..1,
masks [B, 1, H, W] with 1 = keep and 0 = hole, H and W multiples of `img_resolution` (the authors' inference
pads to a square). Output: [B, 3, H, W] in about -1..1, known pixels copied from the input.

At inference the authors keep two dropout calls active (`F.dropout(..., training=True)` on a map of 0.5),
which turns into a random 0/1 map per element. Here those maps come from `RandomSource`, seeded per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from inpainters.stylegan_layers import (
    Conv2dLayer,
    FullyConnectedLayer,
    MappingNetwork,
    NoiseInput,
    StyleConv,
    ToRGB,
)

# The second stage always encodes down to this size and decodes up from it.
BOTTLENECK = 16


@dataclass(frozen=True)
class MATConfig:
    """Hyperparameters of the generator. The defaults are the released Places-512 model's.

    Attributes:
        img_resolution: native side length in pixels (a power of two).
        channels: second-stage channels per resolution, as (resolution, channels) pairs.
        dim: first-stage feature channels (tokens have this size).
        num_heads: attention heads of the first stage; `dim` must divide by it.
        transformer_resolution: size at which the first stage's transformer starts (two halvings follow).
        depths: transformer blocks in each of the five transformer layers.
        window_sizes: attention window side per transformer layer.
        mlp_ratio: hidden size of the transformer MLP over `dim`.
        use_noise: second-stage StyleConv layers have noise inputs. The authors' training code adds them by
            default. NOTE: `Places_512_FullData_G.pth` is taken to have none because IOPaint and lama-cleaner
            load it with strict=True into a generator without them; the file itself was not inspected.
    """

    img_resolution: int = 512
    img_channels: int = 3
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    mapping_lr_multiplier: float = 0.01
    channels: tuple[tuple[int, int], ...] = ((512, 64), (256, 128), (128, 256), (64, 512), (32, 512), (16, 512), (8, 512), (4, 512))
    dim: int = 180
    num_heads: int = 6
    transformer_resolution: int = 64
    depths: tuple[int, ...] = (2, 3, 4, 3, 2)
    window_sizes: tuple[int, ...] = (8, 16, 16, 16, 8)
    mlp_ratio: float = 2.0
    use_noise: bool = False

    @property
    def resolution_log2(self) -> int:
        return int(math.log2(self.img_resolution))

    @property
    def num_ws(self) -> int:
        """How many copies of w the synthesis network reads (StyleGAN's `num_ws`)."""
        return self.resolution_log2 * 2 - 6

    def nf(self, resolution_log2: int) -> int:
        """Second-stage channels at resolution 2**resolution_log2."""
        return dict(self.channels)[2**resolution_log2]

    def check(self) -> None:
        log2 = self.resolution_log2
        if 2**log2 != self.img_resolution or self.img_resolution < 2 * BOTTLENECK:
            raise ValueError(f"img_resolution must be a power of two of at least {2 * BOTTLENECK}, got {self.img_resolution}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} must be divisible by num_heads {self.num_heads}")
        if len(self.depths) != 5 or len(self.window_sizes) != 5:
            raise ValueError("depths and window_sizes need five entries (64 -> 32 -> 16 -> 32 -> 64 in the released model)")
        if self.transformer_resolution % 4 or self.img_resolution % self.transformer_resolution:
            raise ValueError("transformer_resolution must divide img_resolution and be divisible by 4")


# Every part of the architecture at a size that inpaints a 640x640 image in about a second on one CPU core,
# for tests and CPU runs of the benchmark. Working sizes are multiples of 64.
TINY_CONFIG = MATConfig(
    img_resolution=64,
    z_dim=8,
    w_dim=8,
    mapping_layers=2,
    channels=((64, 4), (32, 4), (16, 8), (8, 8), (4, 8)),
    dim=4,
    num_heads=2,
    transformer_resolution=16,
    depths=(1, 2, 1, 2, 1),
    window_sizes=(4, 4, 4, 4, 4),
)


class RandomSource:
    """Seeded randomness for one batch: one CPU `torch.Generator` per sample.

    Every draw is made per sample from that sample's generator, so an image's output depends on its own seed
    and never on its neighbours in the batch or on the global RNG.
    """

    def __init__(self, seeds: list[int]):
        self.generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]

    def normal(self, shape: tuple[int, ...], device, dtype) -> torch.Tensor:
        """Draw a [B, *shape] standard-normal tensor, one sample per generator."""
        draws = [torch.randn(shape, generator=generator) for generator in self.generators]
        return torch.stack(draws).to(device=device, dtype=dtype)

    def keep_map(self, shape: tuple[int, ...], device, dtype) -> torch.Tensor:
        """Draw a [B, *shape] map of 0 and 1 with probability 0.5 each, like the authors' F.dropout(0.5 * ones, training=True)."""
        draws = [torch.rand(shape, generator=generator) < 0.5 for generator in self.generators]
        return torch.stack(draws).to(device=device, dtype=dtype)


def feature_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H*W, C]."""
    return x.flatten(2).transpose(1, 2)


def tokens_to_feature(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[B, H*W, C] -> [B, C, H, W]."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], size[0], size[1])


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """[B, H, W, C] -> [B * windows, window * window, C]."""
    batch, height, width, channels = x.shape
    x = x.view(batch, height // window, window, width // window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, channels)


def window_reverse(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """[B * windows, window * window, C] -> [B, H, W, C]."""
    channels = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, channels)


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """Additive attention mask [windows, N, N] that keeps shifted windows from mixing wrapped-around regions.

    Pairs of tokens from different regions get -100 (the authors' value), pairs from one region get 0.
    """
    regions = torch.zeros(1, height, width, 1)
    label = 0
    for rows in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for cols in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            regions[:, rows, cols, :] = label
            label += 1
    labels = window_partition(regions, window).squeeze(-1)
    difference = labels.unsqueeze(1) - labels.unsqueeze(2)
    return torch.where(difference != 0, torch.tensor(-100.0), torch.tensor(0.0))


class PartialConv(nn.Module):
    """A Conv2dLayer that also propagates a validity mask (1 = valid) and rescales by the valid share.

    Output = conv(x) * k^2 / (valid inputs under the kernel), zero where the kernel saw no valid input;
    the new mask is 1 wherever at least one valid input was seen.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, activation: str = "lrelu", up: int = 1, down: int = 1):
        super().__init__()
        self.conv = Conv2dLayer(in_channels, out_channels, kernel_size, activation=activation, up=up, down=down)
        self.kernel_size = kernel_size
        self.stride = down

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if mask is None:
            return self.conv(x), None
        with torch.no_grad():
            ones = torch.ones(1, 1, self.kernel_size, self.kernel_size, device=mask.device, dtype=mask.dtype)
            valid = F.conv2d(mask, ones, stride=self.stride, padding=self.kernel_size // 2)
            # In float32: k^2 / 1e-8 overflows float16, and inf * 0 would turn fully masked pixels into NaN.
            ratio = self.kernel_size**2 / (valid.float() + 1e-8)
            valid = valid.clamp(0, 1)
            ratio = (ratio * valid.float()).to(x.dtype)
        return self.conv(x) * ratio, valid


class WindowAttention(nn.Module):
    """Multi-head attention inside one window, on L2-normalized queries and keys, with hole keys masked out."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = FullyConnectedLayer(dim, dim)
        self.k = FullyConnectedLayer(dim, dim)
        self.v = FullyConnectedLayer(dim, dim)
        self.proj = FullyConnectedLayer(dim, dim)

    def forward(self, x: torch.Tensor, mask_windows: torch.Tensor | None, shift_mask: torch.Tensor | None):
        """x: [B*nW, N, C]; mask_windows: [B*nW, N, 1] (1 = valid) or None; shift_mask: [nW, N, N] or None."""
        windows, tokens, channels = x.shape
        heads = self.num_heads
        normalized = F.normalize(x, p=2.0, dim=-1)
        q = self.q(normalized).view(windows, tokens, heads, -1).transpose(1, 2)
        k = self.k(normalized).view(windows, tokens, heads, -1).transpose(1, 2)
        v = self.v(x).view(windows, tokens, heads, -1).transpose(1, 2)

        bias = None
        if shift_mask is not None:
            per_image = shift_mask.shape[0]
            bias = shift_mask.to(x.dtype).repeat(windows // per_image, 1, 1).unsqueeze(1)
        if mask_windows is not None:
            # Keys in the hole get -100, so a window attends only to its valid tokens while it has any.
            key_bias = (mask_windows.squeeze(-1) - 1.0) * 100.0
            key_bias = key_bias[:, None, None, :].to(x.dtype)
            bias = key_bias if bias is None else bias + key_bias
            with torch.no_grad():
                mask_windows = mask_windows.sum(dim=1, keepdim=True).clamp(0, 1).expand(-1, tokens, -1)

        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        out = out.transpose(1, 2).reshape(windows, tokens, channels)
        return self.proj(out), mask_windows


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = FullyConnectedLayer(dim, hidden, activation="lrelu")
        self.fc2 = FullyConnectedLayer(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x))


class SwinTransformerBlock(nn.Module):
    """Window attention (shifted in every second block), fused with the input, then an MLP (no residual)."""

    def __init__(self, dim: int, resolution: int, num_heads: int, window_size: int, shift_size: int, mlp_ratio: float):
        super().__init__()
        if resolution <= window_size:
            # One window covers the map: no partition, no shift.
            window_size, shift_size = resolution, 0
        self.window_size = window_size
        self.shift_size = shift_size
        self.attn = WindowAttention(dim, num_heads)
        self.fuse = FullyConnectedLayer(dim * 2, dim, activation="lrelu")
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        # The mask for the native size, stored in the released checkpoint; other sizes get theirs computed.
        self.resolution = resolution
        attn_mask = shifted_window_mask(resolution, resolution, window_size, shift_size) if shift_size else None
        self.register_buffer("attn_mask", attn_mask)
        self._masks_by_size: dict[tuple, torch.Tensor] = {}

    def shift_mask(self, height: int, width: int, device: torch.device) -> torch.Tensor | None:
        if not self.shift_size:
            return None
        if (height, width) == (self.resolution, self.resolution) and self.attn_mask.device == device:
            return self.attn_mask
        key = (height, width, device)
        if key not in self._masks_by_size:
            self._masks_by_size[key] = shifted_window_mask(height, width, self.window_size, self.shift_size).to(device)
        return self._masks_by_size[key]

    def forward(self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None):
        height, width = size
        batch, _, channels = x.shape
        shortcut = x
        x = x.view(batch, height, width, channels)
        if mask is not None:
            mask = mask.view(batch, height, width, 1)
        if self.shift_size:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
            if mask is not None:
                mask = torch.roll(mask, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))

        x_windows = window_partition(x, self.window_size)
        mask_windows = window_partition(mask, self.window_size) if mask is not None else None
        attended, mask_windows = self.attn(x_windows, mask_windows, self.shift_mask(height, width, x.device))

        x = window_reverse(attended, self.window_size, height, width)
        if mask_windows is not None:
            mask = window_reverse(mask_windows, self.window_size, height, width)
        if self.shift_size:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
            if mask is not None:
                mask = torch.roll(mask, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = x.reshape(batch, height * width, channels)
        if mask is not None:
            mask = mask.reshape(batch, height * width, 1)

        x = self.fuse(torch.cat([shortcut, x], dim=-1))
        return self.mlp(x), mask


class Resample(nn.Module):
    """PatchMerging (down=2) or PatchUpsampling (up=2): a partial convolution on the token map."""

    def __init__(self, dim: int, up: int = 1, down: int = 1):
        super().__init__()
        self.conv = PartialConv(dim, dim, 3, up=up, down=down)
        self.factor = up / down

    def forward(self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None):
        x = tokens_to_feature(x, size)
        if mask is not None:
            mask = tokens_to_feature(mask, size)
        x, mask = self.conv(x, mask)
        size = (int(size[0] * self.factor), int(size[1] * self.factor))
        return feature_to_tokens(x), size, feature_to_tokens(mask) if mask is not None else None


class BasicLayer(nn.Module):
    """Optional resampling, `depth` transformer blocks and a partial convolution with a residual connection."""

    def __init__(self, dim: int, resolution: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float, downsample: Resample | None):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, resolution, num_heads, window_size, 0 if index % 2 == 0 else window_size // 2, mlp_ratio)
            for index in range(depth)
        )
        self.conv = PartialConv(dim, dim, 3)

    def forward(self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None):
        if self.downsample is not None:
            x, size, mask = self.downsample(x, size, mask)
        identity = x
        for block in self.blocks:
            x, mask = block(x, size, mask)
        feature_mask = tokens_to_feature(mask, size) if mask is not None else None
        x, feature_mask = self.conv(tokens_to_feature(x, size), feature_mask)
        x = feature_to_tokens(x) + identity
        return x, size, feature_to_tokens(feature_mask) if feature_mask is not None else None


class DecStyleBlock(nn.Module):
    """First-stage decoder block: upsampling StyleConv, skip connection, StyleConv, ToRGB."""

    def __init__(self, resolution: int, channels: int, style_dim: int, img_channels: int):
        super().__init__()
        self.conv0 = StyleConv(channels, channels, style_dim, resolution, up=2)
        self.conv1 = StyleConv(channels, channels, style_dim, resolution)
        self.toRGB = ToRGB(channels, img_channels, style_dim)

    def forward(self, x, img, style, skip):
        x = self.conv0(x, style)
        x = x + skip
        x = self.conv1(x, style)
        return x, self.toRGB(x, style, skip=img)


class FirstStage(nn.Module):
    """The mask-aware transformer: a coarse inpainting from the masked image and w."""

    def __init__(self, config: MATConfig):
        super().__init__()
        dim = config.dim
        self.conv_first = PartialConv(config.img_channels + 1, dim, 3)
        downsamplings = int(math.log2(config.img_resolution // config.transformer_resolution))
        self.enc_conv = nn.ModuleList(PartialConv(dim, dim, 3, down=2) for _ in range(downsamplings))

        ratios = (1, 0.5, 0.5, 2, 2)
        resolution = config.transformer_resolution
        self.tran = nn.ModuleList()
        for depth, ratio, window in zip(config.depths, ratios, config.window_sizes):
            resolution = int(resolution * ratio)
            resample = None
            if ratio < 1:
                resample = Resample(dim, down=2)
            elif ratio > 1:
                resample = Resample(dim, up=2)
            self.tran.append(BasicLayer(dim, resolution, depth, config.num_heads, window, config.mlp_ratio, resample))

        middle = config.transformer_resolution // 4
        global_style = [Conv2dLayer(dim, dim, 3, activation="lrelu", down=2) for _ in range(int(math.log2(middle)))]
        self.down_conv = nn.Sequential(*global_style, nn.AdaptiveAvgPool2d((1, 1)))
        self.to_style = FullyConnectedLayer(dim, dim * 2, activation="lrelu")
        self.ws_style = FullyConnectedLayer(config.w_dim, dim, activation="lrelu")
        self.to_square = FullyConnectedLayer(dim, middle * middle, activation="lrelu")

        self.dec_conv = nn.ModuleList()
        for _ in range(downsamplings):
            resolution *= 2
            self.dec_conv.append(DecStyleBlock(resolution, dim, dim * 3, config.img_channels))

    def forward(self, images: torch.Tensor, masks: torch.Tensor, ws: torch.Tensor, randomness: RandomSource) -> torch.Tensor:
        x = torch.cat([masks - 0.5, images * masks], dim=1)
        skips = []
        x, mask = self.conv_first(x, masks)
        skips.append(x)
        for index, block in enumerate(self.enc_conv):
            x, mask = block(x, mask)
            if index != len(self.enc_conv) - 1:
                skips.append(x)

        size = (x.shape[2], x.shape[3])
        x = feature_to_tokens(x)
        mask = feature_to_tokens(mask)
        middle = len(self.tran) // 2
        for index, layer in enumerate(self.tran):
            if index < middle:
                x, size, mask = layer(x, size, mask)
                skips.append(x)
            elif index > middle:
                x, size, _ = layer(x, size, None)
                x = x + skips[middle - index]
            else:
                x, size, _ = layer(x, size, None)
                # Mix the tokens with a projection of w under a random 0/1 map (the authors' inference-time dropout).
                keep = randomness.keep_map(tuple(x.shape[1:]), x.device, x.dtype)
                w_style = self.ws_style(ws[:, -1])
                square = self.to_square(w_style).unsqueeze(1)
                square = F.interpolate(square, size=x.shape[1], mode="linear", align_corners=False).squeeze(1).unsqueeze(-1)
                x = x * keep + square * (1 - keep)
                global_code = self.to_style(self.down_conv(tokens_to_feature(x, size)).flatten(start_dim=1))
                style = torch.cat([global_code, w_style], dim=1)

        x = tokens_to_feature(x, size).contiguous()
        img = None
        for index, block in enumerate(self.dec_conv):
            x, img = block(x, img, style, skips[len(self.dec_conv) - index - 1])
        return img * (1 - masks) + images * masks


class EncFromRGB(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = Conv2dLayer(in_channels, out_channels, 1, activation="lrelu")
        self.conv1 = Conv2dLayer(out_channels, out_channels, 3, activation="lrelu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.conv0(x))


class ConvBlockDown(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = Conv2dLayer(in_channels, out_channels, 3, activation="lrelu", down=2)
        self.conv1 = Conv2dLayer(out_channels, out_channels, 3, activation="lrelu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.conv0(x))


class Encoder(nn.Module):
    """Second-stage encoder from full size down to the 16x16 bottleneck; returns features by log2 size."""

    def __init__(self, config: MATConfig):
        super().__init__()
        self.levels = list(range(config.resolution_log2, int(math.log2(BOTTLENECK)) - 1, -1))
        for level in self.levels:
            if level == config.resolution_log2:
                block = EncFromRGB(config.img_channels * 2 + 1, config.nf(level))
            else:
                block = ConvBlockDown(config.nf(level + 1), config.nf(level))
            setattr(self, f"EncConv_Block_{2**level}x{2**level}", block)

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        features = {}
        for level in self.levels:
            x = getattr(self, f"EncConv_Block_{2**level}x{2**level}")(x)
            features[level] = x
        return features


class ToStyle(nn.Module):
    """Global style code of the bottleneck features: three stride-2 convolutions, average pooling, a linear layer."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Sequential(*(Conv2dLayer(in_channels, in_channels, 3, activation="lrelu", down=2) for _ in range(3)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = FullyConnectedLayer(in_channels, out_channels, activation="lrelu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.conv(x)).flatten(start_dim=1))


class DecBlockFirst(nn.Module):
    """The 16x16 decoder block: a convolution, the encoder's skip, a StyleConv and ToRGB."""

    def __init__(self, channels: int, style_dim: int, img_channels: int, use_noise: bool):
        super().__init__()
        self.conv0 = Conv2dLayer(channels, channels, 3, activation="lrelu")
        self.conv1 = StyleConv(channels, channels, style_dim, BOTTLENECK, use_noise=use_noise)
        self.toRGB = ToRGB(channels, img_channels, style_dim)

    def forward(self, x, ws, global_code, features, noise):
        level = int(math.log2(BOTTLENECK))
        x = self.conv0(x) + features[level]
        x = self.conv1(x, torch.cat([ws[:, 0], global_code], dim=1), noise)
        img = self.toRGB(x, torch.cat([ws[:, 1], global_code], dim=1))
        return x, img


class DecBlock(nn.Module):
    """A decoder block at 2**level: upsampling StyleConv, the encoder's skip, StyleConv, ToRGB."""

    def __init__(self, level: int, in_channels: int, out_channels: int, style_dim: int, img_channels: int, use_noise: bool):
        super().__init__()
        self.level = level
        self.conv0 = StyleConv(in_channels, out_channels, style_dim, 2**level, up=2, use_noise=use_noise)
        self.conv1 = StyleConv(out_channels, out_channels, style_dim, 2**level, use_noise=use_noise)
        self.toRGB = ToRGB(out_channels, img_channels, style_dim)

    def forward(self, x, img, ws, global_code, features, noise):
        # w copies 2*level-9 .. 2*level-7, as in the authors' decoder.
        x = self.conv0(x, torch.cat([ws[:, self.level * 2 - 9], global_code], dim=1), noise)
        x = x + features[self.level]
        x = self.conv1(x, torch.cat([ws[:, self.level * 2 - 8], global_code], dim=1), noise)
        img = self.toRGB(x, torch.cat([ws[:, self.level * 2 - 7], global_code], dim=1), skip=img)
        return x, img


class Decoder(nn.Module):
    def __init__(self, config: MATConfig, style_dim: int):
        super().__init__()
        bottleneck_level = int(math.log2(BOTTLENECK))
        self.levels = range(bottleneck_level + 1, config.resolution_log2 + 1)
        self.Dec_16x16 = DecBlockFirst(config.nf(bottleneck_level), style_dim, config.img_channels, config.use_noise)
        for level in self.levels:
            block = DecBlock(level, config.nf(level - 1), config.nf(level), style_dim, config.img_channels, config.use_noise)
            setattr(self, f"Dec_{2**level}x{2**level}", block)

    def forward(self, x, ws, global_code, features, noise):
        x, img = self.Dec_16x16(x, ws, global_code, features, noise)
        for level in self.levels:
            x, img = getattr(self, f"Dec_{2**level}x{2**level}")(x, img, ws, global_code, features, noise)
        return img


class SynthesisNet(nn.Module):
    """Both stages: the transformer's coarse result is composited into the input and refined."""

    def __init__(self, config: MATConfig):
        super().__init__()
        self.first_stage = FirstStage(config)
        self.enc = Encoder(config)
        self.to_square = FullyConnectedLayer(config.w_dim, BOTTLENECK * BOTTLENECK, activation="lrelu")
        self.to_style = ToStyle(config.nf(int(math.log2(BOTTLENECK))), config.nf(2) * 2)
        self.dec = Decoder(config, style_dim=config.w_dim + config.nf(2) * 2)

    def forward(self, images, masks, ws, randomness: RandomSource, noise: NoiseInput | None):
        coarse = self.first_stage(images, masks, ws, randomness)

        x = images * masks + coarse * (1 - masks)
        x = torch.cat([masks - 0.5, x, images * masks], dim=1)
        features = self.enc(x)

        level = int(math.log2(BOTTLENECK))
        bottleneck = features[level]
        keep = randomness.keep_map(tuple(bottleneck.shape[1:]), bottleneck.device, bottleneck.dtype)
        square = self.to_square(ws[:, 0]).view(-1, 1, BOTTLENECK, BOTTLENECK)
        square = F.interpolate(square, size=bottleneck.shape[-2:], mode="bilinear", align_corners=False)
        bottleneck = bottleneck * keep + square * (1 - keep)
        features[level] = bottleneck

        global_code = self.to_style(bottleneck)
        img = self.dec(bottleneck, ws, global_code, features, noise)
        return img * (1 - masks) + images * masks


class MATGenerator(nn.Module):
    """MAT's generator: the mapping network and both synthesis stages (z_dim 512, no class labels)."""

    def __init__(self, config: MATConfig | None = None):
        super().__init__()
        self.config = config or MATConfig()
        self.config.check()
        self.synthesis = SynthesisNet(self.config)
        self.mapping = MappingNetwork(
            self.config.z_dim, self.config.w_dim, self.config.num_ws, self.config.mapping_layers, self.config.mapping_lr_multiplier
        )

    def forward(self, images: torch.Tensor, masks: torch.Tensor, randomness: RandomSource, noise_mode: str = "const") -> torch.Tensor:
        """Inpaint `images` [B, 3, H, W] in -1..1 where `masks` [B, 1, H, W] is 0.

        `randomness` supplies z, the two random keep maps and, for noise_mode `random`, the layer noise.
        `noise_mode` matters only for generators built with `use_noise`; `none` disables the noise inputs.
        """
        z = randomness.normal((self.config.z_dim,), images.device, torch.float32)
        ws = self.mapping(z)
        noise = None
        if self.config.use_noise and noise_mode != "none":
            noise = NoiseInput(noise_mode, randomness.generators)
        return self.synthesis(images, masks, ws, randomness, noise)
