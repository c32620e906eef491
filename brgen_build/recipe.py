"""The recipe: one YAML file that defines a dataset.

A recipe names the photo sources, how many photos to take and how to split them, the mask rules, the
inpainting methods with their parameters, and the file-name rules. It is validated on load: every error
names the recipe file and the key. Relative paths are resolved against the recipe's folder, and `${VAR}`
is replaced by the environment variable VAR.

The first stage that runs freezes the recipe into `<root>/recipe.yaml`. A later run with a recipe whose
content differs is rejected, so one dataset never mixes two recipes. Paths, devices and batch sizes are
runtime settings, not content: they may change between runs (an archive moved to another disk).
"""

from __future__ import annotations

import copy
import fnmatch
import os
import re
import string
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from brgen_build.errors import RecipeError
from brgen_build.filter_recipe import FilterSpec, parse_filter, resolve_filter_paths
from mask_gen.regions import LARGEST, BackgroundRule, StuffRule
from mask_gen.segmenters.spec import SEGMENTER_BACKENDS, SegmenterSpec

SOURCE_KINDS = ("coco", "imagenet", "places")
# `coco`: detection-format JSON files (stuff_*2017.json, instances_*2017.json); `panoptic`: one panoptic JSON
# with its PNGs; `stuffthingmaps`: a folder or zip of COCO-Stuff label PNGs.
ANNOTATION_FORMATS = ("coco", "panoptic", "stuffthingmaps")
MASK_KINDS = ("Stuff", "Background")
SPLITS = ("train", "test", "val")

# Keys that may differ between the frozen recipe and a later run; `*` matches one key.
RUNTIME_KEYS = (
    "sources.*.images",
    "sources.*.annotations",
    "sources.*.categories",
    "sources.*.image_list",
    "sources.*.annotation_masks",
    "sources.*.max_missing",
    "split_list",
    "masks.workers",
    "masks.segmenter.weights",
    "masks.segmenter.device",
    "masks.segmenter.batch_size",
    "masks.segmenter.dtype",
    "methods.*.weights",
    "methods.*.base",
    "methods.*.captioner",
    "methods.*.device",
    "methods.*.batch_size",
    "methods.*.dtype",
    "methods.*.compile",
    "filter.device",
    "filter.batch_size",
    "filter.scorers.*.weights",
    "failure_budget",
)

# Method parameters that hold paths (weight files and folders), which resolve against the recipe's folder.
PATH_PARAMETERS = ("weights", "base", "captioner")

_TOKEN_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


@dataclass(frozen=True)
class SourceSpec:
    """One photo source. `token` is the source's name in release file names (`COCO`, `ImageNet`, `Places`)."""

    token: str
    kind: str
    images: Path
    annotations: tuple[Path, ...] = ()
    annotation_format: str = "coco"
    annotation_masks: Path | None = None
    categories: Path | None = None
    image_list: Path | None = None
    count: int | None = None
    stem: str = "{stem}"
    max_missing: int | float = 0

    def missing_limit(self, listed: int) -> int:
        """Return how many image-list entries may be missing: `max_missing` as a count, or as a fraction of `listed`."""
        if isinstance(self.max_missing, float):
            return int(self.max_missing * listed)
        return self.max_missing

    def format_stem(self, member: str) -> str:
        """Apply the stem rule to an archive member's path.

        Fields: `stem` (file name without extension), `number` (the stem as an integer, for digit-only
        stems: `{number:011d}` turns `000000000520` into `00000000520`) and `path` (the member's path without
        extension, folders joined by `_`, for sources whose file names repeat across folders).
        """
        posix = PurePosixPath(member)
        fields = {"stem": posix.stem, "path": str(posix.with_suffix("")).replace("/", "_")}
        if posix.stem.isdigit():
            fields["number"] = int(posix.stem)
        elif "{number" in self.stem:
            raise RecipeError(f"source {self.token}: stem rule {self.stem!r} uses {{number}} but {member!r} has a non-numeric stem")
        return self.stem.format(**fields)


@dataclass(frozen=True)
class MaskRules:
    kinds: tuple[str, ...] = MASK_KINDS
    stuff: StuffRule = field(default_factory=StuffRule)
    background: BackgroundRule = field(default_factory=BackgroundRule)
    segmenter: SegmenterSpec | None = None
    workers: int = 0


@dataclass(frozen=True)
class FailureBudget:
    """How many items of a stage may fail (status `failed`) while the stage still exits with 0.

    Either `count`, failed items per shard, or `fraction`, a share of the shard's items. Each process checks
    its own shard, so with N shards a count allows up to N x count failed items in the whole stage.
    """

    count: int = 0
    fraction: float | None = None

    def allows(self, failed: int, planned: int) -> bool:
        if self.fraction is not None:
            return failed <= self.fraction * planned
        return failed <= self.count

    def __str__(self) -> str:
        if self.fraction is not None:
            return f"{self.fraction * 100:g}% of the shard's items"
        return f"{self.count} item(s) per shard"


@dataclass(frozen=True)
class Recipe:
    name: str
    seed: int
    sources: tuple[SourceSpec, ...]
    splits: dict[str, float]
    masks: MaskRules
    methods: dict[str, dict[str, Any]]
    max_pixels: int
    filter: FilterSpec | None = None
    split_list: Path | None = None
    failure_budget: FailureBudget = field(default_factory=FailureBudget)
    path: Path | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    def source(self, token: str) -> SourceSpec:
        for source in self.sources:
            if source.token == token:
                return source
        raise KeyError(token)

    def method_params(self, method: str) -> dict[str, Any]:
        """The recipe's parameters for one method, or a RecipeError that lists the recipe's methods."""
        if method not in self.methods:
            listed = ", ".join(self.methods) or "none"
            raise RecipeError(
                f"{self.path or 'recipe'}: method {method!r} is not under `methods` (the recipe lists: {listed}); "
                f"add `{method}: {{}}` under `methods` to build it"
            )
        return self.methods[method]


class _Reader:
    """Typed access to a YAML mapping that names the file and the key path in every error."""

    def __init__(self, data: Any, where: str, key: str = ""):
        self.where = where
        self.key = key
        if not isinstance(data, dict):
            if not key:
                got = "an empty file" if data is None else f"a {type(data).__name__}"
                raise RecipeError(f"{where}: a recipe must be a YAML mapping with keys such as name, seed, sources, splits; got {got}")
            raise RecipeError(f"{where}: `{key}` must be a mapping, got {type(data).__name__}")
        self.data = data

    def _path(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def fail(self, name: str, message: str) -> RecipeError:
        return RecipeError(f"{self.where}: `{self._path(name)}` {message}")

    def reject_unknown(self, allowed: set[str]) -> None:
        for name in self.data:
            if name not in allowed:
                raise self.fail(str(name), f"is not a known key; allowed here: {', '.join(sorted(allowed))}")

    def get(self, name: str, default: Any = ...) -> Any:
        if name in self.data:
            return self.data[name]
        if default is ...:
            raise self.fail(name, "is missing")
        return default

    def child(self, name: str, default: Any = ...) -> "_Reader":
        return _Reader(self.get(name, default), self.where, self._path(name))

    def integer(self, name: str, default: Any = ..., minimum: int | None = None) -> int:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, f"must be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.fail(name, f"must be at least {minimum}, got {value}")
        return value

    def number(self, name: str, default: Any = ..., low: float = 0.0, high: float = 1.0) -> float:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise self.fail(name, f"must be a number in {low}..{high}, got {value!r}")
        return float(value)

    def window(self, name: str, default: tuple[float, float]) -> tuple[float, float]:
        value = self.get(name, list(default))
        if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)):
            raise self.fail(name, f"must be two numbers [min, max], got {value!r}")
        low, high = float(value[0]), float(value[1])
        if not 0.0 <= low <= high <= 1.0:
            raise self.fail(name, f"must satisfy 0 <= min <= max <= 1 (fractions of the image), got {value!r}")
        return low, high

    def text(self, name: str, default: Any = ...) -> str:
        value = self.get(name, default)
        if not isinstance(value, str) or not value:
            raise self.fail(name, f"must be a non-empty string, got {value!r}")
        return value

    def path(self, name: str, base: Path, default: Any = ...) -> Path | None:
        value = self.get(name, default)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(name, f"must be a path, got {value!r}")
        expanded = os.path.expandvars(os.path.expanduser(value))
        if "$" in expanded:
            raise self.fail(name, f"uses an environment variable that is not set: {value!r}; export it or write the path")
        path = Path(expanded)
        return path if path.is_absolute() else (base / path).resolve()


def _parse_source(reader: _Reader, base: Path) -> SourceSpec:
    reader.reject_unknown(
        {"token", "kind", "images", "annotations", "annotation_format", "annotation_masks", "categories", "image_list", "count", "stem", "max_missing"}
    )
    token = reader.text("token")
    if not _TOKEN_PATTERN.match(token):
        raise reader.fail("token", f"must be letters and digits starting with a letter (it starts file names), got {token!r}")
    kind = reader.text("kind")
    if kind not in SOURCE_KINDS:
        raise reader.fail("kind", f"must be one of {', '.join(SOURCE_KINDS)}, got {kind!r}")
    count = reader.get("count", None)
    if count is not None:
        count = reader.integer("count", minimum=1)
    stem = reader.text("stem", "{stem}")
    fields = {name for _, name, _, _ in string.Formatter().parse(stem) if name is not None}
    if not fields or not fields <= {"stem", "number", "path"}:
        raise reader.fail("stem", f"must use {{stem}}, {{number}} or {{path}} (e.g. '{{number:011d}}'), got {stem!r}")
    annotations = _annotation_paths(reader, base)
    annotation_format = reader.text("annotation_format", "coco")
    if annotation_format not in ANNOTATION_FORMATS:
        raise reader.fail("annotation_format", f"must be one of {', '.join(ANNOTATION_FORMATS)}, got {annotation_format!r}")
    if annotation_format != "coco" and len(annotations) != 1:
        what = "the panoptic JSON file" if annotation_format == "panoptic" else "the folder or zip of label PNGs"
        raise reader.fail("annotations", f"must be one path ({what}) when `annotation_format` is {annotation_format}, got {len(annotations)}")
    annotation_masks = reader.path("annotation_masks", base, None)
    if annotation_masks is not None and annotation_format != "panoptic":
        raise reader.fail("annotation_masks", f"is only read for `annotation_format: panoptic` (the PNG folder or zip), not {annotation_format}")
    return SourceSpec(
        token=token,
        kind=kind,
        images=reader.path("images", base),
        annotations=annotations,
        annotation_format=annotation_format,
        annotation_masks=annotation_masks,
        categories=reader.path("categories", base, None),
        image_list=reader.path("image_list", base, None),
        count=count,
        stem=stem,
        max_missing=_max_missing(reader),
    )


def _max_missing(reader: _Reader) -> int | float:
    """Read `max_missing`: an integer count of image-list entries, or a fraction of them in 0..1."""
    value = reader.get("max_missing", 0)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, float) and 0.0 <= value <= 1.0:
        return value
    raise reader.fail("max_missing", f"must be a count (integer >= 0) or a fraction in 0..1 of the listed photos, got {value!r}")


def _annotation_paths(reader: _Reader, base: Path) -> tuple[Path, ...]:
    """Read `annotations`: one COCO-format file or a list of them (COCO-Stuff for stuff, instances for things)."""
    value = reader.get("annotations", None)
    if value is None:
        return ()
    values = value if isinstance(value, list) else [value]
    return tuple(_Reader({"annotations": item}, reader.where, reader.key).path("annotations", base) for item in values)


def _parse_splits(reader: _Reader) -> dict[str, float]:
    reader.reject_unknown(set(SPLITS))
    splits = {}
    for name in SPLITS:
        value = reader.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise reader.fail(name, f"must be a photo count or a fraction, got {value!r}")
        splits[name] = value
    if sum(splits.values()) <= 0:
        raise RecipeError(f"{reader.where}: `splits` must give at least one split a positive size")
    fractions = [v for v in splits.values() if isinstance(v, float) and v != int(v)]
    if fractions and abs(sum(splits.values()) - 1.0) > 1e-6:
        raise RecipeError(f"{reader.where}: `splits` given as fractions must sum to 1, got {sum(splits.values())}")
    return splits


def _parse_masks(reader: _Reader, base: Path) -> MaskRules:
    reader.reject_unknown({"kinds", "stuff", "background", "segmenter", "workers"})
    kinds = tuple(reader.get("kinds", list(MASK_KINDS)))
    for kind in kinds:
        if kind not in MASK_KINDS:
            raise reader.fail("kinds", f"must list kinds among {', '.join(MASK_KINDS)}, got {kind!r}")
    stuff = reader.child("stuff", {})
    stuff.reject_unknown({"area", "min_region", "dilate_px", "exclude_categories", "include_categories"})
    background = reader.child("background", {})
    background.reject_unknown({"area", "margin_px", "main_object", "include_crowd", "min_object"})
    include_crowd = background.get("include_crowd", False)
    if not isinstance(include_crowd, bool):
        raise background.fail("include_crowd", f"must be true or false, got {include_crowd!r}")
    segmenter = reader.get("segmenter", None)
    return MaskRules(
        kinds=kinds,
        stuff=StuffRule(
            area=stuff.window("area", StuffRule.area),
            min_region=stuff.number("min_region", StuffRule.min_region),
            dilate_px=stuff.integer("dilate_px", StuffRule.dilate_px, minimum=0),
            exclude_categories=_category_references(stuff, "exclude_categories"),
            include_categories=_category_references(stuff, "include_categories"),
        ),
        background=BackgroundRule(
            area=background.window("area", BackgroundRule.area),
            margin_px=background.integer("margin_px", BackgroundRule.margin_px, minimum=0),
            main_object=_main_object(background),
            include_crowd=include_crowd,
            min_object=background.number("min_object", BackgroundRule.min_object),
        ),
        segmenter=None if segmenter is None else _parse_segmenter(reader.child("segmenter"), base),
        workers=reader.integer("workers", 0, minimum=0),
    )


def _category_references(reader: _Reader, name: str) -> tuple[int | str, ...]:
    """Read a list of category ids or names (names match the category table of the annotations in use)."""
    value = reader.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in value):
        raise reader.fail(name, f"must be a list of category ids or names, got {value!r}")
    return tuple(value)


def _main_object(reader: _Reader) -> tuple[str, ...]:
    value = reader.get("main_object", LARGEST)
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(name, str) and name for name in names):
        raise reader.fail("main_object", f"must be `{LARGEST}`, a thing category name or a list of names, got {value!r}")
    return tuple(names)


def _parse_segmenter(reader: _Reader, base: Path) -> SegmenterSpec:
    """Read `masks.segmenter`: the model that finds regions in photos whose source has no annotations."""
    reader.reject_unknown({"backend", "weights", "device", "dtype", "batch_size", "threshold", "text_threshold", "prompts"})
    backend = reader.text("backend")
    if backend not in SEGMENTER_BACKENDS:
        raise reader.fail("backend", f"must be one of {', '.join(SEGMENTER_BACKENDS)}, got {backend!r}")
    roles = SEGMENTER_BACKENDS[backend]
    if len(roles) == 1:
        weights = {roles[0]: reader.path("weights", base)}
    else:
        folders = reader.child("weights")
        folders.reject_unknown(set(roles))
        weights = {role: folders.path(role, base) for role in roles}
    dtype = reader.text("dtype", "float32")
    if dtype not in ("float32", "float16", "bfloat16"):
        raise reader.fail("dtype", f"must be float32, float16 or bfloat16, got {dtype!r}")
    prompts = reader.get("prompts", None)
    if prompts is not None:
        if backend != "grounded-sam2":
            raise reader.fail("prompts", f"is only read by the grounded-sam2 backend, not {backend}")
        if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
            raise reader.fail("prompts", f"must map each phrase to a COCO-Stuff category name (sky: sky-other), got {prompts!r}")
    return SegmenterSpec(
        backend=backend,
        weights=weights,
        device=reader.text("device", "auto"),
        dtype=dtype,
        batch_size=reader.integer("batch_size", 1, minimum=1),
        threshold=reader.number("threshold", SegmenterSpec.threshold),
        text_threshold=reader.number("text_threshold", SegmenterSpec.text_threshold),
        prompts=None if prompts is None else tuple(prompts.items()),
    )


def check_method_parameters(recipe: Recipe) -> None:
    """Raise RecipeError, naming the recipe and the key, if a method rejects its parameters.

    Building each method imports its module (diffusers for the text-guided ones), so this runs when a
    recipe is frozen or changed, not on every load.
    """
    from inpainters import registry
    from inpainters.base import MethodError

    for name, params in recipe.methods.items():
        # The device is a runtime setting of the machine that runs the method, not checked here.
        content = {key: value for key, value in params.items() if key != "device"}
        try:
            registry.get(name)(content, device="cpu")
        except MethodError as error:
            raise RecipeError(f"{recipe.path or 'recipe'}: `methods.{name}`: {error}") from None


def _parse_methods(reader: _Reader, base: Path) -> dict[str, dict[str, Any]]:
    from inpainters import registry

    methods = {}
    for name, params in reader.data.items():
        if name not in registry.names():
            raise reader.fail(str(name), f"is not a known method; available: {', '.join(registry.names())}")
        params = {} if params is None else params
        if not isinstance(params, dict):
            raise reader.fail(str(name), f"must be a mapping of parameters, got {params!r}")
        params = dict(params)
        for key in PATH_PARAMETERS:
            if params.get(key) is not None:
                params[key] = str(_Reader(params, reader.where, f"{reader.key}.{name}").path(key, base))
        methods[name] = params
    return methods


_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def _parse_failure_budget(reader: _Reader) -> FailureBudget:
    """Read `failure_budget`: a count (integer >= 0), a fraction in 0..1 or a percentage string ('0.5%')."""
    value = reader.get("failure_budget", 0)
    usage = "must be a count of items (an integer >= 0), a fraction of the items between 0 and 1 (e.g. 0.001) or a percentage (e.g. '0.1%')"
    if isinstance(value, bool):
        raise reader.fail("failure_budget", f"{usage}, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise reader.fail("failure_budget", f"{usage}, got {value}")
        return FailureBudget(count=value)
    if isinstance(value, float):
        if not 0.0 <= value <= 1.0:
            raise reader.fail("failure_budget", f"{usage}, got {value!r}. Write an integer for a count")
        return FailureBudget(fraction=value)
    match = _PERCENT.match(value) if isinstance(value, str) else None
    if match is None or float(match.group(1)) > 100:
        raise reader.fail("failure_budget", f"{usage}, got {value!r}")
    return FailureBudget(fraction=float(match.group(1)) / 100)


def parse_recipe(data: Any, where: str, base: Path) -> Recipe:
    """Validate a recipe mapping. `where` names it in errors; relative paths resolve against `base`."""
    reader = _Reader(data, where)
    reader.reject_unknown({"name", "seed", "sources", "splits", "split_list", "masks", "methods", "decode", "filter", "failure_budget"})
    sources_data = reader.get("sources")
    if not isinstance(sources_data, list) or not sources_data:
        raise reader.fail("sources", "must be a non-empty list of sources")
    sources = tuple(_parse_source(_Reader(item, where, f"sources[{i}]"), base) for i, item in enumerate(sources_data))
    tokens = [source.token for source in sources]
    if len(set(tokens)) != len(tokens):
        raise reader.fail("sources", f"must have distinct tokens, got {tokens}")
    split_list = reader.path("split_list", base, None)
    decode = reader.child("decode", {})
    decode.reject_unknown({"max_pixels"})
    methods = _parse_methods(reader.child("methods", {}), base)
    quality_filter = parse_filter(reader.child("filter"), base, methods) if "filter" in data else None
    return Recipe(
        name=reader.text("name"),
        seed=reader.integer("seed", minimum=0),
        sources=sources,
        splits=_parse_splits(reader.child("splits")),
        masks=_parse_masks(reader.child("masks", {}), base),
        methods=methods,
        max_pixels=decode.integer("max_pixels", 89_478_485, minimum=1),
        filter=quality_filter,
        split_list=split_list,
        failure_budget=_parse_failure_budget(reader),
        raw=_resolved_raw(data, sources, split_list, base, quality_filter),
    )


def _resolved_raw(
    data: dict, sources: tuple[SourceSpec, ...], split_list: Path | None, base: Path, quality_filter: FilterSpec | None
) -> dict:
    """Return the recipe mapping with absolute paths, as it is frozen into the dataset root."""
    raw = copy.deepcopy(data)
    if split_list is not None:
        raw["split_list"] = str(split_list)
    for item, source in zip(raw["sources"], sources):
        for key in ("images", "categories", "image_list"):
            if item.get(key) is not None:
                item[key] = str(getattr(source, key))
        if item.get("annotations") is not None:
            item["annotations"] = [str(path) for path in source.annotations]
        if item.get("annotation_masks") is not None:
            item["annotation_masks"] = str(source.annotation_masks)
    segmenter = (raw.get("masks") or {}).get("segmenter")
    if isinstance(segmenter, dict) and segmenter.get("weights") is not None:
        weights = segmenter["weights"]
        if isinstance(weights, dict):
            segmenter["weights"] = {role: _absolute(path, base) for role, path in weights.items()}
        else:
            segmenter["weights"] = _absolute(weights, base)
    for params in (raw.get("methods") or {}).values():
        for key in PATH_PARAMETERS:
            if isinstance(params, dict) and params.get(key):
                params[key] = _absolute(params[key], base)
    if quality_filter is not None:
        resolve_filter_paths(raw["filter"], quality_filter.scorers)
    return raw


def _absolute(value: str, base: Path) -> str:
    path = Path(os.path.expandvars(os.path.expanduser(value)))
    return str(path if path.is_absolute() else (base / path).resolve())


def load_recipe(path: str | os.PathLike) -> Recipe:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"recipe not found: {path}; pass --recipe with the path of a recipe YAML file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: invalid YAML: {error}") from None
    recipe = parse_recipe(data, str(path), path.parent.resolve())
    return _with_path(recipe, path)


def _with_path(recipe: Recipe, path: Path) -> Recipe:
    return Recipe(**{**recipe.__dict__, "path": path})


# Keys a later recipe may add to a frozen one: a new method or a filter section changes no finished item.
ADDITIVE_KEYS = ("methods.*", "filter")


def content_differences(frozen: dict, given: dict, prefix: str = "") -> list[str]:
    """Return the key paths whose values differ between two recipe mappings.

    Runtime keys (RUNTIME_KEYS) are skipped, and so are keys that `given` adds under ADDITIVE_KEYS.
    """
    differences = []
    if isinstance(frozen, list) and isinstance(given, list) and len(frozen) == len(given):
        for i, (a, b) in enumerate(zip(frozen, given)):
            differences += content_differences(a, b, f"{prefix}.{i}" if prefix else str(i))
        return differences
    if not (isinstance(frozen, dict) and isinstance(given, dict)):
        return [] if frozen == given or _is_runtime(prefix) else [prefix or "<top>"]
    for key in sorted(set(frozen) | set(given), key=str):
        path = f"{prefix}.{key}" if prefix else str(key)
        if _is_runtime(path):
            continue
        if key not in frozen and key in given and any(fnmatch.fnmatchcase(path, pattern) for pattern in ADDITIVE_KEYS):
            continue
        if key not in frozen or key not in given:
            differences.append(path)
        else:
            differences += content_differences(frozen[key], given[key], path)
    return differences


def _is_runtime(path: str) -> bool:
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in RUNTIME_KEYS)
