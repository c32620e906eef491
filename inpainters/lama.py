"""LaMa (Suvorov et al., 2022): large-mask inpainting with fast Fourier convolutions.

Weights: `big-lama.pt`, the TorchScript export that lama-cleaner and IOPaint download
(md5 e3aa4aaa15225a33ec84f9f4bc47e500). Input contract of that file: `model(image, mask)` with image
float [B,3,H,W] in 0..1 (RGB) and mask float [B,1,H,W] with 1 = hole; it returns the image [B,3,H,W] in
0..1. Sides must be multiples of 8: brgen pads by reflection and crops back.
"""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import torch

from inpainters.base import Inpainter, InpaintRequest, InpaintResult, MethodError
from inpainters.common import binarize_mask, pad_to_multiple
from inpainters.weights import locate_weight_file

WEIGHT_FILE = "big-lama.pt"
WEIGHT_ORIGIN = "https://github.com/Sanster/models/releases/download/add_big_lama/big-lama.pt (md5 e3aa4aaa15225a33ec84f9f4bc47e500)"


class LaMa(Inpainter):
    name = "lama"
    token = "LaMa"
    size_multiple = 8
    default_batch_size = 4
    parameters = {"weights": None}

    def __init__(self, params=None, device="auto"):
        super().__init__(params, device)
        self.model = None
        self.weights_path = None

    def check(self) -> None:
        self.weights_path = locate_weight_file(self.name, self.params["weights"], "BRGEN_LAMA_WEIGHTS", WEIGHT_FILE, WEIGHT_ORIGIN)

    def load(self) -> None:
        if self.weights_path is None:
            self.check()
        try:
            with warnings.catch_warnings():
                # big-lama.pt exists only as TorchScript, which torch 2.10+ marks as deprecated.
                warnings.filterwarnings("ignore", message=".*torch.jit.load.*is deprecated", category=DeprecationWarning)
                self.model = torch.jit.load(str(self.weights_path), map_location=self.device)
        except RuntimeError as error:
            raise MethodError(f"lama: {self.weights_path} is not a loadable TorchScript file ({error}); fetch it again from {WEIGHT_ORIGIN}") from None
        self.model.eval()
        self._digest = _md5(self.weights_path)

    def checkpoint(self) -> dict:
        return {"file": str(self.weights_path), "md5": self._digest}

    @torch.inference_mode()
    def inpaint(self, requests: list[InpaintRequest]) -> list[InpaintResult]:
        images, masks, sizes = [], [], []
        for request in requests:
            hole, off_values = binarize_mask(request.mask)
            image, size = pad_to_multiple(request.image, self.size_multiple)
            hole, _ = pad_to_multiple(hole, self.size_multiple)
            images.append(image)
            masks.append(hole)
            sizes.append((size, off_values))

        shapes = {image.shape for image in images}
        if len(shapes) != 1:
            raise ValueError(f"lama: a batch must share one padded size, got {sorted(shapes)}")
        image_batch = torch.from_numpy(np.stack(images)).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        mask_batch = torch.from_numpy(np.stack(masks)).to(self.device)[:, None].float()

        output = self.model(image_batch, mask_batch)
        output = (output.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

        results = []
        for generated, ((height, width), off_values) in zip(output, sizes):
            info = {"mask_values_thresholded": off_values} if off_values else {}
            results.append(InpaintResult(np.ascontiguousarray(generated[:height, :width]), info))
        return results


def _md5(path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
