"""Method names to `Inpainter` classes, imported on first use so that listing names loads no model code."""

from __future__ import annotations

import difflib
import importlib

from inpainters.base import Inpainter, MethodError

# name -> "module:Class"
_METHODS = {
    "opencv-telea": "inpainters.opencv_telea:OpenCVTelea",
    "lama": "inpainters.lama:LaMa",
    "sdxl": "inpainters.sdxl:SDXLInpainter",
    "brushnet": "inpainters.brushnet:BrushNetInpainter",
    "powerpaint": "inpainters.powerpaint:PowerPaintInpainter",
}


def names() -> list[str]:
    return list(_METHODS)


def get(name: str) -> type[Inpainter]:
    """The class of method `name`; an unknown name raises MethodError listing the available ones."""
    if name not in _METHODS:
        close = difflib.get_close_matches(name, _METHODS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise MethodError(f"unknown method {name!r}; available: {', '.join(_METHODS)}.{hint}")
    module_name, class_name = _METHODS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)
