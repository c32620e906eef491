"""Finding a scorer's weight folder on disk. Nothing here downloads.

A folder is looked up, in order, at the recipe's `weights` path, at the path in the scorer's environment
variable, at `$BRGEN_WEIGHTS_DIR/<scorer>/`, and for BRISQUE in the installed `brisque` package.

NOTE: the folder's files are not checked against known hashes yet, so records name the folder only.
"""

from __future__ import annotations

import os
from pathlib import Path

from inpainters.quality.base import ScorerError
from inpainters.weights import weights_dir


def locate_weight_folder(scorer: str, explicit: str | None, env_var: str, required: tuple[str, ...], origin: str,
                         fallback: Path | None = None) -> Path:
    """Return a scorer's weight folder, or raise ScorerError naming every place looked at and the origin.

    Args:
        scorer: the scorer's name, used for `$BRGEN_WEIGHTS_DIR/<scorer>/`.
        explicit: a folder from the recipe, or None.
        env_var: the environment variable that may hold the folder.
        required: files the folder must contain (`config.json`).
        origin: where the folder comes from and how to get it, for the error message.
        fallback: a folder to use when neither `explicit` nor `env_var` is given and
            `$BRGEN_WEIGHTS_DIR/<scorer>/` does not exist (the model files an installed package ships).
    """
    candidates = []
    if explicit:
        candidates.append(("the recipe's `weights`", Path(explicit).expanduser()))
    elif os.environ.get(env_var):
        candidates.append((f"${env_var}", Path(os.environ[env_var]).expanduser()))
    elif weights_dir() is not None and (fallback is None or (weights_dir() / scorer).exists()):
        candidates.append(("$BRGEN_WEIGHTS_DIR", weights_dir() / scorer))
    elif fallback is not None:
        return fallback

    looked_at = []
    for label, path in candidates:
        missing = [name for name in required if not (path / name).is_file()]
        if path.is_dir() and not missing:
            return path
        detail = "not a folder" if not path.is_dir() else f"no {', '.join(missing)}"
        looked_at.append(f"{path} (from {label}: {detail})")
    where = "; looked at " + ", ".join(looked_at) if looked_at else ""
    raise ScorerError(
        f"{scorer}: weight folder not found{where}. It comes from {origin}. "
        f"Set `filter.scorers.{scorer}.weights` in the recipe, set {env_var}=FOLDER, or put it at $BRGEN_WEIGHTS_DIR/{scorer}/"
    )
