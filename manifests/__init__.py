"""Data files shipped with brgen: recipes, category tables and the bundled sample."""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent


def data_path(*parts: str) -> Path:
    """Path of a file shipped in this folder, e.g. `data_path("recipes", "br-gen.yaml")`."""
    return DATA_DIR.joinpath(*parts)
