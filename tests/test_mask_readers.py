"""The four annotation formats through the masks stage, and each malformed-annotation kind."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from brgen_build.errors import RecipeError
from brgen_build.files import read_png
from brgen_build.recipe import parse_recipe
from conftest import sample_recipe_data
from mask_fixtures import (
    PANOPTIC_DIR,
    PANOPTIC_TABLE,
    STUFF_TABLE,
    build_masks,
    label_map,
    panoptic_segments,
    sample_annotations,
    write_label_maps,
    write_stuff_and_instances,
)

PHOTO = "COCO_000000142238"


def recipe_with(annotations, annotation_format="coco", **extra) -> dict:
    data = sample_recipe_data()
    source = data["sources"][0]
    source["annotations"] = annotations
    source["annotation_format"] = annotation_format
    if annotation_format != "panoptic":
        source.pop("categories")
    source.update(extra)
    data["masks"]["background"]["margin_px"] = 0
    return data


def write_json(path, data):
    path.write_text(json.dumps(data))
    return str(path)


def test_panoptic_png_areas(tmp_path):
    data = recipe_with(str(PANOPTIC_DIR / "panoptic_examples.json"), "panoptic", annotation_masks=str(PANOPTIC_DIR / "panoptic_png"))
    root, records, summary = build_masks(tmp_path, data)
    assert summary.counts["ok"] == 4
    for image_id in (142238, 439180):
        ids, segments = panoptic_segments(image_id)
        stuff_ids = [s["id"] for s in segments if not PANOPTIC_TABLE.is_thing(s["category_id"])]
        largest = max(int((ids == s["id"]).sum()) for s in segments if PANOPTIC_TABLE.is_thing(s["category_id"]) and not s["iscrowd"])
        stuff = np.isin(ids, stuff_ids)
        record = records[f"Stuff_COCO_{image_id:012d}"]
        assert record["annotation_format"] == "panoptic"
        assert record["area_ratio"] == pytest.approx(stuff.mean(), abs=1e-6)
        assert np.array_equal(read_png(root.absolute(record["files"]["mask"]["path"])) == 255, stuff)
        assert records[f"Background_COCO_{image_id:012d}"]["area_ratio"] == pytest.approx(1 - largest / ids.size, abs=1e-6)


def test_stuff_json_uses_class_183(tmp_path):
    stuff_path, _ = write_stuff_and_instances(tmp_path)
    root, records, _ = build_masks(tmp_path, recipe_with(str(stuff_path)))
    stuff = json.loads(stuff_path.read_text())
    own = [a for a in stuff["annotations"] if a["image_id"] == 142238]
    expected_names = sorted(STUFF_TABLE.name(a["category_id"]) for a in own if a["category_id"] != 183)
    record = records[f"Stuff_{PHOTO}"]
    assert sorted(c["name"] for c in record["classes"]) == expected_names
    assert expected_names == ["grass", "sky-other", "tree"]
    assert records[f"Background_{PHOTO}"]["status"] == "skipped"
    assert records[f"Background_{PHOTO}"]["reason"] == "no thing to keep as the main object"


def test_stuff_plus_instances_polygons(tmp_path):
    stuff_path, instances_path = write_stuff_and_instances(tmp_path)
    _, records, summary = build_masks(tmp_path, recipe_with([str(stuff_path), str(instances_path)]))
    instances = json.loads(instances_path.read_text())["annotations"]
    polygon_areas = {}
    for annotation in instances:
        if annotation["image_id"] == 439180 and not annotation["iscrowd"]:
            assert isinstance(annotation["segmentation"], list)
            from pycocotools import mask as mask_utils

            rle = mask_utils.merge(mask_utils.frPyObjects(annotation["segmentation"], 360, 640))
            polygon_areas[annotation["id"]] = int(mask_utils.area(rle))
    main_id = max(polygon_areas, key=polygon_areas.get)
    record = records["Background_COCO_000000439180"]
    assert summary.counts["ok"] == 4
    assert record["classes"][0]["annotation_id"] == main_id
    assert record["classes"][0]["name"] == "truck"
    assert record["area_ratio"] == pytest.approx(1 - polygon_areas[main_id] / (360 * 640), abs=1e-6)


def test_crowd_uncompressed_rle_is_read(tmp_path):
    stuff_path, instances_path = write_stuff_and_instances(tmp_path)
    data = recipe_with([str(stuff_path), str(instances_path)])
    data["masks"]["background"]["include_crowd"] = True
    data["masks"]["background"]["main_object"] = ["horse"]
    _, records, _ = build_masks(tmp_path, data)
    crowd = next(a for a in json.loads(instances_path.read_text())["annotations"] if a["iscrowd"] and a["category_id"] == 19)
    assert isinstance(crowd["segmentation"]["counts"], list)
    record = records["Background_COCO_000000439180"]
    assert record["status"] == "ok"
    assert record["classes"][0]["name"] == "horse"


def test_label_maps_read_as_indices(tmp_path):
    folder = write_label_maps(tmp_path / "stuffthingmaps")
    root, records, summary = build_masks(tmp_path, recipe_with(str(folder), "stuffthingmaps"))
    labels = label_map(142238)
    ids = labels.astype(int) + 1
    stuff = (ids >= 92) & (ids <= 182)
    record = records[f"Stuff_{PHOTO}"]
    assert summary.counts["ok"] == 4
    assert record["annotation_format"] == "stuffthingmaps"
    assert np.array_equal(read_png(root.absolute(record["files"]["mask"]["path"])) == 255, stuff)
    assert sorted(c["name"] for c in record["classes"]) == ["grass", "sky-other", "tree"]


def test_label_map_components_are_instances(tmp_path):
    import cv2

    folder = write_label_maps(tmp_path / "stuffthingmaps", mode="L")
    _, records, _ = build_masks(tmp_path, recipe_with(str(folder), "stuffthingmaps"))
    labels = label_map(439180).astype(int) + 1
    largest = 0
    for category_id in np.unique(labels):
        if 0 < category_id < 92:
            count, components = cv2.connectedComponents((labels == category_id).astype(np.uint8), connectivity=8)
            largest = max([largest] + [int((components == index).sum()) for index in range(1, count)])
    assert records["Background_COCO_000000439180"]["area_ratio"] == pytest.approx(1 - largest / labels.size, abs=1e-6)


def test_rgb_label_map_is_skipped(tmp_path):
    folder = write_label_maps(tmp_path / "stuffthingmaps", mode="RGB")
    _, records, summary = build_masks(tmp_path, recipe_with(str(folder), "stuffthingmaps"))
    assert summary.counts["failed"] == 0
    assert records[f"Stuff_{PHOTO}"]["status"] == "skipped"
    assert "label map 000000142238.png is a RGB image" in records[f"Stuff_{PHOTO}"]["reason"]


def test_label_values_outside_range_recorded(tmp_path):
    folder = write_label_maps(tmp_path / "stuffthingmaps", mode="L")
    path = folder / "000000142238.png"
    labels = np.asarray(Image.open(path)).copy()
    labels[:2, :2] = 200
    Image.fromarray(labels).save(path)
    _, records, _ = build_masks(tmp_path, recipe_with(str(folder), "stuffthingmaps"))
    problems = records[f"Stuff_{PHOTO}"]["problems"]
    assert problems == ["label map 000000142238.png has values [200] outside 0-181 and 255; those pixels are treated as unlabeled"]


def test_odd_polygon_is_recorded(tmp_path):
    annotations = sample_annotations()
    annotations["annotations"].append(
        {"id": 9001, "image_id": 142238, "category_id": 1, "iscrowd": 0, "segmentation": [[10, 10, 20, 20, 30, 10, 40]]}
    )
    data = recipe_with(write_json(tmp_path / "a.json", annotations))
    data["sources"][0]["categories"] = sample_recipe_data()["sources"][0]["categories"]
    _, records, summary = build_masks(tmp_path, data)
    assert summary.counts["failed"] == 0
    assert "annotation 9001 of image 142238 has a polygon with an odd number of coordinates (7); skipped" in records[f"Stuff_{PHOTO}"]["problems"]


def test_rle_counts_of_wrong_total(tmp_path):
    annotations = sample_annotations()
    annotations["annotations"].append(
        {"id": 9002, "image_id": 142238, "category_id": 1, "iscrowd": 1, "segmentation": {"size": [427, 640], "counts": [10, 20]}}
    )
    data = recipe_with(write_json(tmp_path / "a.json", annotations))
    data["sources"][0]["categories"] = sample_recipe_data()["sources"][0]["categories"]
    _, records, _ = build_masks(tmp_path, data)
    expected = "annotation 9002 of image 142238 has RLE counts that sum to 30 but the image has 273280 pixels; skipped"
    assert expected in records[f"Stuff_{PHOTO}"]["problems"]


def test_annotation_of_missing_image(tmp_path):
    annotations = sample_annotations()
    annotations["annotations"].append({"id": 9003, "image_id": 555, "category_id": 1, "iscrowd": 0, "segmentation": [[0, 0, 5, 0, 5, 5]]})
    data = recipe_with(write_json(tmp_path / "a.json", annotations))
    data["sources"][0]["categories"] = sample_recipe_data()["sources"][0]["categories"]
    root, records, summary = build_masks(tmp_path, data)
    report = json.loads((root.manifest_dir("masks") / "problems-COCO.json").read_text())
    assert summary.counts["ok"] == 4
    assert report["problems"] == ["annotation 9003 refers to image 555, which is not in `images`; skipped"]


def test_id_type_mismatches(tmp_path):
    annotations = sample_annotations()
    annotations["annotations"].append({"id": 9004, "image_id": "142238", "category_id": 1, "iscrowd": 0, "segmentation": [[0, 0, 5, 0, 5, 5]]})
    annotations["annotations"].append({"id": 9005, "image_id": 142238, "category_id": "1", "iscrowd": 0, "segmentation": [[0, 0, 5, 0, 5, 5]]})
    data = recipe_with(write_json(tmp_path / "a.json", annotations))
    data["sources"][0]["categories"] = sample_recipe_data()["sources"][0]["categories"]
    root, records, summary = build_masks(tmp_path, data)
    report = json.loads((root.manifest_dir("masks") / "problems-COCO.json").read_text())
    assert summary.counts["failed"] == 0
    assert report["problems"] == [
        "annotation 9004 has image_id '142238' (str; image ids are integers); image 142238 exists, so write the id as a number; skipped"
    ]
    assert "annotation 9005 of image 142238 has category_id '1' (str; needs an integer); skipped" in records[f"Stuff_{PHOTO}"]["problems"]


def test_panoptic_segment_absent_from_png(tmp_path):
    data_json = json.loads((PANOPTIC_DIR / "panoptic_examples.json").read_text())
    data_json["annotations"][0]["segments_info"].append({"id": 123, "category_id": 1, "iscrowd": 0})
    path = write_json(tmp_path / "panoptic.json", data_json)
    data = recipe_with(path, "panoptic", annotation_masks=str(PANOPTIC_DIR / "panoptic_png"))
    _, records, _ = build_masks(tmp_path, data)
    assert "segment 123 of image 142238 does not occur in its PNG; skipped" in records[f"Stuff_{PHOTO}"]["problems"]


def test_panoptic_png_missing_or_resized(tmp_path):
    folder = tmp_path / "png"
    folder.mkdir()
    Image.open(PANOPTIC_DIR / "panoptic_png" / "000000439180.png").resize((320, 180)).save(folder / "000000439180.png")
    data = recipe_with(str(PANOPTIC_DIR / "panoptic_examples.json"), "panoptic", annotation_masks=str(folder))
    _, records, summary = build_masks(tmp_path, data)
    assert summary.counts["failed"] == 0
    assert records[f"Stuff_{PHOTO}"]["reason"] == f"panoptic PNG 000000142238.png of image 142238 not found in {folder}"
    assert records["Stuff_COCO_000000439180"]["reason"] == "panoptic PNG 000000439180.png is 320x180 but image 439180 is 640x360"


def test_panoptic_zip_is_read(tmp_path):
    import zipfile

    archive = tmp_path / "panoptic_val2017.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for png in (PANOPTIC_DIR / "panoptic_png").glob("*.png"):
            handle.write(png, f"panoptic_val2017/{png.name}")
    data = recipe_with(str(PANOPTIC_DIR / "panoptic_examples.json"), "panoptic", annotation_masks=str(archive))
    _, records, summary = build_masks(tmp_path, data)
    assert summary.counts["ok"] == 4
    assert sorted(c["name"] for c in records[f"Stuff_{PHOTO}"]["classes"]) == ["grass-merged", "sky-other-merged", "tree-merged"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"annotation_format": "lvis"}, "`sources[0].annotation_format` must be one of coco, panoptic, stuffthingmaps, got 'lvis'"),
        ({"annotation_masks": "png"}, "`sources[0].annotation_masks` is only read for `annotation_format: panoptic`"),
        ({"annotation_format": "panoptic", "annotations": ["a.json", "b.json"]}, "`sources[0].annotations` must be one path (the panoptic JSON file)"),
    ],
)
def test_recipe_rejects_format_mistakes(tmp_path, change, message):
    data = sample_recipe_data()
    data["sources"][0].update(change)
    with pytest.raises(RecipeError, match=re.escape(message)):
        parse_recipe(data, "recipe.yaml", tmp_path)
