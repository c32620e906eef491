"""report and status on the built sample: the HTML page, its figures, a headless-browser screenshot."""

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from brgen_build.catalog import Catalog, reason_pattern
from brgen_build.dataset_report import build_report
from brgen_build.layout import DatasetRoot
from brgen_build.manifest import ManifestWriter
from brgen_build.status import StageProgress, format_status, stage_progress
from conftest import run_cli

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture
def root(built_root) -> DatasetRoot:
    return built_root


def add_skipped_masks(root: DatasetRoot) -> None:
    with ManifestWriter(root.manifest_dir("masks") / "shard-0-of-1.jsonl") as writer:
        for number, share in (("000000000520", 0.043), ("000000000521", 0.051)):
            writer.append({
                "id": f"Stuff_COCO_{number}", "split": "train", "stage": "masks", "status": "skipped",
                "reason": f"Stuff region covers {share:.1%} of the image, outside the recipe's area window [10%, 80%]",
            })


def test_report_writes_page_and_figures(root):
    add_skipped_masks(root)
    page = build_report(root)
    assert page == root.path / "reports" / "dataset" / "report.html"
    names = sorted(path.name for path in page.parent.glob("*.png"))
    assert names == [
        "contact-opencv-telea-Background.png", "contact-opencv-telea-Stuff.png",
        "mask-area-Background.png", "mask-area-Stuff.png", "time-per-forgery.png",
    ]
    with Image.open(page.parent / "contact-opencv-telea-Stuff.png") as sheet:
        assert sheet.width == 8 + 3 * (256 + 8)
    html = page.read_text()
    assert html.count('src="data:image/png;base64,') == 5
    assert "opencv-telea, Stuff masks: 2 of 2 forgeries" in html
    assert "Stuff region covers N% of the image, outside the recipe&#x27;s area window [N%, N%]" in html
    assert "<td>2</td>" in html


def test_report_command_defaults_to_dataset(root, tmp_path, capsys):
    assert run_cli("report", str(root.path), "--out", str(tmp_path / "a")) == 0
    assert run_cli("report", "dataset", str(root.path), "--out", str(tmp_path / "b")) == 0
    assert (tmp_path / "a" / "report.html").is_file()
    assert (tmp_path / "b" / "report.html").is_file()


def test_reason_pattern_groups_numbers_and_files():
    assert reason_pattern("/data/coco.zip: train2017/000000000520.jpg: decoding failed: truncated") == "<file>: <file>: decoding failed: truncated"
    assert reason_pattern("Stuff covers 4.3% of the image") == "Stuff covers N% of the image"


def test_status_counts_stages(root):
    add_skipped_masks(root)
    lines = format_status(stage_progress(Catalog.load(root), root.load_recipe(None))).splitlines()
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert list(rows) == ["reals", "masks", "inpaint/opencv-telea"]
    # columns: stage, bar, done/expected, skipped, failed, pending
    assert rows["reals"][1:6] == ["[########################]", "2/2", "0", "0", "0"]
    assert rows["masks"][2:6] == ["6/6", "2", "0", "0"]
    assert rows["inpaint/opencv-telea"][2:6] == ["4/4", "0", "0", "0"]


def test_status_lists_pending_method(root):
    recipe = root.recipe_path.read_text()
    root.recipe_path.write_text(recipe.replace("methods:\n  opencv-telea:", "methods:\n  lama: {}\n  opencv-telea:"))
    lines = format_status(stage_progress(Catalog.load(root), root.load_recipe(None))).splitlines()
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["inpaint/lama"][1:6] == ["[........................]", "0/4", "0", "0", "4"]


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.skipif(find_chromium() is None, reason="no chromium binary on PATH (Debian: apt-get install chromium; .ci/run installs it)")
def test_report_renders_in_headless_chromium(root, tmp_path):
    page = build_report(root)
    screenshot = tmp_path / "screenshot.png"
    command = [
        find_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,1400", f"--screenshot={screenshot}", page.as_uri(),
    ]
    subprocess.run(command, check=True, timeout=120, capture_output=True)
    with Image.open(screenshot) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape == (1400, 1000, 3)
    # The page is mostly white; the title, tables and the first contact sheet make a good share of it darker.
    assert float(np.mean(pixels.min(axis=2) < 200)) > 0.05


def test_status_method_before_masks(root):
    for stage in ("masks", "inpaint/opencv-telea"):
        for path in root.manifest_dir(stage).glob("*.jsonl"):
            path.unlink()
    lines = format_status(stage_progress(Catalog.load(root), root.load_recipe(None))).splitlines()
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["inpaint/opencv-telea"][1:6] == ["[........................]", "-", "0", "0", "0"]


@pytest.mark.parametrize(
    ("pending", "median_seconds", "estimate"),
    [(3, 2.0, "~6 s left in one process"), (30, 10.0, "~5 min left in one process"),
     (5400, 1.0, "~1.5 h left in one process"), (2, 0.1, None)],
)
def test_status_time_left_units(pending, median_seconds, estimate):
    progress = StageProgress("masks", 10 + pending, 10, 0, 0, "", median_seconds)
    line = format_status([progress]).splitlines()[1]
    if estimate is None:
        assert "left in one process" not in line
    else:
        assert line.endswith(f"  {estimate}")
