"""big-lama's generator: a ResNet of fast Fourier convolutions (FFC), for benchmarks and tests.

brgen runs LaMa from the TorchScript file `big-lama.pt` and does not need this module to do so. It
rebuilds the same network with random weights, so that a benchmark can measure full-size speed without
the weight file and export it with big-lama.pt's call signature.

The layout is LaMa's `FFCResNetGenerator` (github.com/advimman/lama, saicinpainting/training/modules/ffc.py)
with the `generator` section of configs/training/big-lama.yaml. It has 4 input channels (RGB + mask), 64
base channels and 3 stride-2 downsamplings. 18 FFC residual blocks follow, in which 75 % of the 512
channels form the global (spectral) branch, then 3 transposed-convolution upsamplings and a sigmoid.
Module names match, so the generator's state dict has the official parameter names and shapes.
"""

from __future__ import annotations

import torch
from torch import nn


class FourierUnit(nn.Module):
    """A 1x1 convolution, batch norm and ReLU applied to the real and imaginary parts of the 2-D real FFT."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv_layer = nn.Conv2d(in_channels * 2, out_channels * 2, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels * 2)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        spectrum = torch.fft.rfftn(x, dim=(-2, -1), norm="ortho")
        # Channels interleave as (c0 real, c0 imaginary, c1 real, ...), the order big-lama was trained with.
        stacked = torch.stack((spectrum.real, spectrum.imag), dim=2)
        stacked = stacked.reshape(batch, -1, height, spectrum.shape[-1])
        stacked = self.relu(self.bn(self.conv_layer(stacked)))
        stacked = stacked.view(batch, -1, 2, height, spectrum.shape[-1])
        spectrum = torch.complex(stacked[:, :, 0], stacked[:, :, 1])
        return torch.fft.irfftn(spectrum, s=(height, width), dim=(-2, -1), norm="ortho")


class SpectralTransform(nn.Module):
    """The global-to-global path: 1x1 reduction, a Fourier unit with a residual, 1x1 expansion."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, out_channels // 2, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels // 2),
            nn.ReLU(inplace=True),
        )
        self.fu = FourierUnit(out_channels // 2, out_channels // 2)
        self.conv2 = nn.Conv2d(out_channels // 2, out_channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(x + self.fu(x))


class FFC(nn.Module):
    """A fast Fourier convolution: channels split into a local part (ordinary convolutions) and a global part.

    `ratio_in` and `ratio_out` give the global share of the input and output channels. Local-to-local,
    local-to-global and global-to-local paths are convolutions with reflection padding; global-to-global
    is a SpectralTransform. Paths with no channels on either side do not exist.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, ratio_in: float, ratio_out: float, stride: int = 1, padding: int = 0):
        super().__init__()
        in_global = int(in_channels * ratio_in)
        in_local = in_channels - in_global
        out_global = int(out_channels * ratio_out)
        out_local = out_channels - out_global

        def conv(source: int, target: int) -> nn.Conv2d | None:
            if source == 0 or target == 0:
                return None
            return nn.Conv2d(source, target, kernel_size, stride, padding, bias=False, padding_mode="reflect")

        self.convl2l = conv(in_local, out_local)
        self.convl2g = conv(in_local, out_global)
        self.convg2l = conv(in_global, out_local)
        self.convg2g = SpectralTransform(in_global, out_global) if in_global and out_global else None
        if stride != 1 and self.convg2g is not None:
            raise ValueError("a strided global-to-global path is not part of big-lama")

    def forward(self, x_local: torch.Tensor, x_global: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        out_local = _sum(_apply(self.convl2l, x_local), _apply(self.convg2l, x_global))
        out_global = _sum(_apply(self.convl2g, x_local), _apply(self.convg2g, x_global))
        return out_local, out_global


def _apply(module: nn.Module | None, x: torch.Tensor | None) -> torch.Tensor | None:
    return None if module is None or x is None else module(x)


def _sum(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None:
        return b
    return a if b is None else a + b


class FFC_BN_ACT(nn.Module):
    """FFC, then batch norm and ReLU on each branch that has channels."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, ratio_in: float, ratio_out: float, stride: int = 1, padding: int = 0):
        super().__init__()
        self.ffc = FFC(in_channels, out_channels, kernel_size, ratio_in, ratio_out, stride, padding)
        out_global = int(out_channels * ratio_out)
        self.bn_l = nn.BatchNorm2d(out_channels - out_global) if ratio_out != 1 else None
        self.bn_g = nn.BatchNorm2d(out_global) if ratio_out != 0 else None
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: tuple[torch.Tensor, torch.Tensor | None]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x_local, x_global = self.ffc(*x)
        if x_local is not None:
            x_local = self.act(self.bn_l(x_local))
        if x_global is not None:
            x_global = self.act(self.bn_g(x_global))
        return x_local, x_global


class FFCResnetBlock(nn.Module):
    def __init__(self, channels: int, ratio: float):
        super().__init__()
        self.conv1 = FFC_BN_ACT(channels, channels, 3, ratio, ratio, padding=1)
        self.conv2 = FFC_BN_ACT(channels, channels, 3, ratio, ratio, padding=1)

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x_local, x_global = self.conv2(self.conv1(x))
        return x[0] + x_local, x[1] + x_global


class ConcatTupleLayer(nn.Module):
    """Join the local and global branches along the channel axis."""

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, dim=1)


class FFCResNetGenerator(nn.Module):
    """big-lama's generator; `model` indices match the official Sequential, so state-dict names do too."""

    def __init__(self, input_nc: int = 4, output_nc: int = 3, ngf: int = 64, n_downsampling: int = 3, n_blocks: int = 18, ratio: float = 0.75, max_features: int = 1024):
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), _FirstLayer(input_nc, ngf)]
        for index in range(n_downsampling):
            channels = min(max_features, ngf * 2**index)
            ratio_out = ratio if index == n_downsampling - 1 else 0
            layers.append(FFC_BN_ACT(channels, min(max_features, channels * 2), 3, 0, ratio_out, stride=2, padding=1))
        bottleneck = min(max_features, ngf * 2**n_downsampling)
        layers += [FFCResnetBlock(bottleneck, ratio) for _ in range(n_blocks)]
        layers.append(ConcatTupleLayer())
        for index in range(n_downsampling):
            channels = min(max_features, ngf * 2 ** (n_downsampling - index))
            layers += [
                nn.ConvTranspose2d(channels, min(max_features, channels // 2), kernel_size=3, stride=2, padding=1, output_padding=1),
                nn.BatchNorm2d(min(max_features, channels // 2)),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7), nn.Sigmoid()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _FirstLayer(FFC_BN_ACT):
    """The 7x7 input convolution: an FFC_BN_ACT with no global channels that accepts a plain tensor."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 7, 0, 0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        x_local, _ = super().forward((x, None))
        return x_local, None


class LamaInpaintingModel(nn.Module):
    """`model(image, mask)` as big-lama.pt: image [B, 3, H, W] in 0..1, mask [B, 1, H, W] with 1 = hole.

    The generator gets the image with the hole zeroed, plus the mask, and its output replaces the hole only.
    """

    def __init__(self, generator: FFCResNetGenerator | None = None):
        super().__init__()
        self.generator = generator or FFCResNetGenerator()

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        masked = torch.cat([image * (1 - mask), mask], dim=1)
        predicted = self.generator(masked)
        return mask * predicted + (1 - mask) * image
