"""The frozen DnCNN noise extractor of NFA-ViT and the loading of its Noiseprint++ weights.

Noiseprint++ comes from TruFor (Guillaro et al., CVPR 2023, GRIP-UNINA). Its weights are licensed for
non-commercial use only, so brgen does not ship them: the user passes the file. Accepted files are TruFor's
`noiseprint++.th` (the layers under the key `network`), TruFor's full checkpoint (under `state_dict`, prefix
`dncnn.`) and BR-Gen's `noiseprint.pth` (the bare layers).

The network is 17 3x3 convolutions with 64 channels, batch norm between them and ReLU, from RGB to one
channel, plus a residual connection that adds the input's first channel to the output, as in the published
NFA-ViT.

NOTE: TruFor trained Noiseprint++ on RGB in 0..1, but the published NFA-ViT feeds the extractor the
ImageNet-normalised image. brgen does the same, so that published NFA-ViT checkpoints keep their meaning.
"""

from __future__ import annotations

import math
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from brgen_build.model_checks import describe_state_dict_mismatch
from detector.errors import DetectorError
from detector.files import sha256_file

# Containers seen around the DnCNN layers, tried in this order.
CONTAINER_KEYS = ("network", "state_dict", "model")
LAYER_PREFIXES = ("", "layers.", "dncnn.", "noise_extractor.layers.", "module.dncnn.", "module.noise_extractor.layers.")
_LAYER_KEY = re.compile(r"^\d+\.(weight|bias|running_mean|running_var|num_batches_tracked)$")


class DnCNN(nn.Module):
    """DnCNN noise extractor: image [B,3,H,W] to noise map [B,1,H,W], same height and width.

    The extractor stays in eval mode whatever `train()` is called with, so its batch norm always uses the
    loaded running statistics.

    NOTE: the published NFA-ViT training code leaves this batch norm in training mode, so there the
    running statistics drift toward the training data. brgen keeps the extractor frozen instead.
    """

    def __init__(self, depth: int = 17, features: int = 64, in_channels: int = 3, out_channels: int = 1):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, features, 3, padding=1, bias=True), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(features, features, 3, padding=1, bias=False), nn.BatchNorm2d(features), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(features, out_channels, 3, padding=1, bias=True))
        self.layers = nn.Sequential(*layers)
        self.reset_parameters()
        self.requires_grad_(False)
        self.eval()

    def reset_parameters(self) -> None:
        """Initialise the layers as DnCNN does: He-normal convolutions, batch-norm scales drawn around 0."""
        for layer in self.layers:
            if isinstance(layer, nn.Conv2d):
                fan_out = layer.kernel_size[0] * layer.kernel_size[1] * layer.out_channels
                nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(layer, nn.BatchNorm2d):
                nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / (9 * layer.num_features)))
                nn.init.zeros_(layer.bias)

    def train(self, mode: bool = True) -> DnCNN:
        return super().train(False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # Channels-last lets the 3x3 convolutions use faster kernels: twice as fast on a 2-core CPU for a
        # 2x3x128x128 batch, with the same values (measured with torch 2.13).
        noise = self.layers(image.contiguous(memory_format=torch.channels_last)).contiguous()
        return noise + image[:, : noise.shape[1]]


def read_noiseprint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read the DnCNN layers of a Noiseprint++ file; return them and what the run metadata records about them.

    Raises:
        DetectorError: the file is missing or contains no DnCNN layers.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DetectorError(
            f"Noiseprint++ weight file {path} not found; pass TruFor's noiseprint++.th or BR-Gen's noiseprint.pth "
            "with --noiseprint (the weights are licensed for non-commercial use and not shipped with brgen)"
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise DetectorError(f"{path} is not a loadable weight file ({str(error).splitlines()[0]})") from None

    layers = _find_layers(data)
    if layers is None:
        raise DetectorError(
            f"{path} contains no DnCNN layers: expected keys such as '0.weight', 'dncnn.0.weight' or "
            "'network' -> '0.weight' (TruFor's noiseprint++.th)"
        )
    depth, _ = extractor_shape(layers)
    if depth < 2:
        raise DetectorError(f"{path} contains {depth} convolution(s), but a DnCNN extractor has at least 2 (Noiseprint++ has 17)")
    return layers, {"source": "noiseprint++", "file": str(path.resolve()), "sha256": sha256_file(path)}


def extractor_shape(layers: dict[str, torch.Tensor]) -> tuple[int, int]:
    """Return (depth, features) of a DnCNN state dict: its number of convolutions and hidden channels."""
    convolutions = [value for name, value in layers.items() if name.endswith(".weight") and value.ndim == 4]
    return len(convolutions), int(layers["0.weight"].shape[0])


def load_layers(extractor: DnCNN, layers: dict[str, torch.Tensor], path: str | Path) -> None:
    """Load layers read by `read_noiseprint(path)` into `extractor`.

    Raises:
        DetectorError: the layers do not fit the extractor's depth and width.
    """
    mismatch = describe_state_dict_mismatch(extractor.layers.state_dict(), layers)
    if mismatch:
        raise DetectorError(f"{path} does not fit the configured extractor ({len(extractor.layers)} modules): {mismatch}")
    extractor.layers.load_state_dict(layers, strict=True)


def _find_layers(data: object) -> dict[str, torch.Tensor] | None:
    if not isinstance(data, dict):
        return None
    for key in CONTAINER_KEYS:
        if isinstance(data.get(key), dict):
            found = _find_layers(data[key])
            if found is not None:
                return found
    for prefix in LAYER_PREFIXES:
        if f"{prefix}0.weight" not in data:
            continue
        layers = {name[len(prefix):]: value for name, value in data.items() if name.startswith(prefix)}
        return {name: value for name, value in layers.items() if _LAYER_KEY.match(name)}
    return None
