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
