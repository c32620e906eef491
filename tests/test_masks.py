"""Stuff and Background masks of the two bundled COCO photos, checked against the annotations' RLE."""

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from brgen_build.files import read_png
from conftest import SAMPLE_DIR, sample_recipe_data
from mask_fixtures import build_masks

PHOTOS = {"COCO_000000142238": 142238, "COCO_000000439180": 439180}


def reference_pixels(image_id: int):
    """Stuff and largest non-crowd thing of one image, straight from the RLE and the panoptic isthing table."""
    annotations = json.loads((SAMPLE_DIR / "annotations.json").read_text())
    isthing = {c["id"]: c["isthing"] for c in json.loads((SAMPLE_DIR.parent / "categories" / "coco_panoptic.json").read_text())}
    image = next(i for i in annotations["images"] if i["id"] == image_id)
    stuff = np.zeros((image["height"], image["width"]), bool)
    largest = 0
    for annotation in annotations["annotations"]:
        if annotation["image_id"] != image_id:
            continue
        rle = dict(annotation["segmentation"], counts=annotation["segmentation"]["counts"].encode())
        if isthing[annotation["category_id"]]:
            if not annotation["iscrowd"]:
                largest = max(largest, int(mask_utils.area(rle)))
        else:
            stuff |= mask_utils.decode(rle).astype(bool)
    return stuff, largest, image["height"] * image["width"]


def test_mask_areas_match_the_rle(tmp_path):
    data = sample_recipe_data()
    data["masks"]["background"]["margin_px"] = 0
    root, records, summary = build_masks(tmp_path, data)
    assert summary.counts["ok"] == 4
    for photo, image_id in PHOTOS.items():
        stuff, largest, total = reference_pixels(image_id)
        stuff_record = records[f"Stuff_{photo}"]
        background_record = records[f"Background_{photo}"]
        assert stuff_record["area_ratio"] == pytest.approx(stuff.sum() / total, abs=1e-6)
        assert background_record["area_ratio"] == pytest.approx(1 - largest / total, abs=1e-6)
        mask = read_png(root.absolute(stuff_record["files"]["mask"]["path"]))
        assert np.array_equal(mask == 255, stuff)


def test_records_name_the_chosen_classes(tmp_path):
    _, records, _ = build_masks(tmp_path, sample_recipe_data())
    names = sorted(c["name"] for c in records["Stuff_COCO_000000142238"]["classes"])
    assert names == ["grass-merged", "sky-other-merged", "tree-merged"]
    assert [c["name"] for c in records["Background_COCO_000000439180"]["classes"]] == ["truck"]
    assert records["Stuff_COCO_000000439180"]["bbox"] == [0, 0, 640, 360]


def test_margin_grows_the_kept_object(tmp_path):
    data = sample_recipe_data()
    (tmp_path / "tight").mkdir()
    (tmp_path / "wide").mkdir()
    data["masks"]["background"]["margin_px"] = 0
    _, tight, _ = build_masks(tmp_path / "tight", data)
    data["masks"]["background"]["margin_px"] = 9
    _, wide, _ = build_masks(tmp_path / "wide", data)
    for photo in PHOTOS:
        assert wide[f"Background_{photo}"]["area_ratio"] < tight[f"Background_{photo}"]["area_ratio"]


def test_area_window_skips_with_reason(tmp_path):
    data = sample_recipe_data()
    data["masks"]["stuff"]["area"] = [0.9, 1.0]
    _, records, summary = build_masks(tmp_path, data)
    record = records["Stuff_COCO_000000142238"]
    assert record["status"] == "skipped"
    assert "outside the recipe's area window" in record["reason"]
    assert summary.counts["skipped"] == 2


def test_short_polygon_is_skipped_and_recorded(tmp_path):
    annotations = json.loads((SAMPLE_DIR / "annotations.json").read_text())
    annotations["annotations"].append(
        {"id": 8841, "image_id": 142238, "category_id": 1, "iscrowd": 0, "segmentation": [[10, 10, 20, 20]], "area": 0, "bbox": [0, 0, 1, 1]}
    )
    annotations["annotations"].append(
        {"id": 8842, "image_id": 142238, "category_id": 1, "iscrowd": 0, "segmentation": [[10, 10, 20, 20, 30]], "area": 0, "bbox": [0, 0, 1, 1]}
    )
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(annotations))
    data = sample_recipe_data()
    data["sources"][0]["annotations"] = str(path)
    _, records, summary = build_masks(tmp_path, data)
    problems = records["Stuff_COCO_000000142238"]["problems"]
    assert summary.counts["failed"] == 0
    assert "annotation 8841 of image 142238 has a polygon with 4 coordinates (needs at least 6); skipped" in problems
    assert "annotation 8842 of image 142238 has a polygon with 5 coordinates (needs at least 6); skipped" in problems
    assert records["Stuff_COCO_000000142238"]["status"] == "ok"


def test_rle_of_wrong_size_is_skipped(tmp_path):
    annotations = json.loads((SAMPLE_DIR / "annotations.json").read_text())
    annotations["annotations"][0]["segmentation"]["size"] = [10, 10]
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(annotations))
    data = sample_recipe_data()
    data["sources"][0]["annotations"] = str(path)
    _, records, _ = build_masks(tmp_path, data)
    first_id = annotations["annotations"][0]["id"]
    assert any(f"annotation {first_id} " in p and "RLE of size [10, 10]" in p for p in records["Stuff_COCO_000000142238"]["problems"])


def test_photo_without_annotations_is_skipped(tmp_path):
    annotations = json.loads((SAMPLE_DIR / "annotations.json").read_text())
    annotations["images"] = [i for i in annotations["images"] if i["id"] != 439180]
    annotations["annotations"] = [a for a in annotations["annotations"] if a["image_id"] != 439180]
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(annotations))
    data = sample_recipe_data()
    data["sources"][0]["annotations"] = str(path)
    _, records, _ = build_masks(tmp_path, data)
    assert records["Stuff_COCO_000000439180"]["status"] == "skipped"
    assert "has no entry in" in records["Stuff_COCO_000000439180"]["reason"]


def test_excluded_class_by_name(tmp_path):
    data = sample_recipe_data()
    data["masks"]["stuff"]["exclude_categories"] = ["sky-other-merged", 193]
    _, records, _ = build_masks(tmp_path, data)
    names = sorted(c["name"] for c in records["Stuff_COCO_000000142238"]["classes"])
    assert names == ["tree-merged"]


def test_included_classes_only(tmp_path):
    data = sample_recipe_data()
    data["masks"]["stuff"]["include_categories"] = ["gravel", "grass-merged"]
    _, records, _ = build_masks(tmp_path, data)
    names = sorted(c["name"] for c in records["Stuff_COCO_000000439180"]["classes"])
    assert names == ["grass-merged", "gravel"]


def test_dilation_matches_decoded_reference(tmp_path):
    import cv2

    data = sample_recipe_data()
    data["masks"]["stuff"].update({"dilate_px": 4, "area": [0.0, 1.0]})
    root, records, _ = build_masks(tmp_path, data)
    annotations = json.loads((SAMPLE_DIR / "annotations.json").read_text())
    isthing = {c["id"]: c["isthing"] for c in json.loads((SAMPLE_DIR.parent / "categories" / "coco_panoptic.json").read_text())}
    stuff = np.zeros((427, 640), np.uint8)
    things = np.zeros((427, 640), bool)
    for annotation in annotations["annotations"]:
        if annotation["image_id"] != 142238:
            continue
        mask = mask_utils.decode(dict(annotation["segmentation"], counts=annotation["segmentation"]["counts"].encode()))
        if isthing[annotation["category_id"]]:
            things |= mask.astype(bool)
        else:
            stuff |= mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
    expected = (cv2.dilate(stuff, kernel) > 0) & ~things
    mask = read_png(root.absolute(records["Stuff_COCO_000000142238"]["files"]["mask"]["path"]))
    assert np.array_equal(mask == 255, expected)


def test_named_main_object_and_minimum(tmp_path):
    data = sample_recipe_data()
    data["masks"]["background"].update({"main_object": ["horse", "dog"], "min_object": 0.05})
    _, records, _ = build_masks(tmp_path, data)
    horse = records["Background_COCO_000000439180"]
    rugby = records["Background_COCO_000000142238"]
    assert horse["status"] == "skipped"
    assert horse["reason"].startswith("the main object covers 2.")
    assert horse["classes"][0]["name"] == "horse"
    assert rugby["reason"] == "no instance of 'horse' or 'dog' to keep as the main object"


def test_pool_matches_single_process(tmp_path, monkeypatch):
    from brgen_build.engine import run_stage
    from brgen_build.layout import DatasetRoot
    from brgen_build.manifest import read_records
    from brgen_build.stages.masks import MasksStage

    (tmp_path / "single").mkdir()
    _, single, _ = build_masks(tmp_path / "single", sample_recipe_data())
    root = DatasetRoot(tmp_path / "single" / "root")
    pooled_root = DatasetRoot(tmp_path / "pooled")
    pooled_root.load_recipe(root.recipe_path)
    (pooled_root.manifest_dir("reals")).mkdir(parents=True)
    for path in root.manifest_dir("reals").glob("*.jsonl"):
        (pooled_root.manifest_dir("reals") / path.name).write_bytes(path.read_bytes())
    stage = MasksStage(pooled_root, pooled_root.load_recipe(None), workers=2)
    stage.pool_threshold = 0
    monkeypatch.setattr(MasksStage, "choose_batch_size", lambda self, pending: 4)  # both photos in one batch
    queued = []
    original_start = MasksStage._start
    monkeypatch.setattr(MasksStage, "_start", lambda self, batch: queued.append(original_start(self, batch)) or queued[-1])
    summary = run_stage(stage, progress=False)
    pooled = read_records(pooled_root.manifest_dir("masks"))
    assert summary.counts["ok"] == 4
    assert len(queued) == 1
    assert queued[0].results is not None
    for mask_id, record in single.items():
        assert pooled[mask_id]["files"]["mask"]["sha256"] == record["files"]["mask"]["sha256"]
        assert pooled[mask_id]["classes"] == record["classes"]


def test_masks_do_not_depend_on_shards(tmp_path):
    from brgen_build.engine import run_stage
    from brgen_build.layout import DatasetRoot
    from brgen_build.manifest import read_records
    from brgen_build.seeding import Shard
    from brgen_build.stages.masks import MasksStage
    from brgen_build.stages.reals import RealsStage
    from conftest import write_recipe

    (tmp_path / "one").mkdir()
    _, whole, _ = build_masks(tmp_path / "one", sample_recipe_data())
    root = DatasetRoot(tmp_path / "sharded")
    recipe = root.load_recipe(write_recipe(tmp_path, sample_recipe_data()))
    run_stage(RealsStage(root, recipe), progress=False)
    for index in range(3):
        run_stage(MasksStage(root, recipe, workers=1), Shard(index, 3), progress=False)
    sharded = read_records(root.manifest_dir("masks"))
    assert sorted(sharded) == sorted(whole)
    for mask_id, record in whole.items():
        assert sharded[mask_id]["files"]["mask"]["sha256"] == record["files"]["mask"]["sha256"]
        assert sharded[mask_id]["seed"] == record["seed"]
