"""The dataset root on disk and the release's file names.

```
<root>/recipe.yaml                 the frozen recipe
<root>/<split>/Au/<Source>_<stem>.png                        real photos
<root>/<split>/Tp/<Method>_<Kind>_<Source>_<stem>.png        forgeries
<root>/<split>/Gt/<Method>_<Kind>_<Source>_<stem>_mask.png   where each forgery differs (255)
<root>/masks/<split>/<Kind>_<Source>_<stem>.png              one mask per (real, kind), before any method ran
<root>/manifests/<stage>/shard-<i>-of-<n>.jsonl              one record per item
<root>/cache/<stage>/                                         data a stage can rebuild, e.g. tar member indexes
```
Manifest records store paths relative to the root, with forward slashes, so a root can be moved.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from brgen_build.errors import BrgenError
from brgen_build.files import atomic_write_bytes
from brgen_build.recipe import MASK_KINDS, SPLITS, Recipe, content_differences, dump_recipe, load_recipe, parse_recipe

# `{Method}_{Kind}_{Source}_{stem}`: the stem may itself contain underscores (`n06359193_84719`).
FORGERY_NAME = re.compile(r"^(?P<method>[A-Za-z0-9]+)_(?P<kind>" + "|".join(MASK_KINDS) + r")_(?P<real>[A-Za-z][A-Za-z0-9]*_.+)$")


def real_id(source_token: str, stem: str) -> str:
    return f"{source_token}_{stem}"


def forgery_id(method_token: str, kind: str, real: str) -> str:
    return f"{method_token}_{kind}_{real}"


def mask_id(kind: str, real: str) -> str:
    return f"{kind}_{real}"


class DatasetRoot:
    """Paths inside one dataset root."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).resolve()

    @property
    def recipe_path(self) -> Path:
        return self.path / "recipe.yaml"

    def au(self, split: str, real: str) -> Path:
        return self.path / split / "Au" / f"{real}.png"

    def tp(self, split: str, forgery: str) -> Path:
        return self.path / split / "Tp" / f"{forgery}.png"

    def gt(self, split: str, forgery: str) -> Path:
        return self.path / split / "Gt" / f"{forgery}_mask.png"

    def mask(self, split: str, kind: str, real: str) -> Path:
        return self.path / "masks" / split / f"{mask_id(kind, real)}.png"

    def manifest_dir(self, stage: str) -> Path:
        return self.path / "manifests" / stage

    def cache_dir(self, stage: str) -> Path:
        return self.path / "cache" / stage

    def data_folders(self) -> list[Path]:
        """Folders that stages write images into: `<split>/Au|Tp|Gt` and `masks/<split>`."""
        folders = [self.path / split / part for split in SPLITS for part in ("Au", "Tp", "Gt")]
        return folders + [self.path / "masks" / split for split in SPLITS]

    def relative(self, path: Path) -> str:
        return path.resolve().relative_to(self.path).as_posix()

    def absolute(self, relative: str) -> Path:
        return self.path / relative

    def load_recipe(self, recipe_path: str | os.PathLike | None = None) -> Recipe:
        """Return the recipe for this root, freezing `recipe_path` into it on first use.

        With a frozen recipe present, a given recipe must have the same content (paths, devices and batch
        sizes may differ); without one, `recipe_path` is required.
        """
        frozen_exists = self.recipe_path.exists()
        if recipe_path is None:
            if not frozen_exists:
                raise BrgenError(f"{self.path} has no recipe.yaml yet; pass --recipe FILE on the first run (see manifests/recipes/)")
            frozen_data = yaml.safe_load(self.recipe_path.read_text(encoding="utf-8"))
            recipe = parse_recipe(frozen_data, str(self.recipe_path), self.path)
            return Recipe(**{**recipe.__dict__, "path": self.recipe_path})

        recipe = load_recipe(recipe_path)
        if frozen_exists:
            frozen_data = yaml.safe_load(self.recipe_path.read_text(encoding="utf-8"))
            differences = content_differences(frozen_data, recipe.raw)
            if differences:
                raise BrgenError(
                    f"{recipe_path} differs from the recipe frozen in {self.recipe_path} at: {', '.join(differences)}. "
                    "A dataset root holds one recipe: use a new --root for the new recipe, or run without --recipe"
                )
        else:
            atomic_write_bytes(self.recipe_path, dump_recipe(recipe).encode("utf-8"))
        return recipe
