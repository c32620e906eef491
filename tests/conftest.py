"""Shared fixtures: recipes for the bundled sample written into a temporary folder, and one torch thread."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from manifests import data_path

SAMPLE_DIR = data_path("sample")


def sample_recipe_data() -> dict:
    """The bundled sample recipe with absolute paths, ready to be changed by a test."""
    data = yaml.safe_load((SAMPLE_DIR / "recipe.yaml").read_text())
    source = data["sources"][0]
    for key in ("images", "annotations", "categories"):
        source[key] = str((SAMPLE_DIR / source[key]).resolve())
    return data


def write_recipe(folder: Path, data: dict, name: str = "recipe.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def read_listing(path: Path) -> dict[str, tuple[str, str]]:
    """{name: (kind, shape)} from a state-dict listing written by tests/data/listings/make_listings.py."""
    rows = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or line.startswith("name\t"):
            continue
        name, kind, shape, _dtype = line.split("\t")
        rows[name] = (kind, shape)
    return rows


def describe_state(model: torch.nn.Module) -> dict[str, tuple[str, str]]:
    """{name: (kind, shape)} of a model's state dict, in the listing format."""
    parameters = {name for name, _ in model.named_parameters()}
    return {
        name: ("parameter" if name in parameters else "buffer", "x".join(str(size) for size in tensor.shape) or "scalar")
        for name, tensor in model.state_dict().items()
    }


def sample_photo(name: str = "000000142238.jpg") -> np.ndarray:
    """Return a bundled COCO photo as an HxWx3 uint8 RGB array."""
    from PIL import Image

    with Image.open(SAMPLE_DIR / "images" / name) as image:
        return np.asarray(image.convert("RGB"))


def read_forgery(root, split: str, real_id: str, forgery_id: str):
    """Return (real photo, forgery, hole) arrays of one forgery in a built dataset root."""
    from brgen_build.files import read_png

    real = read_png(root.au(split, real_id))
    forgery = read_png(root.tp(split, forgery_id))
    hole = read_png(root.gt(split, forgery_id)) == 255
    return real, forgery, hole


@pytest.fixture(autouse=True)
def isolated_weights(tmp_path_factory, monkeypatch):
    """Point the weights folder at an empty temporary one, so that no test finds weights installed on the machine."""
    from inpainters.weights import load_registry

    monkeypatch.setenv("BRGEN_WEIGHTS_DIR", str(tmp_path_factory.mktemp("weights")))
    for entries in load_registry().values():
        for entry in entries.values():
            if entry.env:
                monkeypatch.delenv(entry.env, raising=False)


@pytest.fixture
def one_thread():
    """Run torch on one CPU thread: tiny models are dominated by per-operation overhead, which threads add to."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def sample_recipe(tmp_path) -> Path:
    """Path of a recipe for the two bundled photos, with only the weight-free method."""
    data = sample_recipe_data()
    data["methods"] = {"opencv-telea": {"radius": 3}}
    return write_recipe(tmp_path, data)


@pytest.fixture(scope="session")
def built_sample(tmp_path_factory) -> Path:
    """The two bundled photos built once per session with opencv-telea (reals, masks, forgeries).

    Tests that change files must work on a copy (see `shutil.copytree`).
    """
    from brgen_build.cli import main

    folder = tmp_path_factory.mktemp("built-sample")
    data = sample_recipe_data()
    data["methods"] = {"opencv-telea": {"radius": 3}}
    recipe = write_recipe(folder, data)
    root = folder / "root"
    main(["build", "--stage", "all", "--root", str(root), "--recipe", str(recipe), "--no-progress"])
    return root


@pytest.fixture
def built_root(built_sample, tmp_path):
    """A copy of `built_sample` that the test may change."""
    from brgen_build.layout import DatasetRoot

    shutil.copytree(built_sample, tmp_path / "root")
    return DatasetRoot(tmp_path / "root")


def run_cli(*args: str) -> int:
    """Run `brgen ARGS...` in this process and return its exit code."""
    from brgen_build.cli import main

    try:
        main(list(args))
    except SystemExit as exit:
        return exit.code or 0
    return 0


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run torch on one thread: tiny models gain nothing from more, and the test machine's cores are shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
