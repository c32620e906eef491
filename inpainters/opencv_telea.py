"""OpenCV's Telea inpainting (fast marching): a classical, weight-free baseline.

It is not one of BR-Gen's five methods. It makes a complete dataset on any machine, which the bundled
sample and the tests use. Release token: `OpenCVTelea`.
"""

from __future__ import annotations

import logging

import cv2

from inpainters.base import Inpainter, InpaintRequest, InpaintResult, MethodError
from inpainters.common import binarize_mask

logger = logging.getLogger(__name__)


class OpenCVTelea(Inpainter):
    name = "opencv-telea"
    token = "OpenCVTelea"
    parameters = {"radius": 3}

    def __init__(self, params=None, device="auto"):
        super().__init__(params, device)
        # The device is still validated above, so that a typo such as `gpu` fails here as for every method.
        requested = (params or {}).get("device", device)
        if self.device != "cpu" and requested != "auto":
            logger.warning("opencv-telea runs on the CPU only; ignoring device %s", requested)
        self.device = "cpu"
        radius = self.params["radius"]
        if isinstance(radius, bool) or not isinstance(radius, int) or radius < 1:
            raise MethodError(f"opencv-telea: radius must be a positive integer (pixels), got {radius!r}")

    def inpaint(self, requests: list[InpaintRequest]) -> list[InpaintResult]:
        results = []
        for request in requests:
            hole, _ = binarize_mask(request.mask)
            image = cv2.inpaint(request.image, hole.astype("uint8") * 255, self.params["radius"], cv2.INPAINT_TELEA)
            results.append(InpaintResult(image))
        return results
