"""The filter stage on the bundled photos: scores in the records, regeneration with the next seed, drops,
and how inpaint, verify and the report see the result."""

import json

import cv2
import numpy as np
import pytest

from brgen_build.files import read_png, sha256_file
from brgen_build.filter_report import AttemptPoint, nearest_examples, render_filter_page
from brgen_build.layout import DatasetRoot
from brgen_build.manifest import read_records
from brgen_build.stages.filter import attempt_seed, prompt_from_classes
from conftest import sample_recipe_data, write_recipe
from inpainters import registry
from inpainters.base import Inpainter, InpaintResult
from inpainters.common import binarize_mask
from inpainters.quality.base import crop_sample
from inpainters.quality.clip_score import ClipScore
from test_pipeline import run_cli, snapshot
from tiny_scorer_models import save_tiny_clip


class SeededNoise(Inpainter):
    """Telea inpainting, except that seeds listed in `noisy_seeds` fill the hole with seeded uniform noise.

    Regenerations return a prompt, as text-guided methods do.
    """

    name = "seeded-noise"
    token = "SeededNoise"
    parameters = {"noisy_seeds": []}

    def inpaint(self, requests):
        results = []
        for request in requests:
            hole, _ = binarize_mask(request.mask)
            if request.seed in self.params["noisy_seeds"]:
                noise = np.random.default_rng(request.seed).integers(0, 256, request.image.shape, dtype=np.uint8)
                image = np.where(hole[:, :, None], noise, request.image)
            else:
                image = cv2.inpaint(request.image, hole.astype(np.uint8) * 255, 3, cv2.INPAINT_TELEA)
            results.append(InpaintResult(image, {"prompt": f"grass, seed {request.seed}"}))
        return results


@pytest.fixture
def seeded_noise(monkeypatch):
    monkeypatch.setitem(registry._METHODS, "seeded-noise", "test_filter_stage:SeededNoise")


def build_until_inpaint(tmp_path, methods, filter_section, kinds=("Stuff", "Background")):
    data = sample_recipe_data()
    data["methods"] = methods
    data["masks"]["kinds"] = list(kinds)
    data["filter"] = filter_section
    recipe = write_recipe(tmp_path, data)
    root = tmp_path / "root"
    for stage in ("reals", "masks", "inpaint"):
        assert run_cli("build", "--stage", stage, "--root", str(root), "--recipe", str(recipe), "--no-progress") == 0
    return DatasetRoot(root)


# Telea's fill of a Background mask (most of the photo) scores BRISQUE 65-78 on the sample photos, its fill of
# a Stuff mask below 15: a maximum of 40 keeps the Stuff forgeries and drops the Background ones.
TELEA_FILTER = {"max_attempts": 2, "scorers": {"brisque": {}}, "thresholds": {"opencv-telea": {"brisque": {"max": 40}}}}
DROPPED = "OpenCVTelea_Background_COCO_000000142238"
KEPT = "OpenCVTelea_Stuff_COCO_000000142238"


@pytest.fixture(scope="module")
def telea_root(tmp_path_factory):
    """A root whose Telea forgeries went through the filter once; tests that change it restore it."""
    root = build_until_inpaint(tmp_path_factory.mktemp("telea"), {"opencv-telea": {"radius": 3}}, TELEA_FILTER)
    assert run_cli("filter", "--root", str(root.path), "--no-progress") == 0
    return root


def test_drop_after_every_attempt_fails(telea_root):
    record = read_records(telea_root.manifest_dir("filter/opencv-telea"))[DROPPED]
    assert record["status"] == "skipped"
    assert record["outcome"] == "dropped"
    assert [attempt["attempt"] for attempt in record["attempts"]] == [0, 1]
    assert [attempt["seed"] for attempt in record["attempts"]] == [attempt_seed(0, "opencv-telea", DROPPED, k) for k in (0, 1)]
    assert record["attempts"][0]["scores"]["brisque"] == pytest.approx(77.9403, abs=1e-3)
    assert record["attempts"][1]["failed"] == ["brisque 77.94 > max 40"]
    assert record["reason"] == "dropped by the quality filter after 2 attempt(s); last attempt: brisque 77.94 > max 40"


def test_dropped_forgery_files_are_deleted(telea_root):
    assert not telea_root.tp("val", DROPPED).exists()
    assert not telea_root.gt("val", DROPPED).exists()
    assert telea_root.tp("val", KEPT).exists()


def test_dropped_forgery_record_is_skipped(telea_root):
    forgery = read_records(telea_root.manifest_dir("inpaint/opencv-telea"))[DROPPED]
    assert forgery["status"] == "skipped"
    assert forgery["files"] == {}
    assert forgery["updated_by"] == "filter/opencv-telea"
    assert forgery["quality"]["outcome"] == "dropped"
    assert forgery["quality"]["attempts"][1]["seed"] == attempt_seed(0, "opencv-telea", DROPPED, 1)


def test_kept_forgery_record_carries_scores(telea_root):
    record = read_records(telea_root.manifest_dir("filter/opencv-telea"))[KEPT]
    forgery = read_records(telea_root.manifest_dir("inpaint/opencv-telea"))[KEPT]
    assert record["status"] == "ok"
    assert record["outcome"] == "passed"
    assert record["scores"]["brisque"] == pytest.approx(14.1292, abs=1e-3)
    assert record["attempts"][0]["prompt"] == "a photo of sky, tree, grass"
    assert record["attempts"][0]["prompt_source"] == "mask classes"
    assert record["files"]["tp"]["sha256"] == sha256_file(telea_root.tp("val", KEPT))
    assert forgery["quality"]["scores"] == record["scores"]
    assert forgery["seed"] == attempt_seed(0, "opencv-telea", KEPT, 0)


def test_thumbnails_show_the_mask_box(telea_root):
    record = read_records(telea_root.manifest_dir("filter/opencv-telea"))[DROPPED]
    thumbnail = read_png(telea_root.absolute(record["attempts"][0]["thumbnail"]))
    assert max(thumbnail.shape[:2]) == 160


def test_verify_counts_dropped_as_skipped(telea_root, capsys):
    capsys.readouterr()
    assert run_cli("verify", str(telea_root.path), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    rows = {(row["split"], row["kind"], row["method"]): row for row in report["counts"]}
    assert rows[("val", "Background", "opencv-telea")]["skipped"] == 1
    assert rows[("val", "Stuff", "opencv-telea")]["found"] == 1
    assert report["problems"] == []


def test_rerun_of_filter_and_inpaint_writes_nothing(telea_root):
    before = snapshot(telea_root)
    assert run_cli("filter", "--root", str(telea_root.path), "--no-progress") == 0
    assert run_cli("inpaint", "--method", "opencv-telea", "--root", str(telea_root.path), "--no-progress") == 0
    assert snapshot(telea_root) == before


def test_leftover_files_of_a_drop_are_deleted(telea_root):
    leftover = telea_root.tp("val", DROPPED)
    leftover.write_bytes(b"left by a crash")
    assert run_cli("filter", "--root", str(telea_root.path), "--no-progress") == 0
    assert not leftover.exists()


def test_regenerate_then_keep(tmp_path, seeded_noise, capsys):
    forgeries = ["SeededNoise_Stuff_COCO_000000142238", "SeededNoise_Stuff_COCO_000000439180"]
    noisy = [attempt_seed(0, "seeded-noise", forgery, 0) for forgery in forgeries]
    section = {"max_attempts": 3, "scorers": {"brisque": {}}, "thresholds": {"seeded-noise": {"brisque": {"max": 50}}}}
    root = build_until_inpaint(tmp_path, {"seeded-noise": {"noisy_seeds": noisy}}, section, kinds=("Stuff",))
    noisy_sha = sha256_file(root.tp("val", forgeries[0]))
    assert run_cli("build", "--stage", "filter", "--root", str(root.path), "--no-progress") == 0

    record = read_records(root.manifest_dir("filter/seeded-noise"))[forgeries[0]]
    assert record["outcome"] == "regenerated"
    assert record["accepted_attempt"] == 1
    assert record["attempts"][0]["scores"]["brisque"] > 80
    assert record["attempts"][1]["scores"]["brisque"] == pytest.approx(14.1292, abs=1e-3)
    assert record["attempts"][1]["prompt"] == f"grass, seed {attempt_seed(0, 'seeded-noise', forgeries[0], 1)}"
    assert record["attempts"][1]["prompt_source"] == "method"

    forgery = read_records(root.manifest_dir("inpaint/seeded-noise"))[forgeries[0]]
    assert forgery["seed"] == attempt_seed(0, "seeded-noise", forgeries[0], 1)
    assert forgery["quality"]["accepted_attempt"] == 1
    assert forgery["files"]["tp"]["sha256"] == sha256_file(root.tp("val", forgeries[0]))
    assert forgery["files"]["tp"]["sha256"] != noisy_sha

    capsys.readouterr()
    assert run_cli("verify", str(root.path)) == 0
    assert "OK: every expected file is present" in capsys.readouterr().out


def test_regenerated_forgery_is_stable(tmp_path, seeded_noise):
    forgery = "SeededNoise_Stuff_COCO_000000439180"
    section = {"max_attempts": 2, "scorers": {"brisque": {}}, "thresholds": {"seeded-noise": {"brisque": {"max": 50}}}}
    noisy = [attempt_seed(0, "seeded-noise", forgery, 0)]
    root = build_until_inpaint(tmp_path, {"seeded-noise": {"noisy_seeds": noisy}}, section, kinds=("Stuff",))
    assert run_cli("filter", "--root", str(root.path), "--no-progress") == 0
    kept = root.tp("train", forgery).read_bytes()
    assert run_cli("inpaint", "--method", "seeded-noise", "--root", str(root.path), "--no-progress") == 0
    assert root.tp("train", forgery).read_bytes() == kept


def test_forgery_record_prompt_is_scored(tmp_path, seeded_noise):
    # With seed 2 the tiny CLIP gives this forgery a positive score for its recorded prompt.
    clip = save_tiny_clip(tmp_path / "clip", seed=2)
    root = build_until_inpaint(tmp_path, {"seeded-noise": {}}, {"scorers": {"clip-score": {"weights": str(clip)}}}, kinds=("Stuff",))
    assert run_cli("filter", "--root", str(root.path), "--no-progress") == 0
    forgery = "SeededNoise_Stuff_COCO_000000142238"
    attempt = read_records(root.manifest_dir("filter/seeded-noise"))[forgery]["attempts"][0]
    assert attempt["prompt"] == f"grass, seed {attempt_seed(0, 'seeded-noise', forgery, 0)}"
    assert attempt["prompt_source"] == "forgery record"

    scorer = ClipScore({"weights": str(clip)}, device="cpu")
    scorer.load()
    hole = read_png(root.gt("val", forgery)) == 255
    sample = crop_sample(forgery, read_png(root.tp("val", forgery)), read_png(root.au("val", "COCO_000000142238")), hole, attempt["prompt"], "mask-box")
    expected = scorer.score([sample])[0]
    assert expected > 0
    assert attempt["scores"]["clip-score"] == pytest.approx(expected, abs=1e-3)


def test_missing_clip_weights_fail_before_work(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BRGEN_CLIP_SCORE_WEIGHTS", raising=False)
    monkeypatch.delenv("BRGEN_WEIGHTS_DIR", raising=False)
    section = {"scorers": {"brisque": {}, "clip-score": {}}}
    root = build_until_inpaint(tmp_path, {"opencv-telea": {}}, section, kinds=("Stuff",))
    capsys.readouterr()
    assert run_cli("filter", "--root", str(root.path), "--no-progress") == 2
    assert "clip-score: weight folder not found" in capsys.readouterr().err
    assert list(root.manifest_dir("filter").rglob("*.jsonl")) == []


def test_filter_stage_needs_a_filter_section(tmp_path, sample_recipe, capsys):
    assert run_cli("build", "--stage", "filter", "--root", str(tmp_path / "root"), "--recipe", str(sample_recipe)) == 2
    assert "has no `filter` section" in capsys.readouterr().err


@pytest.mark.parametrize(
    "section, message",
    [
        ({"scorers": {"brisk": {}}}, "`filter.scorers.brisk` is not a known scorer"),
        ({"scorers": {}}, "`filter.scorers` must list at least one scorer"),
        ({"scorers": {"brisque": {"crop": "box"}}}, "`filter.scorers.brisque.crop` must be one of image, mask-box"),
        ({"scorers": {"brisque": {}}, "thresholds": {"lama": {"brisque": {"max": 1}}}}, "`filter.thresholds.lama` is not a method of this recipe"),
        ({"scorers": {"brisque": {}}, "thresholds": {"opencv-telea": {"clip-score": {"min": 1}}}}, "`filter.thresholds.opencv-telea.clip-score` has no scorer"),
        ({"scorers": {"brisque": {}}, "thresholds": {"opencv-telea": {"brisque": {}}}}, "`filter.thresholds.opencv-telea.brisque` must set `min`, `max` or both"),
        ({"scorers": {"brisque": {}}, "thresholds": {"opencv-telea": {"brisque": {"min": 5, "max": 1}}}}, "has min 5 above max 1"),
        ({"scorers": {"brisque": {}}, "thresholds": {"opencv-telea": {"brisque": {"max": "low"}}}}, "`filter.thresholds.opencv-telea.brisque.max` must be a number"),
        ({"scorers": {"brisque": {}}, "max_attempts": 0}, "`filter.max_attempts` must be at least 1"),
        ({"scorers": {"brisque": {}}, "retries": 2}, "`filter.retries` is not a known key"),
    ],
)
def test_recipe_filter_errors_name_the_key(tmp_path, capsys, section, message):
    data = sample_recipe_data()
    data["methods"] = {"opencv-telea": {}}
    data["filter"] = section
    recipe = write_recipe(tmp_path, data)
    assert run_cli("build", "--stage", "reals", "--root", str(tmp_path / "root"), "--recipe", str(recipe)) == 2
    assert message in capsys.readouterr().err


def test_scorer_weights_may_move(tmp_path, capsys):
    data = sample_recipe_data()
    data["methods"] = {"opencv-telea": {}}
    data["filter"] = {"scorers": {"brisque": {"weights": str(tmp_path / "a")}}}
    first = write_recipe(tmp_path, data, "first.yaml")
    data["filter"]["scorers"]["brisque"]["weights"] = str(tmp_path / "b")
    moved = write_recipe(tmp_path, data, "moved.yaml")
    root = str(tmp_path / "root")
    assert run_cli("build", "--stage", "reals", "--root", root, "--recipe", str(first), "--no-progress") == 0
    assert run_cli("build", "--stage", "reals", "--root", root, "--recipe", str(moved), "--no-progress") == 0


def test_prompt_from_classes():
    stuff = {"kind": "Stuff", "classes": [{"name": "sky-other-merged"}, {"name": "tree-merged"}, {"name": "sky-other-merged"}]}
    background = {"kind": "Background", "classes": [{"name": "person"}]}
    assert prompt_from_classes(stuff) == "a photo of sky, tree"
    assert prompt_from_classes(background) == "the background around a person"


def test_nearest_examples_split_at_bound():
    points = [AttemptPoint(f"f{i}", 0, value, value <= 40, None) for i, value in enumerate([10, 38, 39.5, 40, 41, 45, 90])]
    kept, rejected = nearest_examples(points, 40, keep_above=False, count=2)
    assert [point.value for point in kept] == [40, 39.5]
    assert [point.value for point in rejected] == [41, 45]


def test_report_page_shows_outcomes_and_examples(telea_root):
    page = render_filter_page(telea_root, examples=1)
    assert "<h3>opencv-telea</h3>" in page
    assert "<tr><td>4</td><td>2</td><td>0</td><td>2</td><td>6</td></tr>" in page
    assert page.count("<svg") == 1
    assert page.count('src="data:image/png;base64,') == 2
    assert "Nearest rejected by max 40:" in page


def test_report_command_writes_page(telea_root, capsys):
    out = telea_root.path / "page.html"
    assert run_cli("report", "filter", str(telea_root.path), "--out", str(out)) == 0
    assert out.read_text().startswith("<!doctype html>")


def test_filter_help_deletes_only_after_every_attempt(capsys):
    assert run_cli("filter", "--help") == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "Only when every attempt misses the thresholds are its Tp and Gt files deleted" in help_text


def test_lost_filter_manifest_is_rebuilt(tmp_path, seeded_noise):
    forgery = "SeededNoise_Stuff_COCO_000000439180"
    section = {"max_attempts": 2, "scorers": {"brisque": {}}, "thresholds": {"seeded-noise": {"brisque": {"max": 50}}}}
    noisy = [attempt_seed(0, "seeded-noise", forgery, 0)]
    root = build_until_inpaint(tmp_path, {"seeded-noise": {"noisy_seeds": noisy}}, section, kinds=("Stuff",))
    assert run_cli("filter", "--root", str(root.path), "--no-progress") == 0
    kept = sha256_file(root.tp("train", forgery))
    for path in root.manifest_dir("filter/seeded-noise").iterdir():
        path.unlink()

    assert run_cli("filter", "--root", str(root.path), "--no-progress") == 0
    record = read_records(root.manifest_dir("filter/seeded-noise"))[forgery]
    assert record["outcome"] == "regenerated"
    assert [attempt["attempt"] for attempt in record["attempts"]] == [0, 1]
    assert record["attempts"][0]["seed"] == noisy[0]
    assert record["attempts"][0]["passed"] is False
    assert sha256_file(root.tp("train", forgery)) == kept


def test_lost_filter_record_of_drop_is_rebuilt(tmp_path):
    root = build_until_inpaint(tmp_path, {"opencv-telea": {"radius": 3}}, TELEA_FILTER, kinds=("Background",))
    assert run_cli("filter", "--root", str(root.path), "--no-progress") == 0
    for path in root.manifest_dir("filter/opencv-telea").iterdir():
        path.unlink()

    assert run_cli("filter", "--root", str(root.path), "--no-progress") == 0
    record = read_records(root.manifest_dir("filter/opencv-telea"))[DROPPED]
    assert record["status"] == "skipped"
    assert record["outcome"] == "dropped"
    assert len(record["attempts"]) == 2
    assert not root.tp("val", DROPPED).exists()


def test_docs_filter_example_parses(monkeypatch):
    import yaml

    from brgen_build.recipe import parse_recipe
    from conftest import SAMPLE_DIR

    guide = (SAMPLE_DIR.parents[1] / "docs" / "filter.md").read_text()
    block = guide.split("```yaml\n", 1)[1].split("```", 1)[0]
    monkeypatch.setenv("BRGEN_WEIGHTS_DIR", "/weights")
    data = sample_recipe_data()
    data["methods"] = {"lama": {}}
    data.update(yaml.safe_load(block))
    recipe = parse_recipe(data, "docs/filter.md", SAMPLE_DIR)
    assert recipe.filter.scorers["clip-score"]["weights"] == "/weights/clip-vit-large-patch14"
    assert recipe.filter.method_thresholds("lama")["embedding-distance"].min == 0.01
