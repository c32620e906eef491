"""`brgen report masks`: the contact sheet of photos with their masks overlaid."""

import numpy as np
from PIL import Image

from brgen_build.mask_sheet import CAPTION_LINES, LINE_HEIGHT, overlay
from conftest import sample_recipe_data, write_recipe
from mask_fixtures import build_masks
from test_pipeline import run_cli


def test_sheet_layout_and_determinism(tmp_path, capsys):
    root, _, _ = build_masks(tmp_path, sample_recipe_data())
    first, second = tmp_path / "first.png", tmp_path / "second.png"
    assert run_cli("report", "masks", str(root.path), "--out", str(first), "--tile-width", "160") == 0
    assert run_cli("report", "masks", str(root.path), "--out", str(second), "--tile-width", "160") == 0
    sheet = Image.open(first)
    tile_heights = [round(427 * 160 / 640), round(360 * 160 / 640)]
    assert sheet.size == (320, sum(height + CAPTION_LINES * LINE_HEIGHT + 4 for height in tile_heights))
    assert first.read_bytes() == second.read_bytes()
    assert f"wrote {first} (2 photos)" in capsys.readouterr().out


def test_sheet_kind_column_count(tmp_path):
    root, _, _ = build_masks(tmp_path, sample_recipe_data())
    out = tmp_path / "stuff.png"
    assert run_cli("report", "masks", str(root.path), "--out", str(out), "--kind", "Stuff", "--count", "1", "--tile-width", "100") == 0
    assert Image.open(out).size == (100, round(360 * 100 / 640) + CAPTION_LINES * LINE_HEIGHT + 4)


def test_overlay_tints_only_the_region():
    photo = np.full((40, 40, 3), 100, np.uint8)
    mask = np.zeros((40, 40), np.uint8)
    mask[10:30, 10:30] = 255
    result = overlay(photo, mask, 0.5)
    assert result[20, 20].tolist() == [178, 70, 70]
    assert result[2, 2].tolist() == [100, 100, 100]
    assert result[10, 10].tolist() == [255, 255, 0]


def test_root_without_masks_is_an_error(tmp_path, capsys):
    write_recipe(tmp_path, sample_recipe_data())
    assert run_cli("report", "masks", str(tmp_path)) == 2
    assert "has no finished masks; run `brgen build --stage masks" in capsys.readouterr().err
