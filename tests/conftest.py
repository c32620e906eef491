"""Shared fixtures: recipes for the bundled sample written into a temporary folder."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from pathlib import Path

import pytest
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


@pytest.fixture
def sample_recipe(tmp_path) -> Path:
    """Path of a recipe for the two bundled photos, with only the weight-free method."""
    data = sample_recipe_data()
    data["methods"] = {"opencv-telea": {"radius": 3}}
    return write_recipe(tmp_path, data)


def run_cli(*args: str) -> int:
    """Run the brgen CLI in-process and return its exit code."""
    from brgen_build.cli import main

    try:
        main(list(args))
    except SystemExit as exit:
        return exit.code or 0
    return 0
