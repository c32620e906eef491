from pathlib import Path

import pytest
import yaml

from brgen_build.errors import BrgenError, RecipeError
from brgen_build.layout import DatasetRoot
from brgen_build.recipe import load_recipe
from brgen_build.seeding import Shard, derive_seed, detect_shard, parse_shard
from brgen_build.stages.reals import assign_splits, split_sizes
from conftest import sample_recipe_data, write_recipe
from conftest import SAMPLE_DIR
from manifests import data_path


def recipe_with(tmp_path, change):
    data = sample_recipe_data()
    change(data)
    return write_recipe(tmp_path, data)


def test_bundled_recipes_load(monkeypatch):
    for variable in ("BRGEN_COCO_DIR", "BRGEN_IMAGENET_DIR", "BRGEN_PLACES_DIR", "BRGEN_WEIGHTS_DIR"):
        monkeypatch.setenv(variable, "/data")
    assert load_recipe(data_path("sample", "recipe.yaml")).name == "brgen-sample"
    full = load_recipe(data_path("recipes", "br-gen.yaml"))
    assert [source.token for source in full.sources] == ["COCO", "ImageNet", "Places"]
    assert [path.name for path in full.sources[0].annotations] == ["stuff_train2017.json", "instances_train2017.json"]
    assert full.masks.segmenter.weights == {"grounding_dino": Path("/data/grounding-dino-base"), "sam2": Path("/data/sam2.1-hiera-large")}


def test_missing_key_is_named(tmp_path):
    path = recipe_with(tmp_path, lambda d: d.pop("seed"))
    with pytest.raises(RecipeError, match=r"recipe.yaml: `seed` is missing"):
        load_recipe(path)


def test_unknown_key_is_named(tmp_path):
    path = recipe_with(tmp_path, lambda d: d["masks"]["stuff"].update(areas=[0, 1]))
    with pytest.raises(RecipeError, match=r"`masks.stuff.areas` is not a known key"):
        load_recipe(path)


def test_bad_area_window_is_named(tmp_path):
    path = recipe_with(tmp_path, lambda d: d["masks"]["stuff"].update(area=[0.8, 0.1]))
    with pytest.raises(RecipeError, match=r"`masks.stuff.area` must satisfy 0 <= min <= max <= 1"):
        load_recipe(path)


def test_unknown_method_is_named(tmp_path):
    path = recipe_with(tmp_path, lambda d: d["methods"].update(sdxxl={}))
    with pytest.raises(RecipeError, match=r"`methods.sdxxl` is not a known method; available: opencv-telea"):
        load_recipe(path)


def test_unset_environment_variable_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("BRGEN_TEST_COCO", raising=False)
    path = recipe_with(tmp_path, lambda d: d["sources"][0].update(images="${BRGEN_TEST_COCO}/train2017.zip"))
    with pytest.raises(RecipeError, match=r"`sources\[0\].images` uses an environment variable that is not set"):
        load_recipe(path)


def test_stem_rule_formats_numbers(tmp_path):
    path = recipe_with(tmp_path, lambda d: d["sources"][0].update(stem="{number:011d}"))
    source = load_recipe(path).sources[0]
    assert source.format_stem("train2017/000000000520.jpg") == "00000000520"


def test_stem_rule_with_path_keeps_folders(tmp_path):
    path = recipe_with(tmp_path, lambda d: d["sources"][0].update(stem="{path}"))
    assert load_recipe(path).sources[0].format_stem("a/abbey/00000001.jpg") == "a_abbey_00000001"


def test_frozen_recipe_rejects_changed_content(tmp_path):
    root = DatasetRoot(tmp_path / "root")
    root.load_recipe(write_recipe(tmp_path, sample_recipe_data(), "first.yaml"))
    changed = sample_recipe_data()
    changed["seed"] = 7
    with pytest.raises(BrgenError, match=r"differs from the recipe frozen in .* at: seed"):
        root.load_recipe(write_recipe(tmp_path, changed, "second.yaml"))


def test_frozen_recipe_allows_moved_paths(tmp_path):
    root = DatasetRoot(tmp_path / "root")
    root.load_recipe(write_recipe(tmp_path, sample_recipe_data(), "first.yaml"))
    moved = sample_recipe_data()
    moved["methods"]["lama"] = {"weights": "/elsewhere/big-lama.pt", "batch_size": 8}
    frozen = yaml.safe_load(root.recipe_path.read_text())
    assert frozen["methods"]["lama"] == {}
    assert root.load_recipe(write_recipe(tmp_path, moved, "second.yaml")).method_params("lama")["batch_size"] == 8


def test_moved_paths_are_saved_in_the_root(tmp_path):
    root = DatasetRoot(tmp_path / "root")
    first = sample_recipe_data()
    first["sources"][0]["images"] = str(tmp_path / "photoz")
    root.load_recipe(write_recipe(tmp_path, first, "first.yaml"))
    root.load_recipe(write_recipe(tmp_path, sample_recipe_data(), "second.yaml"))
    reloaded = root.load_recipe(None)
    assert reloaded.sources[0].images == SAMPLE_DIR / "images"
    assert reloaded.path == root.recipe_path


def test_hand_edit_of_frozen_recipe_is_rejected(tmp_path):
    root = DatasetRoot(tmp_path / "root")
    root.load_recipe(write_recipe(tmp_path, sample_recipe_data(), "first.yaml"))
    edited = yaml.safe_load(root.recipe_path.read_text())
    edited["masks"]["stuff"]["area"] = [0.1, 0.5]
    root.recipe_path.write_text(yaml.safe_dump(edited))
    with pytest.raises(BrgenError, match=r"recipe.yaml was edited at: masks.stuff.area.1, after stages ran"):
        root.load_recipe(None)


def test_hand_added_method_is_accepted(tmp_path):
    data = sample_recipe_data()
    del data["methods"]["lama"]
    root = DatasetRoot(tmp_path / "root")
    root.load_recipe(write_recipe(tmp_path, data))
    edited = yaml.safe_load(root.recipe_path.read_text())
    edited["methods"]["lama"] = {}
    root.recipe_path.write_text(yaml.safe_dump(edited))
    assert "lama" in root.load_recipe(None, update=True).methods
    edited["methods"]["lama"] = {"weights": None, "batch_size": 2}
    edited["methods"]["opencv-telea"]["radius"] = 9
    root.recipe_path.write_text(yaml.safe_dump(edited))
    with pytest.raises(BrgenError, match=r"edited at: methods.opencv-telea.radius,"):
        root.load_recipe(None)


def test_added_method_is_saved_removed_one_rejected(tmp_path):
    data = sample_recipe_data()
    del data["methods"]["lama"]
    root = DatasetRoot(tmp_path / "root")
    root.load_recipe(write_recipe(tmp_path, data, "first.yaml"))
    assert "lama" in root.load_recipe(write_recipe(tmp_path, sample_recipe_data(), "second.yaml")).methods
    assert "lama" in yaml.safe_load(root.recipe_path.read_text())["methods"]
    with pytest.raises(BrgenError, match=r"differs from the recipe frozen in .* at: methods.lama\."):
        root.load_recipe(write_recipe(tmp_path, data, "third.yaml"))


def test_method_parameter_typo_fails_before_freezing(tmp_path):
    path = recipe_with(tmp_path, lambda d: d["methods"].update({"opencv-telea": {"raduis": 3}}))
    root = DatasetRoot(tmp_path / "root")
    with pytest.raises(RecipeError, match=r"recipe.yaml: `methods.opencv-telea`: opencv-telea: unknown parameter\(s\) raduis"):
        root.load_recipe(path)
    assert not root.recipe_path.exists()


def test_empty_recipe_is_named(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with pytest.raises(RecipeError, match=r"empty.yaml: a recipe must be a YAML mapping .* got an empty file"):
        load_recipe(path)


def test_split_sizes_exact_and_scaled():
    assert split_sizes({"train": 12000, "test": 1500, "val": 1500}, 15000) == {"train": 12000, "test": 1500, "val": 1500}
    assert split_sizes({"train": 12000, "test": 1500, "val": 1500}, 10) == {"train": 8, "test": 1, "val": 1}
    assert split_sizes({"train": 0.8, "test": 0.1, "val": 0.1}, 7) == {"train": 5, "test": 1, "val": 1}


def test_split_assignment_ignores_order():
    ids = [f"COCO_{i:012d}" for i in range(100)]
    forward = assign_splits(ids, {"train": 80, "test": 10, "val": 10}, seed=3)
    backward = assign_splits(list(reversed(ids)), {"train": 80, "test": 10, "val": 10}, seed=3)
    assert forward == backward
    assert sorted(forward.values()).count("val") == 10


def test_shards_are_disjoint_and_complete():
    names = [f"item{i}" for i in range(500)]
    owners = [[name for name in names if Shard(index, 3).owns(name)] for index in range(3)]
    assert sorted(sum(owners, [])) == sorted(names)
    assert all(len(owned) > 100 for owned in owners)


def test_shard_parsing_and_environment():
    assert parse_shard("2/4") == Shard(2, 4)
    with pytest.raises(BrgenError, match="invalid shard"):
        parse_shard("4/4")
    assert detect_shard({"RANK": "1", "WORLD_SIZE": "2"})[0] == Shard(1, 2)
    assert detect_shard({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "3"})[0] == Shard(2, 4)
    assert detect_shard({})[0] == Shard(0, 1)


def test_seed_depends_only_on_names():
    assert derive_seed(0, "lama", "LaMa_Stuff_COCO_1") == derive_seed(0, "lama", "LaMa_Stuff_COCO_1")
    assert derive_seed(0, "lama", "LaMa_Stuff_COCO_1") != derive_seed(1, "lama", "LaMa_Stuff_COCO_1")
    assert 0 <= derive_seed(0, "lama", "x") < 2**31
