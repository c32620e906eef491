"""Scorer names to `Scorer` classes, imported on first use so that listing names loads no model code."""

from __future__ import annotations

from inpainters.quality.base import Scorer, ScorerError
from inpainters.registry import load_registered

# name -> "module:Class"
_SCORERS = {
    "brisque": "inpainters.quality.brisque:Brisque",
    "clip-score": "inpainters.quality.clip_score:ClipScore",
    "embedding-distance": "inpainters.quality.embedding_distance:EmbeddingDistance",
}


def names() -> list[str]:
    return list(_SCORERS)


def get(name: str) -> type[Scorer]:
    """Return the class of scorer `name`; an unknown name raises ScorerError listing the available ones."""
    return load_registered(_SCORERS, name, "scorer", ScorerError)
