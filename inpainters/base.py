"""The `Inpainter` interface that every method implements.

Inside brgen images are HxWx3 uint8 RGB arrays and masks are HxW uint8 arrays with 255 = regenerate and
0 = keep. Each method converts to what its model wants (size multiple, mask polarity, value range) and
returns an image of the input's size. The caller pastes the real photo back outside the mask, so a
method may change any pixel. The share of pixels it changed outside the mask is recorded.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from brgen_build.errors import BrgenError
from brgen_build.model_checks import check_device, local_rank_gpu


class MethodError(BrgenError):
    """A method cannot run: bad parameters or missing weights. The message names the value and the fix."""


@dataclass
class InpaintRequest:
    """One forgery to make.

    Attributes:
        name: the forgery's id, for messages.
        image: HxWx3 uint8 RGB real photo.
        mask: HxW uint8, 255 = regenerate, 0 = keep.
        seed: the item's seed, derived from the recipe seed and `name`.
        region: the mask's record (class ids and names, area ratio, bbox), which text-guided methods turn
            into prompts.
    """

    name: str
    image: np.ndarray
    mask: np.ndarray
    seed: int
    region: dict = field(default_factory=dict)


@dataclass
class InpaintResult:
    """A method's output for one request.

    Attributes:
        image: HxWx3 uint8 RGB of the request's size, before paste-back.
        info: per-item facts to record (prompt, negative prompt, working size, ...).
    """

    image: np.ndarray
    info: dict = field(default_factory=dict)


class Inpainter(ABC):
    """Base class of the inpainting methods.

    Class attributes declare what the method needs; subclasses set them:
        name: the name in recipes and on the command line (`lama`).
        token: the name in release file names (`LaMa` in `LaMa_Stuff_COCO_000000000520.png`).
        size_multiple: the model's input sides must be multiples of this.
        mask_polarity: what the model reads as the hole: `hole=255` or `keep=1` (MAT).
        default_batch_size: images per forward pass unless the recipe sets `batch_size`.
        text_guided: whether the method uses a prompt.
        parameters: recipe parameters the method accepts, with their defaults.
    """

    name: ClassVar[str]
    token: ClassVar[str]
    size_multiple: ClassVar[int] = 1
    mask_polarity: ClassVar[str] = "hole=255"
    default_batch_size: ClassVar[int] = 1
    text_guided: ClassVar[bool] = False
    parameters: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: dict[str, Any] | None = None, device: str = "auto"):
        params = dict(params or {})
        allowed = set(self.parameters) | {"batch_size", "device"}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise MethodError(f"{self.name}: unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
        self.params = {**self.parameters, **params}
        self.batch_size = int(params.get("batch_size", self.default_batch_size))
        if self.batch_size < 1:
            raise MethodError(f"{self.name}: batch_size must be at least 1, got {self.batch_size}")
        self.device = resolve_device(params.get("device", device), MethodError, self.name)

    def check(self) -> None:
        """Raise MethodError if the method cannot run (weights missing), before any work starts."""

    def load(self) -> None:
        """Load models; called once per process, after `check`."""

    def checkpoint(self) -> dict:
        """Ids and hashes of the weights in use, recorded with every forgery."""
        return {}

    def batch_key(self, height: int, width: int) -> tuple[int, int]:
        """Return the size a photo of this size has inside the model. Only photos with equal keys share a batch.

        Methods that resize photos to a working size return it, so photos of different sizes can share a batch.
        """
        return height, width

    def settings(self) -> dict:
        """Parameters recorded with every forgery (steps, guidance, ...)."""
        return {key: value for key, value in self.params.items() if key != "weights"}

    @abstractmethod
    def inpaint(self, requests: list[InpaintRequest]) -> list[InpaintResult]:
        """Inpaint a batch; results come back in request order."""


class WeightFileInpainter(Inpainter):
    """An inpainter whose weights are one file of the weight registry (`manifests/weights.yaml`).

    `check` finds the file (the `weights` parameter, the component's environment variable, then the weights
    folder) or raises MissingWeightsError. Subclasses load it in `load` and fill `_checkpoint`.
    """

    weights_component: ClassVar[str] = "generator"

    def __init__(self, params: dict[str, Any] | None = None, device: str = "auto"):
        super().__init__(params, device)
        self.model = None
        self.weights_path = None
        self._checkpoint: dict = {}

    def check(self) -> None:
        from inpainters.weights import resolve

        self.weights_path = resolve(self.name, self.weights_component, self.params.get("weights"))

    def checkpoint(self) -> dict:
        return self._checkpoint


def resolve_device(device: str, error: type[BrgenError] = MethodError, context: str = "") -> str:
    """Validate `device` and return the torch device to use.

    `auto` becomes `cuda` when a GPU is visible, else `cpu`. When a launcher set `LOCAL_RANK` (torchrun,
    `accelerate launch`), `cuda` without an index becomes `cuda:<LOCAL_RANK>`, so each process of a node gets
    its own GPU. A process with a single visible GPU (CUDA_VISIBLE_DEVICES set per process) uses `cuda:0`.
    Other valid values are returned as given.

    Raises:
        error: the value is not a torch device, or names a GPU this process cannot use (see
            `brgen_build.model_checks.check_device`); `context` prefixes the message.
    """
    device = check_device(device, error, context)
    if device != "cuda" or "LOCAL_RANK" not in os.environ:
        return device
    return local_rank_gpu(os.environ["LOCAL_RANK"], error)

