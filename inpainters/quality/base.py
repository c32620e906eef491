"""The `Scorer` interface that every quality measure implements.

A scorer receives `ScoreSample`s: the forgery, its real photo, its mask and the prompt, all cropped to the
region the scorer looks at (`crop`: the whole image, or the bounding box of the mask). Images are HxWx3
uint8 RGB arrays and masks HxW bool arrays (True = regenerated). A scorer returns one float per sample, or
None where the measure is undefined (BRISQUE of a flat image). A threshold check counts None as a failure.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from brgen_build.errors import BrgenError
from inpainters.base import resolve_device

CROPS = ("image", "mask-box")


class ScorerError(BrgenError):
    """A scorer cannot run: bad parameters or missing weights. The message names the value and the fix."""


@dataclass
class ScoreSample:
    """One forgery to score.

    Attributes:
        name: the forgery's id, for messages.
        forgery: HxWx3 uint8 RGB forgery, cropped as the scorer asked.
        real: HxWx3 uint8 RGB real photo, same crop.
        mask: HxW bool, True where the forgery was regenerated, same crop.
        prompt: the text the region should show, for text-aware scorers.
    """

    name: str
    forgery: np.ndarray
    real: np.ndarray
    mask: np.ndarray
    prompt: str = ""


class Scorer(ABC):
    """Base class of the quality scorers.

    Class attributes; subclasses set them:
        name: the name in recipes, records and reports (`clip-score`).
        higher_is_better: the direction of good quality for reports; None when neither direction is better.
        default_crop: `image` or `mask-box` unless the recipe sets `crop`.
        parameters: recipe parameters the scorer accepts, with their defaults.
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool | None]
    default_crop: ClassVar[str] = "image"
    parameters: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: dict[str, Any] | None = None, device: str = "auto"):
        params = dict(params or {})
        allowed = set(self.parameters) | {"crop"}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise ScorerError(f"{self.name}: unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
        self.params = {**self.parameters, "crop": self.default_crop, **params}
        if self.params["crop"] not in CROPS:
            raise ScorerError(f"{self.name}: crop must be one of {', '.join(CROPS)}, got {self.params['crop']!r}")
        self.device = resolve_device(device, ScorerError, self.name)

    @property
    def crop(self) -> str:
        return self.params["crop"]

    def check(self) -> None:
        """Raise ScorerError if the scorer cannot run (weights missing), before any work starts."""

    def load(self) -> None:
        """Load models; called once per process, after `check`."""

    def checkpoint(self) -> dict:
        """Return where the weights in use came from, to record with every score."""
        return {}

    def settings(self) -> dict:
        """Return the parameters to record with every score."""
        return {key: value for key, value in self.params.items() if key != "weights"}

    @abstractmethod
    def score(self, samples: list[ScoreSample]) -> list[float | None]:
        """Score a batch; values come back in sample order."""


def mask_box(mask: np.ndarray) -> tuple[slice, slice] | None:
    """Return the row and column slices of the bounding box of a bool mask, or None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    columns = np.flatnonzero(mask.any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(columns[0]), int(columns[-1]) + 1)


def crop_sample(name: str, forgery: np.ndarray, real: np.ndarray, mask: np.ndarray, prompt: str, crop: str) -> ScoreSample:
    """Build the sample a scorer scores: the whole image, or the mask's bounding box of each array."""
    box = mask_box(mask) if crop == "mask-box" else None
    if box is None:
        return ScoreSample(name, forgery, real, mask, prompt)
    return ScoreSample(name, forgery[box], real[box], mask[box], prompt)
