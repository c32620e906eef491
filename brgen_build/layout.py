"""The dataset root on disk and the release's file names.

```
<root>/recipe.yaml                 the frozen recipe
<root>/<split>/Au/<Source>_<stem>.png                        real photos
<root>/<split>/Tp/<Method>_<Kind>_<Source>_<stem>.png        forgeries
<root>/<split>/Gt/<Method>_<Kind>_<Source>_<stem>_mask.png   where each forgery differs (255)
<root>/masks/<split>/<Kind>_<Source>_<stem>.png              one mask per (real, kind), before any method ran
<root>/manifests/<stage>/shard-<i>-of-<n>.jsonl              one record per item
<root>/manifests/recipe.json                                  the recipe as last accepted (detects hand edits)
<root>/cache/<stage>/                                         data a stage can rebuild, e.g. tar member indexes
```
Manifest records store paths relative to the root, with forward slashes, so a root can be moved.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import yaml

from brgen_build.errors import BrgenError
from brgen_build.files import atomic_write_bytes
from brgen_build.recipe import MASK_KINDS, SPLITS, Recipe, check_method_parameters, content_differences, load_recipe, parse_recipe

logger = logging.getLogger(__name__)

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

    @property
    def recipe_snapshot_path(self) -> Path:
        """The recipe as last accepted, to detect hand edits of recipe.yaml that change finished items."""
        return self.path / "manifests" / "recipe.json"

    def load_recipe(self, recipe_path: str | os.PathLike | None = None, given: Recipe | None = None, update: bool = False) -> Recipe:
        """Return the recipe for this root, freezing the given recipe into it on first use.

        The recipe comes from `recipe_path`, from `given` (already loaded), or from `<root>/recipe.yaml`.
        Once frozen, a recipe may change only in runtime keys (paths, devices, batch sizes) and by adding
        methods or a filter section. Such a change is written to `<root>/recipe.yaml`. Any other change,
        passed with --recipe or made by editing `<root>/recipe.yaml`, raises BrgenError naming the keys.
        Without `update`, an accepted hand edit is checked but not recorded, so read-only commands write nothing.
        """
        if given is None and recipe_path is not None:
            given = load_recipe(recipe_path)
        if not self.recipe_path.exists():
            if given is None:
                raise BrgenError(f"{self.path} has no recipe.yaml yet; pass --recipe FILE on the first run (see manifests/recipes/)")
            check_method_parameters(given)
            self._write_recipe(given.raw)
            return given

        frozen_data = yaml.safe_load(self.recipe_path.read_text(encoding="utf-8"))
        snapshot = json.loads(self.recipe_snapshot_path.read_text(encoding="utf-8")) if self.recipe_snapshot_path.is_file() else frozen_data
        edits = content_differences(snapshot, frozen_data)
        if edits:
            raise BrgenError(
                f"{self.recipe_path} was edited at: {', '.join(edits)}, after stages ran with the earlier values "
                f"(kept in {self.recipe_snapshot_path}). Undo the edit, or build the changed recipe in a new --root"
            )
        if given is None:
            recipe = parse_recipe(frozen_data, str(self.recipe_path), self.path)
            recipe = Recipe(**{**recipe.__dict__, "path": self.recipe_path})
            if frozen_data != snapshot:
                check_method_parameters(recipe)
                if update:
                    self._write_recipe(frozen_data)
            return recipe

        differences = content_differences(frozen_data, given.raw)
        if differences:
            raise BrgenError(
                f"{given.path or 'the recipe'} differs from the recipe frozen in {self.recipe_path} at: {', '.join(differences)}. "
                "A dataset root holds one recipe; only paths, devices, batch sizes, new methods and a new filter section "
                "may change. Use a new --root for the new recipe"
            )
        if given.raw != frozen_data:
            check_method_parameters(given)
            changed = sorted(set(_changed_keys(frozen_data, given.raw)))
            logger.info("%s: updated %s from %s", self.recipe_path, ", ".join(changed), given.path)
            self._write_recipe(given.raw)
        return given

    def _write_recipe(self, data: dict) -> None:
        atomic_write_bytes(self.recipe_path, yaml.safe_dump(data, sort_keys=False).encode("utf-8"))
        atomic_write_bytes(self.recipe_snapshot_path, json.dumps(data, indent=1, sort_keys=True).encode("utf-8"))


def _changed_keys(old, new, prefix: str = "") -> list[str]:
    """Return the key paths where two recipe mappings differ at all, runtime keys included."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = []
        for key in set(old) | set(new):
            path = f"{prefix}.{key}" if prefix else str(key)
            keys += _changed_keys(old.get(key), new.get(key), path) if key in old and key in new else [path]
        return keys
    return [] if old == new else [prefix or "recipe"]
