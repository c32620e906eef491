"""Stage `reals` on COCO-style zips, ImageNet-style nested tars and Places-style folders."""

import hashlib
import io
import tarfile

import numpy as np
import pytest

from brgen_build.engine import run_stage
from brgen_build.errors import BrgenError
from brgen_build.files import read_png
from brgen_build.layout import DatasetRoot
from brgen_build.manifest import read_records
from brgen_build.recipe import load_recipe
from brgen_build.seeding import Shard
from brgen_build.selection import read_split_list
from brgen_build.stages.reals import RealsStage
from conftest import run_cli, write_recipe
from photo_archives import (
    decoded,
    imagenet_photos,
    photo_bytes,
    tar_bytes,
    write_folder,
    write_list,
    write_nested_tar,
    write_tar,
    write_zip,
)


def coco_photos(numbers) -> dict[str, bytes]:
    return {f"train2017/{number:012d}.jpg": photo_bytes(number) for number in numbers}


def make_recipe(folder, sources, splits=None, **extra):
    data = {"name": "reals-test", "seed": 5, "sources": sources, "splits": splits or {"train": 8, "test": 1, "val": 1}}
    data.update(extra)
    return write_recipe(folder, data)


def build(root_path, recipe_path, shard=Shard()):
    root = DatasetRoot(root_path)
    stage = RealsStage(root, root.load_recipe(recipe_path))
    return stage, run_stage(stage, shard, progress=False)


def au_names(root_path) -> list[str]:
    return sorted(path.relative_to(root_path).as_posix() for path in root_path.glob("*/Au/*.png"))


@pytest.fixture
def coco_zip(tmp_path):
    photos = coco_photos(range(1, 9))
    return write_zip(tmp_path / "train2017.zip", photos), photos


@pytest.fixture
def coco_list(tmp_path):
    entries = ["000000000001.jpg", "train2017/000000000002.jpg", "COCO_000000000003", "000000000099.jpg", "train2017/000000000004.jpg"]
    return write_list(tmp_path / "COCO_image_list.txt", entries)


def test_coco_zip_extracts_listed_photos(tmp_path, coco_zip, coco_list):
    archive, photos = coco_zip
    source = {"token": "COCO", "kind": "coco", "images": str(archive), "image_list": str(coco_list), "max_missing": 1}
    recipe = make_recipe(tmp_path, [source], splits={"train": 3, "test": 1, "val": 1})
    stage, summary = build(tmp_path / "root", recipe)

    names = sorted(name.split("/")[-1] for name in au_names(tmp_path / "root"))
    assert names == ["COCO_000000000001.png", "COCO_000000000002.png", "COCO_000000000003.png", "COCO_000000000004.png"]
    records = read_records(DatasetRoot(tmp_path / "root").manifest_dir("reals"))
    assert records["COCO_000000000002"]["member"] == "train2017/000000000002.jpg"
    assert records["COCO_000000000002"]["list_entry"] == "train2017/000000000002.jpg"
    data = photos["train2017/000000000003.jpg"]
    assert records["COCO_000000000003"]["source_sha256"] == hashlib.sha256(data).hexdigest()
    au = read_png(DatasetRoot(tmp_path / "root").au(records["COCO_000000000003"]["split"], "COCO_000000000003"))
    assert np.array_equal(au, decoded(data))
    assert stage.progress_counts(summary) == {"found": 4, "missing": 1, "unreadable": 0, "failed": 0}


def test_missing_photo_has_a_record(tmp_path, coco_zip, coco_list):
    archive, _ = coco_zip
    source = {"token": "COCO", "kind": "coco", "images": str(archive), "image_list": str(coco_list), "max_missing": 0.2}
    build(tmp_path / "root", make_recipe(tmp_path, [source], splits={"train": 3, "test": 1, "val": 1}))
    record = read_records(DatasetRoot(tmp_path / "root").manifest_dir("reals"))["COCO_000000000099"]
    assert record["status"] == "skipped"
    assert record["missing"] is True
    assert record["reason"] == f"'000000000099.jpg' of the image list {coco_list} not found in {archive}"


def test_too_many_missing_fails_before_extracting(tmp_path, coco_zip, coco_list, capsys):
    archive, _ = coco_zip
    source = {"token": "COCO", "kind": "coco", "images": str(archive), "image_list": str(coco_list)}
    recipe = make_recipe(tmp_path, [source], splits={"train": 3, "test": 1, "val": 1})
    assert run_cli("build", "--stage", "reals", "--root", str(tmp_path / "root"), "--recipe", str(recipe), "--no-progress") == 2
    error = capsys.readouterr().err
    assert f"1 of the 5 photos listed in {coco_list} are not in {archive} (max_missing: 0)" in error
    assert "e.g. '000000000099.jpg'" in error
    assert au_names(tmp_path / "root") == []
    assert read_records(DatasetRoot(tmp_path / "root").manifest_dir("reals"))["COCO_000000000099"]["missing"] is True


def test_summary_names_missing_photos(tmp_path, coco_zip, coco_list, capsys):
    archive, _ = coco_zip
    source = {"token": "COCO", "kind": "coco", "images": str(archive), "image_list": str(coco_list), "max_missing": 1}
    recipe = make_recipe(tmp_path, [source], splits={"train": 3, "test": 1, "val": 1})
    assert run_cli("build", "--stage", "reals", "--root", str(tmp_path / "root"), "--recipe", str(recipe), "--no-progress") == 0
    out = capsys.readouterr().out
    assert "reals: 5 planned in this shard, 0 already done, 4 ok, 1 skipped, 0 failed" in out
    assert f"COCO: 5 listed in {coco_list}, 4 found and 1 missing in {archive} (all shards)" in out
    assert "COCO: missing: 000000000099.jpg; each has a record" in out


def test_imagenet_nested_tar_extracts_listed_photos(tmp_path):
    photos = imagenet_photos(synsets=3, per_synset=4)
    archive = write_nested_tar(tmp_path / "ILSVRC2012_img_train.tar", photos)
    entries = ["n00000001_2.JPEG", "n00000002/n00000002_0.JPEG", "ImageNet_n00000003_3", "n00000009_1.JPEG"]
    image_list = write_list(tmp_path / "ImageNet_image_list.txt", entries)
    source = {"token": "ImageNet", "kind": "imagenet", "images": str(archive), "image_list": str(image_list), "max_missing": 1}
    build(tmp_path / "root", make_recipe(tmp_path, [source], splits={"train": 2, "test": 1, "val": 1}))

    records = read_records(DatasetRoot(tmp_path / "root").manifest_dir("reals"))
    found = sorted(record["id"] for record in records.values() if record["status"] == "ok")
    assert found == ["ImageNet_n00000001_2", "ImageNet_n00000002_0", "ImageNet_n00000003_3"]
    assert records["ImageNet_n00000002_0"]["member"] == "n00000002.tar/n00000002_0.JPEG"
    assert records["ImageNet_n00000009_1"]["missing"] is True
    au = read_png(DatasetRoot(tmp_path / "root").au(records["ImageNet_n00000003_3"]["split"], "ImageNet_n00000003_3"))
    assert np.array_equal(au, decoded(photos["n00000003"]["n00000003_3.JPEG"]))


def places_photos() -> dict[str, bytes]:
    categories = ["a/abbey", "b/bar", "c/canyon"]
    return {f"{category}/{k:08d}.jpg": photo_bytes(10 * i + k) for i, category in enumerate(categories) for k in range(1, 5)}


def places_source(images, **extra):
    return {"token": "Places", "kind": "places", "images": str(images), "stem": "{path}", "count": 5, **extra}


def test_places_folder_sample_is_seeded(tmp_path):
    folder = write_folder(tmp_path / "places", places_photos())
    build(tmp_path / "root", make_recipe(tmp_path, [places_source(folder)], splits={"train": 3, "test": 1, "val": 1}))
    assert au_names(tmp_path / "root") == [
        "test/Au/Places_a_abbey_00000001.png",
        "train/Au/Places_a_abbey_00000003.png",
        "train/Au/Places_b_bar_00000003.png",
        "train/Au/Places_c_canyon_00000003.png",
        "val/Au/Places_c_canyon_00000001.png",
    ]


def test_places_tar_gives_the_folder_sample(tmp_path):
    photos = places_photos()
    folder = write_folder(tmp_path / "places", photos)
    archive = write_tar(tmp_path / "places.tar", dict(reversed(list(photos.items()))))
    splits = {"train": 3, "test": 1, "val": 1}
    build(tmp_path / "from-folder", make_recipe(tmp_path, [places_source(folder)], splits, name="a"))
    build(tmp_path / "from-tar", make_recipe(tmp_path, [places_source(archive)], splits, name="a"))
    assert au_names(tmp_path / "from-tar") == au_names(tmp_path / "from-folder")


def shard_results(root_path) -> dict[str, tuple[str, str]]:
    records = read_records(DatasetRoot(root_path).manifest_dir("reals"))
    return {photo: (record["split"], record["files"]["au"]["sha256"]) for photo, record in records.items()}


def test_splits_exact_and_shard_stable(tmp_path):
    archive = write_zip(tmp_path / "train2017.zip", coco_photos(range(1, 31)))
    source = {"token": "COCO", "kind": "coco", "images": str(archive)}
    recipe = make_recipe(tmp_path, [source], splits={"train": 20, "test": 5, "val": 5})
    results = []
    for count in (1, 2, 3):
        for index in range(count):
            build(tmp_path / f"root{count}", recipe, Shard(index, count))
        results.append(shard_results(tmp_path / f"root{count}"))
    assert len(results[0]) == 30
    assert sorted(split for split, _ in results[0].values()).count("test") == 5
    assert sorted(split for split, _ in results[0].values()).count("train") == 20
    assert results[1] == results[0]
    assert results[2] == results[0]


def test_split_list_overrides_the_hash(tmp_path):
    archive = write_zip(tmp_path / "train2017.zip", coco_photos(range(1, 21)))
    fixed = write_list(tmp_path / "splits.txt", ["COCO_000000000001 val", "COCO_000000000002.png val", "# comment", "COCO_000000000003 val"])
    source = {"token": "COCO", "kind": "coco", "images": str(archive)}
    recipe = make_recipe(tmp_path, [source], splits={"train": 16, "test": 2, "val": 2}, split_list=str(fixed))
    build(tmp_path / "root", recipe)
    splits = {photo: split for photo, (split, _) in shard_results(tmp_path / "root").items()}
    assert [splits[f"COCO_{n:012d}"] for n in (1, 2, 3)] == ["val", "val", "val"]
    assert list(splits.values()).count("val") == 3
    assert list(splits.values()).count("test") == 2
    assert list(splits.values()).count("train") == 15


def test_split_list_errors_name_the_line(tmp_path):
    path = write_list(tmp_path / "splits.txt", ["COCO_1 train", "COCO_2 validation"])
    with pytest.raises(BrgenError, match=r"splits.txt:2: expected `ID SPLIT` with SPLIT one of train, test, val, got 'COCO_2 validation'"):
        read_split_list(path)


def test_rerun_redoes_only_a_deleted_photo(tmp_path, coco_zip):
    archive, _ = coco_zip
    recipe = make_recipe(tmp_path, [{"token": "COCO", "kind": "coco", "images": str(archive)}], splits={"train": 6, "test": 1, "val": 1})
    build(tmp_path / "root", recipe)
    root = DatasetRoot(tmp_path / "root")
    before = read_records(root.manifest_dir("reals"))
    deleted = root.absolute(before["COCO_000000000005"]["files"]["au"]["path"])
    original = deleted.read_bytes()
    deleted.unlink()

    _, summary = build(tmp_path / "root", recipe)
    after = read_records(root.manifest_dir("reals"))
    assert (summary.already_done, summary.counts["ok"]) == (7, 1)
    assert deleted.read_bytes() == original
    assert after["COCO_000000000001"] == before["COCO_000000000001"]


def test_missing_photo_extracted_once_found(tmp_path, coco_list):
    archive = write_zip(tmp_path / "train2017.zip", coco_photos([1, 2, 3, 4]))
    source = {"token": "COCO", "kind": "coco", "images": str(archive), "image_list": str(coco_list), "max_missing": 1}
    recipe = make_recipe(tmp_path, [source], splits={"train": 3, "test": 1, "val": 1})
    build(tmp_path / "root", recipe)
    write_zip(archive, coco_photos([1, 2, 3, 4, 99]))

    _, summary = build(tmp_path / "root", recipe)
    record = read_records(DatasetRoot(tmp_path / "root").manifest_dir("reals"))["COCO_000000000099"]
    assert (summary.already_done, summary.counts["ok"]) == (4, 1)
    assert record["status"] == "ok"
    assert record["member"] == "train2017/000000000099.jpg"


def test_split_change_after_extraction_rejected(tmp_path, coco_zip):
    archive, _ = coco_zip
    source = {"token": "COCO", "kind": "coco", "images": str(archive)}
    build(tmp_path / "root", make_recipe(tmp_path, [source], splits={"train": 6, "test": 1, "val": 1}))
    records = read_records(DatasetRoot(tmp_path / "root").manifest_dir("reals"))
    moved = next(photo for photo, record in sorted(records.items()) if record["split"] == "train")
    split_list = write_list(tmp_path / "splits.txt", [f"{moved} val"])
    recipe = make_recipe(tmp_path, [source], splits={"train": 6, "test": 1, "val": 1}, split_list=str(split_list))
    with pytest.raises(BrgenError, match=rf"the split of 3 extracted photo\(s\) would change, e.g. .*{moved} \(train -> val\)"):
        build(tmp_path / "root", recipe)


def test_unreadable_photos_skipped_with_reasons(tmp_path):
    good = photo_bytes(1)
    members = {
        "000000000001.jpg": good,
        "000000000002.jpg": b"",
        "000000000003.jpg": good[: len(good) // 2],
        "000000000004.jpg": photo_bytes(4, size=(40, 40)),
        "000000000005.jpg": b"not a photo at all",
        "000000000006.jpg": bytes(1_100_000),
    }
    archive = write_zip(tmp_path / "train2017.zip", members)
    source = {"token": "COCO", "kind": "coco", "images": str(archive)}
    recipe = make_recipe(tmp_path, [source], splits={"train": 4, "test": 1, "val": 1}, decode={"max_pixels": 1000})
    stage, summary = build(tmp_path / "root", recipe)

    records = read_records(DatasetRoot(tmp_path / "root").manifest_dir("reals"))
    reasons = {photo: record["reason"] for photo, record in records.items()}
    assert reasons["COCO_000000000001"] is None
    assert reasons["COCO_000000000006"] == f"{archive}: 000000000006.jpg: 1100000 bytes, more than a photo within decode.max_pixels needs (1056576 bytes)"
    assert reasons["COCO_000000000002"] == f"{archive}: 000000000002.jpg: empty file (0 bytes)"
    assert reasons["COCO_000000000003"].startswith(f"{archive}: 000000000003.jpg: decoding failed")
    assert reasons["COCO_000000000004"] == f"{archive}: 000000000004.jpg: 40x40 = 1600 pixels exceeds the recipe's decode.max_pixels = 1000"
    assert reasons["COCO_000000000005"].startswith(f"{archive}: 000000000005.jpg: not a recognised image format")
    assert stage.progress_counts(summary) == {"found": 1, "missing": 0, "unreadable": 5, "failed": 0}


def test_ambiguous_list_entry_is_an_error(tmp_path):
    folder = write_folder(tmp_path / "places", places_photos())
    image_list = write_list(tmp_path / "Places_image_list.txt", ["00000001.jpg"])
    source = places_source(folder, image_list=str(image_list), count=None)
    with pytest.raises(BrgenError, match=r"entry '00000001.jpg' matches 3 photos of .*places \(a/abbey/00000001.jpg, b/bar/00000001.jpg, c"):
        build(tmp_path / "root", make_recipe(tmp_path, [source], splits={"train": 1}))


def test_release_ids_follow_the_stem_rule(tmp_path):
    archive = write_zip(tmp_path / "train2017.zip", coco_photos([520, 521]))
    image_list = write_list(tmp_path / "COCO_image_list.txt", ["COCO_000000000520", "COCO_000000000522"])
    source = {"token": "COCO", "kind": "coco", "images": str(archive), "image_list": str(image_list), "stem": "{number:011d}", "max_missing": 1}
    build(tmp_path / "root", make_recipe(tmp_path, [source], splits={"train": 2}))
    records = read_records(DatasetRoot(tmp_path / "root").manifest_dir("reals"))
    assert sorted(records) == ["COCO_00000000520", "COCO_00000000522"]
    assert records["COCO_00000000520"]["member"] == "train2017/000000000520.jpg"
    assert records["COCO_00000000522"]["missing"] is True


def test_found_entry_wins_over_missing_twin(tmp_path):
    archive = write_zip(tmp_path / "train2017.zip", coco_photos([7]))
    image_list = write_list(tmp_path / "COCO_image_list.txt", ["other/000000000007.png", "000000000007.jpg"])
    source = {"token": "COCO", "kind": "coco", "images": str(archive), "image_list": str(image_list)}
    build(tmp_path / "root", make_recipe(tmp_path, [source], splits={"train": 1}))
    record = read_records(DatasetRoot(tmp_path / "root").manifest_dir("reals"))["COCO_000000000007"]
    assert record["status"] == "ok"
    assert record["list_entry"] == "000000000007.jpg"


def test_folder_paths_read_without_walk(tmp_path, monkeypatch):
    from brgen_build.sources import FolderContainer

    folder = write_folder(tmp_path / "places", places_photos())
    image_list = write_list(tmp_path / "Places_image_list.txt", ["a/abbey/00000002.jpg", "./c/canyon/00000004.jpg"])
    monkeypatch.setattr(FolderContainer, "members", lambda self: pytest.fail("walked the folder"))
    source = places_source(folder, image_list=str(image_list), count=None)
    build(tmp_path / "root", make_recipe(tmp_path, [source], splits={"train": 2}))
    assert au_names(tmp_path / "root") == ["train/Au/Places_a_abbey_00000002.png", "train/Au/Places_c_canyon_00000004.png"]


def test_exact_path_wins_over_path_ending(tmp_path):
    folder = write_folder(tmp_path / "places", {"abbey/1.jpg": photo_bytes(1), "x/abbey/1.jpg": photo_bytes(2)})
    image_list = write_list(tmp_path / "Places_image_list.txt", ["abbey/1.jpg", "Places_x_abbey_1"])
    source = places_source(folder, image_list=str(image_list), count=None)
    build(tmp_path / "root", make_recipe(tmp_path, [source], splits={"train": 2}))
    records = read_records(DatasetRoot(tmp_path / "root").manifest_dir("reals"))
    assert records["Places_abbey_1"]["member"] == "abbey/1.jpg"
    assert records["Places_x_abbey_1"]["member"] == "x/abbey/1.jpg"


def files_outside(tmp_path, root_path) -> set[str]:
    return {path.as_posix() for path in tmp_path.rglob("*") if root_path not in path.parents and path != root_path}


def hostile_tar(path, outside):
    with tarfile.open(path, "w") as archive:
        def add(name, data=b"", kind=tarfile.REGTYPE, target=""):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, target, len(data)
            archive.addfile(info, io.BytesIO(data))

        add("ok.jpg", photo_bytes(1))
        add("../evil.jpg", photo_bytes(2))
        add("/abs/evil2.jpg", photo_bytes(3))
        add("a/../../evil3.jpg", photo_bytes(4))
        add("link.jpg", kind=tarfile.SYMTYPE, target="/etc/hostname")
        add("hard.jpg", kind=tarfile.LNKTYPE, target="ok.jpg")
        add("escape", kind=tarfile.SYMTYPE, target=str(outside))
        add("escape/evil4.jpg", photo_bytes(5))
        add("nested.tar", tar_bytes({"../../evil5.jpg": photo_bytes(6)}))
    return path


def test_hostile_tar_stays_inside_root(tmp_path):
    (tmp_path / "outside").mkdir()
    archive = hostile_tar(tmp_path / "places.tar", tmp_path / "outside")
    root_path = tmp_path / "root"
    recipe = make_recipe(tmp_path, [{"token": "Places", "kind": "places", "images": str(archive), "stem": "{path}"}], splits={"train": 1})
    before = files_outside(tmp_path, root_path)
    build(root_path, recipe)

    assert files_outside(tmp_path, root_path) == before
    assert au_names(root_path) == [
        "train/Au/Places_a_.._.._evil3.png",
        "train/Au/Places_abs_evil2.png",
        "train/Au/Places_escape_evil4.png",
        "train/Au/Places_nested_.._.._evil5.png",
        "train/Au/Places_ok.png",
    ]


def test_hostile_list_skips_link_members(tmp_path):
    (tmp_path / "outside").mkdir()
    archive = hostile_tar(tmp_path / "places.tar", tmp_path / "outside")
    image_list = write_list(tmp_path / "list.txt", ["link.jpg", "hard.jpg", "../evil.jpg", "ok.jpg"])
    source = {"token": "Places", "kind": "places", "images": str(archive), "image_list": str(image_list), "max_missing": 3}
    build(tmp_path / "root", make_recipe(tmp_path, [source], splits={"train": 1}))
    records = read_records(DatasetRoot(tmp_path / "root").manifest_dir("reals"))
    assert sorted(photo for photo, record in records.items() if record.get("missing")) == ["Places_hard", "Places_link"]
    assert au_names(tmp_path / "root") == ["train/Au/Places_evil.png", "train/Au/Places_ok.png"]


def test_hostile_zip_stays_inside_root(tmp_path):
    archive = write_zip(tmp_path / "coco.zip", {"../000000000001.jpg": photo_bytes(1), "/tmp/000000000002.jpg": photo_bytes(2)})
    root_path = tmp_path / "root"
    recipe = make_recipe(tmp_path, [{"token": "COCO", "kind": "coco", "images": str(archive)}], splits={"train": 1})
    before = files_outside(tmp_path, root_path)
    build(root_path, recipe)
    assert files_outside(tmp_path, root_path) == before
    assert au_names(root_path) == ["train/Au/COCO_000000000001.png", "train/Au/COCO_000000000002.png"]


@pytest.mark.parametrize("value", [-1, 1.5, "all", True])
def test_invalid_max_missing_is_named(tmp_path, value):
    recipe = make_recipe(tmp_path, [{"token": "COCO", "kind": "coco", "images": str(tmp_path), "max_missing": value}])
    with pytest.raises(BrgenError, match=r"`sources\[0\].max_missing` must be a count \(integer >= 0\) or a fraction in 0..1"):
        load_recipe(recipe)
