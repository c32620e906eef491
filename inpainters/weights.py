"""The weight registry: which files each method loads, where they are on disk, and how to load them safely.

`manifests/weights.yaml` lists every component of every method: its source (a URL, a Hugging Face
repository, or a page to download from by hand), the hash the upstream publishes, its licence and origin.
A method gets a component's local path from `resolve(method, component, explicit)`, which takes the first
that is set of: the explicit path (the recipe's or the command line's `weights`), the component's environment
variable, and the weights folder (`weights_dir()`). When the component is not at that path,
`MissingWeightsError` names the file, where it comes from and what to do.

Nothing here downloads; `inpainters.fetch` does, and only `brgen weights fetch` calls it.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml

from brgen_build.errors import BrgenError
from inpainters.base import MethodError

logger = logging.getLogger(__name__)

# Written by `brgen weights fetch` into each Hugging Face download folder: the commit and the file hashes.
FETCH_RECORD = ".brgen-fetch.json"
# The label `locate` gives a path in the weights folder, used when no parameter or environment variable is set.
WEIGHTS_FOLDER = "the weights folder"

_COMPONENT_KEYS = {
    "description", "url", "file", "md5", "sha256", "repo", "revision", "allow_patterns", "subfolder",
    "manual", "path", "required", "size", "licence", "origin", "env", "optional", "file_patterns",
}


class MissingWeightsError(MethodError):
    """A component's files are not on disk. The message names where they come from and the fetch command."""


class RegistryError(BrgenError):
    """The weight registry file is invalid; the message names the entry and the key."""


@dataclass(frozen=True)
class Component:
    """One downloadable part of a method's weights, as `manifests/weights.yaml` describes it."""

    method: str
    name: str
    description: str
    licence: str
    origin: str
    url: str | None = None
    file: str | None = None
    md5: str | None = None
    sha256: str | None = None
    repo: str | None = None
    revision: str = "main"
    allow_patterns: tuple[str, ...] = ()
    subfolder: str | None = None
    manual: str | None = None
    path: str | None = None
    required: tuple[str, ...] = ()
    size: int | None = None
    env: str | None = None
    optional: bool = False
    file_patterns: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        """`url`, `hub` or `manual`."""
        if self.url:
            return "url"
        return "hub" if self.repo else "manual"

    @property
    def digest(self) -> tuple[str, str] | None:
        """(algorithm, hex digest) that the upstream publishes for a single-file component, if any."""
        if self.sha256:
            return "sha256", self.sha256
        if self.md5:
            return "md5", self.md5
        return None

    @property
    def single_file(self) -> bool:
        """Whether the component is one file (`file`) rather than a folder with `required` files."""
        return self.file is not None

    def download_path(self, root: Path) -> Path:
        """Return the path `brgen weights fetch` writes this component to: the file, or the folder of a download.

        A Hub component goes to `hub/<repo>` unless it names a `path`. A manual one goes to `path`, or to
        `path/file` when it is a single file.
        """
        if self.source == "url":
            return root / self.method / self.file
        if self.source == "hub":
            return root / (self.path or f"hub/{self.repo}")
        return root / self.path / self.file if self.single_file else root / self.path

    def default_path(self, root: Path) -> Path:
        """Return the path a method loads when nothing overrides it: the file, or the folder with `required` files."""
        folder = self.download_path(root)
        return folder / self.subfolder if self.source == "hub" and self.subfolder else folder

    def where_from(self) -> str:
        if self.source == "url":
            algorithm, value = self.digest or ("", "")
            return f"{self.url}" + (f" ({algorithm} {value})" if value else "")
        if self.source == "hub":
            inside = f", folder {self.subfolder}" if self.subfolder else ""
            return f"https://huggingface.co/{self.repo} (revision {self.revision}{inside})"
        return f"{self.manual} (download by hand)"

    def fetch_command(self) -> str:
        command = f"brgen weights fetch {self.method}"
        return f"{command} --component {self.name}" if self.optional else command

    def missing_files(self, path: Path) -> list[str]:
        """Return the `required` patterns with no match under `path`, or [file name] when a file component is absent.

        A file whose name matches `file_patterns` stands for the whole folder (an original weight file that
        the loading code converts).
        """
        if self.single_file:
            return [] if path.is_file() else [self.file]
        if path.is_file() and any(fnmatch.fnmatch(path.name, pattern) for pattern in self.file_patterns):
            return []
        if not path.is_dir():
            return list(self.required) or [path.name]
        return [pattern for pattern in self.required if not any(path.glob(pattern))]


def weights_dir() -> Path:
    """Return the folder `brgen weights fetch` writes to: $BRGEN_WEIGHTS_DIR, else `brgen` under the Hugging Face home."""
    value = os.environ.get("BRGEN_WEIGHTS_DIR")
    if value:
        return Path(value).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HOME).expanduser() / "brgen"


def registry_path() -> Path:
    from manifests import data_path

    return data_path("weights.yaml")


@functools.lru_cache(maxsize=4)
def load_registry(path: Path | None = None) -> dict[str, dict[str, Component]]:
    """Parse the registry into {method: {component name: Component}}; an invalid entry raises RegistryError."""
    path = path or registry_path()
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise RegistryError(f"{path}: expected a mapping of methods to components")
    registry = {}
    for method, entries in data.items():
        if not isinstance(entries, dict) or not entries:
            raise RegistryError(f"{path}: method {method!r} must map component names to their fields")
        registry[method] = {name: _parse_component(path, method, name, fields) for name, fields in entries.items()}
    return registry


def _parse_component(path: Path, method: str, name: str, fields) -> Component:
    where = f"{path}: {method}.{name}"
    if not isinstance(fields, dict):
        raise RegistryError(f"{where} must be a mapping of fields")
    unknown = sorted(set(fields) - _COMPONENT_KEYS)
    if unknown:
        raise RegistryError(f"{where} has unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(_COMPONENT_KEYS))}")
    for key in ("description", "licence", "origin"):
        if not fields.get(key):
            raise RegistryError(f"{where} needs `{key}`")
    sources = [key for key in ("url", "repo", "manual") if fields.get(key)]
    if len(sources) != 1:
        raise RegistryError(f"{where} needs exactly one of `url`, `repo` or `manual`, got {sources or 'none'}")
    if fields.get("url") and not fields.get("file"):
        raise RegistryError(f"{where} has a `url` but no `file` name")
    if fields.get("repo") and fields.get("file"):
        raise RegistryError(f"{where} has a `repo` and a `file`; a Hub component is a folder, so list its files under `required`")
    if fields.get("manual") and not fields.get("path"):
        raise RegistryError(f"{where} has a `manual` source but no `path` to put the files")
    values = dict(fields)
    for key in ("allow_patterns", "required", "file_patterns"):
        values[key] = tuple(values.get(key) or ())
    return Component(method=method, name=name, **values)


def components(method: str) -> dict[str, Component]:
    """Return the registry's components of `method`, or {} for a method without weights."""
    return load_registry().get(method, {})


def component(method: str, name: str) -> Component:
    entries = components(method)
    if name not in entries:
        listed = ", ".join(entries) or "none"
        raise MethodError(f"{method}: no weight component {name!r} in {registry_path()} (components: {listed})")
    return entries[name]


def locate(entry: Component, explicit: str | os.PathLike | None = None, parameter: str = "weights") -> tuple[Path, str]:
    """Return the one path where a component is looked for, and what chose that path.

    The explicit path (the recipe's or the command line's `parameter`, `weights` by default) wins, then the
    component's environment variable, then the weights folder. The second value is `$VARIABLE`,
    WEIGHTS_FOLDER, or a phrase that names the parameter.
    """
    if explicit:
        return Path(explicit).expanduser(), f"the `{parameter}` parameter"
    if entry.env and os.environ.get(entry.env):
        return Path(os.environ[entry.env]).expanduser(), f"${entry.env}"
    return entry.default_path(weights_dir()), WEIGHTS_FOLDER


def missing_advice(entry: Component, found_by: str) -> str:
    """Return what to do about a component that is missing at the path that `found_by` (from `locate`) chose.

    `brgen weights fetch` only writes into the weights folder, so for a path from a variable or a parameter
    the advice is to correct that path or drop it, and then to get the component into the folder.
    """
    root = weights_dir()
    if entry.source == "manual":
        obtain = f"download it by hand from {entry.manual} into {entry.default_path(root)}"
    else:
        obtain = f"fetch it with `{entry.fetch_command()}`"
    if found_by == WEIGHTS_FOLDER:
        return obtain
    if found_by.startswith("$"):
        return f"correct {found_by} or unset it, so that the weights folder {root} is used ({obtain})"
    fallback = f"${entry.env} or the weights folder" if entry.env else "the weights folder"
    return f"correct that path, or leave it out to use {fallback} {root} ({obtain})"


def resolve(method: str, name: str, explicit: str | os.PathLike | None = None, parameter: str = "weights") -> Path:
    """Return the local path of a component, or raise MissingWeightsError before any work starts.

    Args:
        method: the method's name (`lama`).
        name: the component (`generator`).
        explicit: a path from the recipe or the command line; when given, it is the only place looked at.
        parameter: the method parameter `explicit` came from, for the error message.
    """
    entry = component(method, name)
    path, label = locate(entry, explicit, parameter)
    missing = entry.missing_files(path)
    if not missing:
        return path
    advice = missing_advice(entry, label)
    if label == WEIGHTS_FOLDER:
        given = "pass --weights PATH" if parameter == "weights" else f"set `{parameter}` in the recipe"
        advice += f" (into {weights_dir()}), or {given}" + (f" or set {entry.env}=PATH" if entry.env else "")
    raise MissingWeightsError(
        f"{method}: weight file {', '.join(missing)} not found at {path} (from {label}). "
        f"It is the {entry.description}, from {entry.where_from()}. {advice[0].upper()}{advice[1:]}"
    )


def file_digest(path: str | os.PathLike, algorithm: str = "sha256", chunk_size: int = 1 << 20) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_sha1(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Compute a file's git object id: sha1 over `blob <size>\\0` and the content (the Hub lists it for non-LFS files)."""
    digest = hashlib.sha1(f"blob {os.path.getsize(path)}\0".encode())
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_record(method: str, name: str, path: Path) -> dict:
    """Return the facts recorded with every forgery about a single-file component: path, hash, and whether it is the official file."""
    entry = component(method, name)
    algorithm, expected = entry.digest or ("sha256", None)
    actual = file_digest(path, algorithm)
    if expected and actual != expected:
        logger.warning("%s: %s has %s %s, not the official %s; using it as given", method, path, algorithm, actual, expected)
    return {"file": str(path), algorithm: actual, "official": actual == expected}


def load_torchscript(path: Path, device: str, method: str):
    """Load a TorchScript archive as it is (it contains code and weights, and runs no pickle)."""
    import torch

    try:
        with warnings.catch_warnings():
            # Some official weights exist only as TorchScript, which torch 2.10+ marks as deprecated.
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*is deprecated", category=DeprecationWarning)
            return torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as error:
        raise MethodError(f"{method}: {path} is not a loadable TorchScript file ({error}); fetch it again with `brgen weights fetch {method}`") from None


def load_state_dict(path: Path, method: str) -> dict:
    """Load a state dict without running pickled code: safetensors as is, anything else with weights_only=True."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError or OSError for damaged files
        raise MethodError(f"{method}: cannot load {path} as a state dict ({type(error).__name__}: {error}); fetch it again with `brgen weights fetch {method}`") from None
    if not isinstance(state, dict):
        raise MethodError(f"{method}: {path} contains a {type(state).__name__}, not a state dict (a mapping of names to tensors)")
    return state


@dataclass
class Verification:
    """The outcome of checking one component on disk.

    Attributes:
        status: `ok`, `mismatch`, `missing` or `unverified` (present, but no hash to compare with).
        path: the component's path.
        details: one line per problem or per unverifiable file.
    """

    status: str
    path: Path
    details: list[str]


def verify(entry: Component, path: Path) -> Verification:
    """Hash a component's files and compare them with the registry (files) or the fetch record (Hub downloads)."""
    missing = entry.missing_files(path)
    if missing:
        return Verification("missing", path, [f"not found: {name}" for name in missing])
    if entry.source == "url":
        if not entry.digest:
            return Verification("unverified", path, ["the registry has no hash for this file"])
        algorithm, expected = entry.digest
        actual = file_digest(path, algorithm)
        if actual != expected:
            return Verification("mismatch", path, [f"{algorithm} {actual}, expected {expected}"])
        return Verification("ok", path, [])
    if entry.source == "manual":
        return Verification("unverified", path, ["no published hash for a component downloaded by hand"])
    return _verify_hub_folder(entry, path)


def _verify_hub_folder(entry: Component, path: Path) -> Verification:
    record_path = entry.download_path(weights_dir()) / FETCH_RECORD
    if path.resolve() != entry.default_path(weights_dir()).resolve() or not record_path.is_file():
        return Verification("unverified", path, [f"no hashes recorded; `{entry.fetch_command()}` records them from the Hub"])
    record = json.loads(record_path.read_text())
    root = record_path.parent
    problems, checked = [], 0
    for name, expected in sorted(record.get("files", {}).items()):
        if entry.allow_patterns and not any(fnmatch.fnmatch(name, pattern) for pattern in entry.allow_patterns):
            continue
        file_path = root / name
        if not file_path.is_file():
            problems.append(f"not found: {name}")
            continue
        checked += 1
        if "sha256" in expected:
            actual, wanted, algorithm = file_digest(file_path), expected["sha256"], "sha256"
        else:
            actual, wanted, algorithm = git_blob_sha1(file_path), expected["git_sha1"], "git sha1"
        if actual != wanted:
            problems.append(f"{name}: {algorithm} {actual}, expected {wanted}")
    if problems:
        status = "mismatch" if any(not line.startswith("not found") for line in problems) else "missing"
        return Verification(status, path, problems)
    return Verification("ok", path, [f"{checked} files match commit {record.get('commit', '?')}"])
