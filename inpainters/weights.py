"""Finding a method's weight files and folders on disk. Nothing here downloads.

A weight file or folder is looked up at the first of these that is set: the recipe's (or the command
line's) path, the path in the method's environment variable, `$BRGEN_WEIGHTS_DIR/<method>/<official name>`.
"""

from __future__ import annotations

import os
from pathlib import Path

from inpainters.base import MethodError


def weights_dir() -> Path | None:
    value = os.environ.get("BRGEN_WEIGHTS_DIR")
    return Path(value).expanduser() if value else None


def locate_weight_file(method: str, explicit: str | None, env_var: str, file_name: str, origin: str) -> Path:
    """Return the path of a method's weight file or raise MethodError naming every place looked at.

    Args:
        method: the method's name, used for `$BRGEN_WEIGHTS_DIR/<method>/`.
        explicit: a path from the recipe or the command line, or None.
        env_var: the environment variable that may hold the path.
        file_name: the official file name (`big-lama.pt`).
        origin: where the file comes from, for the error message.
    """
    looked_at = []
    for label, path in _candidates(method, explicit, env_var, file_name, "the `weights` parameter"):
        if path.is_file():
            return path
        looked_at.append(f"{path} (from {label})")
    fix = f"Pass --weights PATH, set {env_var}=PATH, or put it at $BRGEN_WEIGHTS_DIR/{method}/{file_name}"
    raise _not_found(f"{method}: weight file {file_name}", looked_at, origin, fix)


def locate_weight_dir(
    method: str,
    explicit: str | None,
    env_var: str,
    folder_name: str,
    required: tuple[str, ...],
    origin: str,
    default: tuple[str, Path] | None = None,
) -> Path:
    """Return the path of a method's weight folder or raise MethodError naming every place looked at.

    A folder counts as found when it contains every path in `required` (relative to the folder), so a
    half-copied download fails here, before any work, and not in the middle of loading.

    Args:
        method: the method's name, used for `$BRGEN_WEIGHTS_DIR/<method>/`.
        explicit: a path from the recipe or the command line, or None.
        env_var: the environment variable that may hold the path.
        folder_name: the official folder name (`segmentation_mask_brushnet_ckpt`).
        required: files the folder must contain (`config.json`, `unet/config.json`).
        origin: where the folder comes from, for the error message.
        default: (label, path) looked at when neither `explicit` nor the environment variable is set,
            before `$BRGEN_WEIGHTS_DIR`.
    """
    looked_at = []
    for label, path in _candidates(method, explicit, env_var, folder_name, "the recipe or command line", default):
        missing = [name for name in required if not (path / name).is_file()]
        if path.is_dir() and not missing:
            return path
        problem = "not a folder" if not path.is_dir() else f"missing {', '.join(missing)}"
        looked_at.append(f"{path} (from {label}: {problem})")
    fix = f"Set {env_var}=PATH, pass the path in the recipe, or put the folder at $BRGEN_WEIGHTS_DIR/{method}/{folder_name}"
    raise _not_found(f"{method}: weight folder {folder_name}", looked_at, origin, fix)


def _candidates(
    method: str, explicit: str | None, env_var: str, name: str, explicit_label: str, default: tuple[str, Path] | None = None
) -> list[tuple[str, Path]]:
    """Return the one place to look and its label: the explicit path, else the environment variable, else
    the default, else $BRGEN_WEIGHTS_DIR."""
    if explicit:
        return [(explicit_label, Path(explicit).expanduser())]
    if os.environ.get(env_var):
        return [(f"${env_var}", Path(os.environ[env_var]).expanduser())]
    if default is not None:
        return [default]
    if weights_dir() is not None:
        return [("$BRGEN_WEIGHTS_DIR", weights_dir() / method / name)]
    return []


def _not_found(what: str, looked_at: list[str], origin: str, fix: str) -> MethodError:
    where = "; looked at " + ", ".join(looked_at) if looked_at else ""
    return MethodError(f"{what} not found{where}. It comes from {origin}. {fix}")
