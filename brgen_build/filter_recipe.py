"""The recipe's `filter` section: which quality scorers run, and the thresholds each method's forgeries must meet.

```yaml
filter:
  max_attempts: 3          # attempt 0 is the inpaint stage's forgery; later attempts regenerate it with new seeds
  thumbnail_px: 160        # longest side of the per-attempt thumbnails the report shows; 0 writes none
  device: auto             # torch device of the scorers (runtime setting)
  batch_size: 8            # forgeries scored per batch (runtime setting)
  scorers:                 # every listed scorer scores every forgery
    brisque: {}
    clip-score: {weights: "${BRGEN_WEIGHTS_DIR}/clip-vit-large-patch14"}
    embedding-distance: {weights: "${BRGEN_WEIGHTS_DIR}/dino-vitb16", crop: mask-box}
  thresholds:              # per method and scorer, `min` and/or `max`; a method without thresholds keeps all
    lama: {brisque: {max: 60}, embedding-distance: {min: 0.01}}
    sdxl: {clip-score: {min: 20}}
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brgen_build.errors import RecipeError

SCORER_KEYS = {"weights", "crop"}


@dataclass(frozen=True)
class Bounds:
    """An accepted range of one score; either end may be open."""

    min: float | None = None
    max: float | None = None

    def violation(self, scorer: str, value: float | None) -> str | None:
        """Describe how `value` falls outside the range, or return None when it is inside."""
        if value is None:
            return f"{scorer} is undefined"
        if self.min is not None and value < self.min:
            return f"{scorer} {value:.4g} < min {self.min:g}"
        if self.max is not None and value > self.max:
            return f"{scorer} {value:.4g} > max {self.max:g}"
        return None

    def to_json(self) -> dict:
        return {key: value for key, value in (("min", self.min), ("max", self.max)) if value is not None}


@dataclass(frozen=True)
class FilterSpec:
    scorers: dict[str, dict[str, Any]]
    thresholds: dict[str, dict[str, Bounds]] = field(default_factory=dict)
    max_attempts: int = 3
    thumbnail_px: int = 160
    device: str = "auto"
    batch_size: int = 8

    def method_thresholds(self, method: str) -> dict[str, Bounds]:
        return self.thresholds.get(method, {})


def parse_filter(reader, base: Path, methods: dict[str, dict]) -> FilterSpec:
    """Validate the `filter` section; `reader` is recipe.py's key-path-aware reader of that mapping."""
    from inpainters.quality import registry
    from inpainters.quality.base import CROPS

    reader.reject_unknown({"scorers", "thresholds", "max_attempts", "thumbnail_px", "device", "batch_size"})
    scorers_reader = reader.child("scorers")
    if not scorers_reader.data:
        raise reader.fail("scorers", f"must list at least one scorer; available: {', '.join(registry.names())}")
    scorers = {}
    for name in scorers_reader.data:
        if name not in registry.names():
            raise scorers_reader.fail(str(name), f"is not a known scorer; available: {', '.join(registry.names())}")
        params = scorers_reader.child(name, {}) if scorers_reader.data[name] is not None else None
        params_data = {} if params is None else dict(params.data)
        if params is not None:
            params.reject_unknown(SCORER_KEYS)
            if "crop" in params_data and params_data["crop"] not in CROPS:
                raise params.fail("crop", f"must be one of {', '.join(CROPS)}, got {params_data['crop']!r}")
            if params_data.get("weights") is not None:
                params_data["weights"] = str(params.path("weights", base))
        scorers[name] = params_data

    thresholds = _parse_thresholds(reader.child("thresholds", {}), scorers, methods)
    device = reader.text("device", "auto")
    return FilterSpec(
        scorers=scorers,
        thresholds=thresholds,
        max_attempts=reader.integer("max_attempts", 3, minimum=1),
        thumbnail_px=reader.integer("thumbnail_px", 160, minimum=0),
        device=device,
        batch_size=reader.integer("batch_size", 8, minimum=1),
    )


def _parse_thresholds(reader, scorers: dict[str, dict], methods: dict[str, dict]) -> dict[str, dict[str, Bounds]]:
    thresholds: dict[str, dict[str, Bounds]] = {}
    for method in reader.data:
        if method not in methods:
            raise reader.fail(str(method), f"is not a method of this recipe; `methods` lists: {', '.join(methods) or 'none'}")
        per_scorer = reader.child(method)
        thresholds[method] = {}
        for scorer in per_scorer.data:
            if scorer not in scorers:
                raise per_scorer.fail(str(scorer), f"has no scorer under `filter.scorers` (listed: {', '.join(scorers)}); add it there")
            bounds_reader = per_scorer.child(scorer)
            bounds_reader.reject_unknown({"min", "max"})
            values = {}
            for end in ("min", "max"):
                value = bounds_reader.get(end, None)
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                    raise bounds_reader.fail(end, f"must be a number, got {value!r}")
                values[end] = None if value is None else float(value)
            if values["min"] is None and values["max"] is None:
                raise RecipeError(f"{reader.where}: `{bounds_reader.key}` must set `min`, `max` or both")
            if values["min"] is not None and values["max"] is not None and values["min"] > values["max"]:
                raise RecipeError(f"{reader.where}: `{bounds_reader.key}` has min {values['min']:g} above max {values['max']:g}")
            thresholds[method][scorer] = Bounds(**values)
    return thresholds


def resolve_filter_paths(raw_filter: dict, scorers: dict[str, dict]) -> None:
    """Write the absolute scorer weight folders into the recipe mapping that is frozen into the dataset root."""
    for name, params in (raw_filter.get("scorers") or {}).items():
        if isinstance(params, dict) and params.get("weights"):
            params["weights"] = scorers[name]["weights"]
