"""Method names to `Inpainter` classes, imported on first use so that listing names loads no model code."""

from __future__ import annotations

import difflib
import importlib

from inpainters.base import Inpainter, MethodError

# name -> "module:Class"
_METHODS = {
    "opencv-telea": "inpainters.opencv_telea:OpenCVTelea",
    "lama": "inpainters.lama:LaMa",
    "mat": "inpainters.mat:MAT",
    "sdxl": "inpainters.sdxl:SDXLInpainter",
    "brushnet": "inpainters.brushnet:BrushNetInpainter",
    "powerpaint": "inpainters.powerpaint:PowerPaintInpainter",
}


def names() -> list[str]:
    return list(_METHODS)


def get(name: str) -> type[Inpainter]:
    """The class of method `name`; an unknown name raises MethodError listing the available ones."""
    return load_registered(_METHODS, name, "method", MethodError)


def load_registered(entries: dict[str, str], name: str, kind: str, error: type[Exception]) -> type:
    """Import and return the class that `entries` maps `name` to ("module:Class").

    An unknown name raises `error` with the registered names and the closest match.
    """
    if name not in entries:
        close = difflib.get_close_matches(name, entries, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise error(f"unknown {kind} {name!r}; available: {', '.join(entries)}.{hint}")
    module_name, class_name = entries[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)
