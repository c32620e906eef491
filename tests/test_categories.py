"""The bundled category tables against listings from other projects (tests/data/categories/README.md)."""

import json
from pathlib import Path

import pytest

from mask_gen.categories import CategoryTable

REFERENCE = json.loads((Path(__file__).parent / "data" / "categories" / "reference_listings.json").read_text())


def test_coco_stuff_table_shape():
    table = CategoryTable.bundled("coco_stuff")
    roles = [table.role(category_id) for category_id in range(184)]
    assert sorted(table.categories) == list(range(184))
    assert roles.count("thing") == 91
    assert roles.count("stuff") == 91
    assert table.role(0) == "unlabeled"
    assert table.role(183) == "other"
    assert table.name(183) == "other"


def test_coco_stuff_matches_mask2former_listing():
    table = CategoryTable.bundled("coco_stuff")
    reference = REFERENCE["coco_stuff"]
    assert len(reference) == 171
    for entry in reference:
        assert table.name(entry["id"]) == entry["name"], entry
        assert table.is_thing(entry["id"]) == bool(entry["isthing"]), entry


def test_coco_panoptic_matches_detectron2_listing():
    table = CategoryTable.bundled("coco_panoptic")
    reference = {entry["id"]: entry for entry in REFERENCE["coco_panoptic"]}
    assert sorted(table.categories) == sorted(reference)
    assert len(table) == 133
    for category_id, entry in reference.items():
        assert table.name(category_id) == entry["name"], entry
        assert table.is_thing(category_id) == bool(entry["isthing"]), entry


@pytest.mark.parametrize("category_id, role", [(1, "thing"), (91, "thing"), (92, "stuff"), (182, "stuff"), (183, "other"), (0, "unlabeled")])
def test_unknown_ids_follow_coco_stuff(category_id, role):
    assert CategoryTable({}).role(category_id) == role
