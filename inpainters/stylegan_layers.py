"""StyleGAN2-style layers with equalized learning rate, as MAT's generator uses them.

Parameter and buffer names follow the layers of StyleGAN2-ADA (NVlabs) that MAT builds on, so that a state
dict saved from MAT's generator loads with `strict=True`: `weight`, `bias`, the low-pass `resample_filter`
buffer, `affine`, `noise_const` and `noise_strength`. Weights are stored unscaled and multiplied by
`1 / sqrt(fan_in)` at run time (equalized learning rate).

Resampling convolves with the 4x4 binomial filter outer([1, 3, 3, 1]) / 64, with the same padding as
StyleGAN2-ADA's `conv2d_resample` and `upfirdn2d`, so outputs match that code up to float rounding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_RELU_SLOPE = 0.2
LEAKY_RELU_GAIN = math.sqrt(2.0)
_ACTIVATION_GAINS = {"linear": 1.0, "lrelu": LEAKY_RELU_GAIN}


def binomial_filter() -> torch.Tensor:
    """Return the 4x4 low-pass filter outer([1, 3, 3, 1]) normalized to sum 1 (float32)."""
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    kernel = taps[:, None] * taps[None, :]
    return kernel / kernel.sum()


def bias_activation(x: torch.Tensor, bias: torch.Tensor | None, activation: str, gain: float = 1.0, dim: int = 1) -> torch.Tensor:
    """Add `bias` along `dim`, apply `linear` or `lrelu` (slope 0.2), then scale by the activation's gain times `gain`."""
    if bias is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + bias.reshape(shape)
    if activation == "lrelu":
        x = F.leaky_relu(x, LEAKY_RELU_SLOPE)
    elif activation != "linear":
        raise ValueError(f"unsupported activation {activation!r}; expected 'linear' or 'lrelu'")
    total_gain = _ACTIVATION_GAINS[activation] * gain
    return x * total_gain if total_gain != 1.0 else x


def filter2d(x: torch.Tensor, kernel: torch.Tensor, padding: tuple[int, int, int, int], gain: float = 1.0) -> torch.Tensor:
    """Zero-pad by (left, right, top, bottom) and convolve every channel with `kernel` times `gain`.

    Negative padding crops. The kernel is flipped as in a true convolution (the binomial filter is symmetric).
    """
    left, right, top, bottom = padding
    x = F.pad(x, [max(left, 0), max(right, 0), max(top, 0), max(bottom, 0)])
    x = x[:, :, max(-top, 0) : x.shape[2] - max(-bottom, 0), max(-left, 0) : x.shape[3] - max(-right, 0)]
    channels = x.shape[1]
    weight = (kernel * gain).to(x.dtype).flip([0, 1])
    weight = weight[None, None].expand(channels, 1, *kernel.shape)
    return F.conv2d(x, weight, groups=channels)


def upsample2d(x: torch.Tensor, kernel: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Upsample by `factor`: insert zeros between pixels, then low-pass filter with gain factor**2."""
    batch, channels, height, width = x.shape
    x = x.reshape(batch, channels, height, 1, width, 1)
    x = F.pad(x, [0, factor - 1, 0, 0, 0, factor - 1])
    x = x.reshape(batch, channels, height * factor, width * factor)
    size = kernel.shape[0]
    before = (size + factor - 1) // 2
    after = (size - factor) // 2
    return filter2d(x, kernel, (before, after, before, after), gain=factor**2)


def conv2d_resample(x: torch.Tensor, weight: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, padding: int = 0) -> torch.Tensor:
    """Convolve with `weight` [out, in, k, k], upsampling or downsampling by 2 through `kernel`.

    Down: pad, low-pass filter, then a stride-2 convolution. Up: a stride-2 transposed convolution, then a
    low-pass filter with gain 4. The padding matches StyleGAN2-ADA's `conv2d_resample` for a 4-tap filter.
    """
    if up > 1 and down > 1:
        raise ValueError("conv2d_resample: up- and downsampling together are not supported")
    kernel_size = weight.shape[-1]
    taps = kernel.shape[0]
    if down > 1:
        before = padding + (taps - down + 1) // 2
        after = padding + (taps - down) // 2
        x = filter2d(x, kernel, (before, after, before, after))
        return F.conv2d(x, weight, stride=down)
    if up > 1:
        before = padding + (taps + up - 1) // 2 - (kernel_size - 1)
        after = padding + (taps - up) // 2 - (kernel_size - up)
        transposed_padding = max(min(-before, -after), 0)
        transposed = weight.transpose(0, 1).flip([2, 3])
        x = F.conv_transpose2d(x, transposed, stride=up, padding=transposed_padding)
        pad = (before + transposed_padding, after + transposed_padding)
        return filter2d(x, kernel, (pad[0], pad[1], pad[0], pad[1]), gain=up**2)
    return F.conv2d(x, weight, padding=padding)


class FullyConnectedLayer(nn.Module):
    """A linear layer with equalized learning rate; `lr_multiplier` scales weight and bias at run time."""

    def __init__(self, in_features: int, out_features: int, activation: str = "linear", lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.activation = activation
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.matmul((self.weight * self.weight_gain).t())
        return bias_activation(x, self.bias * self.bias_gain, self.activation, dim=x.ndim - 1)


class Conv2dLayer(nn.Module):
    """A convolution with equalized learning rate, optional 2x resampling, bias and activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, activation: str = "linear", up: int = 1, down: int = 1, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.register_buffer("resample_filter", binomial_filter())
        self.activation = activation
        self.up = up
        self.down = down
        self.padding = kernel_size // 2
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight * self.weight_gain
        x = conv2d_resample(x, weight, self.resample_filter, self.up, self.down, self.padding)
        return bias_activation(x, self.bias, self.activation)


class ModulatedConv2d(nn.Module):
    """A convolution whose input channels are scaled by a style vector, optionally demodulated.

    The style scales the activations before a convolution shared by the batch, and demodulation scales its
    output. This equals StyleGAN2's per-sample modulated weights (a grouped convolution) up to float
    rounding and runs as one ordinary convolution for the whole batch.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int, demodulate: bool = True, up: int = 1):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.register_buffer("resample_filter", binomial_filter())
        self.affine = FullyConnectedLayer(style_dim, in_channels, bias_init=1.0)
        self.demodulate = demodulate
        self.up = up
        self.padding = kernel_size // 2
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        styles = self.affine(style)
        weight = self.weight[0] * self.weight_gain
        x = x * styles[:, :, None, None]
        x = conv2d_resample(x, weight, self.resample_filter, up=self.up, padding=self.padding)
        if self.demodulate:
            # Per sample and output channel: 1 / norm of the weight after modulation.
            squared = weight.square().sum(dim=[2, 3])
            coefficients = (styles.square().matmul(squared.t()) + 1e-8).rsqrt()
            x = x * coefficients[:, :, None, None]
        return x


class StyleConv(nn.Module):
    """A modulated convolution, optional per-pixel noise, bias and leaky ReLU.

    With `use_noise`, the layer has a learned `noise_strength` and a fixed `noise_const` map of its native
    resolution. `forward` takes the noise to add (or None), so the caller decides how it is drawn.
    """

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, resolution: int, kernel_size: int = 3, up: int = 1, use_noise: bool = False, demodulate: bool = True):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, kernel_size, style_dim, demodulate=demodulate, up=up)
        self.use_noise = use_noise
        self.resolution = resolution
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: "NoiseInput | None" = None) -> torch.Tensor:
        x = self.conv(x, style)
        if self.use_noise and noise is not None:
            x = x + noise.sample(self, x) * self.noise_strength
        return bias_activation(x, self.bias, "lrelu")


class ToRGB(nn.Module):
    """A 1x1 modulated convolution to RGB without demodulation, added to the upsampled `skip` image."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("resample_filter", binomial_filter())

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = bias_activation(self.conv(x, style), self.bias, "linear")
        if skip is not None:
            if skip.shape != out.shape:
                skip = upsample2d(skip, self.resample_filter)
            out = out + skip
        return out


class MappingNetwork(nn.Module):
    """Map a latent z to the intermediate latent w, repeated `num_ws` times (no label input, no truncation)."""

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, num_layers: int = 8, lr_multiplier: float = 0.01):
        super().__init__()
        self.z_dim = z_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        features = [z_dim] + [w_dim] * num_layers
        for index in range(num_layers):
            layer = FullyConnectedLayer(features[index], features[index + 1], activation="lrelu", lr_multiplier=lr_multiplier)
            setattr(self, f"fc{index}", layer)
        # The running mean of w from training; stored in checkpoints, used only for truncation, which brgen does not apply.
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z.float()
        x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        x = x.to(self.fc0.weight.dtype)
        for index in range(self.num_layers):
            x = getattr(self, f"fc{index}")(x)
        return x.unsqueeze(1).repeat(1, self.num_ws, 1)


class NoiseInput:
    """Noise for StyleConv layers: `const` uses each layer's `noise_const`, `random` draws from per-sample generators.

    Random draws come from one CPU `torch.Generator` per sample, so each image's noise depends only on its own
    seed and not on the other images in the batch.
    """

    def __init__(self, mode: str, generators: list[torch.Generator] | None = None):
        if mode not in ("const", "random"):
            raise ValueError(f"noise mode must be 'const' or 'random', got {mode!r}")
        if mode == "random" and not generators:
            raise ValueError("random noise needs one torch.Generator per sample")
        self.mode = mode
        self.generators = generators

    def sample(self, layer: StyleConv, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if self.mode == "const":
            if (height, width) != (layer.resolution, layer.resolution):
                raise ValueError(
                    f"const noise exists only at {layer.resolution}x{layer.resolution}, the layer runs at {height}x{width}; use random noise"
                )
            return layer.noise_const.to(x.dtype)
        draws = [torch.randn(1, 1, height, width, generator=generator) for generator in self.generators]
        return torch.cat(draws).to(device=x.device, dtype=x.dtype)
