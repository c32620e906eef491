"""LaMa (Suvorov et al., 2022): large-mask inpainting with fast Fourier convolutions.

Weights: `big-lama.pt`, the TorchScript export that lama-cleaner and IOPaint download
(md5 e3aa4aaa15225a33ec84f9f4bc47e500; registry entry `lama.generator`). Input contract of that file:
`model(image, mask)` with image float [B,3,H,W] in 0..1 (RGB) and mask float [B,1,H,W] with 1 = hole; it
returns the image [B,3,H,W] in 0..1. Sides must be multiples of 8: brgen pads by reflection and crops back.
Mask values above 127 count as hole; how many values were neither 0 nor 255 is recorded per forgery.
"""

from __future__ import annotations

import numpy as np
import torch

from inpainters.base import InpaintRequest, InpaintResult, WeightFileInpainter
from inpainters.common import pad_batch, pad_to_multiple
from inpainters.weights import checkpoint_record, load_torchscript


class LaMa(WeightFileInpainter):
    name = "lama"
    token = "LaMa"
    size_multiple = 8
    default_batch_size = 4
    parameters = {"weights": None}

    def load(self) -> None:
        if self.weights_path is None:
            self.check()
        self.model = load_torchscript(self.weights_path, self.device, self.name)
        self.model.eval()
        self._checkpoint = checkpoint_record(self.name, self.weights_component, self.weights_path)

    @torch.inference_mode()
    def inpaint(self, requests: list[InpaintRequest]) -> list[InpaintResult]:
        images, holes, sizes, off_counts = pad_batch(
            self.name, [(request.mask, request.image) for request in requests], lambda array: pad_to_multiple(array, self.size_multiple)
        )
        image_batch = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        mask_batch = torch.from_numpy(holes).to(self.device)[:, None].float()

        output = self.model(image_batch, mask_batch)
        output = (output.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

        results = []
        for generated, (height, width), off_values in zip(output, sizes, off_counts):
            info = {"mask_values_thresholded": off_values} if off_values else {}
            results.append(InpaintResult(np.ascontiguousarray(generated[:height, :width]), info))
        return results
