"""Finding a method's weight file on disk. Nothing here downloads.

A weight file is looked up, in order, at the recipe's (or the command line's) `weights` path, at the path
in the method's environment variable, and at `$BRGEN_WEIGHTS_DIR/<method>/<file name>`.
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
    candidates = []
    if explicit:
        candidates.append(("the `weights` parameter", Path(explicit).expanduser()))
    elif os.environ.get(env_var):
        candidates.append((f"${env_var}", Path(os.environ[env_var]).expanduser()))
    elif weights_dir() is not None:
        candidates.append(("$BRGEN_WEIGHTS_DIR", weights_dir() / method / file_name))
    for label, path in candidates:
        if path.is_file():
            return path
        looked_at.append(f"{path} (from {label})")
    where = "; looked at " + ", ".join(looked_at) if looked_at else ""
    raise MethodError(
        f"{method}: weight file {file_name} not found{where}. It comes from {origin}. "
        f"Pass --weights PATH, set {env_var}=PATH, or put it at $BRGEN_WEIGHTS_DIR/{method}/{file_name}"
    )
